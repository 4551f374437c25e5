/**
 * The worker side of the supervisor's token authority (core/cluster.ts holds the buckets): lease
 * requests and give-backs go over the IPC channel; grants come back as `grant` messages.
 */
import type { FromWorker } from '../ipc.js';
import type { Authority, LimitSpec } from './limiter.js';

/** A lease the supervisor has not answered within this long is given up (the authority counts as unavailable). */
const ANSWER_MS = 1000;

export class SupervisorAuthority implements Authority {
  private seq = 0;
  private readonly pending = new Map<number, { done: (n: number, retryMs: number) => void; at: number }>();
  private timer: NodeJS.Timeout | null = null;
  /** The supervisor only goes away with the whole instance (the worker then drains): let requests through meanwhile. */
  readonly failOpen = true;

  constructor(
    readonly sharers: number,
    private readonly send: (m: FromWorker) => void,
  ) {}

  lease(spec: LimitSpec, key: string, want: number, done: (n: number, retryMs: number) => void): void {
    const seq = ++this.seq;
    this.pending.set(seq, { done, at: Date.now() });
    this.watch();
    this.send({ type: 'lease', seq, spec, key, want });
  }

  giveBack(spec: LimitSpec, key: string, n: number): void {
    this.send({ type: 'giveback', spec, key, n });
  }

  /** A `grant` message from the supervisor. */
  granted(seq: number, n: number, retryMs: number): void {
    const p = this.pending.get(seq);
    if (p === undefined) return;
    this.pending.delete(seq);
    p.done(n, retryMs);
  }

  private watch(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => {
      const old = Date.now() - ANSWER_MS;
      for (const [seq, p] of this.pending) {
        if (p.at > old) break; // insertion order = age order
        this.pending.delete(seq);
        p.done(-1, 0);
      }
      if (this.pending.size === 0 && this.timer !== null) {
        clearInterval(this.timer);
        this.timer = null;
      }
    }, ANSWER_MS / 2);
    this.timer.unref();
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    for (const p of this.pending.values()) p.done(-1, 0);
    this.pending.clear();
  }
}
