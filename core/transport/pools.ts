/**
 * One undici Pool per backend origin, created at start-up from the service's transport keys
 * (KrakenD's `max_idle_connections_per_host`, `idle_connection_timeout`, ...). Redirect targets
 * on origins that no backend declared get a pool on first use.
 */
import { Pool } from 'undici';
import type { TransportOptions } from '../config/types.js';

export class Pools {
  private readonly pools = new Map<string, Pool>();
  private closed = false;

  constructor(private readonly opts: TransportOptions) {}

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
