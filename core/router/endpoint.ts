/**
 * One uWS handler per endpoint, built once at start-up. Per request it:
 *  1. reads what it needs from uWS's HttpRequest synchronously (it dies when the handler returns):
 *     path params (checked), raw query, the allow-listed headers, Host and the client IP;
 *  2. registers onAborted before any async work, and the body reader when there is a body;
 *  3. runs the endpoint's proxy (decoding encodings) or the no-op stream, bounded by one timer;
 *  4. writes status, headers and body inside one cork (streamed bodies: see stream.ts).
 */
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import type { EndpointConfig, RouterOptions, ServerLimits } from '../config/types.js';
import { canonicalHeader } from '../config/load.js';
import type { Logger } from '../log.js';
import type { BackendResponse, Headers } from '../plugin/types.js';
import type { BackendPipe } from '../proxy/backend.js';
import type { Cors } from './cors.js';
import type { BotCheck } from '../validation/guards.js';
import { jwtActivation, runChecks, type CelChecks } from '../validation/cel.js';
import type { RequestChecks } from '../validation/request.js';
import type { JWTPayload } from 'jose';
import { AuthError, claim, claimText, type JwtValidator } from '../auth/jwt.js';
import { HOP_BY_HOP, validHeaderName, validHeaderValue, type CapturedHeaders, type ClientInfo } from '../proxy/request.js';
import { CanceledError, DeadlineError, ProxyRequest, StatusError, withBackend, type Proxy, type ProxyResponse } from '../proxy/types.js';
import { isUpstreamBody, UpstreamBody } from '../transport/body.js';
import { VERSION_HEADER_VALUE } from '../version.js';
import { goJson } from './json.js';
import { compileRender, type Render } from './render.js';
import { decodeParam, ParamError } from './params.js';
import { statusLine } from './status.js';
import { ClientSink, pumpIterable, type StreamOwner } from './stream.js';
import type { HttpRequest, HttpResponse } from './uws.js';

export interface EndpointRuntime {
  readonly config: EndpointConfig;
  /** Decoding pipeline (json, string, ...), or null for no-op endpoints. */
  readonly proxy: Proxy | null;
  /** The single backend of a no-op endpoint. */
  readonly noop: BackendPipe | null;
  /** The request body is read whole before the pipe runs (several readers, scripts, a schema). */
  readonly bufferBody: boolean;
  /** `auth/validator`, or null. */
  readonly jwt: JwtValidator | null;
  /** `auth/signer` is on: the answer carries tokens, never a cache header. */
  readonly signed: boolean;
  /** `security/bot-detector` (service and/or endpoint), or null. */
  readonly bot: BotCheck | null;
  /** JSON schema and request CEL checks (validation/request.ts), when they run here (no lua-proxy). */
  readonly requestChecks: RequestChecks | null;
  /** Endpoint `validation/cel` (its JWT checks run here; request ones in requestChecks; response ones in the proxy). */
  readonly cel: CelChecks | null;
}

export interface ServerState {
  readonly router: RouterOptions;
  readonly limits: ServerLimits;
  readonly logger: Logger;
  /** `security/cors`, or null. */
  readonly cors: Cors | null;
  /** Requests in flight, for graceful shutdown. */
  inflight: number;
  onIdle: (() => void) | null;
}

const TEXT_PLAIN = 'text/plain; charset=utf-8';

/** Builds the header capture for an endpoint's `input_headers`. */
function compileCapture(list: EndpointConfig['inputHeaders']): (req: HttpRequest) => CapturedHeaders {
  if (list === '*') {
    return (req) => {
      const m: CapturedHeaders = new Map();
      let connection = '';
      req.forEach((k, v) => {
        if (HOP_BY_HOP.has(k)) {
          if (k === 'connection') connection += (connection ? ',' : '') + v;
          return;
        }
        const name = canonicalCached(k);
        const prev = m.get(name);
        if (prev) prev.push(v);
        else m.set(name, [v]);
      });
      if (connection !== '') {
        // Headers named by Connection are hop-by-hop too.
        for (const t of connection.split(',')) m.delete(canonicalHeader(t.trim()));
      }
      return m;
    };
  }
  const names = list.length === 0 ? ['Content-Type'] : list.filter((n) => !HOP_BY_HOP.has(n.toLowerCase()));
  const lower = names.map((n) => n.toLowerCase());
  const n = names.length;
  return (req) => {
    const m: CapturedHeaders = new Map();
    for (let i = 0; i < n; i++) {
      const v = req.getHeader(lower[i]!);
      if (v !== '') m.set(names[i]!, [v]);
    }
    return m;
  };
}

const canonicalCache = new Map<string, string>();
function canonicalCached(lower: string): string {
  let c = canonicalCache.get(lower);
  if (c === undefined) {
    c = canonicalHeader(lower);
    if (canonicalCache.size < 4096) canonicalCache.set(lower, c);
  }
  return c;
}

const textDecoder = new TextDecoder();
const ipv4Cache = new Map<number, string>();

/** The client's address as text; IPv4(-mapped) addresses come from a small cache, without decoding. */
export function clientIp(res: HttpResponse): string {
  const b = new Uint8Array(res.getRemoteAddress());
  let v4 = -1;
  if (b.length === 4) v4 = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
  else if (b.length === 16 && b[10] === 0xff && b[11] === 0xff && (b[0]! | b[1]! | b[2]! | b[3]! | b[4]! | b[5]! | b[6]! | b[7]! | b[8]! | b[9]!) === 0) {
    v4 = ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0;
  }
  if (v4 >= 0) {
    let s = ipv4Cache.get(v4);
    if (s === undefined) {
      s = `${v4 >>> 24}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`;
      if (ipv4Cache.size >= 4096) ipv4Cache.clear();
      ipv4Cache.set(v4, s);
    }
    return s;
  }
  const raw = textDecoder.decode(res.getRemoteAddressAsText());
  let ip = ipv6Cache.get(raw);
  if (ip === undefined) {
    // uWS prints IPv6 uncompressed (0000:...:0001); Go (and so KrakenD) sends the short form (::1).
    try {
      ip = new URL(`http://[${raw}]/`).hostname.slice(1, -1);
    } catch {
      ip = raw;
    }
    if (ipv6Cache.size >= 4096) ipv6Cache.clear();
    ipv6Cache.set(raw, ip);
  }
  return ip;
}
const ipv6Cache = new Map<string, string>();

/** Per-request state: one fixed-shape object, its methods are the uWS/undici callbacks. */
class Inflight implements StreamOwner {
  aborted = false;
  done = false;
  timer: NodeJS.Timeout | null = null;
  readonly controller = new AbortController();
  body: RequestBodyStream | null = null;
  upstream: UpstreamBody | null = null;
  sink: ClientSink | null = null;
  /** Access-Control-Allow-Origin for this request (null: not allowed); unused without CORS. */
  corsOrigin: string | null = null;

  constructor(
    readonly res: HttpResponse,
    readonly rt: EndpointRuntime,
    readonly server: ServerState,
  ) {
    server.inflight++;
  }

  readonly onAborted = (): void => {
    this.aborted = true;
    const err = new CanceledError();
    this.body?.destroy(err);
    this.upstream?.abort(err);
    this.controller.abort(err);
    // A plugin stream waiting on backpressure is woken so it sees the abort and stops.
    this.sink?.source?.resume();
    this.finish();
  };

  /** Before the last write: an upload still paused is resumed so its rest drains (and is dropped). */
  private releaseBody(): void {
    this.body?.release();
  }

  finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.timer !== null) clearTimeout(this.timer);
    const s = this.server;
    if (--s.inflight === 0 && s.onIdle !== null) s.onIdle();
  }

  /** The no-op backend call, for log lines. */
  out: { method: string; url: string } | null = null;

  streamDone(err: Error | null): void {
    if (err !== null && !this.aborted) {
      this.server.logger.error(`[ENDPOINT: ${this.rt.config.path}] ${this.out?.method} "${this.out?.url}": response body failed after the headers were sent: ${err.message}`);
    }
    this.finish();
  }

  // ---- decoding encodings ----

  renderOk(resp: ProxyResponse): void {
    if (this.aborted || this.done) return;
    const ep = this.rt.config;
    if (resp.errors !== null) logErrors(this.server.logger, ep.path, resp.errors);
    const data = resp.data;
    let hasData = false;
    for (const _ in data) {
      hasData = true;
      break;
    }
    const complete = hasData && resp.isComplete;
    let rendered;
    try {
      rendered = this.render!(data, this.accept);
    } catch (err) {
      // e.g. a response nested too deep to serialise
      this.renderError(err as Error);
      return;
    }
    const { body, contentType } = rendered;
    const res = this.res;
    const router = this.server.router;
    res.cork(() => {
      this.releaseBody();
      res.writeStatus('200 OK');
      res.writeHeader('Content-Type', contentType);
      res.writeHeader('X-Krakend', router.hideVersionHeader ? 'Version undefined' : VERSION_HEADER_VALUE);
      // auth/signer endpoints answer from KrakenD's signer handler: no completeness, no caching.
      if (!this.rt.signed) {
        res.writeHeader('X-Krakend-Completed', complete ? 'true' : 'false');
        if (complete && ep.cacheTtlS > 0) res.writeHeader('Cache-Control', `public, max-age=${ep.cacheTtlS}`);
      }
      if (resp.headers !== undefined) writeExtraHeaders(res, resp.headers, this.server.cors !== null);
      if (this.server.cors !== null) this.server.cors.write(res, this.corsOrigin);
      res.end(body);
    });
    this.finish();
  }

  renderError(err: Error): void {
    if (this.aborted || this.done) return;
    const ep = this.rt.config;
    const timedOut = this.controller.signal.aborted && this.controller.signal.reason instanceof DeadlineError;
    // A timed-out call reports the deadline (with the backend it was waiting for, when known).
    const e = timedOut && !(err instanceof StatusError) ? (err instanceof DeadlineError ? err : (this.controller.signal.reason as Error)) : err;
    logErrors(this.server.logger, ep.path, (e as { all?: Error[] }).all ?? [e]);
    const router = this.server.router;
    let status = 500;
    let body = '';
    let contentType = TEXT_PLAIN;
    if (e instanceof StatusError && e.returnCode) {
      status = e.status;
      if (router.returnErrorMsg) {
        body = e.body ?? '';
        if (e.contentType && validHeaderValue(e.contentType)) contentType = e.contentType;
      }
    } else if ((e as { code?: string }).code === 'QUEUE_FULL') {
      status = 503;
      if (router.returnErrorMsg) body = e.message;
    } else if (router.returnErrorMsg) {
      body = e.message;
    }
    const res = this.res;
    res.cork(() => {
      this.releaseBody();
      res.writeStatus(statusLine(status));
      res.writeHeader('X-Krakend', router.hideVersionHeader ? 'Version undefined' : VERSION_HEADER_VALUE);
      res.writeHeader('X-Krakend-Completed', 'false');
      if (body !== '') res.writeHeader('Content-Type', contentType);
      if (this.server.cors !== null) this.server.cors.write(res, this.corsOrigin);
      res.end(body);
    });
    this.finish();
  }

  /** auth/validator or the bot detector refused the request: 401/403 with an empty body, as KrakenD. */
  refuseAuth(err: Error, tag: string): void {
    if (this.aborted || this.done) return;
    const status = err instanceof AuthError ? err.status : 500;
    const msg = `[ENDPOINT: ${this.rt.config.path}][${tag}] ${err.message}`;
    // Client mistakes are routine (debug); a key set gw could not fetch is an outage (error).
    if (!(err instanceof AuthError) || err.fault) this.server.logger.error(msg);
    else this.server.logger.debug(msg);
    const res = this.res;
    const cors = this.server.cors;
    res.cork(() => {
      this.releaseBody();
      res.writeStatus(statusLine(status));
      if (cors !== null) cors.write(res, this.corsOrigin);
      res.end();
    });
    this.finish();
  }

  /** Something threw while answering: a 500 if nothing went out yet, else the connection is closed. */
  crashed(err: Error): void {
    this.server.logger.error(`[ENDPOINT: ${this.rt.config.path}] internal error while answering: ${err.stack ?? err.message}`);
    if (this.aborted) return;
    if (!this.done) {
      try {
        this.renderError(err);
        return;
      } catch {
        /* the response is half written: close below */
      }
    }
    try {
      this.res.close();
    } catch {
      /* already ended */
    }
    this.upstream?.abort(err);
    this.finish();
  }

  /** Ends the exchange early with `status` (e.g. 413 mid-upload) and closes the connection. */
  reject(status: number, message: string): void {
    if (this.aborted || this.done) return;
    const err = new Error(message);
    this.controller.abort(err);
    this.upstream?.abort(err);
    const res = this.res;
    res.cork(() => {
      res.writeStatus(statusLine(status));
      res.writeHeader('Content-Type', TEXT_PLAIN);
      if (this.server.cors !== null) this.server.cors.write(res, this.corsOrigin);
      res.end(message, true);
    });
    this.finish();
  }

  /** The endpoint's output encoding (render.ts) and, for `negotiate`, the client's Accept. */
  render: Render | null = null;
  accept = '';

  // ---- no-op ----

  headStatus = 0;
  headHeaders: Headers | null = null;
  headGunzip = false;
  /** The body is a JSON value a plugin returned: say so when its headers do not. */
  headJson = false;

  /** Status and headers of a streamed answer; runs inside a cork (see ClientSink). */
  writeHead(): void {
    const res = this.res;
    const headers = this.headHeaders!;
    this.releaseBody();
    res.writeStatus(statusLine(this.headStatus));
    let hasContentType = false;
    // Headers the backend's Connection header names are hop-by-hop too.
    const conn = headers['connection'] ?? headers['Connection'];
    const named = conn === undefined ? null : new Set(String(conn).toLowerCase().split(',').map((t) => t.trim()));
    const gunzip = this.headGunzip;
    const cors = this.server.cors;
    for (const k in headers) {
      const lk = k.toLowerCase();
      if (HOP_BY_HOP.has(lk) || lk === 'content-length' || lk === 'date' || lk === 'uwebsockets') continue;
      // With CORS on, gw's CORS answer replaces the backend's.
      if (cors !== null && lk.startsWith('access-control-')) continue;
      if (named !== null && named.has(lk)) continue;
      if (gunzip && lk === 'content-encoding') continue;
      const v = headers[k];
      if (v === undefined || v === null) continue;
      if (lk === 'content-type') hasContentType = true;
      // Plugins may hand over numbers (uWS takes strings only) or anything else: uWS writes what it
      // is given, so a name or value that could split the response is dropped.
      if (!validHeaderName(k)) continue;
      if (Array.isArray(v)) {
        for (const x of v) {
          const t = String(x);
          if (validHeaderValue(t)) res.writeHeader(k, t);
        }
      } else {
        const t = String(v);
        if (validHeaderValue(t)) res.writeHeader(k, t);
      }
    }
    if (this.headJson && !hasContentType) res.writeHeader('Content-Type', 'application/json; charset=utf-8');
    res.writeHeader('X-Krakend', this.server.router.hideVersionHeader ? 'Version undefined' : VERSION_HEADER_VALUE);
    res.writeHeader('X-Krakend-Completed', 'false');
    if (cors !== null) cors.write(res, this.corsOrigin);
  }

  failBeforeHead(err: Error): void {
    this.renderError(err);
  }

  acceptsGzip = false;
  sentAcceptEncoding = true;

  stream(resp: BackendResponse): void {
    if (this.timer !== null) {
      // The endpoint timeout bounds the wait for the backend's answer; a streamed body is then
      // bounded by the pool's body (idle) timeout, so large transfers are not cut at `timeout`.
      clearTimeout(this.timer);
      this.timer = null;
    }
    const b = resp.body;
    if (this.aborted || this.done) {
      if (isUpstreamBody(b)) b.abort(new CanceledError());
      return;
    }
    const res = this.res;
    const headers = resp.headers;
    let total = -1;
    let gunzip = false;
    let source: unknown = b;
    if (isUpstreamBody(b)) {
      this.upstream = b;
      total = b.length;
      const ce = headers['content-encoding'];
      if (ce === 'gzip' && !this.acceptsGzip && !this.sentAcceptEncoding) gunzip = true;
    } else if (typeof b === 'string' || b instanceof Uint8Array) {
      total = typeof b === 'string' ? Buffer.byteLength(b) : b.byteLength;
    } else if (b !== null && typeof b === 'object' && !(b instanceof Readable) && typeof (b as AsyncIterable<unknown>)[Symbol.asyncIterator] !== 'function') {
      source = goJson(b);
      total = Buffer.byteLength(source as string);
      this.headJson = true;
    }
    if (gunzip) total = -1;
    const status = resp.status;
    // A HEAD answer announces a length it does not send.
    const noBody = status === 204 || status === 304 || (status >= 100 && status < 200) || this.out?.method === 'HEAD';
    this.headStatus = status;
    this.headHeaders = headers;
    this.headGunzip = gunzip;
    if (noBody || source === null || source === undefined || typeof source === 'string' || source instanceof Uint8Array) {
      res.cork(() => {
        this.writeHead();
        if (noBody || source === null || source === undefined) {
          if (isUpstreamBody(source)) source.dump();
          else if (source instanceof Readable) source.destroy();
          res.end();
        } else {
          res.end(source as string | Uint8Array);
        }
      });
      this.finish();
      return;
    }
    if (this.done) return;
    const sink = new ClientSink(res, this, total);
    this.sink = sink;
    if (isUpstreamBody(source) && !gunzip) {
      sink.source = source;
      source.pipe(sink);
      return;
    }
    let it: AsyncIterable<Uint8Array> = isUpstreamBody(source) ? source.stream() : (source as AsyncIterable<Uint8Array>);
    if (gunzip) it = (it as Readable).pipe(zlib.createGunzip());
    void pumpIterable(it, sink);
  }
}

function logErrors(logger: Logger, path: string, errors: readonly Error[]): void {
  if (!logger.isLevelEnabled('error')) return;
  if (errors.length === 1) {
    const e = errors[0]!;
    logger.error(`[ENDPOINT: ${path}] ${(e as { detail?: string }).detail ?? e.message}`);
    return;
  }
  errors.forEach((e, i) => logger.error(`[ENDPOINT: ${path}] Error #${i}: ${(e as { detail?: string }).detail ?? e.message}`));
}

function onTimeout(f: Inflight): void {
  f.timer = null;
  const err = new DeadlineError();
  f.controller.abort(err);
  f.upstream?.abort(err);
  f.body?.destroy(err);
  // The aborted call normally rejects within this turn (its error names the backend). Whatever
  // the pipe is doing otherwise (a call still queued for a connection, a plugin that ignores its
  // signal), the client is answered right after.
  setImmediate(answerTimedOut, f, err);
}

function answerTimedOut(f: Inflight, err: DeadlineError): void {
  if (!f.done && !f.aborted) f.renderError(f.out !== null ? withBackend(err, f.out) : err);
}

/** The client's request body as a Readable fed by uWS onData, with backpressure (res.pause). */
class RequestBodyStream extends Readable {
  private paused = false;
  private received = 0;
  constructor(
    private readonly res: HttpResponse,
    /** 0 = no limit. */
    private readonly limit: number,
    private readonly f: Inflight,
  ) {
    super();
  }
  override _read(): void {
    if (this.paused && !this.f.done && !this.f.aborted) {
      this.paused = false;
      this.res.resume();
    }
  }
  /** Resumes a paused upload; only while the response is still open. */
  release(): void {
    if (this.paused && !this.f.aborted) {
      this.paused = false;
      this.res.resume();
    }
  }
  feed(ab: ArrayBuffer, isLast: boolean, f: Inflight): void {
    // Data after the answer, or for a body its reader dropped (a backend that answered early), is
    // discarded: the response may be gone, so `res` must not be touched.
    if (f.done || f.aborted || this.destroyed) return;
    if (this.limit > 0 && (this.received += ab.byteLength) > this.limit) {
      const err = new PayloadTooLarge(this.limit);
      this.destroy(err);
      f.reject(413, err.message);
      return;
    }
    // uWS reuses the ArrayBuffer after this callback: copy it.
    if (ab.byteLength > 0 && !this.push(Buffer.from(ab.slice(0))) && !isLast && !f.aborted) {
      this.paused = true;
      this.res.pause();
    }
    if (isLast) this.push(null);
  }
}

class PayloadTooLarge extends Error {
  constructor(limit: number) {
    super(`request body larger than ${limit} bytes`);
  }
}

/**
 * Ambiguous framing: the connection is closed at once, without an answer. uWS keeps parsing what
 * is left in the read buffer after `end(body, true)`, so answering 400 would let a pipelined
 * (smuggled) request behind this one through; `close()` stops the parser and drops any unsent
 * bytes, the 400 included.
 */
function rejectFraming(res: HttpResponse, problem: string, path: string, logger: Logger): void {
  // The client cannot be told; the log says why its connection was dropped.
  if (logger.isLevelEnabled('warn')) {
    logger.warn(`[ENDPOINT: ${path}] ${problem}; connection closed from ${clientIp(res)}, nothing forwarded`);
  }
  res.close();
}

/** A plain-text refusal written before any pipe started (414, 431, 413, 400). */
function refuse(res: HttpResponse, status: number, message: string, close: boolean, cors: Cors | null, req: HttpRequest, method: string): void {
  // `req` is read now, while uWS still holds it.
  const allow = cors === null ? null : cors.allowOrigin(req.getHeader('origin'), method);
  res.cork(() => {
    res.writeStatus(statusLine(status));
    if (message !== '') res.writeHeader('Content-Type', TEXT_PLAIN);
    if (cors !== null) cors.write(res, allow);
    res.end(message, close);
  });
}

let headerTotal = 0;
function addHeader(k: string, v: string): void {
  headerTotal += k.length + v.length + 4;
}
/** Size of the request's header block (name: value CRLF), only computed when a limit is set. */
function headerBytes(req: HttpRequest): number {
  headerTotal = 0;
  req.forEach(addHeader);
  return headerTotal;
}

const DIGITS = /^\d+$/;
const CHUNKED_LAST = /(?:^|,)[ \t]*chunked[ \t]*$/i;

/**
 * Framing the listener let through but gw refuses to forward: a Transfer-Encoding whose final
 * coding is not chunked (or names chunked twice), a non-numeric Content-Length, or several
 * Content-Length values that disagree. (uWS itself closes the connection on CL+TE, bad chunk
 * sizes, obs-fold, whitespace before the colon and bare CR/LF/NUL.)
 */
function framingProblem(req: HttpRequest, cl: string, te: string): string | null {
  if (te !== '') {
    if (!CHUNKED_LAST.test(te) || te.toLowerCase().split('chunked').length > 2) return `error: unsupported Transfer-Encoding "${te}"`;
    if (cl !== '') return 'error: both Content-Length and Transfer-Encoding';
  }
  if (cl !== '') {
    if (!DIGITS.test(cl)) return 'error: invalid Content-Length';
    let bad = false;
    req.forEach((k, v) => {
      if (k === 'content-length' && v !== cl) bad = true;
    });
    if (bad) return 'error: conflicting Content-Length values';
  }
  return null;
}

function readAll(s: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

export function makeEndpointHandler(rt: EndpointRuntime, server: ServerState): (res: HttpResponse, req: HttpRequest) => void {
  const ep = rt.config;
  const nParams = ep.params.length;
  const capture = compileCapture(ep.inputHeaders);
  const timeoutMs = ep.timeoutMs;
  const proxy = rt.proxy;
  const noop = rt.noop;
  const clientSendsAcceptEncoding =
    ep.inputHeaders === '*' || (ep.inputHeaders as readonly string[]).includes('Accept-Encoding');
  const method = ep.method;
  const bufferBody = rt.bufferBody;
  const { render, needsAccept } = compileRender(ep);

  const maxUrl = server.limits.maxUrlLength;
  const cors = server.cors;
  const jwt = rt.jwt;
  const bot = rt.bot;
  const maxHeaderBytes = server.limits.maxHeaderBytes;
  const maxPayload = ep.maxPayload;

  return (res, req) => {
    // 0. Edge checks: nothing below runs for a request gw will not forward.
    const query = req.getQuery() ?? '';
    const url = req.getUrl();
    if (url.length + query.length >= maxUrl) return refuse(res, 414, '', true, cors, req, method);
    if (maxHeaderBytes > 0 && headerBytes(req) > maxHeaderBytes) {
      return refuse(res, 431, `request headers larger than ${maxHeaderBytes} bytes`, true, cors, req, method);
    }
    const cl = req.getHeader('content-length');
    const te = req.getHeader('transfer-encoding');
    if (cl !== '' || te !== '') {
      const problem = framingProblem(req, cl, te);
      if (problem !== null) return rejectFraming(res, problem, ep.path, server.logger);
      if (maxPayload > 0 && cl !== '' && Number(cl) > maxPayload) {
        return refuse(res, 413, `request body larger than ${maxPayload} bytes`, true, cors, req, method);
      }
    }
    // 1. Synchronous capture.
    let params: string[];
    if (nParams === 0) params = EMPTY;
    else {
      params = new Array<string>(nParams);
      for (let i = 0; i < nParams; i++) {
        const v = decodeParam(req.getParameter(i));
        if (v instanceof ParamError) return refuse(res, 400, v.message, false, cors, req, method);
        params[i] = v;
      }
    }
    const f = new Inflight(res, rt, server);
    res.onAborted(f.onAborted);
    if (cors !== null) f.corsOrigin = cors.allowOrigin(req.getHeader('origin'), method);
    const client: ClientInfo = { headers: capture(req), host: req.getHeader('host'), path: url, ip: clientIp(res) };
    let body: RequestBodyStream | null = null;
    if ((cl !== '' && cl !== '0') || te !== '') {
      body = new RequestBodyStream(res, maxPayload, f);
      f.body = body;
      const b = body;
      res.onData((ab, isLast) => b.feed(ab, isLast, f));
    }
    f.render = render;
    if (needsAccept) f.accept = req.getHeader('accept');
    if (noop !== null) {
      f.acceptsGzip = req.getHeader('accept-encoding').includes('gzip');
      f.sentAcceptEncoding = clientSendsAcceptEncoding;
    }
    // 2. The pipe, bounded by the endpoint timeout.
    f.timer = setTimeout(onTimeout, timeoutMs, f);
    const preq = new ProxyRequest(params, ep.params, query, client, body, f.controller.signal, method);
    // Several backends share one copy; a length-less body under max_payload is read (bounded)
    // before anything is forwarded, so an oversized one never reaches a backend.
    const readFirst = body !== null && (bufferBody || (maxPayload > 0 && cl === ''));
    if (bot !== null && bot(req.getHeader('user-agent'))) return f.refuseAuth(new AuthError(403, 'bot detected'), 'BotDetector');
    if (jwt !== null) {
      // auth/validator: nothing is read or forwarded before the token is accepted.
      const token = req.getHeader(jwt.header);
      const cookie = req.getHeader('cookie'); // the token may be in a cookie (default access_token)
      jwt.validate(token, cookie).then(
        (claims) => {
          if (f.aborted || f.done) return;
          const cel = rt.cel;
          if (cel !== null && cel.jwt.length > 0) {
            try {
              runChecks(cel.jwt, jwtActivation(claims));
            } catch (err) {
              return f.refuseAuth(new AuthError(401, (err as Error).message), 'CEL');
            }
          }
          let next: ProxyRequest;
          try {
            next = withClaims(preq, claims, jwt);
          } catch (err) {
            return f.crashed(err as Error);
          }
          startPipe(f, next, readFirst, noop, proxy);
        },
        (err: Error) => f.refuseAuth(err, 'JWTValidator'),
      );
      return;
    }
    startPipe(f, preq, readFirst, noop, proxy);
  };
}

function startPipe(f: Inflight, preq: ProxyRequest, readFirst: boolean, noop: BackendPipe | null, proxy: Proxy | null): void {
  if (readFirst) {
    readAll(preq.body as Readable).then(
      (buf) => {
        preq.body = buf;
        checkThenRun(f, preq, noop, proxy);
      },
      (err: Error) => f.renderError(err),
    );
    return;
  }
  checkThenRun(f, preq, noop, proxy);
}

/** validation/json-schema on the (buffered) body and the request CEL checks, then the pipe. */
function checkThenRun(f: Inflight, preq: ProxyRequest, noop: BackendPipe | null, proxy: Proxy | null): void {
  try {
    checkThenRunUnsafe(f, preq, noop, proxy);
  } catch (err) {
    f.crashed(err as Error);
  }
}

function checkThenRunUnsafe(f: Inflight, preq: ProxyRequest, noop: BackendPipe | null, proxy: Proxy | null): void {
  const checks = f.rt.requestChecks;
  if (checks !== null) {
    try {
      checks(preq);
    } catch (err) {
      f.renderError(err as Error);
      return;
    }
  }
  runPipe(f, preq, noop, proxy);
}

/** A header value as UTF-8 bytes on the wire (Go sends UTF-8; undici writes strings as Latin-1). */
function utf8Header(s: string): string {
  return /[^\x00-\x7f]/.test(s) ? Buffer.from(s, 'utf8').toString('latin1') : s;
}

/** The request with the accepted token's claims: `{JWT.x}` values and `propagate_claims` headers. */
function withClaims(p: ProxyRequest, claims: JWTPayload, jwt: JwtValidator): ProxyRequest {
  let extra = p.extra;
  if (jwt.placeholders.length > 0) {
    const e: Record<string, string> = Object.create(null);
    for (const name of jwt.placeholders) e[name] = claimText(claim(claims, name.slice(4)));
    extra = e;
  }
  let client = p.client;
  if (jwt.propagate.length > 0) {
    const headers = new Map(client.headers);
    for (const [c, h] of jwt.propagate) {
      const v = claim(claims, c);
      // The claim always wins over what the client sent under that name.
      if (v === undefined) headers.delete(h);
      else headers.set(h, [utf8Header(claimText(v))]);
    }
    client = { ...client, headers };
  }
  return new ProxyRequest(p.params, p.paramNames, p.query, client, p.body, p.signal, p.method, extra);
}

function runPipe(f: Inflight, preq: ProxyRequest, noop: BackendPipe | null, proxy: Proxy | null): void {
  if (noop !== null) {
    let out;
    try {
      out = noop.buildOutbound(preq);
    } catch (err) {
      f.renderError(err as Error);
      return;
    }
    f.out = out;
    noop.client(out).then(
      (r) => streamSafely(f, r),
      (err: Error) => f.renderError(withBackend(err, out)),
    );
    return;
  }
  proxy!(preq).then(
    (r) => renderSafely(f, r),
    (err: Error) => f.renderError(err),
  );
}

// A throw while answering (a plugin's odd header, a response nested too deep to serialise...)
// must end that request, never reach the process as an unhandled rejection.
function streamSafely(f: Inflight, r: BackendResponse): void {
  try {
    f.stream(r);
  } catch (err) {
    f.crashed(err as Error);
  }
}

function renderSafely(f: Inflight, r: ProxyResponse): void {
  try {
    f.renderOk(r);
  } catch (err) {
    f.crashed(err as Error);
  }
}

const EMPTY: string[] = [];

/** Headers gw writes itself (or uWS does) and a modifier's response headers may not replace. */
const OWN_HEADERS: ReadonlySet<string> = new Set(['content-type', 'content-length', 'date', 'x-krakend', 'x-krakend-completed', 'cache-control']);

/**
 * Response headers a Lua modifier set (KrakenD's response metadata), minus hop-by-hop and gw's own
 * (and the CORS ones when gw answers CORS itself: a browser refuses two Allow-Origin values).
 */
function writeExtraHeaders(res: HttpResponse, h: Headers, cors: boolean): void {
  for (const k in h) {
    const lower = k.toLowerCase();
    if (HOP_BY_HOP.has(lower) || OWN_HEADERS.has(lower) || !validHeaderName(k)) continue;
    if (cors && lower.startsWith('access-control-')) continue;
    const v = h[k]!;
    if (Array.isArray(v)) {
      for (const x of v) if (validHeaderValue(x)) res.writeHeader(k, x);
    } else if (validHeaderValue(v)) res.writeHeader(k, v);
  }
}

