/**
 * The uWS entry when server plugins are configured (`plugin/http-server`): one catch-all route
 * that turns the client request into a {@link ServerRequest}, runs the plugin chain (whose
 * innermost `next` is the router, `virtual.ts`) and writes the {@link ServerResponse} back with
 * backpressure. CORS stays outside the plugins, as in KrakenD: preflights are answered here, and
 * an answer without CORS headers gets them.
 *
 * Without server plugins this file is not used: uWS calls the router's handlers directly.
 */
import { Readable } from 'node:stream';
import type { Context } from '@opentelemetry/api';
import type { Logger } from '../log.js';
import type { Headers, ServerHandler, ServerRequest, ServerResponse } from '../plugin/types.js';
import { responseProblem } from '../plugin/checks.js';
import { validHeaderName, validHeaderValue } from '../proxy/request.js';
import { clientIp } from './capture.js';
import type { Cors } from './cors.js';
import { TEXT_PLAIN } from './edge.js';
import { NOT_COPIED, writeHeaderValues, type ServerState } from './exchange.js';
import { goJson } from './json.js';
import { Linger } from './linger.js';
import { statusLine } from './status.js';
import { ClientSink, type StreamOwner } from './stream.js';
import type { HttpRequest, HttpResponse } from './uws.js';
import { CONNECTION, Connection, InnerBody, ORIGINAL_BODY, TRACE_CONTEXT } from './virtual.js';

/** After the answer, the rest of an upload is read and dropped within these bounds (as the exchange). */
const DROP_BYTES = 256 * 1024;
const DROP_MS = 1000;

export function pluginEntry(chain: ServerHandler, state: ServerState, logger: Logger): (res: HttpResponse, req: HttpRequest) => void {
  const cors = state.cors;
  return (res, req) => {
    // Framing was checked by routes.ts `framed`, around this entry.
    const cl = req.getHeader('content-length');
    const te = req.getHeader('transfer-encoding');
    const method = req.getCaseSensitiveMethod().toUpperCase();
    // CORS wraps the plugins: a preflight never reaches them.
    if (cors !== null && method === 'OPTIONS' && cors.preflight(res, req) === true) return;
    const x = new PluginExchange(res, state, logger, cors === null ? null : { cors, allow: cors.allowOrigin(req.getHeader('origin'), method) });
    res.onAborted(() => x.abort());
    const headers: Headers = {};
    req.forEach((k, v) => {
      const prev = headers[k];
      if (prev === undefined) headers[k] = v;
      else if (Array.isArray(prev)) prev.push(v);
      else headers[k] = [prev, v];
    });
    const hasBody = (cl !== '' && cl !== '0') || te !== '';
    const body = hasBody ? new UploadBody(x) : null;
    x.upload = body;
    if (body !== null) res.onData((ab, last) => body.feed(ab, last));
    const sreq = new EntryRequest(method, req.getUrl(), req.getQuery() ?? '', headers, body, x.conn.ip, x);
    x.request = sreq;
    // A traced request: the plugins' spans (plugin/server.ts) start from the client's context.
    const tracing = state.tracing;
    if (tracing !== null && !tracing.skips(sreq.path)) sreq[TRACE_CONTEXT] = tracing.clientContext(req.getHeader('traceparent'), req.getHeader('tracestate'));
    let out: ServerResponse | Promise<ServerResponse>;
    try {
      out = chain(sreq);
    } catch (err) {
      x.failed(err);
      return;
    }
    if (out !== null && typeof (out as Promise<ServerResponse>).then === 'function') {
      (out as Promise<ServerResponse>).then(
        (r) => x.answer(r),
        (err: unknown) => x.failed(err),
      );
    } else x.answer(out as ServerResponse);
  };
}

/** The client request a server plugin sees. */
class EntryRequest implements ServerRequest {
  [CONNECTION]: Connection;
  [TRACE_CONTEXT]?: Context;
  [ORIGINAL_BODY]: ServerRequest['body'];
  constructor(
    public method: string,
    public path: string,
    public query: string,
    public headers: Headers,
    public body: ServerRequest['body'],
    readonly clientIp: string,
    private readonly x: PluginExchange,
  ) {
    this[CONNECTION] = x.conn;
    this[ORIGINAL_BODY] = body;
  }

  get signal(): AbortSignal {
    return this.x.signal;
  }
}

/** The client's upload as a Readable, fed by uWS onData with backpressure (res.pause/resume). */
class UploadBody extends Readable {
  complete = false;
  /** After an answer sent while the upload still arrives: the rest goes here (linger.ts). */
  linger: Linger | null = null;
  private paused = false;
  private dropping = false;
  private dropped = 0;
  private onDropped: (() => void) | null = null;

  constructor(private readonly x: PluginExchange) {
    super({ highWaterMark: 64 * 1024 });
    this.on('error', () => {});
  }

  override _read(): void {
    if (this.paused && !this.x.gone) {
      this.paused = false;
      this.x.res.resume();
    }
  }

  feed(ab: ArrayBuffer, last: boolean): void {
    if (this.linger !== null) {
      this.linger.feed(ab, last);
      return;
    }
    if (this.dropping) {
      if (last) {
        this.complete = true;
        const done = this.onDropped;
        this.onDropped = null;
        done?.();
      } else if (!this.x.done && (this.dropped += ab.byteLength) > DROP_BYTES) {
        this.x.cut(new Error(`request body still arriving after the answer (over ${DROP_BYTES} bytes)`));
      }
      return;
    }
    if (this.destroyed) {
      if (last) this.complete = true;
      return;
    }
    if (ab.byteLength > 0 && !this.push(Buffer.from(ab.slice(0))) && !last) {
      this.paused = true;
      this.x.res.pause();
    }
    if (last) {
      this.complete = true;
      this.push(null);
    }
  }

  /** The rest of the upload goes to `l` (which sends the answer); nobody reads it any more. */
  lingerWith(l: Linger): void {
    this.linger = l;
    if (!this.destroyed) this.destroy();
    if (this.paused) {
      this.paused = false;
      this.x.res.resume();
    }
  }

  /** Reads and drops the rest; `done` runs at its last chunk. */
  discardRest(done: (() => void) | null): void {
    this.dropping = true;
    this.onDropped = done;
    if (this.paused) {
      this.paused = false;
      this.x.res.resume();
    }
  }
}

class PluginExchange implements StreamOwner {
  readonly conn: Connection;
  request: EntryRequest | null = null;
  upload: UploadBody | null = null;
  /** The client left. */
  aborted = false;
  /** The answer was written (or cut). */
  done = false;
  private ac: AbortController | null = null;
  private head: ServerResponse | null = null;
  private json = false;

  constructor(
    readonly res: HttpResponse,
    private readonly state: ServerState,
    private readonly logger: Logger,
    private readonly cors: { cors: Cors; allow: string | null } | null,
  ) {
    this.conn = new Connection(clientIp(res));
    state.inflight++;
  }

  get gone(): boolean {
    return this.aborted || this.done;
  }

  get signal(): AbortSignal {
    this.ac ??= new AbortController();
    if (this.aborted && !this.ac.signal.aborted) this.ac.abort(new Error('the client went away'));
    return this.ac.signal;
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.conn.abort();
    this.ac?.abort(new Error('the client went away'));
    this.upload?.linger?.gone();
    this.upload?.destroy();
    this.settle();
  }

  private settle(): void {
    if (this.done && !this.aborted) return;
    const first = !this.done;
    this.done = true;
    this.conn.done();
    if (first && --this.state.inflight === 0 && this.state.onIdle !== null) this.state.onIdle();
  }

  failed(err: unknown): void {
    if (this.gone) return;
    const e = err instanceof Error ? err : new Error(String(err));
    const who = (e as { plugin?: string }).plugin;
    this.logger.error(`[PLUGIN: Server]${who ? `[${who}]` : ''} ${this.request?.method ?? ''} ${this.request?.path ?? ''}: ${e.message}`);
    const status = typeof (e as { statusCode?: unknown }).statusCode === 'number' ? (e as unknown as { statusCode: number }).statusCode : 500;
    const ok = Number.isInteger(status) && status >= 400 && status <= 599 ? status : 500;
    const enc = (e as { encoding?: unknown }).encoding;
    const body = this.state.router.returnErrorMsg || typeof enc === 'string' ? e.message : '';
    this.answer({ status: ok, headers: body !== '' ? { 'content-type': typeof enc === 'string' && validHeaderValue(enc) ? enc : TEXT_PLAIN } : {}, body });
  }

  answer(r: ServerResponse): void {
    if (this.gone) {
      release(r?.body);
      return;
    }
    const problem = responseProblem(r);
    if (problem !== null) {
      release((r as ServerResponse | null)?.body);
      this.failed(new Error(`the handler ${problem}`));
      return;
    }
    let b = r.body as unknown;
    let total = -1;
    if (b instanceof InnerBody) total = b.length;
    else if (typeof b === 'string') total = Buffer.byteLength(b);
    else if (b instanceof Uint8Array) total = b.byteLength;
    else if (
      typeof b === 'number' || typeof b === 'boolean' ||
      (b !== null && b !== undefined && typeof b === 'object' && !(b instanceof Readable) && typeof (b as AsyncIterable<unknown>)[Symbol.asyncIterator] !== 'function')
    ) {
      b = goJson(b);
      total = Buffer.byteLength(b as string);
      this.json = true;
    }
    this.head = r;
    const status = r.status;
    const res = this.res;
    const noBody = status === 204 || status === 304 || this.request?.method === 'HEAD';
    if (noBody || b === null || b === undefined || typeof b === 'string' || b instanceof Uint8Array) {
      if (noBody) release(b);
      const u = this.upload;
      if (!noBody && u !== null && !u.complete && !this.aborted) {
        // The upload is still arriving: closing right after the answer would send RST over the
        // unread rest and could wipe the answer before the client read it. The rest is read and
        // dropped first, as for the router's own answers (linger.ts).
        u.lingerWith(new Linger(res, () => this.writeHead(), (b ?? '') as string | Uint8Array));
        this.settle();
        return;
      }
      // A 204/304/HEAD answer (no body: it cannot be sent in pieces) to an upload still arriving:
      // the rest is read and dropped, and the connection closes after this answer.
      const close = this.state.draining || (u !== null && !u.complete);
      if (u !== null && !u.complete) u.discardRest(null);
      if (u !== null && u.destroyed === false && u.complete === false) u.destroy();
      res.cork(() => {
        this.writeHead();
        if (status === 204 || status === 304) res.endWithoutBody();
        else if (noBody) {
          // HEAD: the length a GET would get, written by hand (an argument to endWithoutBody
          // never completes the response in the uWS 20.30 build: see edge.ts endBody).
          const announced = headerOf(r.headers, 'content-length');
          const len = announced !== undefined && /^\d+$/.test(announced) ? announced : total >= 0 ? String(total) : null;
          if (len !== null) res.writeHeader('Content-Length', len);
          res.endWithoutBody();
        } else res.end((b ?? '') as string | Uint8Array, close);
      });
      this.settle();
      return;
    }
    // A stream: with backpressure both ways (ClientSink), chunked when its length is unknown.
    const src = b instanceof Readable ? b : Readable.from(b as AsyncIterable<Uint8Array>, { objectMode: false });
    if (this.upload !== null && !this.upload.complete) total = -1;
    const sink = new ClientSink(res, this, total);
    sink.source = src;
    src.on('data', (c: Buffer | string) => {
      if (!sink.write(typeof c === 'string' ? Buffer.from(c, 'utf8') : c)) src.pause();
    });
    src.once('end', () => sink.end());
    src.once('error', (err: Error) => sink.error(err));
  }

  /** StreamOwner: status and headers, inside the cork of the first write. */
  writeHead(): void {
    const r = this.head!;
    const res = this.res;
    res.writeStatus(statusLine(r.status));
    const h = r.headers ?? {};
    let corsSet = false;
    let typeSet = false;
    for (const k in h) {
      const lk = k.toLowerCase();
      if (NOT_COPIED.has(lk) || !validHeaderName(k)) continue;
      const v = h[k];
      if (v === undefined || v === null) continue;
      if (lk === 'access-control-allow-origin') corsSet = true;
      if (lk === 'content-type') typeSet = true;
      writeHeaderValues(res, k, v);
    }
    if (this.json && !typeSet) res.writeHeader('Content-Type', 'application/json; charset=utf-8');
    if (this.cors !== null && !corsSet) this.cors.cors.write(res, this.cors.allow);
  }

  failBeforeHead(err: Error): void {
    this.head = null;
    this.json = false;
    this.failed(err);
  }

  holdEnd(end: () => void): boolean {
    const u = this.upload;
    if (u === null || u.complete || this.aborted) return false;
    const timer = setTimeout(() => this.cut(new Error(`request body still arriving ${DROP_MS} ms after the answer`)), DROP_MS);
    u.discardRest(() => {
      clearTimeout(timer);
      end();
    });
    return true;
  }

  streamDone(err: Error | null): void {
    if (err !== null && !this.gone) this.logger.error(`[PLUGIN: Server] ${this.request?.method} ${this.request?.path}: response body failed after the headers were sent: ${err.message}`);
    this.settle();
  }

  /** Ends the connection: the answer cannot be completed honestly. */
  cut(err: Error): void {
    if (this.aborted) return;
    this.logger.debug(`[PLUGIN: Server] ${err.message}`);
    this.settle();
    try {
      this.res.close();
    } catch {
      /* already gone */
    }
  }
}

function headerOf(h: Headers | null | undefined, name: string): string | undefined {
  if (h === null || h === undefined) return undefined;
  for (const k in h) {
    if (k.toLowerCase() !== name) continue;
    const v = h[k];
    return Array.isArray(v) ? (v[0] === undefined ? undefined : String(v[0])) : v === undefined || v === null ? undefined : String(v);
  }
  return undefined;
}

function release(b: unknown): void {
  if (b instanceof Readable) b.destroy();
  else if (b !== null && typeof b === 'object' && typeof (b as { dump?: unknown }).dump === 'function') (b as { dump(): void }).dump();
}
