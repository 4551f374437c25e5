import type { TlsOptions } from './tls.js';

/**
 * Runtime configuration: the KrakenD v3 file after validation, defaults and normalisation.
 * Everything here is built once at start-up and frozen; the hot path only reads it.
 */
export type Encoding = 'json' | 'safejson' | 'string' | 'xml' | 'rss' | 'no-op';
export type OutputEncoding = 'json' | 'json-collection' | 'string' | 'xml' | 'yaml' | 'negotiate' | 'no-op';
export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** `"*"` means "all"; otherwise an allow-list. */
export type AllowList = '*' | readonly string[];

export interface BackendConfig {
  /** Position in the endpoint's `backend` array. */
  readonly index: number;
  /** Sanitised origins (`http://host:port`), balanced per request; with `sd: 'dns'`, the SRV name(s) as written. */
  readonly hosts: readonly string[];
  /** Service discovery: the static `hosts`, or DNS SRV records of `hosts[0]` (proxy/sd.ts). */
  readonly sd: 'static' | 'dns';
  /** Scheme of the discovered instances (`sd_scheme`, default http). */
  readonly sdScheme: string;
  /** `url_pattern` as written (with `{param}` placeholders), with a leading `/`. */
  readonly urlPattern: string;
  readonly method: string;
  readonly encoding: Encoding;
  readonly isCollection: boolean;
  readonly target: string;
  readonly allow: readonly string[];
  readonly deny: readonly string[];
  readonly mapping: Readonly<Record<string, string>>;
  readonly group: string;
  /** Per-backend second filter (applied after the endpoint's), or null when absent. */
  readonly inputHeaders: AllowList | null;
  readonly inputQueryStrings: AllowList | null;
  readonly extraConfig: Readonly<Record<string, unknown>>;
}

export interface EndpointConfig {
  readonly index: number;
  /** The path as written in the config, with a leading `/` (`/users/{id}`). */
  readonly path: string;
  /** The router path (`/users/:id`). */
  readonly route: string;
  readonly method: Method;
  /** Parameter names in path order, as written (`id`). */
  readonly params: readonly string[];
  readonly timeoutMs: number;
  readonly cacheTtlS: number;
  readonly outputEncoding: OutputEncoding;
  readonly inputHeaders: AllowList;
  readonly inputQueryStrings: AllowList;
  readonly concurrentCalls: number;
  readonly backends: readonly BackendConfig[];
  readonly extraConfig: Readonly<Record<string, unknown>>;
  /** Namespaces here that would refuse requests and that gw does not implement (see
   *  config/unsupported.ts): when non-empty, the endpoint answers 500 to every request. */
  readonly unenforced: readonly string[];
  /** Largest request body accepted (bytes; 0 = no limit): endpoint `extra_config.router.max_payload`,
   *  else the service's. Larger bodies get 413 and are never forwarded. */
  readonly maxPayload: number;
}

/** gw's own edge limits (`extra_config["gw/server"]`), on top of KrakenD's keys. */
export interface ServerLimits {
  /** Worker threads; 0 = one per available core. */
  readonly workers: number;
  /** Longest request target (path + query) accepted; longer → 414. */
  readonly maxUrlLength: number;
  /** Root `max_header_bytes`: total size of the request's header names and values; larger → 431.
   *  0 (unset) = the listener's own limit. */
  readonly maxHeaderBytes: number;
  /** Requests allowed to wait for a backend connection per origin once all connections are busy;
   *  beyond it the backend call fails at once (503 for a single backend). */
  readonly backendMaxQueue: number;
  /** Largest request body gw reads whole (several backends, Lua, a body schema) when the
   *  endpoint sets no `max_payload`; larger → 413. */
  readonly maxBufferedPayload: number;
}

export interface RouterOptions {
  readonly returnErrorMsg: boolean;
  readonly hideVersionHeader: boolean;
  readonly disableHealth: boolean;
  readonly healthPath: string;
  readonly disableRedirectTrailingSlash: boolean;
  readonly disableRedirectFixedPath: boolean;
  readonly disableHandleMethodNotAllowed: boolean;
  readonly disablePathDecoding: boolean;
  readonly disableAccessLog: boolean;
  /** `router.logger_skip_paths`: access-log lines are not written for these exact paths. */
  readonly loggerSkipPaths: readonly string[];
  /** CE `error_body`: JSON bodies that replace the 404/405 texts. */
  readonly errorBody: Readonly<Record<string, unknown>> | null;
}

export interface TransportOptions {
  /** Keep-alive connections per backend origin (`max_idle_connections_per_host`, default 250). */
  readonly maxConnectionsPerHost: number;
  readonly idleConnectionTimeoutMs: number;
  readonly responseHeaderTimeoutMs: number;
  readonly dialerTimeoutMs: number;
  readonly disableKeepAlives: boolean;
  readonly disableCompression: boolean;
}

export type LogLevel = 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR' | 'CRITICAL';

export interface LoggingOptions {
  readonly level: LogLevel;
  readonly prefix: string;
  /** `basic` when `telemetry/logging` is absent (lura's logger). */
  readonly format: 'default' | 'logstash' | 'custom' | 'basic';
  readonly customFormat: string;
  readonly stdout: boolean;
  readonly syslog: boolean;
  /** local0…local7 */
  readonly syslogFacility: string;
}

export interface ServiceConfig {
  /** Things KrakenD silently ignores that are worth telling the user (logged at WARNING on start). */
  readonly warnings: readonly string[];
  readonly name: string;
  readonly port: number;
  readonly listenIp: string;
  readonly timeoutMs: number;
  readonly cacheTtlS: number;
  readonly debugEndpoint: boolean;
  readonly echoEndpoint: boolean;
  readonly maxShutdownWaitMs: number;
  /** Service `tls`: null = plain HTTP (absent, null or `disabled`). See config/tls.ts. */
  readonly tls: TlsOptions | null;
  readonly plugin: { readonly folder: string; readonly pattern: string } | null;
  readonly router: RouterOptions;
  readonly limits: ServerLimits;
  readonly transport: TransportOptions;
  readonly logging: LoggingOptions;
  readonly extraConfig: Readonly<Record<string, unknown>>;
  readonly endpoints: readonly EndpointConfig[];
  /** The file the configuration came from (for messages). */
  readonly file: string;
}
