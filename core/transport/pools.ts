/**
 * One undici Pool per backend origin, created at start-up from the service's transport keys
 * (KrakenD's `max_idle_connections_per_host`, `idle_connection_timeout`, ...).
 *
 * Origins a backend declares (`get()`, called at start-up) keep their pool for the life of the
 * gateway. Redirect targets on origins nobody declared get a pool on first use (`slot()`), kept in
 * a small LRU: past {@link EPHEMERAL_CAP} origins the least recently used pool is closed, and a pool
 * whose last connection closed (idle timeout, reset, refused) with nothing in flight is dropped at
 * once. A backend redirecting to ever new origins thus costs a bounded number of pools and sockets.
 */
import { Pool } from 'undici';
import type { TransportOptions } from '../config/types.js';

/** Pools kept for origins no backend declared (redirect targets). */
export const EPHEMERAL_CAP = 32;

/**
 * Per-origin admission: connections + a bounded wait queue. `inflight` counts the exchanges
 * undici still holds (running or queued), released only when undici is done with each.
 */
export class OriginSlot {
  inflight = 0;
  constructor(
    readonly pool: Pool,
    readonly limit: number,
  ) {}
}

export class Pools {
  /** Declared origins: never evicted. */
  private readonly declared = new Map<string, OriginSlot>();
  /** Undeclared origins, least recently used first (Map keeps insertion order). */
  private readonly ephemeral = new Map<string, OriginSlot>();
  /** Evicted pools still finishing their in-flight requests. */
  private readonly closing = new Set<Pool>();
  private closed = false;

  constructor(
    private readonly opts: TransportOptions,
    /** Requests allowed to queue per origin beyond its connections. */
    private readonly maxQueue = 1024,
  ) {}

  /** The origin's pool and its admission counter (an undeclared origin gets an evictable one). */
  slot(origin: string): OriginSlot {
    const d = this.declared.get(origin);
    if (d !== undefined) return d;
    let s = this.ephemeral.get(origin);
    if (s !== undefined) {
      // Most recently used goes last.
      this.ephemeral.delete(origin);
      this.ephemeral.set(origin, s);
      return s;
    }
    const pool = this.create(origin);
    s = new OriginSlot(pool, this.opts.maxConnectionsPerHost + this.maxQueue);
    const slot = s;
    const dropWhenIdle = () => {
      if (slot.inflight === 0 && pool.stats.connected === 0 && this.ephemeral.get(origin) === slot) this.evict(origin, slot);
    };
    pool.on('disconnect', dropWhenIdle);
    pool.on('connectionError', dropWhenIdle);
    this.ephemeral.set(origin, s);
    if (this.ephemeral.size > EPHEMERAL_CAP) {
      const [oldest, os] = this.ephemeral.entries().next().value as [string, OriginSlot];
      this.evict(oldest, os);
    }
    return s;
  }

  /** Declares a backend origin (start-up): its pool is kept for the life of the gateway. */
  get(origin: string): Pool {
    let s = this.declared.get(origin);
    if (s === undefined) {
      const e = this.ephemeral.get(origin);
      if (e !== undefined) this.ephemeral.delete(origin);
      s = e ?? new OriginSlot(this.create(origin), this.opts.maxConnectionsPerHost + this.maxQueue);
      this.declared.set(origin, s);
    }
    return s.pool;
  }

  private create(origin: string): Pool {
    if (this.closed) throw new Error('the gateway is shutting down');
    const idle = this.opts.disableKeepAlives ? 1 : this.opts.idleConnectionTimeoutMs || 60_000;
    return new Pool(origin, {
      connections: this.opts.maxConnectionsPerHost,
      pipelining: 1,
      // A backend's `Keep-Alive: timeout=N` hint may shorten the idle time, never lengthen it: Go's
      // IdleConnTimeout (KrakenD's idle_connection_timeout) ignores such hints.
      keepAliveTimeout: idle,
      keepAliveMaxTimeout: idle,
      headersTimeout: this.opts.responseHeaderTimeoutMs || 300_000,
      bodyTimeout: 300_000,
      connectTimeout: this.opts.dialerTimeoutMs || 10_000,
    });
  }

  /** Graceful: requests already dispatched on the pool finish, then its sockets close. */
  private evict(origin: string, s: OriginSlot): void {
    this.ephemeral.delete(origin);
    const pool = s.pool;
    this.closing.add(pool);
    pool.close().then(
      () => this.closing.delete(pool),
      () => this.closing.delete(pool),
    );
  }

  /** Declared origins. */
  origins(): string[] {
    return [...this.declared.keys()];
  }

  private all(): Pool[] {
    return [...this.declared.values(), ...this.ephemeral.values()].map((s) => s.pool).concat([...this.closing]);
  }

  /** Graceful: lets in-flight requests finish, then closes sockets. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(this.all().map((p) => p.close()));
  }

  async destroy(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(this.all().map((p) => p.destroy()));
  }
}
