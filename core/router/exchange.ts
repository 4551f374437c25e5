/**
 * One client request's life, as an explicit state machine with a single terminal step.
 *
 *     OPEN ──── stream head written ───► STREAMING
 *       │                                   │
 *       └─ answered · failed · client left · timed out ─┴──► DONE   (settle(), once)
 *
 * Whatever ends the exchange first — the answer, the client leaving, the endpoint timeout, a body
 * over its limit, a throw — goes through `settle()`, which runs once: the timer is cleared, the
 * client body is finished (an unread one is discarded, never left to throw), the backend transfer
 * is aborted when it did not complete, and the exchange leaves the in-flight list. A callback that
 * arrives later (a backend answering after the timeout, a plugin stream after the client left)
 * finds `state === DONE` and only releases what it holds.
 *
 * Only OPEN answers: `answer()` (decoded data), `fail()` (KrakenD's error statuses), `refuse()`
 * (auth guards), `reject()` (413 mid-upload), `stream()` (no-op). STREAMING can only end (the body
 * completes) or be cut (the connection is closed: the honest signal once headers are out).
 */
import { Readable } from 'node:stream';
import type { EndpointConfig, RouterOptions, ServerLimits } from '../config/types.js';
import type { Logger } from '../log.js';
import type { BackendResponse, Headers } from '../plugin/types.js';
import type { Modifiers } from '../plugin/modifier.js';
import type { UpstreamResponse } from '../transport/client.js';
import type { BackendPipe } from '../proxy/backend.js';
import type { Cors } from './cors.js';
import type { BotCheck } from '../validation/guards.js';
import type { CelChecks } from '../validation/cel.js';
import type { RequestChecks } from '../validation/request.js';
import { AuthError, type JwtValidator } from '../auth/jwt.js';
import { RateLimitError, type RouterLimit } from '../qos/ratelimit.js';
import { HOP_BY_HOP, validHeaderName, validHeaderValue } from '../proxy/request.js';
import { CanceledError, DeadlineError, Scope, StatusError, withBackend, type Proxy, type ProxyRequest, type ProxyResponse } from '../proxy/types.js';
import { isUpstreamBody, releaseBody, type FlowControl, type UpstreamBody } from '../transport/body.js';
import { RawResponse, type Receiver } from '../transport/client.js';
import type { DeadlineQueue, Timed } from './deadlines.js';
import { gunzipLimited } from '../transport/inflate.js';
import { VERSION_HEADER_VALUE } from '../version.js';
import { goJsonBytes } from './json.js';
import type { Render } from './render.js';
import { statusLine } from './status.js';
import { ClientSink, pumpIterable, type StreamOwner } from './stream.js';
import { TEXT_PLAIN } from './edge.js';
import type { HttpResponse } from './uws.js';
import type { AccessLog } from '../telemetry/access.js';
import { Outcome } from '../telemetry/metrics.js';
import type { BackendMetrics, EndpointMetrics, RequestMetrics } from '../telemetry/otel.js';
import type { BackendTrace, RequestTrace, Tracing } from '../telemetry/tracing.js';
import { Linger, LINGER_MS } from './linger.js';

export interface EndpointRuntime {
  readonly config: EndpointConfig;
  /** Decoding pipeline (json, string, ...), or null for no-op endpoints. */
  readonly proxy: Proxy | null;
  /** The single backend of a no-op endpoint. */
  readonly noop: BackendPipe | null;
  /** Endpoint-level modifier plugins of a no-op endpoint (decoding endpoints have them in `proxy`). */
  readonly noopMods?: Modifiers | null;
  /** The request body is read whole before the pipe runs (several readers, scripts, a schema). */
  readonly bufferBody: boolean;
  /** Largest request body accepted (413 beyond), 0 = no limit: `max_payload`, else for a buffered
   *  body gw's `max_buffered_payload`. */
  readonly bodyLimit: number;
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
  /** Rate limits (qos/ratelimit/service then qos/ratelimit/router, and their Redis variants), outer first. */
  readonly rateLimits: readonly RouterLimit[];
  /** telemetry/opentelemetry: this endpoint's global and proxy series, or null (off, or a skipped path). */
  readonly metrics: EndpointMetrics | null;
  /** …and its no-op backend's stage and round-trip series. */
  readonly noopMetrics: BackendMetrics | null;
}

export interface ServerState {
  readonly router: RouterOptions;
  readonly limits: ServerLimits;
  readonly logger: Logger;
  /** `security/cors`, or null. */
  readonly cors: Cors | null;
  /** The access log (telemetry/access.ts), or null when `router.disable_access_log`. */
  readonly access: AccessLog | null;
  /** telemetry/opentelemetry metrics (telemetry/otel.ts), or null when off. */
  readonly metrics: RequestMetrics | null;
  /** telemetry/opentelemetry traces (telemetry/tracing.ts), or null when off. */
  readonly tracing: Tracing | null;
  /** Requests in flight, for graceful shutdown; `first` heads their list (describeInflight). */
  inflight: number;
  /** Shutting down: every answer ends its connection (`Connection: close`), as Go's Shutdown does. */
  draining: boolean;
  first: Exchange | null;
  onIdle: (() => void) | null;
}

export const OPEN = 0;
export const STREAMING = 1;
export const DONE = 2;


export class Exchange extends Scope implements StreamOwner, Timed, Receiver {
  state = OPEN;
  /** The client connection is gone: `res` must never be touched again. */
  aborted = false;
  // Endpoint timeout (deadlines.ts): queued from the start until the answer's head or the end.
  deadline = 0;
  tprev: Timed | null = null;
  tnext: Timed | null = null;
  dq: DeadlineQueue | null = null;
  /** The backend call of the no-op path with gw's own client (receiver mode), to cancel it. */
  call: FlowControl | null = null;
  /** Set once the guards ran (the JWT stage may replace it with the claims applied). */
  preq: ProxyRequest = null as never;
  body: RequestBody | null = null;
  upstream: UpstreamBody | null = null;
  sink: ClientSink | null = null;
  /** Access-Control-Allow-Origin for this request (null: not allowed); unused without CORS. */
  corsOrigin: string | null = null;
  /** The no-op backend call, for log lines. */
  out: { method: string; url: string; trace?: BackendTrace | null } | null = null;
  /** The endpoint's output encoding (render.ts) and, for `negotiate`, the client's Accept. */
  render: Render | null = null;
  accept = '';
  /** Request values the guard stages need after the handler returned (see stages.ts). */
  userAgent = '';
  /** The rate limit's client key header (qos/ratelimit/*: strategy header, or ip with a key). */
  limitKey = '';
  token = '';
  cookie = '';
  // no-op answer
  acceptsGzip = false;
  sentAcceptEncoding = true;
  private headStatus = 0;
  private headHeaders: Headers | null = null;
  /** A backend head in receiver mode: undici's raw pairs and their lower-case names. */
  private headRaw: RawResponse | null = null;
  private headGunzip = false;
  /** The body is a JSON value a plugin returned: say so when its headers do not. */
  private headJson = false;
  // in-flight list
  prev: Exchange | null = null;
  next: Exchange | null = null;
  readonly startedAt = Date.now();
  /** For the access log (only set when it is on): the status sent, the raw query, the start
   *  stamp, and the errors KrakenD attaches to gin's context. */
  status = 0;
  query = '';
  t0 = 0;
  errors: readonly Error[] | null = null;
  /** For the metrics (only set when they are on): the answer's body size and completeness, and
   *  when the no-op backend call started and its head arrived. */
  bytes = 0;
  complete = false;
  tb = 0;
  th = 0;
  /** The request's spans (traces on), or null. */
  trace: RequestTrace | null = null;
  /** A guard refused it (auth, rate limit): the proxy never ran. */
  refused = false;

  constructor(
    readonly res: HttpResponse,
    readonly rt: EndpointRuntime,
    readonly server: ServerState,
    readonly path: string,
    readonly ip: string,
  ) {
    super();
    server.inflight++;
    const first = server.first;
    if (first !== null) {
      first.prev = this;
      this.next = first;
    }
    server.first = this;
    res.onAborted(this.onAborted);
  }

  /**
   * The exchange is the request's root scope: cancelling it aborts the calls and child scopes that
   * watch it, the signal if one was built, the no-op call and its body.
   */
  override cancel(reason: Error): void {
    if (this.reason !== null) return;
    super.cancel(reason);
    this.call?.abort(reason);
    this.upstream?.abort(reason);
  }

  /** uWS: the client connection closed (or gw closed it). */
  readonly onAborted = (): void => {
    this.aborted = true;
    this.body?.linger?.gone();
    const err = new CanceledError();
    this.cancel(err);
    // A plugin stream waiting on backpressure is woken so it sees the abort and stops.
    this.sink?.source?.resume();
    this.settle(err);
  };

  /** Timed: the endpoint timeout passed. */
  expire(): void {
    this.timeout();
  }

  /** The endpoint timeout fired: abort the pipe; the client is answered right after. */
  timeout(): void {
    const err = new DeadlineError();
    this.cancel(err);
    this.body?.destroy(err);
    // The aborted call normally rejects within this turn (its error names the backend). Whatever
    // the pipe is doing otherwise (a call still queued for a connection, a plugin that ignores its
    // signal), the client is answered right after.
    setImmediate(answerTimedOut, this, err);
  }

  /** The terminal step: runs once, whatever ended the exchange. */
  private settle(reason: Error | null): void {
    if (this.state === DONE) return;
    this.state = DONE;
    this.dq?.remove(this);
    if (reason !== null) this.cancel(reason);
    this.body?.finish();
    const s = this.server;
    if (this.prev !== null) this.prev.next = this.next;
    else s.first = this.next;
    if (this.next !== null) this.next.prev = this.prev;
    this.prev = this.next = null;
    if (s.access !== null) this.logAccess(s.access, reason);
    if (this.rt.metrics !== null || this.rt.noopMetrics !== null) this.measure();
    if (this.trace !== null) this.endTrace(reason);
    if (--s.inflight === 0 && s.onIdle !== null) s.onIdle();
  }

  /** The access-log line: a client that left before any answer is KrakenD's 500 `context canceled`. */
  private logAccess(a: AccessLog, reason: Error | null): void {
    let status = this.status;
    let errors = this.errors;
    if (status === 0) {
      status = 500;
      errors ??= [reason ?? new CanceledError()];
    }
    a.record(this.t0, status, this.ip, this.rt.config.method, this.path, this.query, errors);
  }

  /** The no-op backend's span (if its call was made), then the proxy and global spans. */
  private endTrace(reason: Error | null): void {
    const err = this.status === 0 ? (reason ?? new CanceledError()) : this.errors !== null && !this.complete ? this.errors[0]! : null;
    const bt = this.rt.noop !== null ? this.out?.trace : null;
    if (bt != null) bt.end(this.headStatus, this.headStatus > 0 ? null : err);
    this.trace!.end(this.status === 0 ? 500 : this.status, err);
  }

  /** telemetry/opentelemetry: the global and proxy series, and the no-op backend's. */
  private measure(): void {
    const now = performance.now();
    const seconds = (now - this.t0) / 1000;
    const answered = this.status !== 0;
    const m = this.rt.metrics;
    if (m !== null) {
      const outcome = this.refused
        ? null
        : !answered ? Outcome.Canceled : this.errors !== null && !this.complete ? Outcome.Error : this.complete ? Outcome.Complete : Outcome.Incomplete;
      // A streamed answer of unknown length: what went out.
      const bytes = this.bytes >= 0 ? this.bytes : (this.sink?.sent ?? 0);
      m.record(answered ? this.status : 500, seconds, bytes, outcome);
    }
    const bm = this.rt.noopMetrics;
    if (bm !== null && this.tb > 0) {
      const head = this.headStatus;
      const outcome = head > 0 && this.complete ? Outcome.Complete : head === 0 && this.aborted ? Outcome.Canceled : Outcome.Error;
      bm.record(outcome, ((head > 0 ? this.th : now) - this.tb) / 1000, head, head > 0 ? this.bytes : -1, this.reason instanceof DeadlineError);
    }
  }

  /** One line for crash reports and shutdown logs. */
  describe(now: number): string {
    const phase = this.state === STREAMING ? 'streaming' : this.out !== null ? 'waiting for the backend' : 'in the pipe';
    return `${this.rt.config.method} ${this.path} from ${this.ip}, ${now - this.startedAt} ms, ${phase}`;
  }

  /**
   * The answer must end its connection: the gateway is draining, or the client's body is still
   * arriving. uWS re-arms a connection's idle timeout only when a response ends, so a client that
   * stops sending after gw answered early (a guard's 401, a refused backend, a plugin's hijack)
   * would hold the connection for ever; and when the rest of such an upload turns out malformed,
   * uWS 20.57 writes its own error page into whatever gw is sending. Go, nginx and Envoy close too.
   */
  private closing(): boolean {
    return this.server.draining || (this.body !== null && !this.body.complete);
  }

  /** Before the last write: an upload still paused is resumed so its rest drains (and is dropped). */
  private releaseBody(): void {
    this.body?.release();
  }

  private writeCommon(cors: Cors | null): void {
    this.res.writeHeader('X-Krakend', this.server.router.hideVersionHeader ? 'Version undefined' : VERSION_HEADER_VALUE);
    if (cors !== null) cors.write(this.res, this.corsOrigin);
  }

  // ---- decoding encodings ----

  /** The merged, decoded answer: 200 with the rendered data. */
  answer(resp: ProxyResponse): void {
    if (this.state !== OPEN) return;
    const ep = this.rt.config;
    if (resp.errors !== null) {
      logErrors(this.server.logger, ep.path, resp.errors);
      this.errors = resp.errors;
    }
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
      this.fail(err as Error);
      return;
    }
    // A JSON body is a view of the JSON writer's scratch buffer: it is written below, before
    // anything else can render JSON.
    const { body, contentType } = rendered;
    const res = this.res;
    const cors = this.server.cors;
    this.status = 200;
    this.complete = complete;
    if (this.rt.metrics !== null) this.bytes = typeof body === 'string' ? Buffer.byteLength(body) : (body as Uint8Array).length;
    res.cork(() => {
      this.releaseBody();
      res.writeStatus('200 OK');
      res.writeHeader('Content-Type', contentType);
      // auth/signer endpoints answer from KrakenD's signer handler: no completeness, no caching.
      if (!this.rt.signed) {
        res.writeHeader('X-Krakend-Completed', complete ? 'true' : 'false');
        if (complete && ep.cacheTtlS > 0) res.writeHeader('Cache-Control', `public, max-age=${ep.cacheTtlS}`);
      }
      if (resp.headers !== undefined) writeExtraHeaders(res, resp.headers, cors !== null);
      this.writeCommon(cors);
      res.end(body, this.closing());
    });
    this.settle(null);
  }

  /** The pipe failed: KrakenD's error answer (500, a backend's status with return_error_code, 503 when a queue is full). */
  fail(err: Error): void {
    if (this.state !== OPEN || this.aborted) return;
    const ep = this.rt.config;
    const timedOut = this.reason instanceof DeadlineError;
    // A timed-out call reports the deadline (with the backend it was waiting for, when known).
    const e = timedOut && !(err instanceof StatusError) ? (err instanceof DeadlineError ? err : this.reason!) : err;
    const errors = (e as { all?: Error[] }).all ?? [e];
    logErrors(this.server.logger, ep.path, errors);
    this.errors = errors;
    const router = this.server.router;
    let status = 500;
    let body = '';
    let contentType = TEXT_PLAIN;
    let extra: Headers | null = null;
    if (e instanceof StatusError && e.returnCode) {
      status = e.status;
      extra = e.headers;
      if (router.returnErrorMsg || e.showBody) {
        body = e.body ?? '';
        if (e.contentType && validHeaderValue(e.contentType)) contentType = e.contentType;
      }
    } else if ((e as { code?: string }).code === 'QUEUE_FULL') {
      status = 503;
      if (router.returnErrorMsg) body = e.message;
    } else if (router.returnErrorMsg) {
      body = e.message;
    }
    const cors = this.server.cors;
    this.status = status;
    this.complete = false;
    if (this.rt.metrics !== null) this.bytes = Buffer.byteLength(body);
    this.endOwn((res) => {
      res.writeStatus(statusLine(status));
      res.writeHeader('X-Krakend-Completed', 'false');
      if (body !== '') res.writeHeader('Content-Type', contentType);
      if (extra !== null) writeExtraHeaders(res, extra, cors !== null);
      this.writeCommon(cors);
    }, body);
    this.settle(timedOut ? e : null);
  }

  /** auth/validator or the bot detector refused the request: 401/403 with an empty body, as KrakenD. */
  refuse(err: Error, tag: string): void {
    if (this.state !== OPEN || this.aborted) return;
    const status = err instanceof AuthError || err instanceof RateLimitError ? err.status : 500;
    const msg = `[ENDPOINT: ${this.rt.config.path}][${tag}] ${err.message}`;
    // Client mistakes and rate limits are routine (debug); a key set gw could not fetch is an outage (error).
    if (err instanceof RateLimitError) this.server.logger.debug(msg);
    else if (!(err instanceof AuthError) || err.fault) this.server.logger.error(msg);
    else this.server.logger.debug(msg);
    const cors = this.server.cors;
    this.status = status;
    this.refused = true;
    this.endOwn((res) => {
      res.writeStatus(statusLine(status));
      if (cors !== null) cors.write(res, this.corsOrigin);
    }, '');
    this.settle(null);
  }

  /**
   * Ends an answer gw wrote itself (an error status, a refusal). With the client's upload still
   * arriving, a close right after the answer would send RST over the unread upload and could wipe
   * the answer before the client read it: the rest is read and dropped first (linger.ts), as for
   * a 413 mid-upload. Otherwise the answer goes out at once.
   */
  private endOwn(head: (res: HttpResponse) => void, body: string): void {
    const res = this.res;
    const b = this.body;
    if (b !== null && !b.complete && b.linger === null) {
      b.linger = new Linger(res, head, body);
      this.releaseBody(); // a paused upload must flow for the linger to see it
      return;
    }
    res.cork(() => {
      this.releaseBody();
      head(res);
      res.end(body, this.closing());
    });
  }

  /** Ends the exchange early with `status` (413 mid-upload) and closes the connection. */
  reject(status: number, message: string): void {
    if (this.state === DONE || this.aborted) return;
    const err = new Error(message);
    if (this.state === STREAMING) {
      this.cut(err);
      return;
    }
    const res = this.res;
    const cors = this.server.cors;
    this.status = status;
    const head = (res: HttpResponse): void => {
      res.writeStatus(statusLine(status));
      res.writeHeader('Content-Type', TEXT_PLAIN);
      if (cors !== null) cors.write(res, this.corsOrigin);
    };
    // The client is still sending: ending with a close now could reset the answer away (linger.ts).
    const b = this.body;
    if (b !== null && !b.complete) b.linger = new Linger(res, head, message);
    else {
      res.cork(() => {
        head(res);
        res.end(message, true);
      });
    }
    this.settle(err);
  }

  /** Something threw while answering: a 500 if nothing went out yet, else the connection is closed. */
  crashed(err: Error): void {
    this.server.logger.error(`[ENDPOINT: ${this.rt.config.path}] internal error while answering: ${err.stack ?? err.message}`);
    if (this.state === DONE || this.aborted) return;
    if (this.state === OPEN) {
      try {
        this.fail(err);
        return;
      } catch {
        /* the answer is half written: cut below */
      }
    }
    this.cut(err);
  }

  /** Headers are out (or half written): closing the connection is the only honest signal. */
  private cut(err: Error): void {
    this.complete = false;
    this.settle(err);
    if (!this.aborted) {
      try {
        this.res.close();
      } catch {
        /* already ended */
      }
    }
  }

  // ---- no-op ----

  // ---- Receiver: the no-op backend call with gw's own client (transport/client.ts `stream`) ----

  /** The backend's head, synchronously from undici's parser: the sink is attached before any body chunk. */
  head(r: UpstreamResponse): void {
    try {
      this.stream(r);
    } catch (err) {
      this.crashed(err as Error);
    }
  }

  /** The backend call failed before a head arrived. */
  failed(err: Error): void {
    try {
      this.fail(this.out !== null ? withBackend(err, this.out, this.rt.noop?.config.urlPattern ?? '') : err);
    } catch (e) {
      this.crashed(e as Error);
    }
  }

  /** The backend's answer, streamed to the client untouched. */
  stream(resp: BackendResponse): void {
    // The endpoint timeout bounds the wait for the backend's answer; a streamed body is then
    // bounded by the pool's body (idle) timeout, so large transfers are not cut at `timeout`.
    this.dq?.remove(this);
    const b = resp.body;
    if (this.state !== OPEN || this.aborted) {
      releaseBody(b);
      return;
    }
    const raw = resp instanceof RawResponse ? resp : null;
    const headers = raw === null ? resp.headers : null;
    let total = -1;
    let gunzip = false;
    let source: unknown = b;
    if (isUpstreamBody(b)) {
      this.upstream = b;
      total = b.length;
      if (!this.acceptsGzip && !this.sentAcceptEncoding) {
        // gw asked for gzip on its own: a gzip answer is inflated for this client.
        const ce = raw !== null ? raw.header('content-encoding') : headers!['content-encoding'];
        if (ce === 'gzip') gunzip = true;
      }
    } else if (typeof b === 'string' || b instanceof Uint8Array) {
      total = typeof b === 'string' ? Buffer.byteLength(b) : b.byteLength;
    } else if (
      typeof b === 'number' || typeof b === 'boolean' ||
      (b !== null && typeof b === 'object' && !(b instanceof Readable) && typeof (b as AsyncIterable<unknown>)[Symbol.asyncIterator] !== 'function')
    ) {
      // A JSON value a plugin returned (an object, an array, a number, a boolean).
      source = goJsonBytes(b);
      total = (source as Buffer).length;
      this.headJson = true;
    }
    if (gunzip) total = -1;
    const status = resp.status;
    // A HEAD answer announces a length it does not send.
    const noBody = status === 204 || status === 304 || (status >= 100 && status < 200) || this.out?.method === 'HEAD';
    this.headStatus = status;
    this.status = status;
    this.complete = true;
    if (this.tb > 0 || this.rt.metrics !== null) {
      this.th = performance.now();
      this.bytes = total;
    }
    this.headHeaders = headers;
    this.headRaw = raw;
    this.headGunzip = gunzip;
    const res = this.res;
    if (noBody || source === null || source === undefined || typeof source === 'string' || source instanceof Uint8Array) {
      res.cork(() => {
        this.writeHead();
        if (noBody) {
          releaseBody(source);
          if (status === 204 || status === 304 || status < 200) res.endWithoutBody();
          else res.end('', this.closing());
        } else if (source === null || source === undefined) {
          res.end('', this.closing());
        } else {
          res.end(source as string | Uint8Array, this.closing());
        }
      });
      this.settle(null);
      return;
    }
    // The client is still uploading: the answer is chunked, so that anything uWS might write into
    // it (see closing()) breaks the framing instead of passing as the tail of a whole body, and so
    // that its end is an explicit call that can wait for the upload (holdEnd).
    if (this.body !== null && !this.body.complete) total = -1;
    const sink = new ClientSink(res, this, total);
    this.sink = sink;
    if (isUpstreamBody(source) && !gunzip) {
      sink.source = source;
      source.pipe(sink);
      return;
    }
    let it: AsyncIterable<Uint8Array> = isUpstreamBody(source) ? source.stream() : (source as AsyncIterable<Uint8Array>);
    // Failures travel both ways: a backend reset or a client leaving mid-body destroys the other
    // side instead of surfacing as an unhandled 'error' event.
    if (gunzip) it = gunzipLimited(it as Readable);
    void pumpIterable(it, sink);
  }

  /** Status and headers of a streamed answer; runs inside a cork (see ClientSink). */
  writeHead(): void {
    this.state = STREAMING;
    const res = this.res;
    this.releaseBody();
    res.writeStatus(statusLine(this.headStatus));
    // Draining (a stop or a reload): a streamed answer cannot end its connection through uWS's
    // end(…, true), so it tells the client to, before it sends another request on it.
    if (this.server.draining) res.writeHeader('Connection', 'close');
    if (this.headRaw !== null) {
      writeRawHeaders(res, this.headRaw, this.headGunzip, this.server.cors !== null);
      res.writeHeader('X-Krakend-Completed', 'false');
      this.writeCommon(this.server.cors);
      return;
    }
    const headers = this.headHeaders!;
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
      if (!validHeaderName(k)) continue;
      writeHeaderValues(res, k, v);
    }
    if (this.headJson && !hasContentType) res.writeHeader('Content-Type', 'application/json; charset=utf-8');
    res.writeHeader('X-Krakend-Completed', 'false');
    this.writeCommon(cors);
  }

  /**
   * StreamOwner: a streamed answer is complete but the client's body is still arriving. uWS cannot
   * end a chunked answer and close its connection (it writes `Connection: close` into the body),
   * and an answer that ends before the upload does leaves the connection without an idle timeout.
   * So the rest of the upload is read and dropped — at most DROP_BYTES within DROP_MS, as Go reads
   * up to 256 KiB of an unread body — and then the answer ends; past either bound the connection
   * is cut.
   */
  holdEnd(end: () => void): boolean {
    const b = this.body;
    if (b === null || b.complete || this.aborted) return false;
    const timer = setTimeout(cutUpload, DROP_MS, this);
    b.discardRest(() => {
      clearTimeout(timer);
      end();
    });
    return true;
  }

  /** The client's body went on past the drop bounds after the answer: cut the connection. */
  uploadTooLong(): void {
    if (this.state !== DONE && !this.aborted) this.cut(new Error(`request body still arriving after the answer (over ${DROP_BYTES} bytes or ${DROP_MS} ms)`));
  }

  /** StreamOwner: the body failed before anything was written. */
  failBeforeHead(err: Error): void {
    this.fail(err);
  }

  /** StreamOwner: the streamed body completed (null) or was cut (the sink closes the connection). */
  streamDone(err: Error | null): void {
    if (err !== null && !this.aborted && this.state !== DONE) {
      const b = this.rt.noop?.config.urlPattern;
      this.server.logger.error(`[ENDPOINT: ${this.rt.config.path}]${b ? `[BACKEND: ${b}]` : ''} ${this.out?.method} "${this.out?.url}": response body failed after the headers were sent: ${err.message}`);
      // The access line says the answer was cut.
      this.errors = [err];
      this.complete = false;
    }
    this.settle(err);
  }
}

function ignore(): void {}

/**
 * One header's value(s), as plugins may hand them over (numbers, lists: uWS takes strings only).
 * uWS writes what it is given, so a value that could split the response is dropped.
 */
export function writeHeaderValues(res: HttpResponse, name: string, v: unknown): void {
  if (Array.isArray(v)) {
    for (const x of v) {
      const t = String(x);
      if (validHeaderValue(t)) res.writeHeader(name, t);
    }
  } else {
    const t = String(v);
    if (validHeaderValue(t)) res.writeHeader(name, t);
  }
}

/** Response headers gw never copies from a backend: hop-by-hop, and what uWS writes itself. */
export const NOT_COPIED: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'content-length', 'date', 'uwebsockets']);

/**
 * A backend's headers from undici's raw pairs, to the client: values go out as the Buffers undici
 * parsed (its parser refused CR, LF and NUL in them), names in lower case as the object path writes
 * them. Dropped: hop-by-hop headers and those the backend's Connection header names, what uWS
 * writes itself, the backend's CORS headers when gw answers CORS, Content-Encoding when gw inflates.
 */
function writeRawHeaders(res: HttpResponse, r: RawResponse, gunzip: boolean, cors: boolean): void {
  const names = r.names;
  const raw = r.raw;
  let named: Set<string> | null = null;
  for (let i = 0; i < names.length; i++) {
    if (names[i] === 'connection') {
      named ??= new Set();
      for (const t of raw[2 * i + 1]!.toString('latin1').toLowerCase().split(',')) named.add(t.trim());
    }
  }
  for (let i = 0; i < names.length; i++) {
    const n = names[i]!;
    if (NOT_COPIED.has(n)) continue;
    if (cors && n.startsWith('access-control-')) continue;
    if (named !== null && named.has(n)) continue;
    if (gunzip && n === 'content-encoding') continue;
    res.writeHeader(n, raw[2 * i + 1]!);
  }
}

/** Bounds on the rest of an upload read and dropped after a streamed answer (holdEnd). */
const DROP_BYTES = 256 * 1024;
const DROP_MS = 1000;

function cutUpload(x: Exchange): void {
  x.uploadTooLong();
}

function answerTimedOut(x: Exchange, err: DeadlineError): void {
  if (x.state === OPEN && !x.aborted) x.fail(x.out !== null ? withBackend(err, x.out, x.rt.noop?.config.urlPattern ?? '') : err);
}

export function logErrors(logger: Logger, path: string, errors: readonly Error[]): void {
  if (!logger.isLevelEnabled('error')) return;
  if (errors.length === 1) {
    const e = errors[0]!;
    logger.error(`[ENDPOINT: ${path}]${backendTag(e)} ${errorText(e)}`);
    return;
  }
  errors.forEach((e, i) => logger.error(`[ENDPOINT: ${path}]${backendTag(e)} Error #${i}: ${errorText(e)}`));
}

/** `[BACKEND: /p]`: the backend that failed, when known. */
function backendTag(e: Error): string {
  const b = (e as { backend?: string }).backend;
  return b ? `[BACKEND: ${b}]` : '';
}

function errorText(e: Error): string {
  return (e as { detail?: string }).detail ?? e.message;
}

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

/**
 * The client's request body as a Readable fed by uWS onData, with backpressure (res.pause). It
 * always has an 'error' listener: a body destroyed (timeout, client gone, limit) before any reader
 * attached — a backend still connecting, a JWT key set being fetched — must not throw.
 */
export class RequestBody extends Readable {
  private paused = false;
  private received = 0;
  /** uWS delivered the last chunk. */
  complete = false;
  /** After a streamed answer: the rest of the upload is dropped, then `onComplete` runs. */
  private dropping = false;
  private dropped = 0;
  private lingering = false;
  private onComplete: (() => void) | null = null;
  /** After a 413 mid-upload: the answer is out, the rest of the upload goes here (linger.ts). */
  linger: Linger | null = null;

  constructor(
    private readonly x: Exchange,
    /** 0 = no limit. */
    private readonly limit: number,
    /** The client announced a Content-Length (else the body is chunked). */
    readonly lengthKnown: boolean,
  ) {
    super();
    this.on('error', ignore);
  }

  override _read(): void {
    if (this.paused && this.x.state !== DONE) {
      this.paused = false;
      this.x.res.resume();
    }
  }

  /** Resumes a paused upload (its rest is dropped); only while the response is still open. */
  release(): void {
    if (this.paused && !this.x.aborted && this.x.state !== DONE) {
      this.paused = false;
      this.x.res.resume();
    }
  }

  /** Reads and drops the rest of the upload; `done` runs when its last chunk arrived. */
  discardRest(done: () => void): void {
    this.dropping = true;
    this.onComplete = done;
    if (this.paused) {
      this.paused = false;
      this.x.res.resume();
    }
  }

  /** The exchange ended: a body still arriving can never complete for its reader. */
  finish(): void {
    if (!this.complete && !this.destroyed) this.destroy(new CanceledError());
  }

  /** uWS onData. */
  feed(ab: ArrayBuffer, isLast: boolean): void {
    if (this.linger !== null) return this.linger.feed(ab, isLast);
    const x = this.x;
    if (this.dropping) {
      if (x.state === DONE) return;
      if (isLast) {
        this.complete = true;
        const done = this.onComplete!;
        this.onComplete = null;
        done();
      } else if ((this.dropped += ab.byteLength) > DROP_BYTES && !this.lingering) {
        // Cut now and the close sends RST over the unread upload: a client busy writing loses the
        // answer it has not read yet. It gets LINGER_MS to read it (the rest is still dropped),
        // as Go's server waits 500 ms; then the connection is cut.
        this.lingering = true;
        setTimeout(cutUpload, LINGER_MS, x);
      }
      return;
    }
    // Data after the answer, or for a body its reader dropped (a backend that answered early), is
    // discarded: the response may be gone, so `res` must not be touched.
    if (x.state === DONE || this.destroyed) {
      if (isLast) this.complete = true;
      return;
    }
    if (this.limit > 0 && (this.received += ab.byteLength) > this.limit) {
      const message = `request body larger than ${this.limit} bytes`;
      // Past its last chunk nothing more arrives: the answer can end and close at once.
      if (isLast) this.complete = true;
      this.destroy(new Error(message));
      x.reject(413, message);
      return;
    }
    // uWS reuses the ArrayBuffer after this callback: copy it.
    if (ab.byteLength > 0 && !this.push(Buffer.from(ab.slice(0))) && !isLast) {
      this.paused = true;
      x.res.pause();
    }
    if (isLast) {
      this.complete = true;
      this.push(null);
    }
  }
}
