/**
 * The router as a function, for server plugins (`plugin/http-server`): `VirtualApp` records the
 * routes `registerRoutes` adds (the same endpoint handlers, special endpoints and 404/405/redirect
 * fallback uWS gets when no server plugin is configured) and `handle(req)` runs one
 * {@link ServerRequest} through them, resolving with a {@link ServerResponse} whose body streams
 * what the router writes, with backpressure (the router's writes wait until the body is read).
 *
 * The handlers get uWS-shaped request/response objects (`VirtualRequest`, `VirtualResponse`), so
 * the router's code is the same with and without server plugins; without them none of this exists
 * and the request path is uWS → handler as before.
 *
 * Route matching follows uWS: static segments before parameters before a trailing wildcard, and
 * a method-specific route before `any` on the same pattern.
 */
import { Readable } from 'node:stream';
import type { Context } from '@opentelemetry/api';
import type { Headers, ResponseBody, ServerRequest, ServerResponse } from '../plugin/types.js';
import type { HttpRequest, HttpResponse, RecognizedString, TemplatedApp } from './uws.js';
import { serverRequestProblem } from '../plugin/checks.js';

type Handler = (res: HttpResponse, req: HttpRequest) => void;

const enum Seg {
  Static = 0,
  Param = 1,
  Wild = 2,
}

interface Route {
  /** Upper-case method, or '*' for any. */
  method: string;
  kinds: Seg[];
  names: string[];
  handler: Handler;
  order: number;
}

/** What ties the inner calls of one client request to its connection: the client leaving. */
export class Connection {
  aborted = false;
  private readonly inner: VirtualResponse[] = [];
  private bytes: ArrayBuffer | null = null;
  constructor(
    /** The client's address as gw prints it (router/capture.ts clientIp). */
    readonly ip: string,
  ) {}

  /** uWS's address bytes for an IPv4 client; empty for IPv6, so that capture.ts reads the text. */
  get addr(): ArrayBuffer {
    return (this.bytes ??= ipBytes(this.ip));
  }

  get addrText(): ArrayBuffer {
    const b = Buffer.from(this.ip, 'latin1');
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
  }

  track(r: VirtualResponse): void {
    this.inner.push(r);
  }

  /** The client left: every inner exchange still running is told so. */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    for (const r of this.inner) r.abort();
    this.inner.length = 0;
  }

  /** The answer is out: inner exchanges nobody read to the end (a plugin that answered itself after
   *  calling next) are aborted, which frees their backend calls. */
  done(): void {
    for (const r of this.inner) if (!r.finished) r.abort();
    this.inner.length = 0;
  }
}

/** The hidden link from a ServerRequest to its connection (copied by `{ ...req }`). */
export const CONNECTION: unique symbol = Symbol('gw.connection');

export class VirtualApp {
  private readonly routes: Route[] = [];
  /** Routes made of static segments only, by path: an exact one wins over any other (uWS's order). */
  private readonly statics = new Map<string, Route[]>();
  private sorted = true;

  private add(method: string, pattern: string, handler: Handler): this {
    const parts = pattern.split('/').slice(1);
    const kinds: Seg[] = [];
    const names: string[] = [];
    for (const p of parts) {
      if (p === '*') kinds.push(Seg.Wild), names.push('');
      else if (p.startsWith(':')) kinds.push(Seg.Param), names.push('');
      else kinds.push(Seg.Static), names.push(p);
    }
    const route: Route = { method, kinds, names, handler, order: this.routes.length };
    this.routes.push(route);
    if (kinds.every((k) => k === Seg.Static)) {
      const list = this.statics.get(pattern) ?? [];
      list.push(route);
      this.statics.set(pattern, list);
    }
    this.sorted = false;
    return this;
  }

  get(p: string, h: Handler): this {
    return this.add('GET', p, h);
  }
  post(p: string, h: Handler): this {
    return this.add('POST', p, h);
  }
  put(p: string, h: Handler): this {
    return this.add('PUT', p, h);
  }
  patch(p: string, h: Handler): this {
    return this.add('PATCH', p, h);
  }
  del(p: string, h: Handler): this {
    return this.add('DELETE', p, h);
  }
  head(p: string, h: Handler): this {
    return this.add('HEAD', p, h);
  }
  options(p: string, h: Handler): this {
    return this.add('OPTIONS', p, h);
  }
  any(p: string, h: Handler): this {
    return this.add('*', p, h);
  }

  /** As uWS's router would try them: by segment kind (static, param, wildcard), then method before any. */
  private order(): void {
    if (this.sorted) return;
    this.routes.sort((a, b) => {
      const n = Math.min(a.kinds.length, b.kinds.length);
      for (let i = 0; i < n; i++) if (a.kinds[i] !== b.kinds[i]) return a.kinds[i]! - b.kinds[i]!;
      if (a.kinds.length !== b.kinds.length) return b.kinds.length - a.kinds.length;
      const am = a.method === '*' ? 1 : 0;
      const bm = b.method === '*' ? 1 : 0;
      return am - bm || a.order - b.order;
    });
    this.sorted = true;
  }

  /** The route for `method` + `path`, with its raw parameter values. */
  match(method: string, path: string): { route: Route; params: string[] } | null {
    this.order();
    const exact = this.statics.get(path);
    if (exact !== undefined) {
      for (const r of exact) if (r.method === method) return { route: r, params: NO_PARAMS };
      for (const r of exact) if (r.method === '*') return { route: r, params: NO_PARAMS };
    }
    const segs = path.split('/').slice(1);
    outer: for (const r of this.routes) {
      if (r.method !== '*' && r.method !== method) continue;
      const params: string[] = [];
      const k = r.kinds;
      for (let i = 0; i < k.length; i++) {
        if (k[i] === Seg.Wild) return { route: r, params };
        if (i >= segs.length) continue outer;
        if (k[i] === Seg.Param) {
          if (segs[i] === '') continue outer;
          params.push(segs[i]!);
        } else if (segs[i] !== r.names[i]) continue outer;
      }
      if (segs.length !== k.length) continue;
      return { route: r, params };
    }
    return null;
  }

  /** Runs `req` through the router. Rejects only for a request gw cannot represent. */
  handle(req: ServerRequest): Promise<ServerResponse> {
    const problem = serverRequestProblem(req);
    if (problem !== null) return Promise.reject(new Error(problem));
    const method = req.method.toUpperCase();
    const conn = (req as { [CONNECTION]?: Connection })[CONNECTION] ?? null;
    if (conn !== null && conn.aborted) return Promise.reject(new Error('the client went away'));
    const m = this.match(method, req.path);
    if (m === null) return Promise.resolve({ status: 404, headers: { 'content-type': 'text/plain' }, body: '404 page not found' });
    return new Promise<ServerResponse>((resolve, reject) => {
      const vres = new VirtualResponse(conn, req, resolve, reject);
      const vreq = new VirtualRequest(method, req.path, req.query ?? '', frameHeaders(req), m.params);
      vreq.traceContext = (req as { [TRACE_CONTEXT]?: Context })[TRACE_CONTEXT];
      if (conn !== null) conn.track(vres);
      try {
        m.route.handler(vres as unknown as HttpResponse, vreq as unknown as HttpRequest);
      } catch (err) {
        vres.crashed(err as Error);
      }
    });
  }
}

// The handlers read what they use; the rest of uWS's TemplatedApp is never called on a VirtualApp.
export type RouteTarget = Pick<TemplatedApp, 'get' | 'post' | 'put' | 'patch' | 'del' | 'options' | 'any'>;

/**
 * The request's headers as the router will read them (lower-case names, value lists), with the
 * framing made to match the body the plugin hands on: the client's own body keeps the client's
 * Content-Length / Transfer-Encoding, a body a plugin replaced gets its length (or chunked).
 */
function frameHeaders(req: ServerRequest): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const h = req.headers ?? {};
  for (const k in h) {
    const v = h[k];
    if (v === undefined) continue;
    const lk = k.toLowerCase();
    const list = out.get(lk) ?? [];
    if (Array.isArray(v)) for (const x of v) list.push(String(x));
    else list.push(String(v));
    out.set(lk, list);
  }
  const b = req.body;
  const original = (req as { [ORIGINAL_BODY]?: unknown })[ORIGINAL_BODY];
  if (b !== undefined && b === original) return out;
  out.delete('content-length');
  out.delete('transfer-encoding');
  if (b === null || b === undefined) return out;
  if (typeof b === 'string') out.set('content-length', [String(Buffer.byteLength(b))]);
  else if (b instanceof Uint8Array) out.set('content-length', [String(b.byteLength)]);
  else out.set('transfer-encoding', ['chunked']);
  return out;
}

/**
 * The trace context a request carries through the server plugins (set by the uWS entry when the
 * request is traced): each plugin's span replaces it with its own for what the plugin calls next,
 * and the router's global span takes the last one as its parent. A plugin that passes on a copy
 * (`{ ...req }`) keeps it; one that builds a new object from scratch starts the router's spans
 * from the client's own context.
 */
export const TRACE_CONTEXT: unique symbol = Symbol('gw.traceContext');

/** The body the client sent, as the outer handler built it (to tell it from a plugin's own body). */
export const ORIGINAL_BODY: unique symbol = Symbol('gw.originalBody');

/** uWS's HttpRequest, over a ServerRequest. Names are lower case, as uWS gives them. */
class VirtualRequest {
  /** The innermost server plugin's span context, when the request is traced (endpoint.ts reads it). */
  traceContext: Context | undefined = undefined;
  constructor(
    private readonly method: string,
    private readonly url: string,
    private readonly query: string,
    private readonly headers: Map<string, string[]>,
    private readonly params: string[],
  ) {}

  getMethod(): string {
    return this.method.toLowerCase();
  }
  getCaseSensitiveMethod(): string {
    return this.method;
  }
  getUrl(): string {
    return this.url;
  }
  getQuery(key?: string): string | undefined {
    if (key === undefined) return this.query;
    return new URLSearchParams(this.query).get(key) ?? undefined;
  }
  getHeader(name: string): string {
    return this.headers.get(name)?.[0] ?? '';
  }
  getParameter(i: number | string): string | undefined {
    return typeof i === 'number' ? this.params[i] : undefined;
  }
  forEach(cb: (k: string, v: string) => void): void {
    for (const [k, list] of this.headers) for (const v of list) cb(k, v);
  }
  setYield(): this {
    return this;
  }
}

function text(v: RecognizedString): string {
  if (typeof v === 'string') return v;
  if (v instanceof ArrayBuffer) return Buffer.from(v).toString('latin1');
  return Buffer.from((v as ArrayBufferView).buffer, (v as ArrayBufferView).byteOffset, (v as ArrayBufferView).byteLength).toString('latin1');
}

/**
 * Bytes the router hands over. Views (Buffers) are kept as they are — zero-copy: the router never
 * reuses a buffer it wrote (backend chunks are fresh per socket read, rendered bodies are new).
 * A bare ArrayBuffer is copied: uWS callers may reuse those.
 */
function bytes(v: RecognizedString): Buffer {
  if (typeof v === 'string') return Buffer.from(v, 'latin1');
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof ArrayBuffer) return Buffer.from(v.slice(0));
  const view = v as ArrayBufferView;
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

/** Strings handed to uWS's end()/write() go out as UTF-8. */
function payload(v: RecognizedString): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : bytes(v);
}

/**
 * The body of an inner answer: a Readable the router writes into. A write the reader has not
 * caught up with reports backpressure (`write`/`tryEnd` false), and the router's `onWritable`
 * runs when the reader asks for more, exactly as with a slow client socket.
 */
export class InnerBody extends Readable implements ResponseBody {
  /** Total length when the router announced one (tryEnd / end), else -1. */
  length = -1;
  constructor(private readonly owner: VirtualResponse) {
    super({ highWaterMark: 64 * 1024 });
    // Abandoned (client gone, answer cut) with nobody reading: that must not throw. A reader that
    // attaches its own listener still gets the error.
    this.on('error', ignore);
  }

  override _read(): void {
    this.owner.drained();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    // A reader that gave up (a plugin that answered on its own) ends the inner exchange.
    this.owner.readerGone();
    cb(err);
  }

  async bytes(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of this) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }
  async text(): Promise<string> {
    return (await this.bytes()).toString('utf8');
  }
  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }
  stream(): Readable {
    return this;
  }
  dump(): void {
    this.destroy();
  }
}

/** uWS's HttpResponse for an inner call: the head resolves `next()`, the body streams into an InnerBody. */
export class VirtualResponse {
  private statusText = '200 OK';
  private readonly headers: Headers = {};
  private body: InnerBody | null = null;
  private offset = 0;
  private onAbortedCb: (() => void) | null = null;
  private onWritableCb: ((offset: number) => boolean) | null = null;
  private waiting = false;
  private settled = false;
  /** The router finished the answer (or it was cut). */
  finished = false;
  private aborted = false;
  private feed: BodyFeed | null = null;

  constructor(
    private readonly conn: Connection | null,
    private readonly req: ServerRequest,
    private readonly resolve: (r: ServerResponse) => void,
    private readonly reject: (e: Error) => void,
  ) {}

  // ---- the head ----

  private head(length: number): InnerBody {
    if (this.body !== null) return this.body;
    const body = new InnerBody(this);
    body.length = length;
    this.body = body;
    this.settled = true;
    const status = Number.parseInt(this.statusText, 10);
    this.resolve({ status: Number.isInteger(status) ? status : 500, headers: this.headers, body });
    return body;
  }

  /**
   * The whole answer in one write (the common case: a rendered body, a small backend body that came
   * with its head): next() gets it as bytes, with no stream in between.
   */
  private whole(b: Buffer): void {
    this.settled = true;
    this.finished = true;
    this.offset += b.length;
    this.feed?.stop();
    const status = Number.parseInt(this.statusText, 10);
    this.resolve({ status: Number.isInteger(status) ? status : 500, headers: this.headers, body: b });
  }

  /** The router threw before answering. */
  crashed(err: Error): void {
    if (!this.settled) {
      this.settled = true;
      this.finished = true;
      this.reject(err);
    } else this.close();
  }

  cork(cb: () => void): this {
    cb();
    return this;
  }
  writeStatus(s: RecognizedString): this {
    this.statusText = text(s);
    return this;
  }
  writeHeader(k: RecognizedString, v: RecognizedString): this {
    const name = text(k).toLowerCase();
    const value = text(v);
    const prev = this.headers[name];
    if (prev === undefined) this.headers[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else this.headers[name] = [prev, value];
    return this;
  }

  // ---- the body ----

  write(chunk: RecognizedString): boolean {
    if (this.finished) return true;
    const b = payload(chunk);
    const body = this.head(-1);
    this.offset += b.length;
    const ok = b.length === 0 ? true : body.push(b);
    if (!ok) this.waiting = true;
    return ok;
  }

  tryEnd(chunk: RecognizedString, total: number): [boolean, boolean] {
    if (this.finished) return [true, true];
    const b = payload(chunk);
    if (this.body === null && this.offset + b.length >= total) {
      this.whole(b);
      return [true, true];
    }
    const body = this.head(total);
    this.offset += b.length;
    const ok = b.length === 0 ? true : body.push(b);
    const done = this.offset >= total;
    if (done) this.finish();
    else if (!ok) this.waiting = true;
    return [ok || done, done];
  }

  end(chunk?: RecognizedString, _closeConnection?: boolean): this {
    if (this.finished) return this;
    const b = chunk === undefined ? null : payload(chunk);
    if (this.body === null) {
      this.whole(b ?? EMPTY);
      return this;
    }
    const body = this.head(b === null ? 0 : b.length);
    if (b !== null && b.length > 0) body.push(b);
    this.offset += b?.length ?? 0;
    this.finish();
    return this;
  }

  endWithoutBody(): this {
    if (this.finished) return this;
    if (this.body === null) {
      this.whole(EMPTY);
      return this;
    }
    this.head(0);
    this.finish();
    return this;
  }

  private finish(): void {
    this.finished = true;
    this.body?.push(null);
    this.feed?.stop();
  }

  getWriteOffset(): number {
    return this.offset;
  }

  onWritable(cb: (offset: number) => boolean): this {
    this.onWritableCb = cb;
    return this;
  }

  /** InnerBody: the reader wants more. */
  drained(): void {
    if (!this.waiting || this.finished || this.aborted) return;
    this.waiting = false;
    const cb = this.onWritableCb;
    if (cb !== null && !cb(this.offset)) this.waiting = true;
  }

  /** InnerBody destroyed before the router finished: the client of this answer is gone. */
  readerGone(): void {
    if (!this.finished) this.abort();
  }

  onAborted(cb: () => void): this {
    this.onAbortedCb = cb;
    return this;
  }

  /** The client left (or nobody reads this answer any more). */
  abort(): void {
    if (this.aborted || this.finished) return;
    this.aborted = true;
    this.finished = true;
    this.feed?.stop();
    const cb = this.onAbortedCb;
    this.onAbortedCb = null;
    if (!this.settled) {
      this.settled = true;
      this.reject(new Error('the client went away'));
    }
    if (cb !== null) cb();
    if (this.body !== null && !this.body.destroyed) this.body.destroy(new Error('the answer was abandoned'));
  }

  /** The router cuts the connection (an answer failed after its head). */
  close(): this {
    if (this.finished && this.body === null) return this;
    this.finished = true;
    this.feed?.stop();
    if (!this.settled) {
      this.settled = true;
      this.reject(new Error('the router closed the connection before answering'));
    } else if (this.body !== null && !this.body.destroyed) {
      this.body.destroy(new Error('the response was cut after its headers'));
    }
    return this;
  }

  // ---- the request body ----

  onData(cb: (chunk: ArrayBuffer, isLast: boolean) => void): this {
    this.feed ??= new BodyFeed(this.req.body, cb);
    this.feed.start();
    return this;
  }
  pause(): void {
    this.feed?.pause();
  }
  resume(): void {
    this.feed?.resume();
  }

  // ---- the client ----

  getRemoteAddress(): ArrayBuffer {
    if (this.conn !== null) return this.conn.addr;
    return ipBytes(this.req.clientIp);
  }
  getRemoteAddressAsText(): ArrayBuffer {
    if (this.conn !== null) return this.conn.addrText;
    const b = Buffer.from(String(this.req.clientIp ?? ''), 'latin1');
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
  }
  getProxiedRemoteAddress(): ArrayBuffer {
    return new ArrayBuffer(0);
  }
  getProxiedRemoteAddressAsText(): ArrayBuffer {
    return new ArrayBuffer(0);
  }
}

function ignore(): void {}

const NO_PARAMS: string[] = [];
const ipv4Bytes = new Map<string, ArrayBuffer>();

const EMPTY = Buffer.alloc(0);

/** 4 bytes for an IPv4 address, none for anything else (capture.ts then reads the text form). */
function ipBytes(ip: unknown): ArrayBuffer {
  const known = ipv4Bytes.get(ip as string);
  if (known !== undefined) return known;
  const b = parseIpv4(ip);
  if (b.byteLength === 4) {
    if (ipv4Bytes.size >= 4096) ipv4Bytes.clear();
    ipv4Bytes.set(ip as string, b);
  }
  return b;
}

function parseIpv4(ip: unknown): ArrayBuffer {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(String(ip ?? ''));
  if (m === null) return new ArrayBuffer(0);
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) out[i] = Number(m[i + 1]) & 255;
  return out.buffer;
}

/** Feeds a request body (stream, bytes, string) to a uWS-style onData callback, with pause/resume. */
class BodyFeed {
  private started = false;
  private stopped = false;
  private stream: Readable | null = null;

  constructor(
    private readonly source: ServerRequest['body'],
    private readonly cb: (chunk: ArrayBuffer, isLast: boolean) => void,
  ) {}

  start(): void {
    if (this.started) return;
    this.started = true;
    const s = this.source;
    if (s === null || s === undefined) {
      queueMicrotask(() => this.last());
      return;
    }
    if (typeof s === 'string' || s instanceof Uint8Array) {
      const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
      queueMicrotask(() => {
        if (this.stopped) return;
        if (b.byteLength > 0) this.cb(toArrayBuffer(b), false);
        this.last();
      });
      return;
    }
    const r = s instanceof Readable ? s : Readable.from(s as AsyncIterable<Uint8Array>, { objectMode: false });
    this.stream = r;
    r.on('data', (c: Buffer | string) => {
      if (this.stopped) return;
      const b = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      if (b.byteLength > 0) this.cb(toArrayBuffer(b), false);
    });
    r.once('end', () => this.last());
    r.once('error', () => {
      // The client's upload failed: the inner exchange sees an incomplete body that never ends;
      // the client is gone too, so the connection's abort ends it.
      this.stopped = true;
    });
  }

  private last(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.cb(new ArrayBuffer(0), true);
  }

  pause(): void {
    this.stream?.pause();
  }
  resume(): void {
    this.stream?.resume();
  }
  stop(): void {
    this.stopped = true;
  }
}

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}
