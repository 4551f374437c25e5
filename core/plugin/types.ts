/**
 * The public plugin API. Plugin authors import these types:
 *
 *   import type { ClientRegisterer, ClientHandler } from 'gw/plugin';
 *
 * A client plugin replaces gw's HTTP client for the backends that name it in
 * `extra_config["plugin/http-client"].name`. Its handler receives the fully built backend request
 * and either answers it itself (hijack) or calls `next()` to delegate to gw's pooled client.
 */
import type { Readable } from 'node:stream';

/** Header map as sent to / received from a backend. Names are as gw built them (canonical case for
 *  requests, lower case for responses); multi-value headers (Set-Cookie) are arrays. */
export type Headers = Record<string, string | string[]>;

/** The backend request a client plugin receives. */
export interface BackendRequest {
  /** Backend method, uppercased (after the backend `method` override). */
  method: string;
  /** Final backend URL: balanced host + substituted url_pattern + forwarded query. */
  url: string;
  /** The filtered forwarding set (input_headers, X-Forwarded-*, User-Agent). */
  headers: Headers;
  /** The client's request body as a stream, or null when there is none. Read it at most once. */
  body: Readable | AsyncIterable<Uint8Array> | Uint8Array | string | null;
  /** Aborts when the client goes away or the endpoint timeout expires. */
  readonly signal: AbortSignal;
  /** Endpoint path parameters, by the names used in the endpoint (`{id}` → `params.id`). */
  readonly params: Readonly<Record<string, string>>;
}

/**
 * A streamed response body. It is async-iterable (chunks of bytes) and can be turned into a Node
 * Readable; returning it untouched from a handler keeps gw's zero-copy path (bytes go from the
 * backend socket to the client socket with backpressure, never buffered).
 */
export interface ResponseBody extends AsyncIterable<Buffer> {
  /** Reads the whole body into memory. */
  bytes(): Promise<Buffer>;
  text(): Promise<string>;
  json(): Promise<unknown>;
  /** A Node Readable over the remaining bytes. */
  stream(): Readable;
  /** Discards the body (the connection is kept when the body is small, else closed). */
  dump(): void;
}

/** A response from a backend or from a plugin. */
export interface BackendResponse {
  status: number;
  headers: Headers;
  /** A stream (ResponseBody, Readable, async iterable), bytes, a string, null, or (from a plugin) any
   *  other JSON value, which gw serialises with `Content-Type: application/json`. */
  body: ResponseBody | Readable | AsyncIterable<Uint8Array> | Uint8Array | string | null | object;
}

/** Delegates to gw's pooled client for this backend. Pass a modified request, or nothing to send the
 *  original. Resolves to the backend's response with a streamed body. */
export type NextClient = (req?: BackendRequest) => Promise<BackendResponse>;

export type ClientHandler = (req: BackendRequest, next: NextClient) => BackendResponse | Promise<BackendResponse>;

/** Passed to factories: what the plugin is being built for. */
export interface ClientContext {
  readonly endpoint: string;
  readonly method: string;
  readonly backend: { readonly index: number; readonly urlPattern: string; readonly hosts: readonly string[] };
  /** Aborted when the gateway shuts down. */
  readonly signal: AbortSignal;
  readonly logger: PluginLogger;
}

/** Called once per backend at start-up with the whole `extra_config["plugin/http-client"]` object. */
export type ClientFactory = (ctx: ClientContext, extra: Record<string, unknown>) => ClientHandler | Promise<ClientHandler>;

export type RegisterClient = (name: string, factory: ClientFactory) => void;

/** KrakenD's logger interface; each call joins its arguments with spaces. */
export interface PluginLogger {
  debug(...v: unknown[]): void;
  info(...v: unknown[]): void;
  warning(...v: unknown[]): void;
  error(...v: unknown[]): void;
  critical(...v: unknown[]): void;
  fatal(...v: unknown[]): void;
}

/** What a plugin module exports as `ClientRegisterer`. Go-style capitalised names are accepted too. */
export interface ClientRegisterer {
  /** The plugin's name for the `[PLUGIN: <name>]` prefix of the logger given to `registerLogger`
   *  (the Go example's `registerer("krakend-client-example")`). Defaults to the file name without
   *  its extension. */
  readonly name?: string;
  registerClients?(register: RegisterClient): void | Promise<void>;
  RegisterClients?(register: RegisterClient): void | Promise<void>;
  registerLogger?(logger: PluginLogger): void;
  RegisterLogger?(logger: PluginLogger): void;
}
