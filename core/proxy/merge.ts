/**
 * Several backends: all called concurrently, shallow top-level merge in arrival order, a merge
 * deadline at 85% of the endpoint timeout; a missing backend makes the answer partial.
 */
import type { Proxy, ProxyRequest, ProxyResponse } from './types.js';
import { DeadlineError } from './types.js';

export function composeMerge(backends: readonly Proxy[], timeoutMs: number): Proxy {
  const n = backends.length;
  const mergeMs = Math.floor(timeoutMs * 0.85);
  return (req: ProxyRequest) =>
    new Promise<ProxyResponse>((resolve, reject) => {
      const data: Record<string, unknown> = Object.create(null);
      const errors: Error[] = [];
      let pending = n;
      let successes = 0;
      let complete = true;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (successes === 0) {
          const err = errors[0] ?? new DeadlineError();
          if (errors.length > 1) (err as { all?: Error[] }).all = errors;
          reject(err);
          return;
        }
        resolve({ data, isComplete: complete && errors.length === 0 && pending === 0, errors: errors.length ? errors : null });
      };
      const timer = setTimeout(() => {
        if (pending > 0) errors.push(new DeadlineError());
        finish();
      }, mergeMs);
      for (let i = 0; i < n; i++) {
        backends[i]!(req).then(
          (r) => {
            if (done) return;
            successes++;
            if (!r.isComplete) complete = false;
            for (const k in r.data) data[k] = r.data[k];
            if (--pending === 0) finish();
          },
          (err: Error) => {
            if (done) return;
            errors.push(err);
            if (--pending === 0) finish();
          },
        );
      }
    });
}
