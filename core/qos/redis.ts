/**
 * Rate-limit buckets in Redis, shared by every gw instance (and every worker) that points at it:
 * KrakenD's service-level `redis` namespace (`connection_pools`) and the `…/redis` rate-limit
 * namespaces. A lease is one atomic Lua call (refill from Redis's own clock, take up to `want`
 * tokens, say when one is back), so instances never disagree on time and never race.
 *
 * While Redis is unreachable the limit's `on_failure_allow` applies (fail open or closed); the
 * change of state is logged once each way, never per request. Commands are not queued while the
 * connection is down (a request never waits for a reconnect).
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../log.js';
import { parseDuration } from '../config/duration.js';
import type { Authority, LimitSpec } from './limiter.js';

export const REDIS_NS = 'redis';

/** Refill, give back, take: KEYS[1] the bucket; ARGV rate per ms, capacity, want, give. Returns {granted, retryMs}. */
const BUCKET_LUA = `
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local give = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'tk', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then tokens = cap; ts = now end
if now > ts then tokens = math.min(cap, tokens + (now - ts) * rate); ts = now end
tokens = math.min(cap, tokens + give)
local n = math.floor(tokens)
if want < n then n = want end
if n < 0 then n = 0 end
tokens = tokens - n
redis.call('HSET', KEYS[1], 'tk', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) / rate) + 1000)
local retry = 0
if n == 0 and want > 0 then retry = math.ceil((1 - tokens) / rate) end
return {n, retry}
`;

export interface PoolConfig {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly db: number;
  readonly username?: string;
  readonly password?: string;
  readonly clientName?: string;
  readonly dialTimeoutMs: number;
}

/** The service's `redis.connection_pools`, by name. `clusters` are not supported (warned). */
export function parseRedisPools(raw: unknown, warnings: string[]): Map<string, PoolConfig> {
  const out = new Map<string, PoolConfig>();
  if (raw === undefined) return out;
  const where = `extra_config: "${REDIS_NS}"`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where} must be an object`);
  const c = raw as Record<string, unknown>;
  if (Array.isArray(c.clusters) && c.clusters.length > 0) warnings.push(`${where} clusters are not supported by gw (connection_pools are); a limit naming one fails the start`);
  const pools = c.connection_pools ?? [];
  if (!Array.isArray(pools)) throw new Error(`${where} connection_pools must be a list`);
  pools.forEach((p: unknown, i) => {
    const at = `${where} connection_pools[${i}]`;
    if (typeof p !== 'object' || p === null) throw new Error(`${at} must be an object`);
    const o = p as Record<string, unknown>;
    if (typeof o.name !== 'string' || o.name === '') throw new Error(`${at} needs a "name"`);
    if (typeof o.address !== 'string' || o.address === '') throw new Error(`${at} (${o.name}) needs an "address" (host:port)`);
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(o.address);
    if (m === null) throw new Error(`${at} (${o.name}) address ${JSON.stringify(o.address)} is not host:port`);
    const db = o.db ?? 0;
    if (typeof db !== 'number' || !Number.isInteger(db) || db < 0) throw new Error(`${at} (${o.name}) db must be a non-negative integer`);
    for (const k of ['user_name', 'password', 'client_name'] as const) {
      if (o[k] !== undefined && typeof o[k] !== 'string') throw new Error(`${at} (${o.name}) ${k} must be a string`);
    }
    if (out.has(o.name)) throw new Error(`${at}: a pool named ${JSON.stringify(o.name)} is already defined`);
    out.set(o.name, {
      name: o.name,
      host: m[1] ?? m[2]!,
      port: Number(m[3]),
      db,
      username: o.user_name as string | undefined,
      password: o.password as string | undefined,
      clientName: o.client_name as string | undefined,
      dialTimeoutMs: parseDuration(o.dial_timeout) || 5000,
    });
  });
  return out;
}

type BucketClient = Redis & { gwBucket(key: string, perMs: number, cap: number, want: number, give: number): Promise<[number, number]> };

/** One connection per pool and process, shared by the limits that name it. */
export class RedisConnection {
  readonly client: BucketClient;
  /** null until the first answer or failure; then whether Redis answers. */
  private up: boolean | null = null;

  constructor(
    readonly pool: PoolConfig,
    private readonly logger: Logger,
  ) {
    const opts: RedisOptions = {
      host: pool.host,
      port: pool.port,
      db: pool.db,
      username: pool.username,
      password: pool.password,
      connectionName: pool.clientName,
      connectTimeout: pool.dialTimeoutMs,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times) => Math.min(50 * times, 1000),
      lazyConnect: true, // connected by start(): `gw check` builds the gateway and never connects
    };
    this.client = new Redis(opts) as BucketClient;
    this.client.defineCommand('gwBucket', { numberOfKeys: 1, lua: BUCKET_LUA });
    this.client.on('error', () => this.state(false));
    this.client.on('ready', () => this.state(true));
  }

  /** Calls `cb(true)` once the first connection is made, `cb(false)` if it fails; at once after that. */
  whenFirstKnown(cb: (ready: boolean) => void): void {
    if (this.up !== null) cb(this.ready);
    else (this.first ??= []).push(cb);
  }

  private first: ((ready: boolean) => void)[] | null = null;

  /** Connects (once); failures are reported by the error event and retried by ioredis. */
  start(): void {
    if (this.client.status === 'wait') this.client.connect().catch(() => {});
  }

  get ready(): boolean {
    return this.client.status === 'ready';
  }

  /** Logs a change of state, once each way. */
  state(up: boolean, why?: string): void {
    if (this.up === up) return;
    const was = this.up;
    this.up = up;
    const first = this.first;
    this.first = null;
    if (first !== null) for (const cb of first) cb(up);
    const at = `${this.pool.host}:${this.pool.port}`;
    if (up) this.logger.info(`[SERVICE: Redis][${this.pool.name}] connected to ${at}${was === false ? ' again: rate limits use it again' : ''}`);
    else this.logger.error(`[SERVICE: Redis][${this.pool.name}] ${at} unreachable${why ? ` (${why})` : ''}: its rate limits apply their on_failure_allow policy until it is back`);
  }

  close(): void {
    this.client.disconnect();
  }
}

export class RedisAuthority implements Authority {
  constructor(
    private readonly conn: RedisConnection,
    readonly failOpen: boolean,
    /** Workers of this instance (other instances are unknown: batches stay small anyway). */
    readonly sharers: number,
  ) {}

  private key(spec: LimitSpec, key: string): string {
    return `gw:rl:${spec.id}:${key}`;
  }

  lease(spec: LimitSpec, key: string, want: number, done: (n: number, retryMs: number) => void): void {
    if (!this.conn.ready) {
      // The first connection may still be on its way (a request right after start): wait for it
      // (bounded by the dial timeout); afterwards a connection that is down is not waited for.
      this.conn.whenFirstKnown((ready) => (ready ? this.call(spec, key, want, done) : done(-1, 0)));
      return;
    }
    this.call(spec, key, want, done);
  }

  private call(spec: LimitSpec, key: string, want: number, done: (n: number, retryMs: number) => void): void {
    this.conn.client.gwBucket(this.key(spec, key), spec.rate / spec.everyMs, spec.capacity, want, 0).then(
      (r) => {
        this.conn.state(true);
        done(Number(r[0]), Number(r[1]));
      },
      (err: Error) => {
        this.conn.state(false, err.message);
        done(-1, 0);
      },
    );
  }

  giveBack(spec: LimitSpec, key: string, n: number): void {
    if (!(n > 0) || !this.conn.ready) return;
    this.conn.client.gwBucket(this.key(spec, key), spec.rate / spec.everyMs, spec.capacity, 0, n).catch((err: Error) => this.conn.state(false, err.message));
  }

  close(): void {}
}
