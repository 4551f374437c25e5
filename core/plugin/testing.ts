/**
 * `gw/plugin/testing`: runs a plugin's factories and handlers in-process, without a gateway, so a
 * plugin is tested with plain `node:test`:
 *
 *   import { loadPlugin, response } from 'gw/plugin/testing';
 *
 *   const plugin = await loadPlugin(new URL('../my-plugin.js', import.meta.url));
 *   const client = await plugin.buildClient('my-plugin', { config: { path: '/hijack' } });
 *   const res = await client.call({ url: 'http://backend.test/other' }, () => response({ body: 'pong' }));
 *   assert.equal(await res.body.text(), 'pong');
 *
 * - {@link loadPlugin} imports a module (a path, a file URL or an already imported module object)
 *   and runs the registration of every kind it exports with the loader's own code (`registerKind`),
 *   so what it collects is what `gw run` would register.
 * - `buildClient` / `buildServer` / `buildModifier` call a factory the way gw does (context with
 *   defaults, the whole `extra_config` object) and return an object whose `call` / `request` /
 *   `response` run the handler.
 * - `next` is a fake (a function returning a response, or a canned response) or a real backend
 *   ({@link httpNext}, {@link httpHandler}: undici to a real HTTP server).
 * - Responses are checked with the rules gw applies to plugin answers (status an integer from 200
 *   to 599, headers a plain object of strings/numbers/booleans or lists of them, a usable body);
 *   anything the plugin throws, and any answer gw would refuse, is a rejection with a
 *   {@link PluginTestError} that says which plugin, which step and why.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Agent, request as undiciRequest, type Dispatcher } from 'undici';
import type { Logger } from '../log.js';
import { USER_AGENT } from '../version.js';
import { KINDS, LOADED_KINDS, errorText, importPlugin, registerKind } from './loader.js';
import { pluginLogger } from './logger.js';
import { canonicalHeader, responseProblem, serverRequestProblem, TOKEN } from './checks.js';

export { canonicalHeader, responseProblem, serverRequestProblem };
import type { PluginKind } from './registry.js';
import type {
  BackendRequest,
  BackendResponse,
  ClientContext,
  ClientFactory,
  ClientHandler,
  Headers,
  ModifierContext,
  ModifierFactory,
  MultiMap,
  NextClient,
  PluginLogger,
  RequestModifier,
  RequestWrapper,
  ResponseBody,
  ResponseModifier,
  ResponseWrapper,
  ServerContext,
  ServerFactory,
  ServerHandler,
  ServerRequest,
  ServerResponse,
} from './types.js';

export type { PluginKind } from './registry.js';

// =============================================================================================
// Errors
// =============================================================================================

/** Where a failure happened. */
export type PluginTestStage = 'import' | 'register' | 'factory' | 'handler' | 'response' | 'modifier';

/**
 * What every harness rejection is: the plugin's own error (or gw's objection to what the plugin
 * returned), with the plugin name, the kind and the step. The plugin's error is `cause`.
 */
export class PluginTestError extends Error {
  /**
   * The status gw answers the client with for this failure: for a modifier or a server handler,
   * the error's `statusCode` (an {@link HTTPResponseError}, any error with a numeric `statusCode`,
   * or a Go-style `StatusCode()` method) when gw honours it, else 500. Undefined for client
   * handlers (their failure is a backend error, answered as the endpoint's encoding says) and for
   * import, registration and factory failures (the gateway does not start).
   */
  readonly statusCode: number | undefined;
  constructor(
    readonly plugin: string,
    /** null for a failure that is not tied to one kind (the import, a module exporting nothing). */
    readonly kind: PluginKind | null,
    readonly stage: PluginTestStage,
    message: string,
    options?: { cause?: unknown; statusCode?: number },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PluginTestError';
    this.statusCode = options?.statusCode;
  }
}

/** A property of an error, or what a Go-style method of that name returns (as gw reads them). */
function errorProp(e: unknown, prop: string, method: string): unknown {
  if (e === null || typeof e !== 'object') return undefined;
  const o = e as Record<string, unknown>;
  const call = (f: unknown): unknown => {
    try {
      return (f as () => unknown).call(e);
    } catch {
      return undefined;
    }
  };
  const v = o[prop];
  if (typeof v === 'function') return call(v);
  if (v !== undefined) return v;
  const m = o[method];
  return typeof m === 'function' ? call(m) : m;
}

/** The status gw answers with when a modifier throws `e`: its statusCode when an integer from
 *  200 to 599 with room for a body (not 204, 205, 304), else 500. */
function modifierStatus(e: unknown): number {
  const sc = errorProp(e, 'statusCode', 'StatusCode');
  return typeof sc === 'number' && Number.isInteger(sc) && sc >= 200 && sc <= 599 && sc !== 204 && sc !== 205 && sc !== 304 ? sc : 500;
}

/** The status gw answers with when a server handler throws `e`: its statusCode from 400 to 599, else 500. */
function serverStatus(e: unknown): number {
  const sc = (e as { statusCode?: unknown } | null)?.statusCode;
  return typeof sc === 'number' && Number.isInteger(sc) && sc >= 400 && sc <= 599 ? sc : 500;
}

function label(kind: PluginKind, name: string): string {
  return `${kind} plugin '${name}'`;
}

/** Runs `fn` and turns a synchronous throw into a rejection. */
function attempt<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}

// =============================================================================================
// Logs
// =============================================================================================

export type LogLevel = 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR' | 'CRITICAL';

export interface LogLine {
  readonly level: LogLevel;
  /** As gw writes it: `[PLUGIN: <name>] <message>` for a plugin logger. */
  readonly message: string;
}

/** Each recorder's pino logger (gw's logger type), for the loader's registration. */
const PINO_OF = new WeakMap<LogRecorder, Logger>();

const PINO_LEVELS: Readonly<Record<number, LogLevel>> = { 10: 'DEBUG', 20: 'DEBUG', 30: 'INFO', 40: 'WARNING', 50: 'ERROR', 55: 'CRITICAL', 60: 'CRITICAL' };

/**
 * Records what plugins log, at every level, formatted exactly as gw formats it (arguments joined
 * with spaces, `[PLUGIN: <name>] ` prefix, `fatal` at CRITICAL).
 */
export class LogRecorder {
  readonly lines: LogLine[] = [];
  readonly #pino: Logger;

  constructor() {
    const lines = this.lines;
    this.#pino = pino(
      { level: 'debug', customLevels: { critical: 55 }, base: undefined, timestamp: false },
      {
        write(s: string) {
          const o = JSON.parse(s) as { level: number; msg?: string };
          lines.push({ level: PINO_LEVELS[o.level] ?? 'INFO', message: o.msg ?? '' });
        },
      },
    ) as unknown as Logger;
    PINO_OF.set(this, this.#pino);
  }

  /** A plugin logger (KrakenD's interface) writing here, prefixed `[PLUGIN: <name>] `. */
  logger(name: string): PluginLogger {
    return pluginLogger(this.#pino, name);
  }

  /** The messages, optionally of one level only. */
  messages(level?: LogLevel): string[] {
    return this.lines.filter((l) => level === undefined || l.level === level).map((l) => l.message);
  }

  /** `LEVEL message` lines joined with `\n`: handy in assertion messages. */
  text(): string {
    return this.lines.map((l) => `${l.level} ${l.message}`).join('\n');
  }

  clear(): void {
    this.lines.length = 0;
  }
}

// =============================================================================================
// Bodies
// =============================================================================================

/** Bytes a body can be made of. */
export type Chunk = string | Uint8Array;
/** A request body or a response body source: bytes, a string, a stream, chunks, or nothing. */
export type BodySource = Chunk | Readable | AsyncIterable<Chunk> | Iterable<Chunk> | null | undefined;

function toBuffer(c: unknown): Buffer {
  if (Buffer.isBuffer(c)) return c;
  if (typeof c === 'string') return Buffer.from(c, 'utf8');
  if (c instanceof Uint8Array) return Buffer.from(c.buffer, c.byteOffset, c.byteLength);
  throw new TypeError(`a body chunk must be bytes or a string, got ${c === null ? 'null' : typeof c}`);
}

function isAsyncIterable(v: unknown): v is AsyncIterable<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function';
}

function isIterable(v: unknown): v is Iterable<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as { [Symbol.iterator]?: unknown })[Symbol.iterator] === 'function';
}

/** True for anything implementing {@link ResponseBody} (gw's streamed bodies, {@link TestBody}). */
export function isResponseBody(v: unknown): v is ResponseBody {
  if (v === null || typeof v !== 'object') return false;
  const b = v as Record<string, unknown>;
  return (
    typeof b.bytes === 'function' && typeof b.text === 'function' && typeof b.json === 'function' &&
    typeof b.stream === 'function' && typeof b.dump === 'function' && isAsyncIterable(v)
  );
}

/**
 * A streamed response body implementing {@link ResponseBody}, like the ones gw hands to plugins:
 * read it once (`bytes()`, `text()`, `json()`, `stream()`, async iteration), or `dump()` it.
 * A second read throws `the response body was already consumed`, as in gw.
 */
export class TestBody implements ResponseBody {
  #source: BodySource;
  #consumed = false;
  #dumped = false;

  constructor(source: BodySource = null) {
    if (
      source !== null && source !== undefined && typeof source !== 'string' && !(source instanceof Uint8Array) &&
      !(source instanceof Readable) && !isAsyncIterable(source) && !isIterable(source)
    ) {
      throw new TypeError(`a body is bytes, a string, a stream or (async) iterable chunks, got ${typeof source}`);
    }
    this.#source = source;
  }

  /** True once the body was read, streamed or dumped. */
  get consumed(): boolean {
    return this.#consumed;
  }

  /** True when the body was discarded with `dump()` (without being read first). */
  get dumped(): boolean {
    return this.#dumped;
  }

  #claim(): BodySource {
    if (this.#consumed) throw new Error('the response body was already consumed');
    this.#consumed = true;
    const s = this.#source;
    this.#source = null;
    return s;
  }

  async bytes(): Promise<Buffer> {
    return collect(this.#claim());
  }

  async text(): Promise<string> {
    return (await this.bytes()).toString('utf8');
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  stream(): Readable {
    const s = this.#claim();
    if (s instanceof Readable) return s;
    return Readable.from(chunks(s), { objectMode: false });
  }

  dump(): void {
    if (this.#consumed) return;
    const s = this.#claim();
    this.#dumped = true;
    const d = s as { dump?: () => unknown } | null | undefined;
    if (s instanceof Readable) {
      // undici's body has its own dump(); other streams are drained and dropped.
      if (typeof d?.dump === 'function') void Promise.resolve(d.dump()).catch(() => {});
      else s.on('error', () => {}).resume();
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return chunks(this.#claim())[Symbol.asyncIterator]();
  }
}

async function* chunks(s: BodySource): AsyncGenerator<Buffer> {
  if (s === null || s === undefined) return;
  if (typeof s === 'string' || s instanceof Uint8Array) {
    const b = toBuffer(s);
    if (b.length > 0) yield b;
    return;
  }
  if (isAsyncIterable(s)) {
    for await (const c of s) yield toBuffer(c);
    return;
  }
  for (const c of s as Iterable<Chunk>) yield toBuffer(c);
}

async function collect(s: BodySource): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks(s)) parts.push(c);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** A {@link TestBody} over bytes, a string, a stream or chunks (an array of chunks is streamed one by one). */
export function responseBody(source: BodySource = null): TestBody {
  return new TestBody(source);
}

/**
 * Reads any body a plugin may hand over (request or response: a {@link ResponseBody}, a stream,
 * an async iterable, bytes, a string, null, or a JSON value, serialised as gw would) into bytes.
 */
export async function readBody(body: unknown): Promise<Buffer> {
  if (body === null || body === undefined) return Buffer.alloc(0);
  if (isResponseBody(body)) return body.bytes();
  if (typeof body === 'string' || body instanceof Uint8Array || body instanceof Readable || isAsyncIterable(body)) {
    return collect(body as BodySource);
  }
  return Buffer.from(JSON.stringify(body) ?? '', 'utf8');
}

/** {@link readBody} as UTF-8 text. */
export async function readText(body: unknown): Promise<string> {
  return (await readBody(body)).toString('utf8');
}

/** A request body as gw hands it to plugins: a stream (or null). */
function requestBody(body: BodySource): Readable | AsyncIterable<Uint8Array> | null {
  if (body === null || body === undefined) return null;
  if (body instanceof Readable) return body;
  if (typeof body === 'string' || body instanceof Uint8Array) {
    const b = toBuffer(body);
    return Readable.from(b.length > 0 ? [b] : [], { objectMode: false });
  }
  return Readable.from(chunks(body), { objectMode: false });
}

// =============================================================================================
// Headers
// =============================================================================================

type HeaderInit = Record<string, string | number | boolean | readonly (string | number | boolean)[] | undefined>;

function headerMap(init: HeaderInit | undefined, name: (k: string) => string, into: Headers = {}): Headers {
  if (!init) return into;
  for (const k of Object.keys(init)) {
    const v = init[k];
    if (v === undefined) continue;
    into[name(k)] = Array.isArray(v) ? v.map(String) : String(v);
  }
  return into;
}

function multiMap(init: HeaderInit | undefined, name: (k: string) => string): MultiMap {
  const out: MultiMap = {};
  if (!init) return out;
  for (const k of Object.keys(init)) {
    const v = init[k];
    if (v === undefined) continue;
    const list = Array.isArray(v) ? v.map(String) : [String(v)];
    const key = name(k);
    out[key] = [...(out[key] ?? []), ...list];
  }
  return out;
}

const lower = (k: string) => k.toLowerCase();

// =============================================================================================
// Requests
// =============================================================================================

/** The `User-Agent` gw sends to backends (KrakenD's). */
export const GW_USER_AGENT = USER_AGENT;

export interface BackendRequestInit {
  /** Default `GET`; uppercased. */
  method?: string;
  /** The final backend URL (default `http://backend.test/`). */
  url?: string;
  /** Merged over gw's defaults (`User-Agent`, `X-Forwarded-For`, `X-Forwarded-Host`); names are
   *  canonicalised (`x-api-key` → `X-Api-Key`), as gw sends them. */
  headers?: HeaderInit;
  /** Start from no headers instead of gw's defaults. */
  noDefaultHeaders?: boolean;
  /** The body (bytes, a string, a stream or chunks). The plugin gets it as a stream, as from gw. */
  body?: BodySource;
  /** A JSON body: serialised, with `Content-Type: application/json` unless set. */
  json?: unknown;
  /** Endpoint parameters by the names used in the endpoint (`{id}` → `params.id`). */
  params?: Record<string, string>;
  /** Default: a signal that never aborts (or one aborting after `timeoutMs`). */
  signal?: AbortSignal;
  /** Aborts the request's signal after this many ms (gw: the endpoint timeout). */
  timeoutMs?: number;
}

function signalOf(init: { signal?: AbortSignal; timeoutMs?: number }): AbortSignal {
  if (init.signal && init.timeoutMs !== undefined) return AbortSignal.any([init.signal, AbortSignal.timeout(init.timeoutMs)]);
  if (init.signal) return init.signal;
  if (init.timeoutMs !== undefined) return AbortSignal.timeout(init.timeoutMs);
  return new AbortController().signal;
}

function jsonBody(init: { json?: unknown; body?: BodySource }, headers: Headers, contentType: string): BodySource {
  if (init.json === undefined) return init.body;
  if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) headers[contentType] = 'application/json';
  return JSON.stringify(init.json);
}

/** A {@link BackendRequest} as gw builds it for a client plugin, with defaults for what is not given. */
export function backendRequest(init: BackendRequestInit = {}): BackendRequest {
  const headers: Headers = init.noDefaultHeaders
    ? {}
    : { 'User-Agent': GW_USER_AGENT, 'X-Forwarded-For': '127.0.0.1', 'X-Forwarded-Host': 'localhost:8080' };
  headerMap(init.headers, canonicalHeader, headers);
  const body = jsonBody(init, headers, 'Content-Type');
  return {
    method: (init.method ?? 'GET').toUpperCase(),
    url: init.url ?? 'http://backend.test/',
    headers,
    body: requestBody(body),
    signal: signalOf(init),
    params: { ...(init.params ?? {}) },
  };
}

export interface ServerRequestInit {
  /** Default `GET`; uppercased. */
  method?: string;
  /** The path, optionally with `?query` (default `/`). */
  path?: string;
  /** The query without `?` (overrides one in `path`). */
  query?: string;
  /** Lower-cased names. Default: `host: localhost:8080`. */
  headers?: HeaderInit;
  body?: BodySource;
  json?: unknown;
  /** Default `127.0.0.1`. */
  clientIp?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** A {@link ServerRequest} as a server plugin gets it, with defaults for what is not given. */
export function serverRequest(init: ServerRequestInit = {}): ServerRequest {
  const raw = init.path ?? '/';
  const q = raw.indexOf('?');
  const headers: Headers = { host: 'localhost:8080' };
  headerMap(init.headers, lower, headers);
  const body = jsonBody(init, headers, 'content-type');
  return {
    method: (init.method ?? 'GET').toUpperCase(),
    path: q < 0 ? raw : raw.slice(0, q),
    query: init.query ?? (q < 0 ? '' : raw.slice(q + 1)),
    headers,
    body: requestBody(body),
    clientIp: init.clientIp ?? '127.0.0.1',
    signal: signalOf(init),
  };
}

// A request built here (or by the plugin and passed along) is used as is; anything else is an init.
function isBackendRequest(v: unknown): v is BackendRequest {
  const r = v as BackendRequest;
  return (
    typeof r === 'object' && r !== null && typeof r.method === 'string' && typeof r.url === 'string' &&
    typeof r.headers === 'object' && 'body' in r && r.signal instanceof AbortSignal && typeof r.params === 'object'
  );
}

function isServerRequest(v: unknown): v is ServerRequest {
  const r = v as ServerRequest;
  return (
    typeof r === 'object' && r !== null && typeof r.method === 'string' && typeof r.path === 'string' &&
    typeof r.query === 'string' && typeof r.headers === 'object' && 'body' in r && r.signal instanceof AbortSignal &&
    typeof r.clientIp === 'string'
  );
}

// =============================================================================================
// Responses
// =============================================================================================

export interface ResponseInit {
  /** Default 200. */
  status?: number;
  /** Lower-cased names, as gw gives backend headers. */
  headers?: HeaderInit;
  /**
   * Follows gw's rule for plugin bodies: bytes, a string, a stream or async iterable, null, or any
   * other value (arrays included), serialised as JSON with `content-type: application/json`.
   */
  body?: unknown;
  /** The body as separate chunks (streamed one by one); instead of `body`. */
  chunks?: Iterable<Chunk> | AsyncIterable<Chunk>;
}

/** A response with a streamed {@link TestBody}, as `next()` resolves in gw. */
export function response(init: ResponseInit = {}): BackendResponse & { body: ResponseBody } {
  const headers = headerMap(init.headers, lower);
  let body: ResponseBody;
  if (init.chunks !== undefined) body = new TestBody(init.chunks);
  else if (isResponseBody(init.body)) body = init.body;
  else if (
    init.body === null || init.body === undefined || typeof init.body === 'string' || init.body instanceof Uint8Array ||
    init.body instanceof Readable || isAsyncIterable(init.body)
  ) {
    body = new TestBody(init.body as BodySource);
  } else {
    if (headers['content-type'] === undefined) headers['content-type'] = 'application/json';
    body = new TestBody(JSON.stringify(init.body) ?? '');
  }
  return { status: init.status ?? 200, headers, body };
}

/** The body of a plugin's answer as a {@link ResponseBody}, whatever form the plugin returned. */
function bodyView(body: unknown): ResponseBody {
  if (isResponseBody(body)) return body;
  if (body === null || body === undefined || typeof body === 'string' || body instanceof Uint8Array || body instanceof Readable || isAsyncIterable(body)) {
    return new TestBody(body as BodySource);
  }
  return new TestBody(JSON.stringify(body) ?? '');
}

/** What a fake `next` may return: a full response (its body kept as is) or a {@link ResponseInit}. */
function asNextResponse(r: unknown, what: string): BackendResponse {
  if (r === null || typeof r !== 'object') throw new TypeError(`${what} returned ${r === null ? 'null' : typeof r}, not a response ({ status, headers, body })`);
  const o = r as BackendResponse;
  if (isResponseBody(o.body)) {
    if (o.headers === undefined || o.headers === null) o.headers = {};
    if (o.status === undefined) o.status = 200;
    return o;
  }
  return response(o as ResponseInit);
}

/** The outcome of one handler call. */
export interface HandlerResult<Req> {
  status: number;
  headers: Headers;
  /** The answer's body as a {@link ResponseBody}, whatever the plugin returned (a JSON value reads
   *  as gw serialises it). Read it once. */
  body: ResponseBody;
  /** The response object exactly as the handler returned it. */
  response: BackendResponse | ServerResponse;
  /** The requests the handler passed to `next()` during this call, in order (empty: it answered
   *  itself). */
  calls: Req[];
  /** `next()` was called at least once. */
  delegated: boolean;
  /** The answer's body is the very body a `next()` call resolved with: gw streams it untouched
   *  (zero-copy). */
  bodyFromNext: boolean;
}

export type ClientResult = HandlerResult<BackendRequest>;
export type ServerResult = HandlerResult<ServerRequest>;

function settleResult<Req>(
  kind: PluginKind,
  name: string,
  out: unknown,
  calls: Req[],
  fromNext: readonly BackendResponse[],
): HandlerResult<Req> {
  const problem = responseProblem(out);
  const tag = label(kind, name);
  // Responses from next() that the handler did not return are discarded, as gw does.
  const kept = (out as BackendResponse | null)?.body;
  for (const r of fromNext) if (r !== out && r.body !== kept && isResponseBody(r.body)) r.body.dump();
  if (problem !== null) {
    // gw frees a body it will not send.
    if (isResponseBody(kept)) kept.dump();
    else if (kept instanceof Readable) kept.destroy();
    throw new PluginTestError(name, kind, 'response', `${tag}: the handler ${problem}`, { statusCode: kind === 'server' ? 500 : undefined });
  }
  const r = out as BackendResponse;
  if (r.headers === undefined || r.headers === null) r.headers = {};
  return {
    status: r.status,
    headers: r.headers,
    body: bodyView(r.body),
    response: r,
    calls,
    delegated: calls.length > 0,
    bodyFromNext: fromNext.some((n) => n.body === r.body && isResponseBody(r.body)),
  };
}

// =============================================================================================
// Real backends (undici)
// =============================================================================================

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host', 'content-length']);

export interface HttpNextOptions {
  /** An undici dispatcher to send with (default: one Agent of this `next`, closed by `close()`). */
  dispatcher?: Dispatcher;
}

type Sendable = { method: string; url: string; headers: Headers; body: unknown; signal?: AbortSignal };

async function send(
  dispatcher: Dispatcher,
  r: Sendable,
): Promise<BackendResponse & { body: ResponseBody }> {
  const headers: Record<string, string | string[]> = {};
  for (const k of Object.keys(r.headers ?? {})) {
    const v = r.headers[k];
    if (v === undefined || v === null || HOP_BY_HOP.has(k.toLowerCase())) continue;
    headers[k] = Array.isArray(v) ? v.map(String) : String(v);
  }
  let body: string | Uint8Array | Readable | null = null;
  const b = r.body;
  if (b !== null && b !== undefined) {
    if (typeof b === 'string' || b instanceof Uint8Array || b instanceof Readable) body = b;
    else if (isAsyncIterable(b)) body = Readable.from(chunks(b as AsyncIterable<Chunk>), { objectMode: false });
    else body = JSON.stringify(b);
  }
  let res: Dispatcher.ResponseData;
  try {
    res = await undiciRequest(r.url, { method: r.method as Dispatcher.HttpMethod, headers, body, signal: r.signal, dispatcher });
  } catch (e) {
    throw new Error(`${r.method} ${r.url}: ${errorText(e)}`, { cause: e });
  }
  const out: Headers = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k] = v;
  return { status: res.statusCode, headers: out, body: new TestBody(res.body) };
}

function withOrigin(url: string, origin: string | URL | undefined): string {
  if (origin === undefined) return url;
  const u = new URL(url);
  const o = new URL(String(origin));
  return o.origin + u.pathname + u.search;
}

/**
 * A client plugin's `next` that sends the request to a real HTTP server with undici, as gw's
 * pooled client would. With `origin` (`http://127.0.0.1:<port>`), the request URL's scheme, host
 * and port are replaced by it (path and query kept); without, `req.url` is used as is.
 */
export function httpNext(origin?: string | URL, opts: HttpNextOptions = {}): NextClient & { close(): Promise<void> } {
  const own = opts.dispatcher ? null : new Agent({ keepAliveTimeout: 1000 });
  const dispatcher = opts.dispatcher ?? own!;
  const next = ((req?: BackendRequest) => {
    if (!req) return Promise.reject(new Error('httpNext: called without a request (the harness passes the original one)'));
    return send(dispatcher, { ...req, url: withOrigin(req.url, origin) });
  }) as NextClient & { close(): Promise<void> };
  next.close = async () => {
    if (own) await own.close();
  };
  return next;
}

/**
 * A server plugin's `next` (the router it wraps) that forwards the request to a real HTTP server
 * at `origin` with undici: `origin + path + ?query`, the same method, headers (hop-by-hop ones and
 * `host` dropped) and body.
 */
export function httpHandler(origin: string | URL, opts: HttpNextOptions = {}): ServerHandler & { close(): Promise<void> } {
  const own = opts.dispatcher ? null : new Agent({ keepAliveTimeout: 1000 });
  const dispatcher = opts.dispatcher ?? own!;
  const base = new URL(String(origin)).origin;
  const handler = ((req: ServerRequest) =>
    send(dispatcher, {
      method: req.method,
      url: base + req.path + (req.query ? `?${req.query}` : ''),
      headers: req.headers,
      body: req.body,
      signal: req.signal,
    })) as ServerHandler & { close(): Promise<void> };
  handler.close = async () => {
    if (own) await own.close();
  };
  return handler;
}

// =============================================================================================
// Client plugins
// =============================================================================================

/** A fake `next`: returns a response (any body form: it is turned into a streamed body, as gw's
 *  `next()` gives) or a {@link ResponseInit}. */
export type FakeClientNext = (req: BackendRequest) => BackendResponse | ResponseInit | Promise<BackendResponse | ResponseInit>;
/** What `next` can be in a test: a function (fake or {@link httpNext}) or a canned response,
 *  rebuilt for every call. */
export type ClientNextInit = NextClient | FakeClientNext | ResponseInit;

export interface ClientContextInit {
  endpoint?: string;
  method?: string;
  backend?: { index?: number; urlPattern?: string; hosts?: readonly string[] };
}

export interface BuildOptions {
  /** The whole `extra_config` namespace object the factory gets (a deep-frozen copy, as gw's
   *  configuration is frozen). Default: `{ name, [name]: config }`. */
  extra?: Record<string, unknown>;
  /** The plugin's own settings (`extra[name]`), when `extra` is not given. */
  config?: unknown;
  /** Where log lines go (default: the plugin's recorder, or a new one). */
  logs?: LogRecorder;
  /** Aborted by `close()` (gw: at shutdown). Default: the harness's own. */
  signal?: AbortSignal;
}

export interface ClientBuildOptions extends BuildOptions {
  ctx?: ClientContextInit;
  /** The `next` used when `call` is given none. Default: a `next` that rejects, saying none was given. */
  next?: ClientNextInit;
}

export interface TestClient {
  readonly name: string;
  readonly handler: ClientHandler;
  /** What the factory got. */
  readonly ctx: ClientContext;
  readonly extra: Record<string, unknown>;
  readonly logs: LogRecorder;
  /**
   * Runs the handler once. `req` is a {@link BackendRequest} or an init for {@link backendRequest};
   * `next` overrides the build's. Resolves with the checked answer; rejects with a
   * {@link PluginTestError} when the handler throws or returns an answer gw would refuse.
   */
  call(req?: BackendRequest | BackendRequestInit, next?: ClientNextInit): Promise<ClientResult>;
  /** Aborts `ctx.signal` (gw's shutdown). */
  close(): void;
}

function noNext(kind: PluginKind, name: string): never {
  throw new Error(`${label(kind, name)} called next(), but the test gave no next: pass one to the build options or to call(req, next)`);
}

function clientNext(init: ClientNextInit | undefined, name: string): (req: BackendRequest) => Promise<BackendResponse> {
  if (init === undefined) return () => attempt(() => noNext('client', name));
  if (typeof init === 'function') {
    const f = init as (req: BackendRequest) => unknown;
    return (req) => attempt(() => f(req)).then((r) => asNextResponse(r, 'next'));
  }
  return async () => response(init);
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/** The factory's `extra`: a deep-frozen copy, as gw's configuration is frozen (a plugin that
 *  writes into its settings fails here as it would in gw). */
function extraFor(name: string, opts: BuildOptions, list: boolean): Record<string, unknown> {
  let extra: Record<string, unknown>;
  if (opts.extra) extra = opts.extra;
  else {
    extra = { name: list ? [name] : name };
    if (opts.config !== undefined) extra[name] = opts.config;
  }
  try {
    extra = structuredClone(extra);
  } catch {
    // Not cloneable (functions in it): frozen as given.
  }
  return deepFreeze(extra);
}

/**
 * Calls a client plugin's factory as gw does for a backend (`factory(ctx, extra)`), with a
 * context whose unset fields get defaults (endpoint `/test`, method `GET`, backend 0 with
 * url_pattern `/` on `http://backend.test`, a fresh signal, a recording logger).
 */
export async function buildClient(factory: ClientFactory, name: string, opts: ClientBuildOptions = {}): Promise<TestClient> {
  const logs = opts.logs ?? new LogRecorder();
  const shutdown = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, shutdown.signal]) : shutdown.signal;
  const c = opts.ctx ?? {};
  const ctx: ClientContext = {
    endpoint: c.endpoint ?? '/test',
    method: c.method ?? 'GET',
    backend: { index: c.backend?.index ?? 0, urlPattern: c.backend?.urlPattern ?? '/', hosts: c.backend?.hosts ?? ['http://backend.test'] },
    signal,
    logger: logs.logger(name),
  };
  const extra = extraFor(name, opts, false);
  const tag = label('client', name);
  if (typeof factory !== 'function') throw new PluginTestError(name, 'client', 'factory', `${tag}: the factory is ${typeof factory}, not a function`);
  let handler: unknown;
  try {
    handler = await attempt(() => factory(ctx, extra));
  } catch (e) {
    throw new PluginTestError(name, 'client', 'factory', `${tag} failed to start: ${errorText(e)}`, { cause: e });
  }
  if (typeof handler !== 'function') {
    throw new PluginTestError(name, 'client', 'factory', `${tag}: the factory returned ${handler === null ? 'null' : typeof handler}, not a handler function`);
  }
  const h = handler as ClientHandler;
  const defaultNext = clientNext(opts.next, name);
  return {
    name,
    handler: h,
    ctx,
    extra,
    logs,
    close: () => shutdown.abort(),
    async call(reqInit, nextInit) {
      const req = isBackendRequest(reqInit) ? reqInit : backendRequest(reqInit as BackendRequestInit | undefined);
      const impl = nextInit === undefined ? defaultNext : clientNext(nextInit, name);
      const calls: BackendRequest[] = [];
      const got: BackendResponse[] = [];
      const next: NextClient = (r) => {
        const sent = r ?? req;
        calls.push(sent);
        return impl(sent).then((res) => (got.push(res), res));
      };
      let out: unknown;
      try {
        out = await attempt(() => h(req, next));
      } catch (e) {
        for (const r of got) if (isResponseBody(r.body)) r.body.dump();
        throw new PluginTestError(name, 'client', 'handler', `${tag}: the handler failed: ${errorText(e)}`, { cause: e });
      }
      return settleResult('client', name, out, calls, got);
    },
  };
}

// =============================================================================================
// Server plugins
// =============================================================================================

/** A fake inner handler (the router): returns a response or a {@link ResponseInit}. */
export type FakeServerNext = (req: ServerRequest) => ServerResponse | ResponseInit | Promise<ServerResponse | ResponseInit>;
export type ServerNextInit = ServerHandler | FakeServerNext | ResponseInit;

export interface ServerBuildOptions extends BuildOptions {
  /** The handler the plugin wraps (gw: the router, or the plugin listed before). Default: one that
   *  rejects, saying none was given. `call(req, next)` can override it per call. */
  next?: ServerNextInit;
}

export interface TestServer {
  readonly name: string;
  readonly handler: ServerHandler;
  readonly ctx: ServerContext;
  readonly extra: Record<string, unknown>;
  readonly logs: LogRecorder;
  /** Runs the handler once (see {@link TestClient.call}). */
  call(req?: ServerRequest | ServerRequestInit, next?: ServerNextInit): Promise<ServerResult>;
  close(): void;
}

function serverNext(init: ServerNextInit | undefined, name: string): (req: ServerRequest) => Promise<ServerResponse> {
  if (init === undefined) return () => attempt(() => noNext('server', name));
  if (typeof init === 'function') {
    const f = init as (req: ServerRequest) => unknown;
    return (req) => attempt(() => f(req)).then((r) => asNextResponse(r, 'next'));
  }
  return async () => response(init);
}

interface ServerCallScope {
  calls: ServerRequest[];
  got: ServerResponse[];
  impl: (req: ServerRequest) => Promise<ServerResponse>;
}

/**
 * Calls a server plugin's factory as gw does (`factory(ctx, extra, next)`); `next` is a stand-in
 * that records every request the handler passes on (per call) and answers with the build's (or the
 * call's) `next`. A request gw's router could not route is a rejection, as in gw.
 */
export async function buildServer(factory: ServerFactory, name: string, opts: ServerBuildOptions = {}): Promise<TestServer> {
  const logs = opts.logs ?? new LogRecorder();
  const shutdown = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, shutdown.signal]) : shutdown.signal;
  const ctx: ServerContext = { name, signal, logger: logs.logger(name) };
  const extra = extraFor(name, opts, true);
  const tag = label('server', name);
  const defaultNext = serverNext(opts.next, name);
  const scope = new AsyncLocalStorage<ServerCallScope>();
  // Calls to next() outside any call() (from the factory, a timer): recorded here.
  const stray: ServerCallScope = { calls: [], got: [], impl: defaultNext };
  const next: ServerHandler = (req) => {
    const s = scope.getStore() ?? stray;
    const problem = serverRequestProblem(req);
    if (problem !== null) return Promise.reject(new Error(problem));
    s.calls.push(req);
    return s.impl(req).then((res) => (s.got.push(res), res));
  };
  if (typeof factory !== 'function') throw new PluginTestError(name, 'server', 'factory', `${tag}: the factory is ${typeof factory}, not a function`);
  let handler: unknown;
  try {
    handler = await attempt(() => factory(ctx, extra, next));
  } catch (e) {
    throw new PluginTestError(name, 'server', 'factory', `${tag} failed to start: ${errorText(e)}`, { cause: e });
  }
  if (typeof handler !== 'function') {
    throw new PluginTestError(name, 'server', 'factory', `${tag}: the factory returned ${handler === null ? 'null' : typeof handler}, not a handler function`);
  }
  const h = handler as ServerHandler;
  return {
    name,
    handler: h,
    ctx,
    extra,
    logs,
    close: () => shutdown.abort(),
    async call(reqInit, nextInit) {
      const req = isServerRequest(reqInit) ? reqInit : serverRequest(reqInit as ServerRequestInit | undefined);
      const s: ServerCallScope = { calls: [], got: [], impl: nextInit === undefined ? defaultNext : serverNext(nextInit, name) };
      let out: unknown;
      try {
        out = await scope.run(s, () => attempt(() => h(req)));
      } catch (e) {
        for (const r of s.got) if (isResponseBody(r.body)) r.body.dump();
        throw new PluginTestError(name, 'server', 'handler', `${tag}: the handler failed: ${errorText(e)}`, { cause: e, statusCode: serverStatus(e) });
      }
      return settleResult('server', name, out, s.calls, s.got as BackendResponse[]);
    },
  };
}

// =============================================================================================
// Modifier plugins
// =============================================================================================

/** A modifier as registered: KrakenD's `RegisterModifiers(name, factory, appliesToRequest, appliesToResponse)`. */
export interface RegisteredModifier {
  readonly factory: ModifierFactory;
  readonly appliesToRequest: boolean;
  readonly appliesToResponse: boolean;
}

/** How gw applies a registered modifier: a name registered for both is a request modifier only
 *  (KrakenD does the same); one registered for neither is never applied. */
export type ModifierRole = 'request' | 'response' | 'none';

export function modifierRole(m: { appliesToRequest: boolean; appliesToResponse: boolean }): ModifierRole {
  return m.appliesToRequest ? 'request' : m.appliesToResponse ? 'response' : 'none';
}

export interface RequestWrapperInit {
  params?: Record<string, string>;
  /** Names canonicalised (`X-Request-Id`), values turned into lists. */
  headers?: HeaderInit;
  body?: BodySource;
  json?: unknown;
  /** Default `GET`. */
  method?: string;
  /** Default null (endpoint level); the backend URL at backend level. */
  url?: string | null;
  /** A query string (`a=1&b=2`, with or without `?`) or a map. */
  query?: string | HeaderInit;
  /** Default `/`. */
  path?: string;
}

function queryMap(q: string | HeaderInit | undefined): MultiMap {
  if (q === undefined) return {};
  if (typeof q !== 'string') return multiMap(q, (k) => k);
  const out: MultiMap = {};
  for (const [k, v] of new URLSearchParams(q.startsWith('?') ? q.slice(1) : q)) (out[k] ??= []).push(v);
  return out;
}

/** A {@link RequestWrapper} as gw hands it to request modifiers (body as a stream). */
export function requestWrapper(init: RequestWrapperInit = {}): RequestWrapper {
  const headers = multiMap(init.headers, canonicalHeader);
  let body = init.body;
  if (init.json !== undefined) {
    body = JSON.stringify(init.json);
    headers['Content-Type'] ??= ['application/json'];
  }
  return {
    params: { ...(init.params ?? {}) },
    headers,
    body: requestBody(body),
    method: (init.method ?? 'GET').toUpperCase(),
    url: init.url ?? null,
    query: queryMap(init.query),
    path: init.path ?? '/',
  };
}

export interface ResponseWrapperInit {
  /** Decoding endpoints: the response data (default `{}`). */
  data?: Record<string, unknown>;
  /** Default true. */
  isComplete?: boolean;
  /** No-op endpoints: the streamed body (bytes, a string, a stream, chunks); given as a {@link ResponseBody}. */
  io?: BodySource | ResponseBody;
  /** Lower-cased names (no-op: the backend's headers). */
  headers?: HeaderInit;
  /** Default 200. */
  statusCode?: number;
  /** The request this answers. */
  request?: RequestWrapper | RequestWrapperInit | null;
}

function isRequestWrapper(v: unknown): v is RequestWrapper {
  const r = v as RequestWrapper;
  return (
    typeof r === 'object' && r !== null && typeof r.method === 'string' && typeof r.path === 'string' &&
    typeof r.headers === 'object' && r.headers !== null && typeof r.query === 'object' && r.query !== null &&
    typeof r.params === 'object' && r.params !== null && 'body' in r && 'url' in r
  );
}

function isResponseWrapper(v: unknown): v is ResponseWrapper {
  const r = v as ResponseWrapper;
  return (
    typeof r === 'object' && r !== null && typeof r.data === 'object' && typeof r.isComplete === 'boolean' &&
    typeof r.headers === 'object' && r.headers !== null && typeof r.statusCode === 'number' && 'io' in r
  );
}

/** A {@link ResponseWrapper} as gw hands it to response modifiers. */
export function responseWrapper(init: ResponseWrapperInit = {}): ResponseWrapper {
  const io = init.io === undefined || init.io === null ? null : isResponseBody(init.io) ? init.io : new TestBody(init.io);
  const req = init.request === undefined || init.request === null ? null : isRequestWrapper(init.request) ? init.request : requestWrapper(init.request);
  return {
    data: init.data ?? {},
    isComplete: init.isComplete ?? true,
    io,
    headers: multiMap(init.headers, lower),
    statusCode: init.statusCode ?? 200,
    request: req,
  };
}

function headersProblem(h: unknown): string | null {
  if (h === undefined || h === null) return null;
  return typeof h === 'object' && !Array.isArray(h) ? null : `set headers to ${Array.isArray(h) ? 'an array' : typeof h}, not an object`;
}

/**
 * Why gw could not go on with the request wrapper a modifier left, or null: the method must be an
 * HTTP token, headers an object, and at backend level (`url` was set) a changed `url` an absolute
 * http(s) URL. The same checks as gw's.
 */
export function requestWrapperProblem(out: RequestWrapper, input?: RequestWrapper): string | null {
  if (typeof out.method !== 'string' || !TOKEN.test(out.method)) return `set the method to ${JSON.stringify(out.method)}, not an HTTP token`;
  const h = headersProblem(out.headers);
  if (h !== null) return h;
  if (input !== undefined && input.url !== null && typeof out.url === 'string' && out.url !== '') {
    let u: URL;
    try {
      u = new URL(out.url);
    } catch {
      return `set the URL to ${JSON.stringify(out.url)}, not an absolute URL`;
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return `set the URL to ${JSON.stringify(out.url)}: only http and https`;
  }
  return null;
}

/**
 * Why gw could not use the response wrapper a modifier left, or null: on a decoding endpoint (`io`
 * null) `data` must be an object; on no-op `statusCode` an integer from 200 to 599; headers an
 * object. The same checks as gw's.
 */
export function responseWrapperProblem(out: ResponseWrapper, input?: ResponseWrapper): string | null {
  const noop = (input ?? out).io !== null && (input ?? out).io !== undefined;
  if (!noop) {
    const d = out.data as unknown;
    if (d === null || typeof d !== 'object' || Array.isArray(d)) return 'set data to something that is not an object';
  } else {
    const st = out.statusCode as unknown;
    if (typeof st !== 'number' || !Number.isInteger(st) || st < 200 || st > 599) {
      return `set statusCode to ${JSON.stringify(st)}: a status is an integer from 200 to 599`;
    }
  }
  return headersProblem(out.headers);
}

export interface ModifierBuildOptions extends BuildOptions {
  /** `[ENDPOINT: /path]` or `[BACKEND: GET /path -> /url]` (default `[ENDPOINT: /test]`). */
  where?: string;
}

export interface TestModifier {
  readonly name: string;
  /** What the factory returned; null when it returned nothing (gw skips the modifier). */
  readonly modifier: RequestModifier | ResponseModifier | null;
  readonly skipped: boolean;
  /** The registration flags (a bare factory counts as both). */
  readonly appliesToRequest: boolean;
  readonly appliesToResponse: boolean;
  /** How gw applies it (see {@link modifierRole}); `any` for a bare factory. */
  readonly role: ModifierRole | 'any';
  readonly ctx: ModifierContext;
  readonly extra: Record<string, unknown>;
  readonly logs: LogRecorder;
  /**
   * Runs it as a request modifier on `req` (a wrapper or an init for {@link requestWrapper}) and
   * resolves with the wrapper gw would go on with: the object returned, or `req` changed in place
   * (any other return value is ignored, as in gw). Rejects when the modifier throws (with the
   * status gw answers), when it leaves a wrapper gw cannot use ({@link requestWrapperProblem}),
   * or when gw would not run it on requests (it is registered for responses only).
   */
  request(req?: RequestWrapper | RequestWrapperInit): Promise<RequestWrapper>;
  /** Likewise for responses. */
  response(res?: ResponseWrapper | ResponseWrapperInit): Promise<ResponseWrapper>;
}

/**
 * Calls a modifier plugin's factory as gw does (`factory(extra, ctx)`). `source` is the
 * registration (with its flags, from {@link LoadedPlugin.modifiers}) or a bare factory.
 */
export async function buildModifier(
  source: RegisteredModifier | ModifierFactory,
  name: string,
  opts: ModifierBuildOptions = {},
): Promise<TestModifier> {
  const reg: RegisteredModifier | null = typeof source === 'function' ? null : source;
  const factory = typeof source === 'function' ? source : source.factory;
  const logs = opts.logs ?? new LogRecorder();
  const logger = logs.logger(name);
  const ctx: ModifierContext = { where: opts.where ?? '[ENDPOINT: /test]', logger };
  const extra = extraFor(name, opts, true);
  const tag = label('modifier', name);
  if (typeof factory !== 'function') throw new PluginTestError(name, 'modifier', 'factory', `${tag}: the factory is ${typeof factory}, not a function`);
  let built: unknown;
  try {
    built = await attempt(() => factory(extra, ctx));
  } catch (e) {
    throw new PluginTestError(name, 'modifier', 'factory', `${tag} failed to start: ${errorText(e)}`, { cause: e });
  }
  if (built !== null && built !== undefined && typeof built !== 'function') {
    throw new PluginTestError(name, 'modifier', 'factory', `${tag}: the factory returned ${typeof built}, not a modifier function (or nothing, to be skipped)`);
  }
  const fn = (built ?? null) as ((w: unknown) => unknown) | null;
  const role: ModifierRole | 'any' = reg === null ? 'any' : modifierRole(reg);

  const run = async <W extends object>(w: W, as: 'request' | 'response', check: (out: W, input: W) => string | null): Promise<W> => {
    if (role !== 'any' && role !== as) {
      const why =
        role === 'none'
          ? 'it is registered for neither requests nor responses, so gw never applies it'
          : reg!.appliesToRequest && reg!.appliesToResponse
            ? 'it is registered for both, and gw (like KrakenD) applies such a name to requests only'
            : `it is registered as a ${role} modifier`;
      throw new PluginTestError(name, 'modifier', 'modifier', `${tag}: not a ${as} modifier: ${why}`);
    }
    if (fn === null) return w;
    let out: unknown;
    try {
      out = await attempt(() => fn(w));
    } catch (e) {
      throw new PluginTestError(name, 'modifier', 'modifier', `${tag}: the ${as} modifier failed: ${errorText(e)}`, { cause: e, statusCode: modifierStatus(e) });
    }
    // As in gw: a returned object replaces the wrapper; anything else keeps it (changed in place).
    const result = out !== null && typeof out === 'object' ? (out as W) : w;
    const problem = check(result, w);
    if (problem !== null) throw new PluginTestError(name, 'modifier', 'modifier', `${tag}: the ${as} modifier ${problem}`, { statusCode: 500 });
    return result;
  };

  return {
    name,
    modifier: fn as RequestModifier | ResponseModifier | null,
    skipped: fn === null,
    appliesToRequest: reg?.appliesToRequest ?? true,
    appliesToResponse: reg?.appliesToResponse ?? true,
    role,
    ctx,
    extra,
    logs,
    request: (req) => run(isRequestWrapper(req) ? req : requestWrapper(req), 'request', requestWrapperProblem),
    response: (res) => run(isResponseWrapper(res) ? res : responseWrapper(res), 'response', responseWrapperProblem),
  };
}

// =============================================================================================
// Loading a plugin module
// =============================================================================================

export interface LoadPluginOptions {
  /** The plugin name for log prefixes and messages (default: the file name without extension, or
   *  `plugin` for a module object). A registerer's own `name` wins, as in gw. */
  name?: string;
  /** The kinds to register (default: all three, as gw's loader). */
  kinds?: readonly PluginKind[];
  /** Given to a modifier plugin's `registerContext` (gw: aborted at shutdown). Default: aborted by
   *  `close()`. */
  signal?: AbortSignal;
  /** Cap on the import and on an async registration (default 5000 ms, as gw). */
  timeoutMs?: number;
  logs?: LogRecorder;
}

export interface LoadedPlugin {
  /** The absolute file path, or null for a module object. */
  readonly file: string | null;
  readonly module: Record<string, unknown>;
  /** What the plugin logged (through `registerLogger` and the contexts of what it builds). */
  readonly logs: LogRecorder;
  /** The kinds the module exports a registerer for. */
  readonly kinds: readonly PluginKind[];
  readonly clients: ReadonlyMap<string, ClientFactory>;
  readonly servers: ReadonlyMap<string, ServerFactory>;
  readonly modifiers: ReadonlyMap<string, RegisteredModifier>;
  /** The registered names of a kind, in registration order. */
  names(kind: PluginKind): string[];
  buildClient(name: string, opts?: ClientBuildOptions): Promise<TestClient>;
  buildServer(name: string, opts?: ServerBuildOptions): Promise<TestServer>;
  buildModifier(name: string, opts?: ModifierBuildOptions): Promise<TestModifier>;
  /** Aborts the registerContext signal and everything built from this plugin (gw's shutdown). */
  close(): void;
}

function sourceLabel(file: string | null, name: string): string {
  return file === null ? `plugin module '${name}'` : `plugin ${file}`;
}

/**
 * Imports a plugin module and registers every kind it exports, with gw's loader code. `source` is
 * a path (absolute, or relative to the working directory), a `file:` URL (`new URL('./p.js',
 * import.meta.url)`), or a module object (`await import('./p.js')`, or `{ ClientRegisterer }`).
 *
 * Rejects when the import fails, when the module exports no registerer of the requested kinds,
 * or when a registration throws, rejects or is not a valid registerer.
 */
export async function loadPlugin(source: string | URL | object, opts: LoadPluginOptions = {}): Promise<LoadedPlugin> {
  let file: string | null = null;
  let mod: Record<string, unknown>;
  if (typeof source === 'string' || source instanceof URL) {
    file = source instanceof URL || source.startsWith('file:') ? fileURLToPath(source) : path.resolve(source);
  }
  const pluginName = opts.name ?? (file === null ? 'plugin' : path.basename(file, path.extname(file)));
  const kindForErrors: PluginKind | null = opts.kinds?.length === 1 ? opts.kinds[0]! : null;
  if (file !== null) {
    try {
      mod = await importPlugin(file, opts.timeoutMs);
    } catch (e) {
      throw new PluginTestError(pluginName, kindForErrors, 'import', `${sourceLabel(file, pluginName)}: unable to import the module: ${errorText(e)}`, { cause: e });
    }
  } else {
    if (source === null || typeof source !== 'object') throw new TypeError('loadPlugin: pass a path, a file URL or a module object');
    mod = source as Record<string, unknown>;
  }

  const logs = opts.logs ?? new LogRecorder();
  const shutdown = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, shutdown.signal]) : shutdown.signal;
  const clients = new Map<string, ClientFactory>();
  const servers = new Map<string, ServerFactory>();
  const modifiers = new Map<string, RegisteredModifier>();
  const order: Record<PluginKind, string[]> = { client: [], server: [], modifier: [] };
  const kinds: PluginKind[] = [];
  const problems: string[] = [];
  const wanted = opts.kinds ?? LOADED_KINDS;

  for (const kind of LOADED_KINDS) {
    if (!wanted.includes(kind)) continue;
    const out = await registerKind(kind, mod, {
      logger: PINO_OF.get(logs)!,
      pluginName,
      file: file ?? pluginName,
      timeoutMs: opts.timeoutMs,
      signal,
    });
    if (!out.ok) {
      if (!out.notFound) problems.push(`${KINDS[kind].symbol}: ${out.error}`);
      continue;
    }
    kinds.push(kind);
    for (const r of out.registrations) {
      if (order[kind].includes(r.name)) {
        problems.push(`${KINDS[kind].symbol}: the name "${r.name}" is registered twice`);
        continue;
      }
      order[kind].push(r.name);
      if (kind === 'client') clients.set(r.name, r.args[0] as ClientFactory);
      else if (kind === 'server') servers.set(r.name, r.args[0] as ServerFactory);
      else modifiers.set(r.name, { factory: r.args[0] as ModifierFactory, appliesToRequest: r.args[1] === true, appliesToResponse: r.args[2] === true });
    }
  }
  if (problems.length > 0) {
    throw new PluginTestError(pluginName, kindForErrors, 'register', `${sourceLabel(file, pluginName)}: ${problems.join('; ')}`);
  }
  if (kinds.length === 0) {
    const symbols = wanted.map((k) => KINDS[k].symbol).join(', ');
    throw new PluginTestError(pluginName, kindForErrors, 'register', `${sourceLabel(file, pluginName)} exports none of ${symbols}`);
  }

  const closers: Array<() => void> = [];
  const withDefaults = <O extends BuildOptions>(o: O | undefined): O => ({ logs, signal, ...(o ?? {}) }) as O;
  const unknown = (kind: PluginKind, name: string): PluginTestError => {
    const known = order[kind];
    return new PluginTestError(
      name,
      kind,
      'factory',
      `${sourceLabel(file, pluginName)} registers no ${kind} plugin named '${name}' (${known.length ? `registered: ${known.join(', ')}` : `no ${kind} plugin registered`})`,
    );
  };
  return {
    file,
    module: mod,
    logs,
    kinds,
    clients,
    servers,
    modifiers,
    names: (kind) => [...order[kind]],
    async buildClient(name, o) {
      const f = clients.get(name);
      if (!f) throw unknown('client', name);
      const t = await buildClient(f, name, withDefaults(o));
      closers.push(() => t.close());
      return t;
    },
    async buildServer(name, o) {
      const f = servers.get(name);
      if (!f) throw unknown('server', name);
      const t = await buildServer(f, name, withDefaults(o));
      closers.push(() => t.close());
      return t;
    },
    async buildModifier(name, o) {
      const m = modifiers.get(name);
      if (!m) throw unknown('modifier', name);
      return buildModifier(m, name, withDefaults(o));
    },
    close() {
      for (const c of closers) c();
      shutdown.abort();
    },
  };
}
