/**
 * Builds a gateway's traffic controls from the config once, at start-up: the rate limits of the
 * service and of each endpoint (stages), the proxy limits of backends, and the Redis connections
 * they use. Which limiter backs a bucket (limiter.ts): local with one worker, leases from the
 * supervisor with several, leases from Redis for the `…/redis` namespaces.
 */
import type { BackendConfig, EndpointConfig, ServiceConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { LocalLimiter, LeasedLimiter, type Authority, type Limiter } from './limiter.js';
import {
  compileRouterLimit, parseProxyLimit, parseRouterLimit, PROXY_NS, ROUTER_NS, ROUTER_REDIS_NS, SERVICE_NS, SERVICE_REDIS_NS,
  type LimiterFactory, type RouterLimit, type RouterLimitConfig,
} from './ratelimit.js';
import { parseRedisPools, RedisAuthority, RedisConnection, REDIS_NS } from './redis.js';

export interface TrafficOptions {
  /** The supervisor's token authority when the instance runs several workers; null: buckets are local. */
  readonly shared: Authority | null;
  /** Workers of this instance (sizes the lease batches). */
  readonly workers: number;
}

export interface Traffic {
  /** Config warnings found while building (also logged), for `gw check` to print. */
  readonly warnings: readonly string[];
  /** The rate-limit stages of an endpoint, outer first: service limits, then the endpoint's. */
  routerLimits(ep: EndpointConfig): RouterLimit[];
  /** The backend's `qos/ratelimit/proxy` limiter, or null. */
  proxyLimiter(ep: EndpointConfig, b: BackendConfig): Limiter | null;
  /** Opens the Redis connections (at listen; `gw check` never does). */
  start(): void;
  close(): void;
}

export function buildTraffic(cfg: ServiceConfig, opts: TrafficOptions, logger: Logger): Traffic {
  const warnings: string[] = [];
  const pools = parseRedisPools(cfg.extraConfig[REDIS_NS], warnings);
  const connections = new Map<string, RedisConnection>();
  const authorities = new Map<string, RedisAuthority>();
  const limiters: Limiter[] = [];
  const redisAuthority = (name: string, failOpen: boolean, where: string): Authority => {
    const pool = pools.get(name);
    if (pool === undefined) {
      const known = [...pools.keys()];
      throw new Error(`${where}: connection_name ${JSON.stringify(name)} is not a pool of the service's "${REDIS_NS}" connection_pools (${known.length > 0 ? known.join(', ') : 'none is defined'})`);
    }
    const id = `${name}\0${failOpen}`;
    let a = authorities.get(id);
    if (a === undefined) {
      let c = connections.get(name);
      if (c === undefined) {
        c = new RedisConnection(pool, logger);
        connections.set(name, c);
      }
      a = new RedisAuthority(c, failOpen, opts.workers);
      authorities.set(id, a);
    }
    return a;
  };
  const factory = (where: string): LimiterFactory => ({
    make(spec, redis, cleanupMs) {
      let l: Limiter;
      if (redis !== null) l = new LeasedLimiter(spec, redisAuthority(redis.connection, redis.failOpen, where));
      else if (opts.shared !== null) l = new LeasedLimiter(spec, opts.shared);
      else l = new LocalLimiter(spec, cleanupMs);
      limiters.push(l);
      return l;
    },
  });

  // Service limits: one set of buckets for every endpoint; a `param` client key is found per endpoint.
  const service: { c: RouterLimitConfig; shared: RouterLimit }[] = [];
  for (const ns of [SERVICE_NS, SERVICE_REDIS_NS]) {
    const c = parseRouterLimit(cfg.extraConfig[ns], ns, 'extra_config', warnings);
    if (c === null) continue;
    service.push({ c, shared: compileRouterLimit(c, `service:${ns}`, null, `[SERVICE: ${ns}]`, factory(`extra_config: "${ns}"`), logger) });
  }
  for (const w of warnings) logger.warn(`[SERVICE: Config] ${w}`);

  return {
    warnings,
    routerLimits(ep) {
      const out: RouterLimit[] = [];
      for (const { c, shared } of service) {
        // strategy param: this endpoint's index of it (-1: no such param, so every request has an
        // empty key and gets 429, as KrakenD's c.Param of a missing name).
        out.push(c.strategy === 'param' ? { ...shared, param: ep.params.indexOf(c.key) } : shared);
      }
      const epWarnings: string[] = [];
      for (const ns of [ROUTER_NS, ROUTER_REDIS_NS]) {
        const where = `endpoints ${ep.method} ${ep.path}`;
        const c = parseRouterLimit(ep.extraConfig[ns], ns, where, epWarnings);
        if (c === null) continue;
        out.push(compileRouterLimit(c, `router:${ep.method} ${ep.path}:${ns}`, ep.params, `[ENDPOINT: ${ep.path}]`, factory(`${where}: "${ns}"`), logger));
      }
      for (const w of epWarnings) logger.warn(`[SERVICE: Config] ${w}`);
      warnings.push(...epWarnings);
      return out;
    },
    proxyLimiter(ep, b) {
      const where = `endpoints ${ep.method} ${ep.path}, backend ${b.index} (${b.urlPattern})`;
      const w: string[] = [];
      const c = parseProxyLimit(b.extraConfig[PROXY_NS], where, w);
      for (const m of w) logger.warn(`[SERVICE: Config] ${m}`);
      warnings.push(...w);
      if (c === null) return null;
      logger.debug(`[BACKEND: ${b.urlPattern}][Ratelimit] Enabling the rate limiter`);
      return factory(where).make(
        { id: `proxy:${ep.method} ${ep.path}:${b.index}`, rate: c.maxRate, everyMs: c.everyMs, capacity: c.capacity },
        null,
        60_000,
      );
    },
    start() {
      for (const c of connections.values()) c.start();
    },
    close() {
      for (const l of limiters) l.close();
      for (const c of connections.values()) c.close();
    },
  };
}
