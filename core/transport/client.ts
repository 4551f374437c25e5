/**
 * The default HTTP client: dispatches a backend request on the origin's pool and resolves with
 * the status, headers and an {@link UpstreamBody} as soon as the response headers arrive.
 * Redirects are followed like Go's http.Client (KrakenD's backend client): at most 10,
 * 301/302/303 turn into GET without a body, 307/308 keep method and body (when it can be
 * replayed), `Referer` is set to the previous URL. A request whose header object was passed to
 * {@link keepRedirects} gets its redirect back as it is (the built-in `no-redirect` client plugin).
 */
import { util, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { UpstreamBody, type FlowControl } from './body.js';
import type { OriginSlot, Pools } from './pools.js';
import type { Headers } from '../plugin/types.js';
import type { Cancellable, Scope } from '../proxy/types.js';

export type RequestBody = Readable | AsyncIterable<Uint8Array> | Uint8Array | string | null;

const { parseHeaders, headerNameToString } = util;

export class BackendError extends Error {
  constructor(
    message: string,
    readonly code: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'BackendError';
  }
}

const MAX_REDIRECTS = 10;

/**
 * Header objects of the requests whose redirects are not followed. A request is marked by its
 * header object because that is the one value that travels unchanged from the backend pipe
 * (built fresh per request) through a client plugin's `next()` to {@link send}, without a new
 * parameter on the hot path: the set is consulted only once a redirect has arrived, so a request
 * that is not redirected pays nothing, and one that is pays a lookup.
 */
const KEEP_REDIRECTS = new WeakSet<Headers>();

/**
 * Marks one request so that {@link send} and {@link stream} hand back its first answer even when
 * it is a redirect (Go's `CheckRedirect` returning `ErrUseLastResponse`): the 3xx, its Location
 * and its body reach the caller as the backend sent them. `headers` is the header object the
 * request is sent with; the mark lives as long as that object.
 */
export function keepRedirects(headers: Headers): void {
  KEEP_REDIRECTS.add(headers);
}

/**
 * Who learns the outcome of a call made in receiver mode (the no-op path with gw's own client):
 * `head` runs synchronously inside undici's parser callback, so the client sink is attached before
 * the first body chunk arrives — no promise turn, no queued chunk, no parser pause in between.
 */
export interface Receiver {
  /** The final response head (status ≥ 200, redirects already followed). */
  head(res: UpstreamResponse): void;
  /** The call failed before a head arrived. */
  failed(err: Error): void;
}

export interface UpstreamResponse {
  status: number;
  headers: Headers;
  body: UpstreamBody;
}

/**
 * A backend's response head as undici parsed it: `raw` holds the name/value Buffers (values already
 * checked by its parser: no CR, LF or NUL), which the no-op path writes to the client as they are,
 * and `names` their lower-case names. The header object is built only if somebody asks for it.
 */
export class RawResponse implements UpstreamResponse {
  private parsed: Headers | null = null;
  constructor(
    readonly status: number,
    readonly raw: Buffer[],
    /** Lower-case name of each pair of `raw`. */
    readonly names: string[],
    readonly body: UpstreamBody,
  ) {}

  get headers(): Headers {
    return (this.parsed ??= parseHeaders(this.raw) as Headers);
  }

  /** The first value of header `name` (lower case), without building the header object. */
  header(name: string): string | undefined {
    const names = this.names;
    for (let i = 0; i < names.length; i++) if (names[i] === name) return this.raw[2 * i + 1]!.toString('latin1');
    return undefined;
  }

  /** A plain { status, headers, body } for plugins, which may copy or change it. */
  plain(): UpstreamResponse {
    return { status: this.status, headers: this.headers, body: this.body };
  }
}

/**
 * One call on a pool, as an undici dispatch handler of the raw-header kind (`onHeaders` with
 * Buffers): undici then skips its handler adapter, its controller object and the header object it
 * would build twice (headers and trailers) per response. Pause, resume and abort are the callbacks
 * undici hands over.
 */
class Call implements FlowControl, Cancellable {
  private abortFn: ((err: Error) => void) | null = null;
  private resumeFn: (() => void) | null = null;
  private paused = false;
  private abortReason: Error | null = null;
  private body: UpstreamBody | null = null;
  private scope: Scope | null = null;
  /** Admission slot, held until undici is done with the exchange (not merely until it is answered). */
  slot: OriginSlot | null = null;
  /** Promise mode (receiver null). */
  resolve: ((r: UpstreamResponse | Promise<UpstreamResponse>) => void) | null = null;
  reject: ((e: Error) => void) | null = null;

  constructor(
    scope: Scope | null,
    private readonly receiver: Receiver | null,
    /** What a redirect needs to be followed (null: returned as it is). */
    private readonly follow: ((first: UpstreamResponse) => Promise<UpstreamResponse>) | null,
  ) {
    if (scope !== null) {
      if (scope.reason !== null) this.abort(scope.reason);
      else {
        this.scope = scope;
        scope.watch(this);
      }
    }
  }

  promise(): Promise<UpstreamResponse> {
    return new Promise<UpstreamResponse>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
  }

  /** undici is done with this exchange: give the admission slot back and stop listening. */
  private detach(): void {
    if (this.slot !== null) {
      this.slot.inflight--;
      this.slot = null;
    }
    this.unlisten();
  }

  private unlisten(): void {
    if (this.scope !== null) {
      this.scope.unwatch(this);
      this.scope = null;
    }
  }

  private settleHead(r: UpstreamResponse): void {
    if (this.receiver === null) this.resolve!(r);
    else this.receiver.head(r);
  }

  private settleError(e: Error): void {
    if (this.receiver === null) this.reject!(e);
    else this.receiver.failed(e);
  }

  // ---- undici's handler interface ----

  onConnect(abort: (err: Error) => void): void {
    this.abortFn = abort;
    if (this.abortReason !== null) abort(this.abortReason);
  }

  onHeaders(statusCode: number, raw: Buffer[], resume: () => void, _text: string): boolean {
    // An interim answer (102 Processing, 103 Early Hints, ...): the final one follows on the same
    // exchange, as Go's client reads it. undici's parser skips the 1xx's (empty) body and calls
    // this again with the final status. It never gets here with 100 (an unsolicited 100 Continue
    // fails the exchange: undici destroys the socket, "bad response") nor 101 (an upgrade gw did
    // not ask for: "bad upgrade").
    if (statusCode < 200) return true;
    this.resumeFn = resume;
    let length = -1;
    const names: string[] = new Array(raw.length >> 1);
    for (let i = 0, j = 0; i < raw.length; i += 2, j++) {
      const n = headerNameToString(raw[i]!);
      names[j] = n;
      if (n === 'content-length') length = Number(raw[i + 1]!.toString('latin1'));
    }
    const body = new UpstreamBody(this, length);
    this.body = body;
    const res = new RawResponse(statusCode, raw, names, body);
    if (this.follow !== null && REDIRECTS.has(statusCode)) {
      // Redirects are rare: the hops run on the promise path.
      const rcv = this.receiver;
      if (rcv === null) this.resolve!(this.follow(res));
      else {
        this.follow(res).then(
          (r) => rcv.head(r),
          (e: Error) => rcv.failed(e),
        );
      }
      return !this.paused;
    }
    this.settleHead(res);
    return !this.paused;
  }

  onData(chunk: Buffer): boolean {
    this.body!.push(chunk);
    return !this.paused;
  }

  onComplete(_trailers: Buffer[] | null): void {
    this.detach();
    this.body!.end();
  }

  onError(err: Error): void {
    this.detach();
    const e = this.abortReason ?? explain(err);
    if (this.body !== null) this.body.fail(e);
    else this.settleError(e);
  }

  // ---- FlowControl (UpstreamBody) ----

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.resumeFn?.();
  }

  abort(reason: Error): void {
    if (this.abortReason !== null) return;
    this.abortReason = reason;
    if (this.abortFn !== null) this.abortFn(reason);
    else if (this.body === null) {
      // Still queued for a connection: answer now. undici keeps the entry in its queue until it
      // reaches a connection (onConnect aborts it then) or the pool fails it; the admission slot
      // stays taken until then, so `backend_max_queue` bounds undici's queue, not ours.
      this.unlisten();
      this.settleError(reason);
    }
  }
}

/**
 * undici's parser errors for interim answers it cannot take say only "bad response" / "bad
 * upgrade"; on a running exchange they mean an unsolicited 100 Continue (client-h1.js
 * onHeadersComplete) or a 101 nobody asked for.
 */
function explain(err: Error): Error {
  if ((err as { code?: string }).code !== 'UND_ERR_SOCKET') return err;
  if (err.message === 'bad response') {
    return new BackendError('the backend answered 100 Continue to a request without Expect: 100-continue (gw reads no answer past it)', 'BAD_RESPONSE', err);
  }
  if (err.message === 'bad upgrade') {
    return new BackendError('the backend answered 101 Switching Protocols to a request that asked for no upgrade', 'BAD_RESPONSE', err);
  }
  return err;
}

function admit(pools: Pools, origin: string): OriginSlot | Error {
  let slot: OriginSlot;
  try {
    slot = pools.slot(origin);
  } catch (err) {
    return err as Error;
  }
  if (slot.inflight >= slot.limit) {
    return new BackendError(`${origin}: all ${slot.limit} connection and queue slots are busy`, 'QUEUE_FULL');
  }
  return slot;
}

function start(call: Call, slot: OriginSlot, origin: string, path: string, method: string, headers: Headers, body: RequestBody): void {
  slot.inflight++;
  call.slot = slot;
  if (body !== null && typeof body === 'object' && !(body instanceof Uint8Array) && headers['Content-Length'] === undefined) {
    // Like KrakenD: without a forwarded Content-Length the body goes out chunked. undici would read
    // the length off a stream that already ended; an iterable keeps it unknown.
    const stream = body as AsyncIterable<Uint8Array>;
    body = { [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator]() };
  }
  // A Host line set for the call (modifier/martian) must not become the TLS server name, which
  // undici takes from a Host header: Go verifies the URL's host.
  const servername = headers['Host'] !== undefined || headers['host'] !== undefined ? tlsName(origin) : undefined;
  try {
    slot.pool.dispatch({ origin, path, method, headers, body: body as Dispatcher.DispatchOptions['body'], servername } as Dispatcher.DispatchOptions, call as unknown as Dispatcher.DispatchHandler);
  } catch (err) {
    call.onError(err as Error);
  }
}

/** One request/response exchange on a pool, no redirect handling. */
export function dispatch(
  pools: Pools,
  origin: string,
  path: string,
  method: string,
  headers: Headers,
  body: RequestBody,
  scope: Scope | null,
): Promise<UpstreamResponse> {
  return call(pools, origin, path, method, headers, body, scope, false);
}

const REDIRECTS: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/** Sends a request and follows redirects like Go's default client. */
export function send(
  pools: Pools,
  origin: string,
  path: string,
  method: string,
  headers: Headers,
  body: RequestBody,
  scope: Scope | null,
): Promise<UpstreamResponse> {
  return call(pools, origin, path, method, headers, body, scope, true);
}

/** A call in promise mode; with `redirects`, the promise resolves with the end of the chain. */
function call(
  pools: Pools,
  origin: string,
  path: string,
  method: string,
  headers: Headers,
  body: RequestBody,
  scope: Scope | null,
  redirects: boolean,
): Promise<UpstreamResponse> {
  const slot = admit(pools, origin);
  if (slot instanceof Error) return Promise.reject(slot);
  const c = new Call(scope, null, redirects ? (first) => follow(pools, first, origin, path, method, headers, body, scope) : null);
  const p = c.promise();
  start(c, slot, origin, path, method, headers, body);
  return p;
}

/**
 * Sends a request in receiver mode: the receiver gets the final head synchronously from undici's
 * parser (after redirects, followed like {@link send}). Returns the call, to abort it, or null when
 * it failed at once (the receiver was told).
 */
export function stream(
  pools: Pools,
  origin: string,
  path: string,
  method: string,
  headers: Headers,
  body: RequestBody,
  receiver: Receiver,
  scope: Scope,
  /** The call follows `scope`'s cancellation too (else the caller cancels it through the return value). */
  watch = false,
): FlowControl | null {
  const slot = admit(pools, origin);
  if (slot instanceof Error) {
    receiver.failed(slot);
    return null;
  }
  // Without `watch`, the scope serves redirects only.
  const call = new Call(watch ? scope : null, receiver, (first) => follow(pools, first, origin, path, method, headers, body, scope));
  start(call, slot, origin, path, method, headers, body);
  return call;
}

/** Follows the redirects of a first answer like Go's default client. */
async function follow(
  pools: Pools,
  res: UpstreamResponse,
  origin: string,
  path: string,
  method: string,
  headers: Headers,
  body: RequestBody,
  scope: Scope | null,
): Promise<UpstreamResponse> {
  if (KEEP_REDIRECTS.has(headers)) return res;
  let hops = 0;
  let url = origin + path;
  while (REDIRECTS.has(res.status)) {
    const location = res.headers['location'];
    if (typeof location !== 'string' || location === '') return res; // Go returns the 3xx as is
    const status = res.status;
    let next: URL;
    try {
      next = new URL(location, url);
    } catch {
      return res;
    }
    if (next.protocol !== 'http:' && next.protocol !== 'https:') return res;
    const keepsBody = status === 307 || status === 308;
    if (keepsBody && body !== null && !isReplayable(body)) return res; // cannot rewind a streamed body
    if (++hops > MAX_REDIRECTS) {
      res.body.dump();
      throw new BackendError(`${goMethod(method)} "${next.href}": stopped after ${MAX_REDIRECTS} redirects`, 'REDIRECTS');
    }
    res.body.dump();
    const prev = new URL(url);
    const nextHeaders: Headers = { ...headers };
    if (!keepsBody && method !== 'HEAD') {
      method = 'GET';
      body = null;
      delete nextHeaders['Content-Length'];
      delete nextHeaders['Content-Type'];
    }
    if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(location)) {
      // A Host line set for the call (modifier/martian) survives only a relative Location, as in Go.
      delete nextHeaders['Host'];
      delete nextHeaders['host'];
    }
    if (prev.host !== next.host) {
      // Go drops credentials when the redirect leaves the original host.
      for (const k of ['Authorization', 'Www-Authenticate', 'Cookie', 'Cookie2']) delete nextHeaders[k];
    }
    if (!(prev.protocol === 'https:' && next.protocol === 'http:')) {
      prev.username = '';
      prev.password = '';
      prev.hash = '';
      nextHeaders['Referer'] = prev.href;
    }
    url = next.href;
    res = await dispatch(pools, next.origin, next.pathname + next.search, method, nextHeaders, body, scope);
  }
  return res;
}

/** The SNI name for an https origin: its host name (undefined for http and IP hosts, which send none). */
function tlsName(origin: string): string | undefined {
  if (!origin.startsWith('https:')) return undefined;
  const h = new URL(origin).hostname;
  return h.startsWith('[') || /^\d+\.\d+\.\d+\.\d+$/.test(h) ? undefined : h;
}

function isReplayable(body: RequestBody): boolean {
  return typeof body === 'string' || body instanceof Uint8Array;
}

function goMethod(m: string): string {
  return m.charAt(0) + m.slice(1).toLowerCase();
}
