/**
 * KrakenD's rate limits (krakend-ratelimit; Enterprise's service and Redis variants):
 *  - `qos/ratelimit/router` (endpoint) and `qos/ratelimit/service` (service, every endpoint):
 *    `max_rate` per `every` over one bucket → 503; `client_max_rate` per client (`strategy` `ip`,
 *    `header` or `param` with `key`) → 429; the client bucket is checked first. Empty body.
 *  - `qos/ratelimit/router/redis` and `qos/ratelimit/service/redis`: the same, the buckets in the
 *    Redis of `connection_name` (service `redis.connection_pools`), so several instances share
 *    them; `on_failure_allow` decides what happens while Redis is unreachable (default: refuse).
 *  - `qos/ratelimit/proxy` (backend): over `max_rate` that backend fails with `rate limit exceded`.
 * Buckets are exact for the whole instance whatever its worker count (limiter.ts).
 */
import { parseDuration } from '../config/duration.js';
import { isIP } from 'node:net';
import type { Logger } from '../log.js';
import type { Limiter, LimitSpec } from './limiter.js';

export const ROUTER_NS = 'qos/ratelimit/router';
export const SERVICE_NS = 'qos/ratelimit/service';
export const ROUTER_REDIS_NS = 'qos/ratelimit/router/redis';
export const SERVICE_REDIS_NS = 'qos/ratelimit/service/redis';
export const PROXY_NS = 'qos/ratelimit/proxy';
/** KrakenD's (sic). */
export const LIMITED = 'rate limit exceded';

/** A refusal by a rate limit: 503 for the shared bucket, 429 for a client's. */
export class RateLimitError extends Error {
  constructor(readonly status: 429 | 503) {
    super(LIMITED);
    this.name = 'RateLimitError';
  }
}

export type Strategy = 'ip' | 'header' | 'param';

export interface RouterLimitConfig {
  readonly ns: string;
  readonly maxRate: number;
  readonly capacity: number;
  readonly clientMaxRate: number;
  readonly clientCapacity: number;
  /** null: no client limit (none configured, or an unknown strategy, as KrakenD skips it). */
  readonly strategy: Strategy | null;
  readonly key: string;
  readonly everyMs: number;
  readonly cleanupMs: number;
  /** Redis variants: the connection and the failure policy. */
  readonly redis: { readonly connection: string; readonly failOpen: boolean } | null;
}

const ROUTER_KEYS = new Set(['max_rate', 'capacity', 'client_max_rate', 'client_capacity', 'strategy', 'key', 'every', 'num_shards', 'cleanup_period', 'cleanup_threads']);
const REDIS_KEYS = new Set(['max_rate', 'capacity', 'client_max_rate', 'client_capacity', 'strategy', 'key', 'every', 'connection_name', 'connection_pool', 'on_failure_allow']);
const PROXY_KEYS = new Set(['max_rate', 'capacity', 'every']);

function object(raw: unknown, where: string, ns: string, known: Set<string>, warnings: string[]): Record<string, unknown> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where}: "${ns}" must be an object`);
  for (const k of Object.keys(raw)) {
    if (!known.has(k) && !/^[@$_#]/.test(k)) warnings.push(`${where}: "${ns}" has an unknown key "${k}" (ignored)`);
  }
  return raw as Record<string, unknown>;
}

function rate(c: Record<string, unknown>, k: string, where: string, ns: string): number {
  const v = c[k];
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`${where}: "${ns}" ${k} must be a non-negative number, got ${JSON.stringify(v)}`);
  return v;
}

/** KrakenD: the capacity defaults to the rate (at least 1); an explicit one is a whole number ≥ 1. */
function capacity(c: Record<string, unknown>, k: string, r: number, where: string, ns: string): number {
  const v = c[k];
  if (v === undefined || v === 0) return Math.max(1, Math.floor(r));
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new Error(`${where}: "${ns}" ${k} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

function every(c: Record<string, unknown>, where: string, ns: string, minMs: number): number {
  const v = c.every;
  if (v === undefined) return 1000;
  if (typeof v !== 'string') throw new Error(`${where}: "${ns}" every must be a duration string such as "1s" or "1m", got ${JSON.stringify(v)}`);
  const ms = parseDuration(v);
  // Unparsable (0): 1s; the router limits also raise anything under 1s to 1s (KrakenD).
  return ms <= 0 ? 1000 : Math.max(ms, minMs);
}

/** Parses an endpoint's or the service's router limit (plain or Redis); null when absent or it limits nothing. */
export function parseRouterLimit(raw: unknown, ns: string, where: string, warnings: string[]): RouterLimitConfig | null {
  if (raw === undefined) return null;
  const isRedis = ns.endsWith('/redis');
  const c = object(raw, where, ns, isRedis ? REDIS_KEYS : ROUTER_KEYS, warnings);
  const maxRate = rate(c, 'max_rate', where, ns);
  const clientMaxRate = rate(c, 'client_max_rate', where, ns);
  let strategy: Strategy | null = null;
  let key = '';
  if (c.key !== undefined) {
    if (typeof c.key !== 'string') throw new Error(`${where}: "${ns}" key must be a string`);
    key = c.key;
  }
  if (clientMaxRate > 0) {
    const s = c.strategy === undefined ? '' : String(c.strategy).toLowerCase();
    if (s === 'ip' || s === 'header' || s === 'param') strategy = s;
    else warnings.push(`${where}: "${ns}" Unknown strategy ${JSON.stringify(c.strategy ?? '')}: the client limit (client_max_rate) is skipped, as KrakenD does`);
    if ((strategy === 'header' || strategy === 'param') && key === '') throw new Error(`${where}: "${ns}" strategy "${strategy}" needs a "key" (the ${strategy} naming the client)`);
  }
  let redis: RouterLimitConfig['redis'] = null;
  if (isRedis) {
    const conn = c.connection_name ?? c.connection_pool;
    if (typeof conn !== 'string' || conn === '') throw new Error(`${where}: "${ns}" needs "connection_name" (a pool of the service's "redis" connection_pools)`);
    if (c.on_failure_allow !== undefined && typeof c.on_failure_allow !== 'boolean') throw new Error(`${where}: "${ns}" on_failure_allow must be a boolean`);
    redis = { connection: conn, failOpen: c.on_failure_allow === true };
  }
  const cleanup = typeof c.cleanup_period === 'string' ? parseDuration(c.cleanup_period) : 0;
  if (maxRate <= 0 && (clientMaxRate <= 0 || strategy === null)) return null;
  return {
    ns,
    maxRate,
    capacity: capacity(c, 'capacity', maxRate, where, ns),
    clientMaxRate,
    // KrakenD's docs: defaults to client_max_rate. (Its code tests max_rate there, so a config
    // without max_rate gets a client burst of 1; gw follows the documented default.)
    clientCapacity: capacity(c, 'client_capacity', clientMaxRate, where, ns),
    strategy,
    key,
    everyMs: every(c, where, ns, 1000),
    cleanupMs: cleanup >= 1000 ? cleanup : 60_000,
    redis,
  };
}

export interface ProxyLimitConfig {
  readonly maxRate: number;
  readonly capacity: number;
  readonly everyMs: number;
}

/** `qos/ratelimit/proxy`: null when absent or max_rate ≤ 0 (KrakenD: disabled). `every` has no minimum here. */
export function parseProxyLimit(raw: unknown, where: string, warnings: string[]): ProxyLimitConfig | null {
  if (raw === undefined) return null;
  const c = object(raw, where, PROXY_NS, PROXY_KEYS, warnings);
  const maxRate = rate(c, 'max_rate', where, PROXY_NS);
  if (maxRate <= 0) return null;
  return { maxRate, capacity: capacity(c, 'capacity', maxRate, where, PROXY_NS), everyMs: every(c, where, PROXY_NS, 1) };
}

/** Makes the limiters (traffic.ts): local buckets with one worker, leases from the supervisor or Redis otherwise. */
export interface LimiterFactory {
  make(spec: LimitSpec, redis: RouterLimitConfig['redis'], cleanupMs: number): Limiter;
}

/** A router limit, compiled: what the stage runs. */
export interface RouterLimit {
  /** A service-level limit (runs before every other stage). */
  readonly service: boolean;
  readonly global: Limiter | null;
  readonly client: Limiter | null;
  readonly strategy: Strategy | null;
  /** Header name (lowercase) for `header` / `ip` with a key; param index for `param`. */
  readonly header: string;
  readonly param: number;
}

/** `params`: the endpoint's (a `param` key must be one of them); null for the service's limits (resolved per endpoint). */
export function compileRouterLimit(c: RouterLimitConfig, id: string, params: readonly string[] | null, where: string, make: LimiterFactory, logger: Logger): RouterLimit {
  const global = c.maxRate > 0 ? make.make({ id: `${id}:max`, rate: c.maxRate, everyMs: c.everyMs, capacity: c.capacity }, c.redis, c.cleanupMs) : null;
  const client = c.strategy !== null && c.clientMaxRate > 0
    ? make.make({ id: `${id}:client`, rate: c.clientMaxRate, everyMs: c.everyMs, capacity: c.clientCapacity }, c.redis, c.cleanupMs)
    : null;
  let param = -1;
  if (c.strategy === 'param' && params !== null) {
    param = params.indexOf(c.key);
    if (param < 0) throw new Error(`${where}: "${c.ns}" strategy "param" names "${c.key}", which is not a parameter of this endpoint (${params.length > 0 ? params.join(', ') : 'it has none'})`);
  }
  if (global !== null) logger.debug(`${where}[Ratelimit] Rate limit enabled. MaxRate: ${c.maxRate}, Capacity: ${c.capacity}`);
  if (client !== null) logger.debug(`${where}[Ratelimit] Rate limit enabled. Strategy: ${c.strategy} (key: ${c.key}), MaxRate: ${c.clientMaxRate}, Capacity: ${c.clientCapacity}`);
  return { service: params === null, global, client, strategy: c.strategy, header: c.key.toLowerCase(), param };
}

/**
 * The client key for the `ip` strategy: the first value of the `key` header when it is an IP
 * (`:port` stripped), else the connection's address.
 */
export function ipKey(header: string, remote: string): string {
  if (header === '') return remote;
  const comma = header.indexOf(',');
  let v = (comma < 0 ? header : header.slice(0, comma)).trim();
  if (isIP(v) !== 0) return v;
  // host:port or [v6]:port
  if (v.startsWith('[')) {
    const end = v.indexOf(']');
    if (end > 0) v = v.slice(1, end);
  } else {
    const colon = v.lastIndexOf(':');
    if (colon > 0 && v.indexOf(':') === colon) v = v.slice(0, colon);
  }
  return isIP(v) !== 0 ? v : remote;
}

