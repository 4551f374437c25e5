/**
 * Several backends (lura's merging.go):
 *  - parallel: all called concurrently, shallow top-level merge in arrival order, a merge
 *    deadline at 85 % of the endpoint timeout; a missing backend makes the answer partial;
 *  - sequential (`extra_config.proxy.sequential`): one after the other under the same deadline,
 *    later url_patterns reading `{respN_a.b}` values from earlier responses.
 * Each merge runs under its own child scope of the request's (types.ts Scope), so the backend
 * calls still running when the deadline passes (or the client leaves) are cancelled.
 */
import type { BackendConfig } from '../config/types.js';
import { goJson } from '../router/json.js';
import { setKey } from './flatmap.js';
import type { Proxy, ProxyRequest, ProxyResponse } from './types.js';
import { DeadlineError, type ChildScope } from './types.js';
import { DeadlineQueue, type Timed } from '../router/deadlines.js';

type Obj = Record<string, unknown>;

/** The error of a merge where no backend answered: the first error, carrying all of them. */
function mergeFailure(errors: Error[]): Error {
  const err = errors[0] ?? new DeadlineError();
  if (errors.length > 1) (err as { all?: Error[] }).all = errors;
  return err;
}


function mergeInto(data: Obj, part: Obj): void {
  for (const k in part) {
    if (!Object.prototype.hasOwnProperty.call(part, k)) continue;
    setKey(data, k, part[k]);
  }
}

/**
 * One parallel merge in flight. The merge deadline is the endpoint's deadline queue kind (one Node
 * timer per endpoint, router/deadlines.ts): the run is the queue node, and its callbacks are bound
 * once here rather than allocated per backend.
 */
class MergeRun implements Timed {
  deadline = 0;
  tprev: Timed | null = null;
  tnext: Timed | null = null;
  readonly data: Obj = Object.create(null);
  readonly errors: Error[] = [];
  successes = 0;
  complete = true;
  done = false;
  resolve!: (r: ProxyResponse) => void;
  reject!: (e: Error) => void;

  constructor(
    readonly ac: ChildScope,
    public pending: number,
    private readonly dq: DeadlineQueue,
  ) {}

  expire(): void {
    this.finish();
  }

  finish(): void {
    if (this.done) return;
    this.done = true;
    this.dq.remove(this);
    this.ac.detach();
    const errors = this.errors;
    if (this.pending > 0) {
      // One `context deadline exceeded` per backend that did not make it, as lura logs them.
      for (let i = 0; i < this.pending; i++) errors.push(new DeadlineError());
      this.ac.cancel(new DeadlineError());
    }
    if (this.successes === 0) {
      this.reject(mergeFailure(errors));
      return;
    }
    this.resolve({ data: this.data, isComplete: this.complete && errors.length === 0, errors: errors.length ? errors : null });
  }

  readonly ok = (r: ProxyResponse): void => {
    if (this.done) return;
    this.pending--;
    this.successes++;
    if (!r.isComplete) this.complete = false;
    if (r.errors !== null) this.errors.push(...r.errors);
    try {
      mergeInto(this.data, r.data);
    } catch (err) {
      this.errors.push(err as Error);
    }
    if (this.pending === 0) this.finish();
  };

  readonly fail = (err: Error): void => {
    if (this.done) return;
    this.pending--;
    this.errors.push(err);
    if (this.pending === 0) this.finish();
  };
}

export function composeMerge(backends: readonly Proxy[], timeoutMs: number): Proxy {
  const n = backends.length;
  const dq = new DeadlineQueue(Math.max(1, Math.floor(timeoutMs * 0.85)));
  return (req: ProxyRequest) =>
    new Promise<ProxyResponse>((resolve, reject) => {
      const ac = req.scope.child();
      const sub = req.derive(ac);
      const run = new MergeRun(ac, n, dq);
      run.resolve = resolve;
      run.reject = reject;
      dq.add(run, Date.now());
      for (let i = 0; i < n; i++) {
        let p: Promise<ProxyResponse>;
        try {
          p = backends[i]!(sub);
        } catch (err) {
          p = Promise.reject(err as Error);
        }
        p.then(run.ok, run.fail);
      }
    });
}

/** A `{respN_a.b}` placeholder (or a propagated param): where its value comes from. */
interface Replacement {
  /** The name the value is stored under (the placeholder as written). */
  readonly name: string;
  readonly from: number;
  /** Field path in that response; empty = the whole response as JSON. */
  readonly fields: readonly string[];
}

const RESP_PLACEHOLDER = /\{(resp(\d+)(?:_([^{}]+))?)\}/g;
const RESP_NAME = /^resp(\d+)(?:_(.+))?$/i;

/**
 * Where a no-op backend of a sequential pipe keeps its raw body when a later step asks for the whole
 * response (`resp0`): a symbol key, so the merge never copies it into the answer.
 */
export const RAW_BODY: unique symbol = Symbol('raw body');

/** True when backend `i` of a sequential endpoint is referenced whole (`resp<i>`, no field). */
export function wholeResponseNeeded(i: number, propagated: readonly string[], laterPatterns: readonly string[]): boolean {
  const name = `resp${i}`;
  return propagated.some((p) => p.toLowerCase() === name) || laterPatterns.some((u) => u.includes(`{${name}}`));
}

/** Go's `%v`-ish text of a response value, as lura puts it in the request params. */
function paramText(v: unknown): string {
  if (typeof v === 'object' && v !== null && RAW_BODY in v) return String((v as { [RAW_BODY]: unknown })[RAW_BODY]);
  if (Array.isArray(v)) return v.map((x) => (typeof x === 'object' && x !== null ? goJson(x) : String(x))).join(',');
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null) return goJson(v);
  return String(v);
}

function lookup(data: Obj, fields: readonly string[]): unknown {
  let cur: unknown = data;
  for (const f of fields) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur)) return undefined;
    if (!Object.prototype.hasOwnProperty.call(cur, f)) return undefined;
    cur = (cur as Obj)[f];
  }
  return cur;
}

export function composeSequential(
  backends: readonly Proxy[],
  configs: readonly BackendConfig[],
  timeoutMs: number,
  propagated: readonly string[],
): Proxy {
  const n = backends.length;
  const mergeMs = Math.max(1, Math.floor(timeoutMs * 0.85));
  // Per backend i: the values it needs from the responses before it.
  const needs: Replacement[][] = configs.map((b, i) => {
    const out: Replacement[] = [];
    if (i === 0) return out;
    for (const m of b.urlPattern.matchAll(RESP_PLACEHOLDER)) {
      const from = Number(m[2]);
      if (from >= i || out.some((r) => r.name === m[1])) continue;
      out.push({ name: m[1]!, from, fields: m[3] ? m[3].split('.') : [] });
    }
    return out;
  });
  const props: Replacement[] = [];
  for (const p of propagated) {
    const m = RESP_NAME.exec(p);
    if (m === null) continue;
    props.push({ name: p, from: Number(m[1]), fields: m[2] ? m[2].split('.') : [] });
  }
  const hasValues = needs.some((r) => r.length > 0) || props.length > 0;

  return async (req: ProxyRequest) => {
    const ac = req.scope.child();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new DeadlineError();
        ac.cancel(err);
        reject(err);
      }, mergeMs);
    });
    deadline.catch(() => {});
    const parts: (Obj | undefined)[] = new Array(n);
    const data: Obj = Object.create(null);
    const errors: Error[] = [];
    let complete = true;
    let extra: Record<string, string> | null = req.extra === null ? null : Object.assign(Object.create(null), req.extra);
    try {
      for (let i = 0; i < n; i++) {
        if (hasValues && i > 0) {
          const fill = (r: Replacement) => {
            const part = parts[r.from];
            if (part === undefined) return;
            const v = r.fields.length === 0 ? part : lookup(part, r.fields);
            if (v === undefined) return;
            extra ??= Object.create(null) as Record<string, string>;
            setKey(extra, r.name, paramText(v));
          };
          for (const r of props) if (r.from < i) fill(r);
          for (const r of needs[i]!) fill(r);
        }
        const sub = req.derive(ac, extra);
        let r: ProxyResponse;
        try {
          r = await Promise.race([backends[i]!(sub), deadline]);
        } catch (err) {
          if (i === 0) throw err;
          errors.push(err as Error);
          complete = false;
          break;
        }
        mergeInto(data, r.data);
        if (r.errors !== null) errors.push(...r.errors);
        if (!r.isComplete) {
          complete = false;
          break;
        }
        parts[i] = r.data;
      }
    } finally {
      clearTimeout(timer);
      ac.detach();
    }
    return { data, isComplete: complete && errors.length === 0, errors: errors.length ? errors : null };
  };
}
