/**
 * `qos/http-cache` (backend; KrakenD's krakend-httpcache): an in-memory HTTP cache of backend
 * answers, under the decoding and the streaming (no-op) paths alike — it wraps the backend
 * `Client`, so a hit never reaches the backend and a miss streams as before while its bytes are
 * kept. Freshness, Vary, no-store, private, Expires and revalidation follow RFC 9111 through
 * `http-cache-semantics` (CachePolicy).
 *
 *  - Only GET and HEAD answers are stored; the key is method + the backend URL as sent (so the
 *    forwarded query is part of it); one variant per key (a request that does not match the stored
 *    Vary fetches and replaces it, as KrakenD's httpcache). A successful unsafe request (POST, PUT,
 *    PATCH, DELETE) drops the GET and HEAD entries of its URL (RFC 9111 §4.4).
 *  - The cache is shared by every client of the gateway, so it follows the RFC's *shared cache*
 *    rules (CachePolicy `shared: true`): `private` answers, answers to requests with
 *    Authorization (unless `public`/`s-maxage`/`must-revalidate`) and answers with Set-Cookie are
 *    not stored; `s-maxage` wins over `max-age`. No heuristic freshness: an answer without
 *    max-age/s-maxage/Expires is stored only when it has a validator (ETag/Last-Modified), and is
 *    then revalidated (If-None-Match / If-Modified-Since; a 304 refreshes the entry and the stored
 *    body is served).
 *  - Requests that carry their own conditional or Range headers bypass the cache (their answer
 *    is the backend's to give).
 *  - Bounds: an LRU (`lru-cache`) of `max_items` entries and `max_size` bytes (body + headers).
 *    Without them: 1000 entries and 64 MiB — never unbounded (KrakenD's cache is; gw's is not on
 *    purpose: a busy gateway with an unbounded cache is a memory leak). With `max_size` alone the
 *    size bounds it. A body larger than min(max_size, 1 MiB) is never stored: it streams through
 *    untouched (gw stops keeping its bytes once it passes the bound, and skips it outright when
 *    the backend announces a larger Content-Length). Only a body that arrived whole is stored.
 *  - `shared: true`: one cache for every backend that sets it (process-wide, as KrakenD's
 *    package-level one; sized by the first such backend); otherwise one per backend. Each worker
 *    process has its own.
 *  - Hits carry `Age` (RFC 9111); no `X-From-Cache` (KrakenD's httpcache is built without MarkCachedResponses).
 */
import { Readable } from 'node:stream';
import CachePolicy from 'http-cache-semantics';
import { LRUCache } from 'lru-cache';
import type { BackendResponse, Headers } from '../plugin/types.js';
import { isUpstreamBody, UpstreamBody, type FlowControl } from '../transport/body.js';
import { RawResponse } from '../transport/client.js';
import type { OutboundRequest } from '../proxy/types.js';

export const CACHE_NS = 'qos/http-cache';

type Client = (r: OutboundRequest) => Promise<BackendResponse>;

export interface HttpCacheConfig {
  readonly shared: boolean;
  /** Entries; 0: bounded by size only. */
  readonly maxItems: number;
  /** Bytes (bodies and headers). */
  readonly maxSize: number;
}

/** Bounds when the config sets neither (KrakenD has none; an unbounded cache is a leak). */
export const DEFAULT_MAX_ITEMS = 1000;
export const DEFAULT_MAX_SIZE = 64 * 1024 * 1024;
/** Largest body stored: also what a streamed miss may hold in memory while it passes. */
export const MAX_ENTRY_BYTES = 1024 * 1024;
/** Bookkeeping counted per entry on top of its body and headers. */
const ENTRY_OVERHEAD = 256;

const KEYS = new Set(['shared', 'max_items', 'max_size']);

/**
 * Validates and reads `extra_config["qos/http-cache"]`; null when absent. `where` names the place
 * in start-up errors. Throws on a bad value.
 */
export function parseHttpCacheConfig(raw: unknown, where: string): HttpCacheConfig | null {
  if (raw === undefined) return null;
  const ns = `"${CACHE_NS}"`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where}: ${ns} must be an object`);
  const c = raw as Record<string, unknown>;
  for (const k of Object.keys(c)) {
    if (!KEYS.has(k) && !/^[@$_#]/.test(k)) throw new Error(`${where}: ${ns} has an unknown key "${k}" (known: ${[...KEYS].join(', ')})`);
  }
  const shared = c.shared ?? false;
  if (typeof shared !== 'boolean') throw new Error(`${where}: ${ns} shared must be a boolean, got ${JSON.stringify(shared)}`);
  const positive = (key: string, unit: string): number | null => {
    const v = c[key];
    if (v === undefined) return null;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      throw new Error(`${where}: ${ns} ${key} must be a positive integer (${unit}), got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const items = positive('max_items', 'entries');
  const size = positive('max_size', 'bytes');
  return {
    shared,
    maxItems: items ?? (size === null ? DEFAULT_MAX_ITEMS : 0),
    maxSize: size ?? DEFAULT_MAX_SIZE,
  };
}

interface Entry {
  policy: CachePolicy;
  readonly status: number;
  readonly body: Buffer;
  readonly size: number;
}

/** One LRU of entries (a backend's own, or the shared one). */
export class HttpCache {
  readonly lru: LRUCache<string, Entry>;
  /** Largest body kept. */
  readonly entryLimit: number;

  constructor(readonly config: HttpCacheConfig) {
    this.lru = new LRUCache<string, Entry>({
      ...(config.maxItems > 0 ? { max: config.maxItems } : {}),
      maxSize: config.maxSize,
      sizeCalculation: (e) => e.size,
    });
    this.entryLimit = Math.min(config.maxSize, MAX_ENTRY_BYTES);
  }
}

/** The cache of every `shared: true` backend (process-wide, as KrakenD's). */
let sharedCache: HttpCache | null = null;

/** The cache a backend with this config uses; `warn` hears about a shared cache sized otherwise. */
export function cacheFor(cfg: HttpCacheConfig, where: string, warn: (msg: string) => void): HttpCache {
  if (!cfg.shared) return new HttpCache(cfg);
  if (sharedCache === null) sharedCache = new HttpCache(cfg);
  else if (sharedCache.config.maxItems !== cfg.maxItems || sharedCache.config.maxSize !== cfg.maxSize) {
    const c = sharedCache.config;
    warn(`${where}: "${CACHE_NS}" is shared and the shared cache already exists with max_items ${c.maxItems || 'unbounded'} and max_size ${c.maxSize} (the first shared backend's); this backend's bounds are ignored`);
  }
  return sharedCache;
}

/** Policy options: a cache every client of the gateway shares; no heuristic freshness. */
const POLICY: CachePolicy.Options = { shared: true, cacheHeuristic: 0 };

/** Request headers that make the answer the backend's alone to give. */
const BYPASS = ['range', 'if-range', 'if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since'];

const UNSAFE: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * Wraps a backend client with `cache`. `copyHits`: each hit gets its own copy of the stored bytes
 * (when something downstream, a modifier plugin, could change the bytes it is given); otherwise a
 * hit's body stream hands out the stored Buffer, which gw only reads.
 */
export function cachedClient(client: Client, cache: HttpCache, copyHits: boolean): Client {
  const lru = cache.lru;
  const limit = cache.entryLimit;

  const hit = (e: Entry, headers: CachePolicy.Headers): BackendResponse => {
    const h = headers as Headers;
    const n = e.body.length;
    const body = new UpstreamBody(IDLE, n);
    if (n > 0) body.push(copyHits ? Buffer.from(e.body) : e.body);
    body.end();
    return { status: e.status, headers: h, body };
  };

  /** A backend answer: stored once its body arrived whole, when the policy allows. */
  const keep = (res: BackendResponse, req: CachePolicy.Request, key: string): BackendResponse => {
    const body = res.body;
    if (!isUpstreamBody(body) || body.length > limit) return res;
    const headers = policyHeaders(res.headers);
    if (headers['set-cookie'] !== undefined) return res;
    const policy = new CachePolicy(req, { status: res.status, headers }, POLICY);
    if (!policy.storable()) return res;
    if (policy.timeToLive() <= 0 && headers['etag'] === undefined && headers['last-modified'] === undefined) return res;
    let hsize = 0;
    for (const k in headers) hsize += k.length + String(headers[k]).length + 4;
    const status = res.status;
    const tee = teeBody(body, limit, (buf) => {
      lru.set(key, { policy, status, body: buf, size: buf.length + hsize + ENTRY_OVERHEAD });
    });
    return res instanceof RawResponse ? new RawResponse(status, res.raw, res.names, tee) : { status, headers: res.headers, body: tee };
  };

  const fetch = (out: OutboundRequest, req: CachePolicy.Request, key: string): Promise<BackendResponse> =>
    client(out).then((res) => keep(res, req, key));

  const revalidate = (out: OutboundRequest, e: Entry, req: CachePolicy.Request, key: string, cond: CachePolicy.Headers): Promise<BackendResponse> => {
    const h: Headers = { ...out.headers };
    if (cond['if-none-match'] !== undefined) h['If-None-Match'] = cond['if-none-match'] as string;
    if (cond['if-modified-since'] !== undefined) h['If-Modified-Since'] = cond['if-modified-since'] as string;
    return client(out.with(out.method, out.url, h, out.body)).then((res) => {
      if (res.status !== 304) return keep(res, req, key);
      discard(res.body);
      const { policy, modified } = e.policy.revalidatedPolicy(req, { status: 304, headers: policyHeaders(res.headers) });
      if (modified) {
        lru.delete(key);
        return fetch(out, req, key);
      }
      const fresh: Entry = { policy, status: e.status, body: e.body, size: e.size };
      lru.set(key, fresh);
      return hit(fresh, policy.responseHeaders());
    });
  };

  return (out) => {
    const method = out.method;
    if (method !== 'GET' && method !== 'HEAD') {
      if (!UNSAFE.has(method)) return client(out);
      const url = out.url;
      return client(out).then((res) => {
        if (res.status < 400) {
          lru.delete('GET ' + url);
          lru.delete('HEAD ' + url);
        }
        return res;
      });
    }
    const headers = policyHeaders(out.headers);
    for (let i = 0; i < BYPASS.length; i++) if (headers[BYPASS[i]!] !== undefined) return client(out);
    const key = method + ' ' + out.url;
    const req: CachePolicy.Request = { method, url: out.url, headers };
    const e = lru.get(key);
    if (e !== undefined) {
      const r = e.policy.evaluateRequest(req);
      // stale-while-revalidate is not implemented: any revalidation happens before answering.
      if (r.revalidation === undefined && r.response !== undefined) return Promise.resolve(hit(e, r.response.headers));
      const cond = r.revalidation?.headers ?? {};
      if (cond['if-none-match'] !== undefined || cond['if-modified-since'] !== undefined) return revalidate(out, e, req, key, cond);
      // Stale without a validator: gone. Another Vary variant: kept until this answer replaces it.
      if (e.policy.stale()) lru.delete(key);
    }
    return fetch(out, req, key);
  };
}

/** A hit's body is all there: nothing to pause, resume or abort. */
const IDLE: FlowControl = { pause() {}, resume() {}, abort() {} };

/**
 * A body that passes `src` through chunk by chunk (its backpressure included) and hands the whole
 * of it to `done` once it ended — unless it grew past `limit` or failed, in which case the bytes
 * were let go as soon as that was known.
 */
function teeBody(src: UpstreamBody, limit: number, done: (buf: Buffer) => void): UpstreamBody {
  let paused = false;
  const flow: FlowControl = {
    pause() {
      paused = true;
    },
    resume() {
      if (!paused) return;
      paused = false;
      src.resume();
    },
    abort(reason) {
      src.abort(reason);
    },
  };
  const out = new UpstreamBody(flow, src.length);
  let chunks: Buffer[] | null = [];
  let size = 0;
  src.pipe({
    write(chunk) {
      if (chunks !== null) {
        size += chunk.length;
        if (size > limit) chunks = null;
        else chunks.push(chunk);
      }
      out.push(chunk);
      return !paused;
    },
    end() {
      const c = chunks;
      chunks = null;
      out.end();
      if (c === null) return;
      // Its own exact-size memory: the chunks are views of the socket's reads (a pooled slab
      // would be kept alive by a small entry for as long as the entry lives).
      const buf = Buffer.allocUnsafeSlow(size);
      let at = 0;
      for (let i = 0; i < c.length; i++) at += c[i]!.copy(buf, at);
      try {
        done(buf);
      } catch {
        /* not stored: the answer itself went out */
      }
    },
    error(err) {
      chunks = null;
      out.fail(err);
    },
  });
  return out;
}

/** Lower-case names, one string per header (lists joined), Set-Cookie kept as a list. */
function policyHeaders(h: Headers): Record<string, string | string[]> {
  const o: Record<string, string | string[]> = {};
  for (const k in h) {
    const v = h[k];
    if (v === undefined || v === null) continue;
    const lk = k.toLowerCase();
    if (Array.isArray(v)) o[lk] = lk === 'set-cookie' ? v : v.join(', ');
    else o[lk] = String(v);
  }
  return o;
}

function discard(body: unknown): void {
  if (isUpstreamBody(body)) body.dump();
  else if (body instanceof Readable) body.destroy();
}
