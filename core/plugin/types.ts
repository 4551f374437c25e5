/**
 * The public plugin API: KrakenD's three plugin kinds. Plugin authors import these types:
 *
 *   import type { ClientRegisterer, HandlerRegisterer, ModifierRegisterer } from 'gw/plugin';
 *
 * - A **client** plugin (`ClientRegisterer`) replaces gw's HTTP client for the backends that name it
 *   in `extra_config["plugin/http-client"].name`. Its handler receives the fully built backend
 *   request and either answers it itself (hijack) or calls `next()` to delegate to gw's pooled client.
 * - A **server** plugin (`HandlerRegisterer`) wraps the whole router (service-level
 *   `extra_config["plugin/http-server"]`): it sees every client request and answers it or passes it
 *   on with `next()`.
 * - A **modifier** plugin (`ModifierRegisterer`) changes the request before, and the response after,
 *   an endpoint's or a backend's call (`extra_config["plugin/req-resp-modifier"]`).
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

// ---------------------------------------------------------------------------------------------
// Server (handler) plugins: `extra_config["plugin/http-server"]` at service level.
// ---------------------------------------------------------------------------------------------

/** A client request as a server plugin sees it. */
export interface ServerRequest {
  /** Upper-case method. */
  method: string;
  /** The path as the client sent it (percent-encoded, without the query). */
  path: string;
  /** The raw query string, without `?` ('' when none). */
  query: string;
  /** Request headers by lower-case name; a header sent several times is an array. */
  headers: Headers;
  /** The request body, streamed (read it at most once), or null when the request has none. */
  body: Readable | AsyncIterable<Uint8Array> | Uint8Array | string | null;
  /** The client's address (the TCP peer). */
  readonly clientIp: string;
  /** Aborts when the client goes away. */
  readonly signal: AbortSignal;
}

/** What a server handler answers. `body` is as for {@link BackendResponse}: a stream, bytes, a
 *  string, null, or a JSON value (sent as `application/json`). */
export interface ServerResponse {
  status: number;
  headers: Headers;
  body: ResponseBody | Readable | AsyncIterable<Uint8Array> | Uint8Array | string | null | object;
}

/** A server handler: answers the request itself, or calls the `next` it was built with. */
export type ServerHandler = (req: ServerRequest) => ServerResponse | Promise<ServerResponse>;

export interface ServerContext {
  /** The name the plugin is injected as. */
  readonly name: string;
  /** Aborted when the gateway shuts down. */
  readonly signal: AbortSignal;
  readonly logger: PluginLogger;
}

/**
 * Called once at start-up with the whole `extra_config["plugin/http-server"]` object (a plugin
 * reads its own key) and the handler it wraps: the router, or the plugin listed before it.
 * `next(req)` resolves to the inner answer with a streamed body; pass it on untouched to keep
 * streaming with backpressure.
 */
export type ServerFactory = (
  ctx: ServerContext,
  extra: Record<string, unknown>,
  next: ServerHandler,
) => ServerHandler | Promise<ServerHandler>;

export type RegisterHandler = (name: string, factory: ServerFactory) => void;

/** What a plugin module exports as `HandlerRegisterer` (Go-style capitalised names accepted too). */
export interface HandlerRegisterer {
  readonly name?: string;
  registerHandlers?(register: RegisterHandler): void | Promise<void>;
  RegisterHandlers?(register: RegisterHandler): void | Promise<void>;
  registerLogger?(logger: PluginLogger): void;
  RegisterLogger?(logger: PluginLogger): void;
}

// ---------------------------------------------------------------------------------------------
// Request/response modifier plugins: `extra_config["plugin/req-resp-modifier"]`, endpoint and
// backend level.
// ---------------------------------------------------------------------------------------------

/** Go's `http.Header` / `url.Values` shape: every value is a list. */
export type MultiMap = Record<string, string[]>;

/**
 * KrakenD's RequestWrapper, as plain properties. A request modifier changes it in place (or returns
 * a new object of the same shape). At endpoint level `url` is null and `path` is the gateway path;
 * at backend level `url` is the built backend URL and changing it changes the call.
 */
export interface RequestWrapper {
  /** Endpoint parameters by the names used in the endpoint (`{id}` → `params.id`). */
  params: Record<string, string>;
  /** Headers by canonical name (`X-Request-Id`); at endpoint level the headers gw forwards. */
  headers: MultiMap;
  /** The request body (stream or bytes), or null. */
  body: Readable | AsyncIterable<Uint8Array> | Uint8Array | string | null;
  method: string;
  url: string | null;
  /** The query, parsed. */
  query: MultiMap;
  path: string;
}

/**
 * KrakenD's ResponseWrapper. With a decoding endpoint only `data` and `isComplete` matter; with
 * `no-op`, `io` (the streamed body), `statusCode` and `headers`.
 */
export interface ResponseWrapper {
  data: Record<string, unknown>;
  isComplete: boolean;
  /** The no-op body: a stream you may read, wrap or replace (null on decoding endpoints). */
  io: ResponseBody | Readable | AsyncIterable<Uint8Array> | Uint8Array | string | null;
  /** No-op: the backend's headers (lower-case names). Decoding: headers added to the answer. */
  headers: MultiMap;
  statusCode: number;
  /** The request this answers (read-only view). */
  readonly request: RequestWrapper | null;
}

/** Change the wrapper in place and return nothing, or return a replacement. Throwing (or
 *  rejecting) aborts the request: see {@link HTTPResponseError} for the status it gets. */
export type RequestModifier = (req: RequestWrapper) => RequestWrapper | void | Promise<RequestWrapper | void>;
export type ResponseModifier = (res: ResponseWrapper) => ResponseWrapper | void | Promise<ResponseWrapper | void>;

export interface ModifierContext {
  /** `[ENDPOINT: /path]` or `[BACKEND: GET /path -> /url]`. */
  readonly where: string;
  readonly logger: PluginLogger;
}

/** Called once per endpoint/backend that lists the name, with the whole
 *  `extra_config["plugin/req-resp-modifier"]` object. Returning null/undefined skips the modifier. */
export type ModifierFactory = (
  extra: Record<string, unknown>,
  ctx: ModifierContext,
) => RequestModifier | ResponseModifier | null | undefined;

/** KrakenD's `RegisterModifiers(f(name, factory, appliesToRequest, appliesToResponse))`. A name
 *  registered for both is applied as a request modifier only (KrakenD does the same). */
export type RegisterModifier = (
  name: string,
  factory: ModifierFactory,
  appliesToRequest: boolean,
  appliesToResponse: boolean,
) => void;

export interface ModifierRegisterer {
  readonly name?: string;
  registerModifiers?(register: RegisterModifier): void | Promise<void>;
  RegisterModifiers?(register: RegisterModifier): void | Promise<void>;
  registerLogger?(logger: PluginLogger): void;
  RegisterLogger?(logger: PluginLogger): void;
  /** KrakenD's ContextRegisterer: the signal is aborted when the gateway shuts down. */
  registerContext?(signal: AbortSignal): void;
  RegisterContext?(signal: AbortSignal): void;
}

/**
 * KrakenD's HTTPResponseError (and encoded variant): thrown from a modifier or a handler, it sets
 * the answer's status, and with `encoding` the Content-Type of a body holding the message.
 * Any error with a numeric `statusCode` property is read the same way.
 */
export class HTTPResponseError extends Error {
  constructor(
    message: string,
    readonly statusCode: number,
    /** Content-Type of the body (the message); without it the body follows `return_error_msg`. */
    readonly encoding?: string,
    /** Headers added to the error answer. */
    readonly headers?: MultiMap,
  ) {
    super(message);
    this.name = 'HTTPResponseError';
  }
}
