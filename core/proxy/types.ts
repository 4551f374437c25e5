/**
 * The proxy pipeline's shapes (lura's): a Proxy is `(request) → Promise<response>`; stacks are
 * composed once per endpoint from config, and absent stages are simply not composed.
 */
import type { BackendTrace } from '../telemetry/tracing.js';
import type { Readable } from 'node:stream';
import type { BackendRequest, Headers } from '../plugin/types.js';
import type { ClientInfo } from './request.js';

/** Something a cancelled scope stops: a backend call, a child scope. */
export interface Cancellable {
  abort(reason: Error): void;
}

/**
 * A request's cancellation, without EventTarget on the hot path: gw's own backend calls and child
 * scopes (a merge, concurrent calls) register with `watch()` and are aborted directly by `cancel()`.
 * An AbortSignal — what plugins see as `req.signal` — is built only when something asks for it.
 * The endpoint's exchange is the root scope of each request.
 */
export class Scope implements Cancellable {
  /** Why the scope was cancelled (client gone, a deadline), once it was. */
  reason: Error | null = null;
  private ac: AbortController | null = null;
  private watchers: Cancellable[] | null = null;

  get signal(): AbortSignal {
    let ac = this.ac;
    if (ac === null) {
      ac = this.ac = new AbortController();
      if (this.reason !== null) ac.abort(this.reason);
    }
    return ac.signal;
  }

  /** `c` is aborted when this scope is cancelled (at once when it already was). */
  watch(c: Cancellable): void {
    if (this.reason !== null) c.abort(this.reason);
    else (this.watchers ??= []).push(c);
  }

  unwatch(c: Cancellable): void {
    const w = this.watchers;
    if (w === null) return;
    const i = w.lastIndexOf(c);
    if (i < 0) return;
    w[i] = w[w.length - 1]!;
    w.pop();
  }

  cancel(reason: Error): void {
    if (this.reason !== null) return;
    this.reason = reason;
    this.ac?.abort(reason);
    const w = this.watchers;
    if (w !== null) {
      this.watchers = null;
      for (let i = 0; i < w.length; i++) w[i]!.abort(reason);
    }
  }

  /** Cancellable: a child scope follows its parent. */
  abort(reason: Error): void {
    this.cancel(reason);
  }

  /** A scope following a plugin's own AbortSignal. */
  static of(signal: AbortSignal): Scope {
    const s = new Scope();
    if (signal.aborted) s.cancel(signal.reason instanceof Error ? signal.reason : new CanceledError());
    else signal.addEventListener('abort', () => s.cancel(signal.reason instanceof Error ? signal.reason : new CanceledError()), { once: true });
    return s;
  }

  /** A child scope that follows this one until `detach()`. */
  child(): ChildScope {
    const c = new ChildScope(this);
    this.watch(c);
    return c;
  }
}

export class ChildScope extends Scope {
  constructor(private readonly parent: Scope) {
    super();
  }

  /** Stops following the parent (the child's work ended). */
  detach(): void {
    this.parent.unwatch(this);
  }
}

/** What the endpoint handler captured from the client, in a fixed shape. */
export class ProxyRequest {
  /** `query` was already filtered by the endpoint's input_query_strings (an endpoint modifier
   *  plugin saw and changed that filtered query): backends apply only their own list. */
  endpointFiltered = false;
  constructor(
    /** Decoded path parameter values, in endpoint order. */
    readonly params: string[],
    readonly paramNames: readonly string[],
    /** Raw query string, without `?`. */
    readonly query: string,
    readonly client: ClientInfo,
    /** Client body: a stream, or a Buffer once it was buffered for several backends. */
    public body: Readable | Buffer | null,
    readonly scope: Scope,
    readonly method: string,
    /**
     * Values taken from earlier responses of a sequential pipe (`resp0_foo` → "42"), or null.
     * Looked up by the url_pattern placeholders that are not endpoint parameters.
     */
    readonly extra: Readonly<Record<string, string>> | null = null,
  ) {}

  /** Aborts when the client goes away or the endpoint timeout expires. */
  get signal(): AbortSignal {
    return this.scope.signal;
  }

  /** The same request under another signal (a merge deadline) and/or with sequential values. */
  derive(scope: Scope, extra: Readonly<Record<string, string>> | null = this.extra): ProxyRequest {
    const r = new ProxyRequest(this.params, this.paramNames, this.query, this.client, this.body, scope, this.method, extra);
    r.endpointFiltered = this.endpointFiltered;
    return r;
  }
}

export interface ProxyResponse {
  data: Record<string, unknown>;
  isComplete: boolean;
  /** Errors of a partial answer (logged by the endpoint). */
  errors: Error[] | null;
  /** Headers a modifier added for the client (KrakenD's response metadata), if any. */
  headers?: Headers;
}

export type Proxy = (req: ProxyRequest) => Promise<ProxyResponse>;

/** A backend request as the client layer (default client or plugin) sees it. */
export class OutboundRequest implements BackendRequest {
  private paramsObj: Record<string, string> | null = null;
  /** The backend call's span when traces are on (ended by whoever ends the call). */
  trace: BackendTrace | null = null;
  /** `url` as built: a plugin that assigns another URL makes them differ. */
  private readonly builtUrl: string;
  constructor(
    public method: string,
    /** Origin and path+query kept apart for the pool; `url` joins them. */
    readonly origin: string,
    readonly path: string,
    /** The URL as built; a plugin may replace it. */
    public url: string,
    public headers: Headers,
    public body: BackendRequest['body'],
    readonly scope: Scope,
    private readonly paramValues: readonly string[],
    private readonly paramNames: readonly string[],
  ) {
    this.builtUrl = url;
  }

  get signal(): AbortSignal {
    return this.scope.signal;
  }

  /** True when a plugin replaced `url`. */
  urlChanged(): boolean {
    // The same string object unless a plugin assigned one (then compared by content).
    return this.url !== this.builtUrl;
  }

  /** The same call (scope, parameters) with another method, URL, headers or body. */
  with(method: string, url: string, headers: Headers, body: BackendRequest['body']): OutboundRequest {
    const u = new URL(url);
    const r = new OutboundRequest(method, u.origin, u.pathname + u.search, url, headers, body, this.scope, this.paramValues, this.paramNames);
    r.trace = this.trace;
    return r;
  }

  /** A copy whose origin/path follow the (changed) `url`. */
  rebased(): OutboundRequest {
    const u = new URL(this.url);
    const r = new OutboundRequest(
      this.method, u.origin, u.pathname + u.search, this.url, this.headers, this.body, this.scope, this.paramValues, this.paramNames,
    );
    r.trace = this.trace;
    return r;
  }

  /** A copy sent to `origin` + `path` as given (no URL re-parsing: the raw query stays as it is). */
  moved(origin: string, path: string): OutboundRequest {
    const r = new OutboundRequest(this.method, origin, path, origin + path, this.headers, this.body, this.scope, this.paramValues, this.paramNames);
    r.trace = this.trace;
    return r;
  }

  get params(): Readonly<Record<string, string>> {
    if (this.paramsObj === null) {
      const o: Record<string, string> = {};
      for (let i = 0; i < this.paramNames.length; i++) o[this.paramNames[i]!] = this.paramValues[i] ?? '';
      this.paramsObj = o;
    }
    return this.paramsObj;
  }
}

/** A backend answered with a status that is not a success for a decoding backend. */
export class StatusError extends Error {
  constructor(
    message: string,
    readonly status: number,
    /** Backend body and content type, when `return_error_code`/`return_error_details` need them. */
    readonly body: string | null,
    readonly contentType: string | null,
    /** When set, the endpoint answers with this status (`backend/http.return_error_code`). */
    readonly returnCode: boolean,
    /** The body goes out whatever `return_error_msg` says (a plugin's encoded HTTPResponseError). */
    readonly showBody = false,
    /** Headers for the error answer (a plugin's HTTPResponseError). */
    readonly headers: Headers | null = null,
  ) {
    super(message);
    this.name = 'StatusError';
  }
}

/** The endpoint timeout fired. */
export class DeadlineError extends Error {
  constructor() {
    super('context deadline exceeded');
    this.name = 'DeadlineError';
  }
}

/** The client went away. */
export class CanceledError extends Error {
  constructor() {
    super('context canceled');
    this.name = 'CanceledError';
  }
}

/**
 * Adds the backend call to an error's log text, the way Go's client names it
 * (`Get "http://host/path": connect ECONNREFUSED`), and the backend's `url_pattern` for the
 * `[BACKEND: /p]` tag of the log line. The client-facing message is unchanged.
 */
export function withBackend(err: Error, out: { method: string; url: string }, backend: string): Error {
  if (err instanceof CanceledError) return err;
  if (err instanceof StatusError) {
    (err as { backend?: string }).backend ??= backend;
    return err;
  }
  const e = err instanceof DeadlineError ? new DeadlineError() : (err as Error & { detail?: string });
  const m = out.method;
  (e as { detail?: string }).detail ??= `${m.charAt(0)}${m.slice(1).toLowerCase()} "${out.url}": ${err.message}`;
  (e as { backend?: string }).backend ??= backend;
  return e;
}
