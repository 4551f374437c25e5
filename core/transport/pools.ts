/**
 * One undici Pool per backend origin, created at start-up from the service's transport keys
 * (KrakenD's `max_idle_connections_per_host`, `idle_connection_timeout`, ...). Redirect targets
 * on origins that no backend declared get a pool on first use.
 */
import { Pool } from 'undici';
import type { TransportOptions } from '../config/types.js';

/** Per-origin admission: connections + a bounded wait queue. */
export class OriginSlot {
  inflight = 0;
  constructor(
    readonly pool: Pool,
    readonly limit: number,
  ) {}
}

export class Pools {
  private readonly pools = new Map<string, Pool>();
  private readonly slots = new Map<string, OriginSlot>();
  private closed = false;

  constructor(
    private readonly opts: TransportOptions,
    /** Requests allowed to queue per origin beyond its connections. */
    private readonly maxQueue = 1024,
  ) {}

  /** The origin's pool and its admission counter. */
  slot(origin: string): OriginSlot {
    let s = this.slots.get(origin);
    if (s === undefined) {
      s = new OriginSlot(this.get(origin), this.opts.maxConnectionsPerHost + this.maxQueue);
      this.slots.set(origin, s);
    }
    return s;
  }

  get(origin: string): Pool {
    let p = this.pools.get(origin);
    if (p === undefined) {
      if (this.closed) throw new Error('the gateway is shutting down');
      p = new Pool(origin, {
        connections: this.opts.maxConnectionsPerHost,
        pipelining: 1,
        keepAliveTimeout: this.opts.disableKeepAlives ? 1 : this.opts.idleConnectionTimeoutMs || 60_000,
        keepAliveMaxTimeout: Math.max(600_000, this.opts.idleConnectionTimeoutMs),
        headersTimeout: this.opts.responseHeaderTimeoutMs || 300_000,
        bodyTimeout: 300_000,
        connectTimeout: this.opts.dialerTimeoutMs || 10_000,
      });
      this.pools.set(origin, p);
    }
    return p;
  }

  origins(): string[] {
    return [...this.pools.keys()];
  }

  /** Graceful: lets in-flight requests finish, then closes sockets. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.pools.values()].map((p) => p.close()));
  }

  async destroy(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.pools.values()].map((p) => p.destroy()));
  }
}
