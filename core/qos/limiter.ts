/**
 * Rate limiters as the request path sees them: `take(key)` answers ALLOW or DENY at once, or
 * WAIT (only when tokens must be fetched from another process): the caller then hands a callback
 * to `wait(key, cb)` at once, so the sync paths allocate nothing.
 *
 * - `LocalLimiter`: the buckets live in this process. Exact when the instance has one worker.
 * - `LeasedLimiter`: the buckets live in an `Authority` (the supervisor, shared by every worker of
 *   the instance; or Redis, shared by instances). A worker leases a small batch of tokens per key
 *   and spends them locally, so the cross-process round trip happens once per batch, not per
 *   request; a refusal is remembered until the authority says a token will be back, so a client
 *   over its limit is refused locally too. Leased tokens not spent within LEASE_TTL_MS go back, so
 *   a worker that stops receiving a key's traffic does not sit on its share. Tokens only ever come
 *   from the authority's bucket: N workers can never let N× the rate through.
 */
import { TokenBucket } from './bucket.js';

export const DENY = 0;
export const ALLOW = 1;
export const WAIT = 2;
export type Verdict = typeof DENY | typeof ALLOW | typeof WAIT;

export interface LimitSpec {
  /** Stable across workers and instances: names the bucket family (`router:/users/{id}:client`). */
  readonly id: string;
  /** Tokens per `everyMs`. */
  readonly rate: number;
  readonly everyMs: number;
  readonly capacity: number;
}

export interface Limiter {
  readonly spec: LimitSpec;
  /** ALLOW / DENY now, or WAIT: call `wait(key, cb)` right away (same tick). */
  take(key: string): Verdict;
  /** After `take` said WAIT: `cb` is called exactly once, later. */
  wait(key: string, cb: (ok: boolean) => void): void;
  /** Stops its sweeps (gateway shutdown). */
  close(): void;
}

/** Where leased tokens come from. `done(n, retryMs)`: n tokens granted (0: none, retry in retryMs); n < 0: unavailable. */
export interface Authority {
  /** How many processes draw from it (sizes the batches). */
  readonly sharers: number;
  lease(spec: LimitSpec, key: string, want: number, done: (n: number, retryMs: number) => void): void;
  giveBack(spec: LimitSpec, key: string, n: number): void;
  /** What to do while it is unavailable: true = allow (fail open). */
  readonly failOpen: boolean;
  close(): void;
}

/** Unspent leased tokens go back after this long. */
export const LEASE_TTL_MS = 200;
/** How long an unavailable authority is not asked again (its policy applies meanwhile). */
const UNAVAILABLE_MS = 1000;
/** Past this many keys a limiter sweeps at once (a full bucket or an idle lease is dropped losslessly). */
const MAX_KEYS = 1_000_000;

/** Sweeps every limiter of this process on one timer (unref'd). */
class Sweeper {
  private readonly items = new Set<{ sweep(now: number): void }>();
  private timer: NodeJS.Timeout | null = null;

  add(item: { sweep(now: number): void }): void {
    this.items.add(item);
    if (this.timer === null) {
      this.timer = setInterval(() => {
        const now = Date.now();
        for (const i of this.items) i.sweep(now);
      }, LEASE_TTL_MS);
      this.timer.unref();
    }
  }

  remove(item: { sweep(now: number): void }): void {
    this.items.delete(item);
    if (this.items.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
}

const sweeper = new Sweeper();

export class LocalLimiter implements Limiter {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly perMs: number;
  private lastSweep = 0;

  constructor(
    readonly spec: LimitSpec,
    /** KrakenD's cleanup_period: how often full buckets are dropped. */
    private readonly cleanupMs = 60_000,
  ) {
    this.perMs = spec.rate / spec.everyMs;
    sweeper.add(this);
  }

  take(key: string): Verdict {
    const now = Date.now();
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= MAX_KEYS) this.sweep(now, true);
      b = new TokenBucket(this.perMs, this.spec.capacity, now);
      this.buckets.set(key, b);
    }
    return b.take(1, now) === 1 ? ALLOW : DENY;
  }

  wait(_key: string, cb: (ok: boolean) => void): void {
    cb(false); // never asked: take() never says WAIT here
  }

  sweep(now: number, force = false): void {
    if (!force && now - this.lastSweep < this.cleanupMs) return;
    this.lastSweep = now;
    for (const [k, b] of this.buckets) if (b.full(now)) this.buckets.delete(k);
  }

  close(): void {
    sweeper.remove(this);
  }
}

class Lease {
  tokens = 0;
  expires = 0;
  deniedUntil = 0;
  waiting: ((ok: boolean) => void)[] | null = null;
}

export class LeasedLimiter implements Limiter {
  private readonly leases = new Map<string, Lease>();
  private readonly batch: number;
  /** While the authority is unavailable: until when its policy applies without asking. */
  private downUntil = 0;

  constructor(
    readonly spec: LimitSpec,
    private readonly authority: Authority,
  ) {
    // Small enough that the tokens parked in the other workers' leases stay a small share of the
    // bucket, large enough that a busy key asks rarely: ≤ 1/4 of the capacity over the sharers,
    // ≤ what the rate refills in one lease period.
    const byCap = Math.floor(spec.capacity / (4 * Math.max(1, authority.sharers)));
    const byRate = Math.ceil((spec.rate / spec.everyMs) * LEASE_TTL_MS);
    this.batch = Math.max(1, Math.min(byCap, byRate));
    sweeper.add(this);
  }

  take(key: string): Verdict {
    const now = Date.now();
    let l = this.leases.get(key);
    if (l === undefined) {
      if (this.leases.size >= MAX_KEYS) this.sweep(now);
      l = new Lease();
      this.leases.set(key, l);
    }
    if (l.tokens > 0) {
      if (now < l.expires) {
        l.tokens--;
        return ALLOW;
      }
      this.authority.giveBack(this.spec, key, l.tokens);
      l.tokens = 0;
    }
    if (now < l.deniedUntil) return DENY;
    if (now < this.downUntil) return this.authority.failOpen ? ALLOW : DENY;
    if (l.waiting === null) {
      l.waiting = [];
      this.ask(key, l, this.batch);
    }
    return WAIT;
  }

  wait(key: string, cb: (ok: boolean) => void): void {
    const w = this.leases.get(key)?.waiting;
    if (w == null) cb(false);
    else w.push(cb);
  }

  private ask(key: string, l: Lease, want: number): void {
    // An answer in the same tick would come before the caller's wait(): deferred.
    let sync = true;
    this.authority.lease(this.spec, key, want, (n, retryMs) => {
      if (sync) queueMicrotask(() => this.granted(key, l, want, n, retryMs));
      else this.granted(key, l, want, n, retryMs);
    });
    sync = false;
  }

  private granted(key: string, l: Lease, want: number, n: number, retryMs: number): void {
    const now = Date.now();
    const waiting = l.waiting ?? [];
    l.waiting = null;
    if (n < 0) {
      this.downUntil = now + UNAVAILABLE_MS;
      const ok = this.authority.failOpen;
      for (const cb of waiting) cb(ok);
      return;
    }
    l.tokens += n;
    l.expires = now + LEASE_TTL_MS;
    let i = 0;
    for (; i < waiting.length && l.tokens > 0; i++) {
      l.tokens--;
      waiting[i]!(true);
    }
    if (i === waiting.length) return;
    if (n === want) {
      // The authority had more: ask again for those still waiting.
      l.waiting = waiting.slice(i);
      this.ask(key, l, Math.max(this.batch, l.waiting.length));
      return;
    }
    l.deniedUntil = now + Math.max(1, retryMs);
    for (; i < waiting.length; i++) waiting[i]!(false);
  }

  sweep(now: number): void {
    for (const [k, l] of this.leases) {
      if (l.waiting !== null) continue;
      if (l.tokens > 0) {
        if (now < l.expires) continue;
        this.authority.giveBack(this.spec, k, l.tokens);
        l.tokens = 0;
      }
      if (now >= l.deniedUntil) this.leases.delete(k);
    }
  }

  close(): void {
    sweeper.remove(this);
  }
}

/**
 * The authority side of leases, in one process: the supervisor's, for every worker of the instance
 * (core/cluster.ts feeds it the workers' messages).
 */
export class BucketAuthority {
  private readonly families = new Map<string, { spec: LimitSpec; buckets: Map<string, TokenBucket> }>();
  private lastSweep = 0;

  private bucket(spec: LimitSpec, key: string, now: number): TokenBucket {
    let f = this.families.get(spec.id);
    if (f === undefined || f.spec.rate !== spec.rate || f.spec.capacity !== spec.capacity || f.spec.everyMs !== spec.everyMs) {
      f = { spec, buckets: new Map() };
      this.families.set(spec.id, f);
    }
    let b = f.buckets.get(key);
    if (b === undefined) {
      b = new TokenBucket(spec.rate / spec.everyMs, spec.capacity, now);
      f.buckets.set(key, b);
    }
    return b;
  }

  lease(spec: LimitSpec, key: string, want: number): { n: number; retryMs: number } {
    const now = Date.now();
    this.maybeSweep(now);
    const b = this.bucket(spec, key, now);
    const n = b.take(Math.max(1, Math.floor(want)), now);
    return { n, retryMs: n === 0 ? b.waitMs(now) : 0 };
  }

  giveBack(spec: LimitSpec, key: string, n: number): void {
    if (!(n > 0)) return;
    const now = Date.now();
    this.bucket(spec, key, now).give(n, now);
  }

  private maybeSweep(now: number): void {
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const f of this.families.values()) for (const [k, b] of f.buckets) if (b.full(now)) f.buckets.delete(k);
  }
}
