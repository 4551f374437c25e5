/**
 * The proxy pipeline's shapes (lura's): a Proxy is `(request) → Promise<response>`; stacks are
 * composed once per endpoint from config, and absent stages are simply not composed.
 */
import type { Readable } from 'node:stream';
import type { BackendRequest, Headers } from '../plugin/types.js';
import type { ClientInfo } from './request.js';

/** What the endpoint handler captured from the client, in a fixed shape. */
export class ProxyRequest {
  constructor(
    /** Decoded path parameter values, in endpoint order. */
    readonly params: string[],
    readonly paramNames: readonly string[],
    /** Raw query string, without `?`. */
    readonly query: string,
    readonly client: ClientInfo,
    /** Client body: a stream, or a Buffer once it was buffered for several backends. */
    public body: Readable | Buffer | null,
    readonly signal: AbortSignal,
    readonly method: string,
    /**
     * Values taken from earlier responses of a sequential pipe (`resp0_foo` → "42"), or null.
     * Looked up by the url_pattern placeholders that are not endpoint parameters.
     */
    readonly extra: Readonly<Record<string, string>> | null = null,
  ) {}

  /** The same request under another signal (a merge deadline) and/or with sequential values. */
  derive(signal: AbortSignal, extra: Readonly<Record<string, string>> | null = this.extra): ProxyRequest {
    return new ProxyRequest(this.params, this.paramNames, this.query, this.client, this.body, signal, this.method, extra);
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
  constructor(
    public method: string,
    /** Origin and path+query kept apart for the pool; `url` joins them. */
    readonly origin: string,
    readonly path: string,
    /** The URL as built; a plugin may replace it. */
    public url: string,
    public headers: Headers,
    public body: BackendRequest['body'],
    readonly signal: AbortSignal,
    private readonly paramValues: readonly string[],
    private readonly paramNames: readonly string[],
  ) {}

  /** True when a plugin replaced `url`. */
  urlChanged(): boolean {
    return this.url.length !== this.origin.length + this.path.length || !this.url.startsWith(this.origin) || !this.url.endsWith(this.path);
  }

  /** A copy whose origin/path follow the (changed) `url`. */
  rebased(): OutboundRequest {
    const u = new URL(this.url);
    return new OutboundRequest(
      this.method, u.origin, u.pathname + u.search, this.url, this.headers, this.body, this.signal, this.paramValues, this.paramNames,
    );
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
 * (`Get "http://host/path": connect ECONNREFUSED`). The client-facing message is unchanged.
 */
export function withBackend(err: Error, out: { method: string; url: string }): Error {
  if (err instanceof StatusError || err instanceof CanceledError) return err;
  const e = err instanceof DeadlineError ? new DeadlineError() : (err as Error & { detail?: string });
  const m = out.method;
  (e as { detail?: string }).detail ??= `${m.charAt(0)}${m.slice(1).toLowerCase()} "${out.url}": ${err.message}`;
  return e;
}
