/**
 * The default HTTP client: dispatches a backend request on the origin's pool and resolves with
 * the status, headers and an {@link UpstreamBody} as soon as the response headers arrive.
 * Redirects are followed like Go's http.Client (KrakenD's backend client): at most 10,
 * 301/302/303 turn into GET without a body, 307/308 keep method and body (when it can be
 * replayed), `Referer` is set to the previous URL.
 */
import type { Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { UpstreamBody, type FlowControl } from './body.js';
import type { OriginSlot, Pools } from './pools.js';
import type { Headers } from '../plugin/types.js';

export type RequestBody = Readable | AsyncIterable<Uint8Array> | Uint8Array | string | null;

export interface UpstreamResponse {
  status: number;
  headers: Headers;
  body: UpstreamBody;
}

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

class Exchange implements Dispatcher.DispatchHandler, FlowControl {
  private controller: Dispatcher.DispatchController | null = null;
  private abortReason: Error | null = null;
  private body: UpstreamBody | null = null;
  private signal: AbortSignal | null = null;
  /** Admission slot, held until undici is done with the exchange (not merely until it is answered). */
  slot: OriginSlot | null = null;
  resolve!: (r: UpstreamResponse) => void;
  reject!: (e: Error) => void;
  readonly promise: Promise<UpstreamResponse>;

  constructor(signal: AbortSignal | null) {
    this.promise = new Promise<UpstreamResponse>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    if (signal !== null) {
      this.signal = signal;
      if (signal.aborted) this.abort(abortError(signal));
      else signal.addEventListener('abort', this, { once: true });
    }
  }

  /** AbortSignal listener. */
  handleEvent(): void {
    this.abort(abortError(this.signal!));
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
    if (this.signal !== null) {
      this.signal.removeEventListener('abort', this);
      this.signal = null;
    }
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.abortReason !== null) controller.abort(this.abortReason);
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    // An interim answer (102 Processing, 103 Early Hints, ...): the final one follows on the same
    // exchange, as Go's client reads it. undici's parser skips the 1xx's (empty) body and calls
    // this again with the final status. It never gets here with 100 (an unsolicited 100 Continue
    // fails the exchange: undici destroys the socket, "bad response") nor 101 (an upgrade gw did
    // not ask for: "bad upgrade").
    if (statusCode < 200) return;
    const cl = headers['content-length'];
    const body = new UpstreamBody(this, typeof cl === 'string' ? Number(cl) : -1);
    this.body = body;
    this.resolve({ status: statusCode, headers: headers as Headers, body });
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.body!.push(chunk);
  }

  onResponseEnd(): void {
    this.detach();
    this.body!.end();
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.detach();
    const e = this.abortReason ?? explain(err);
    if (this.body !== null) this.body.fail(e);
    else this.reject(e);
  }

  pause(): void {
    this.controller?.pause();
  }

  resume(): void {
    this.controller?.resume();
  }

  abort(reason: Error): void {
    if (this.abortReason !== null) return;
    this.abortReason = reason;
    if (this.controller !== null) this.controller.abort(reason);
    else if (this.body === null) {
      // Still queued for a connection: answer now. undici keeps the entry in its queue until it
      // reaches a connection (onRequestStart aborts it then) or the pool fails it; the admission
      // slot stays taken until then, so `backend_max_queue` bounds undici's queue, not ours.
      this.unlisten();
      this.reject(reason);
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

function abortError(signal: AbortSignal): Error {
  const r = signal.reason;
  return r instanceof Error ? r : new BackendError('context canceled', 'ABORTED');
}

/** One request/response exchange on a pool, no redirect handling. */
export function dispatch(
  pools: Pools,
  origin: string,
  path: string,
  method: string,
  headers: Headers,
  body: RequestBody,
  signal: AbortSignal | null,
): Promise<UpstreamResponse> {
  let slot: OriginSlot;
  try {
    slot = pools.slot(origin);
  } catch (err) {
    return Promise.reject(err as Error);
  }
  if (slot.inflight >= slot.limit) {
    return Promise.reject(
      new BackendError(`${origin}: all ${slot.limit} connection and queue slots are busy`, 'QUEUE_FULL'),
    );
  }
  const ex = new Exchange(signal);
  slot.inflight++;
  ex.slot = slot;
  const pool = slot.pool;
  if (body !== null && typeof body === 'object' && !(body instanceof Uint8Array) && headers['Content-Length'] === undefined) {
    // Like KrakenD: without a forwarded Content-Length the body goes out chunked. undici would read
    // the length off a stream that already ended; an iterable keeps it unknown.
    const stream = body as AsyncIterable<Uint8Array>;
    body = { [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator]() };
  }
  try {
    pool.dispatch({ origin, path, method, headers, body: body as Dispatcher.DispatchOptions['body'] }, ex);
  } catch (err) {
    ex.onResponseError(null as never, err as Error);
  }
  return ex.promise;
}

const REDIRECTS: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/** Sends a request and follows redirects like Go's default client. */
export async function send(
  pools: Pools,
  origin: string,
  path: string,
  method: string,
  headers: Headers,
  body: RequestBody,
  signal: AbortSignal | null,
): Promise<UpstreamResponse> {
  let res = await dispatch(pools, origin, path, method, headers, body, signal);
  if (!REDIRECTS.has(res.status)) return res;
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
    res = await dispatch(pools, next.origin, next.pathname + next.search, method, nextHeaders, body, signal);
  }
  return res;
}

function isReplayable(body: RequestBody): boolean {
  return typeof body === 'string' || body instanceof Uint8Array;
}

function goMethod(m: string): string {
  return m.charAt(0) + m.slice(1).toLowerCase();
}
