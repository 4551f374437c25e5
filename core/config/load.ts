/**
 * read → JSON.parse → schema validation (ajv) → KrakenD's start-up checks → defaults →
 * normalised, deep-frozen {@link ServiceConfig}. Errors are {@link ConfigError}s whose message is
 * what KrakenD prints after `ERROR parsing the configuration file: `.
 */
import fs from 'node:fs';
import { canonicalHeader } from '../plugin/checks.js';
import { createRequire } from 'node:module';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { normaliseNamespaces } from './aliases.js';
import { parseDuration } from './duration.js';
import { checkNamespaces } from './unsupported.js';
import { configSchema, lintSchema } from './schema.js';
import { parseTls } from './tls.js';
import { compilePattern } from '../log.js';
import type {
  AllowList, BackendConfig, Encoding, EndpointConfig, LoggingOptions, LogLevel, Method, OutputEncoding, ServiceConfig,
} from './types.js';

const require = createRequire(import.meta.url);
// ajv is CommonJS; its default export is the class.
const Ajv = require('ajv') as typeof import('ajv').default;

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export const DEFAULT_PORT = 8080;
export const DEFAULT_TIMEOUT_MS = 2000;
/** Largest client body gw reads whole (merges, scripts, schemas) when `max_payload` is unset: 16 MiB. */
export const DEFAULT_MAX_BUFFERED_PAYLOAD = 16 * 1024 * 1024;
export const DEFAULT_MAX_IDLE_CONNS_PER_HOST = 250;
const SUPPORTED_METHODS: ReadonlySet<string> = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);
const ENCODINGS: ReadonlySet<string> = new Set(['json', 'safejson', 'string', 'xml', 'rss', 'no-op']);
const OUTPUT_ENCODINGS: ReadonlySet<string> = new Set(['json', 'json-collection', 'string', 'xml', 'yaml', 'negotiate', 'no-op']);
const INVALID_ENDPOINT = /^[^/]|\*|\/__(debug|echo|health)(\/.*)?$/;
const ENDPOINT_PARAM = /^\{([a-zA-Z\-_0-9]+)\}$/;
const URL_PATTERN_PARAM = /\{([\w\-.:/]+)\}/g;
const HOST_PATTERN = /(https?:\/\/)?([a-zA-Z0-9._-]+)(:[0-9]{2,6})?\/?/g;

/** v1/v2 key names that KrakenD v3 ignores without a word (gw warns). */
const V2_ENDPOINT_KEYS: ReadonlyArray<[string, string]> = [['headers_to_pass', 'input_headers'], ['querystring_params', 'input_query_strings']];
const V2_BACKEND_KEYS: ReadonlyArray<[string, string]> = [['whitelist', 'allow'], ['blacklist', 'deny'], ['headers_to_pass', 'input_headers'], ['querystring_params', 'input_query_strings']];

let validator: ValidateFunction | undefined;
let lintValidator: ValidateFunction | undefined;

function compile(schema: object): ValidateFunction {
  // Loose decoding, as KrakenD's config reader (mapstructure's weakly typed input): "1" ↔ 1,
  // true → 1, a scalar where a list is expected → a list of one. The data is converted in place.
  const ajv = new Ajv({ allErrors: true, strict: false, coerceTypes: 'array' });
  return ajv.compile(schema);
}

/**
 * Reads and parses a file, then applies KrakenD's `KRAKEND_<KEY>` environment overrides (see
 * {@link applyEnvOverrides}); each override applied is described in `overrides`, when given.
 * Error texts follow lura's config parser.
 */
export function readConfigFile(file: string, overrides?: string[], env: NodeJS.ProcessEnv = process.env): unknown {
  const raw = parseConfigFile(file);
  const applied = applyEnvOverrides(raw, env);
  overrides?.push(...applied);
  return raw;
}

/** Go's strconv.ParseBool spellings. */
const BOOL_TEXT: Readonly<Record<string, boolean>> = {
  1: true, t: true, T: true, TRUE: true, true: true, True: true, 0: false, f: false, F: false, FALSE: false, false: false, False: false,
};

/**
 * KrakenD's reserved environment variables: `KRAKEND_<ROOT KEY IN CAPITALS>` (`KRAKEND_PORT`,
 * `KRAKEND_TIMEOUT`, `KRAKEND_NAME`, `KRAKEND_CACHE_TTL`, …) replaces a root-level string, number
 * or boolean **that the file already has**; a key the file does not set is not added, and objects
 * and lists are never replaced (KrakenD's rules). The value is read as the type the file gives
 * the key; one that does not read as it is an error naming the variable. `version` is not
 * overridable (a stray `KRAKEND_VERSION` in an image's environment must not change what the file
 * says). Changes `raw` in place; returns one line per override applied.
 */
export function applyEnvOverrides(raw: unknown, env: NodeJS.ProcessEnv): string[] {
  const applied: string[] = [];
  if (!isObject(raw)) return applied;
  for (const key of Object.keys(raw)) {
    if (key === 'version') continue;
    const name = 'KRAKEND_' + key.toUpperCase();
    const text = env[name];
    if (text === undefined) continue;
    const cur = raw[key];
    let v: string | number | boolean;
    if (typeof cur === 'string') v = text;
    else if (typeof cur === 'number') {
      if (!/^[+-]?\d+(\.\d+)?$/.test(text.trim())) throw new ConfigError(`environment variable ${name}=${JSON.stringify(text)}: "${key}" is a number in the configuration`);
      v = Number(text);
    } else if (typeof cur === 'boolean') {
      const b = BOOL_TEXT[text.trim()];
      if (b === undefined) throw new ConfigError(`environment variable ${name}=${JSON.stringify(text)}: "${key}" is a boolean in the configuration (true or false)`);
      v = b;
    } else continue;
    raw[key] = v;
    applied.push(`${name} overrides "${key}": ${JSON.stringify(v)} (the file has ${JSON.stringify(cur)})`);
  }
  return applied;
}

function parseConfigFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new ConfigError(`'${file}' (open): no such file or directory`);
    throw new ConfigError(`'${file}' (open): ${e.message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`'${file}': ${describeJsonError(text, err as Error)}`);
  }
}

function describeJsonError(text: string, err: Error): string {
  const m = /position (\d+)/.exec(err.message);
  if (!m) return err.message;
  const offset = Number(m[1]);
  const before = text.slice(0, offset);
  const row = before.split('\n').length;
  const col = offset - before.lastIndexOf('\n');
  return `${err.message.replace(/ in JSON at position \d+.*$/, '')}, offset: ${offset}, row: ${row}, col: ${col}`;
}

function formatAjvErrors(errors: readonly ErrorObject[], file: string): string {
  const lines = errors
    .filter((e) => e.keyword !== 'anyOf' || errors.length === 1)
    .map((e) => {
      const where = e.instancePath === '' ? '$' : '$' + e.instancePath.replace(/\/(\d+)/g, '[$1]').replace(/\//g, '.');
      if (e.keyword === 'additionalProperties') {
        return `${where}: unknown key '${(e.params as { additionalProperty: string }).additionalProperty}'`;
      }
      if (e.keyword === 'required') return `${where}: missing required key '${(e.params as { missingProperty: string }).missingProperty}'`;
      if (e.keyword === 'pattern' && e.instancePath.match(/timeout|ttl|time$/)) return `${where}: not a duration (e.g. "2s", "300ms", "1m30s")`;
      return `${where}: ${e.message ?? e.keyword}`;
    });
  return `'${file}': invalid configuration:\n  ${[...new Set(lines)].join('\n  ')}`;
}

export interface LoadOptions {
  /** Reject unknown keys (`gw check --lint`). */
  lint?: boolean;
}

export function loadConfig(file: string, opts: LoadOptions = {}): ServiceConfig {
  return normaliseConfig(readConfigFile(file), file, opts);
}

/**
 * `--lint`: one warning per value the loose decoding converted (`before` as written, `after` as
 * validated), naming its path: the file works, but says something else than it means.
 */
function looseConversions(before: unknown, after: unknown, where: string, out: string[]): void {
  if (before === after) return;
  const kind = (v: unknown) => (Array.isArray(v) ? 'list' : v === null ? 'null' : typeof v);
  if (kind(before) !== kind(after)) {
    out.push(`${where}: ${JSON.stringify(before)} is read as ${JSON.stringify(after)} (KrakenD converts it loosely; write the ${kind(after) === 'list' ? 'list' : kind(after)})`);
    return;
  }
  if (Array.isArray(before)) before.forEach((v, i) => looseConversions(v, (after as unknown[])[i], `${where}[${i}]`, out));
  else if (isObject(before)) for (const k of Object.keys(before)) looseConversions(before[k], (after as Record<string, unknown>)[k], `${where}.${k}`, out);
}

function isObject(v: unknown): v is Record<string, any> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function normaliseConfig(raw: unknown, file = '<config>', opts: LoadOptions = {}): ServiceConfig {
  if (!isObject(raw)) throw new ConfigError(`'${file}': the configuration must be a JSON object`);
  // KrakenD checks the version before anything else.
  if (raw.version !== 3 && raw.version !== '3') throw new ConfigError(`unsupported version: ${JSON.stringify(raw.version ?? 0)} (want: 3)`);
  const validate = opts.lint ? (lintValidator ??= compile(lintSchema())) : (validator ??= compile(configSchema));
  const asWritten = opts.lint ? structuredClone(raw) : null;
  if (!validate(raw)) throw new ConfigError(formatAjvErrors(validate.errors ?? [], file));

  const extra = normaliseNamespaces(raw.extra_config);
  const router = isObject(extra.router) ? extra.router : {};
  const logging = isObject(extra['telemetry/logging']) ? extra['telemetry/logging'] : null;
  const timeoutMs = parseDuration(raw.timeout) || DEFAULT_TIMEOUT_MS;
  const cacheTtlS = Math.floor(parseDuration(raw.cache_ttl) / 1000);
  const defaultHosts: readonly string[] = Array.isArray(raw.host) ? raw.host : [];
  const gwServer = isObject(extra['gw/server']) ? extra['gw/server'] : {};
  const serviceMaxPayload = positiveInt(router.max_payload, 'extra_config.router.max_payload');
  const outputDefault = typeof raw.output_encoding === 'string' && raw.output_encoding !== '' ? raw.output_encoding : 'json';

  const warnings: string[] = [];
  if (asWritten !== null) looseConversions(asWritten, raw, '$', warnings);
  checkNamespaces(extra, 'extra_config', 'service', { warnings, enforcing: [] });
  const endpoints: EndpointConfig[] = [];
  const seen = new Map<string, { desc: string; index: number }>();
  const list: unknown[] = Array.isArray(raw.endpoints) ? raw.endpoints : [];
  list.forEach((e, index) => {
    const ep = normaliseEndpoint(e as Record<string, any>, index, {
      timeoutMs, cacheTtlS, outputDefault, defaultHosts, maxPayload: serviceMaxPayload, warnings,
    });
    if (!ep) return;
    const key = `${ep.method} ${ep.route.replace(/:[^/]+/g, ':')}`;
    const prev = seen.get(key);
    const desc = `'${ep.method} ${ep.path}' (endpoints[${index}])`;
    if (prev) {
      throw new ConfigError(
        `endpoints ${prev.desc} and ${desc} are the same route: the router cannot tell them apart`,
      );
    }
    seen.set(key, { desc, index });
    endpoints.push(ep);
  });

  const tls = parseTls(raw.tls, (m) => new ConfigError(m), warnings);
  const cfg: ServiceConfig = {
    warnings,
    name: typeof raw.name === 'string' ? raw.name : '',
    port: raw.port || DEFAULT_PORT,
    listenIp: checkIp(raw.listen_ip),
    timeoutMs,
    cacheTtlS,
    debugEndpoint: raw.debug_endpoint === true,
    echoEndpoint: raw.echo_endpoint === true,
    maxShutdownWaitMs: parseDuration(raw.max_shutdown_wait_time),
    tls,
    plugin: isObject(raw.plugin) ? { folder: raw.plugin.folder, pattern: raw.plugin.pattern } : null,
    router: {
      returnErrorMsg: router.return_error_msg === true,
      hideVersionHeader: router.hide_version_header === true,
      disableHealth: router.disable_health === true,
      healthPath: typeof router.health_path === 'string' && router.health_path ? router.health_path : '/__health',
      disableRedirectTrailingSlash: router.disable_redirect_trailing_slash === true,
      disableRedirectFixedPath: router.disable_redirect_fixed_path === true,
      disableHandleMethodNotAllowed: router.disable_handle_method_not_allowed === true,
      disablePathDecoding: router.disable_path_decoding === true,
      disableAccessLog: router.disable_access_log === true,
      loggerSkipPaths: stringList(router.logger_skip_paths, 'extra_config.router.logger_skip_paths'),
      errorBody: isObject(router.error_body) ? router.error_body : null,
    },
    limits: {
      workers: positiveInt(gwServer.workers, 'extra_config["gw/server"].workers'),
      maxUrlLength: positiveInt(gwServer.max_url_length, 'extra_config["gw/server"].max_url_length') || 8192,
      maxHeaderBytes: positiveInt(raw.max_header_bytes, 'max_header_bytes'),
      backendMaxQueue: positiveInt(gwServer.backend_max_queue, 'extra_config["gw/server"].backend_max_queue') || 1024,
      maxBufferedPayload: positiveInt(gwServer.max_buffered_payload, 'extra_config["gw/server"].max_buffered_payload') || DEFAULT_MAX_BUFFERED_PAYLOAD,
    },
    transport: {
      maxConnectionsPerHost: raw.max_idle_connections_per_host || DEFAULT_MAX_IDLE_CONNS_PER_HOST,
      idleConnectionTimeoutMs: parseDuration(raw.idle_connection_timeout),
      responseHeaderTimeoutMs: parseDuration(raw.response_header_timeout),
      dialerTimeoutMs: parseDuration(raw.dialer_timeout),
      disableKeepAlives: raw.disable_keep_alives === true,
      disableCompression: raw.disable_compression === true,
    },
    logging: parseLogging(logging, warnings),
    extraConfig: extra,
    endpoints,
    file,
  };
  return deepFreeze(cfg);
}

function checkIp(v: unknown): string {
  if (v === undefined || v === '') return '';
  const s = String(v);
  const v4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
  if (v4.test(s) || (s.includes(':') && /^[0-9a-fA-F:.]+$/.test(s))) return s;
  throw new ConfigError(`invalid ip address ${s}`);
}

function positiveInt(v: unknown, where: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ConfigError(`${where}: want a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

interface Inherited {
  warnings: string[];
  maxPayload: number;
  timeoutMs: number;
  cacheTtlS: number;
  outputDefault: string;
  defaultHosts: readonly string[];
}

/** `{userId}` and `{UserId}` are the same parameter in KrakenD (the first letter is uppercased). */
export function paramKey(name: string): string {
  return name.charAt(0).toUpperCase() + name.slice(1);
}

function normaliseEndpoint(e: Record<string, any>, index: number, inh: Inherited): EndpointConfig | null {
  let path: string = e.endpoint;
  if (!path.startsWith('/')) path = '/' + path;
  const rawMethod = typeof e.method === 'string' && e.method ? e.method.toUpperCase() : 'GET';
  if (!SUPPORTED_METHODS.has(rawMethod)) {
    // KrakenD logs it and registers the other endpoints (lura's gin router); so does gw.
    inh.warnings.push(
      `[SERVICE: Gin][ENDPOINT: ${path}] Unsupported method ${rawMethod} (endpoints[${index}]): the endpoint is skipped; KrakenD and gw route GET, POST, PUT, PATCH and DELETE` +
        (rawMethod === 'OPTIONS' ? ' (CORS preflights are answered by security/cors)' : ''),
    );
    return null;
  }
  const method = rawMethod as Method;
  if (INVALID_ENDPOINT.test(path)) throw new ConfigError(`ignoring the '${method} ${path}' endpoint, since it is invalid!!!`);
  const backendsRaw: Record<string, any>[] = Array.isArray(e.backend) ? e.backend : [];
  for (const [old, now] of V2_ENDPOINT_KEYS) {
    if (e[old] !== undefined) {
      inh.warnings.push(`endpoints[${index}] (${path}): "${old}" is the configuration v2 name and is ignored in version 3; use "${now}"`);
    }
  }
  if (backendsRaw.length === 0) {
    throw new ConfigError(`ignoring the '${method} ${path}' endpoint, since it has 0 backends defined!`);
  }

  const params: string[] = [];
  const route = path
    .split('/')
    .map((seg) => {
      const m = ENDPOINT_PARAM.exec(seg);
      if (!m) return seg;
      params.push(m[1]!);
      return ':' + m[1]!;
    })
    .join('/');
  const keys = new Set(params.map(paramKey));
  if (keys.size !== params.length) {
    throw new ConfigError(`the '${method} ${path}' endpoint declares the same parameter twice`);
  }

  let outputEncoding = (typeof e.output_encoding === 'string' && e.output_encoding) || inh.outputDefault;
  if (!OUTPUT_ENCODINGS.has(outputEncoding)) outputEncoding = 'json';
  const noop = outputEncoding === 'no-op';
  if (noop && backendsRaw.length > 1) {
    throw new ConfigError('can not use NoOp encoding with more than one backends connected to the same endpoint');
  }

  const extra = normaliseNamespaces(e.extra_config);
  const proxyCfg = (extra.proxy ?? {}) as Record<string, any>;
  const sequential = proxyCfg.sequential === true;

  const backends = backendsRaw.map((b, bi): BackendConfig => {
    const sd = b.sd === 'dns' || b.sd === 'dns-shared' ? 'dns' : 'static';
    const sdScheme = typeof b.sd_scheme === 'string' && b.sd_scheme !== '' ? b.sd_scheme.toLowerCase() : 'http';
    if (sd === 'dns') {
      if (!(Array.isArray(b.host) && typeof b.host[0] === 'string' && b.host[0] !== '')) {
        throw new ConfigError(`endpoints[${index}] (${method} ${path}), backend ${bi}: "sd": "${b.sd}" needs the SRV name as its first "host" (e.g. "_api._tcp.service.consul")`);
      }
      if (sdScheme !== 'http' && sdScheme !== 'https') {
        throw new ConfigError(`endpoints[${index}] (${method} ${path}), backend ${bi}: "sd_scheme" ${JSON.stringify(b.sd_scheme)}: http or https`);
      }
    }
    for (const [old, now] of V2_BACKEND_KEYS) {
      if (b[old] !== undefined) {
        inh.warnings.push(`endpoints[${index}] (${path}), backend ${bi}: "${old}" is the configuration v2 name and is ignored in version 3; use "${now}"`);
      }
    }
    let urlPattern: string = b.url_pattern ?? '';
    if (!urlPattern.startsWith('/')) urlPattern = '/' + urlPattern;
    const hostsRaw: string[] = Array.isArray(b.host) && b.host.length ? b.host : [...inh.defaultHosts];
    // An SRV name is not an origin: it stays as written (its records give the origins).
    const hosts = sd === 'dns' ? hostsRaw.map((h) => h.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '')) : b.disable_host_sanitize === true ? hostsRaw : hostsRaw.map(sanitizeHost);
    // Every url_pattern placeholder must be an endpoint parameter (sequential `respN_` and JWT are exempt).
    const outputs: string[] = [];
    for (const m of urlPattern.matchAll(URL_PATTERN_PARAM)) {
      const name = m[1]!;
      if (/^resp\d+_/.test(name) || name.startsWith('JWT.')) continue;
      if (sequential && /^resp\d+$/.test(name)) continue;
      if (!outputs.includes(name)) outputs.push(name);
    }
    for (const name of outputs) {
      if (!keys.has(paramKey(name))) {
        throw new ConfigError(
          `undefined output param '${name}'! endpoint: ${method} ${path}, backend: ${bi}. input: [${params.join(' ')}], output: [${outputs.join(' ')}]`,
        );
      }
    }
    let encoding = (typeof b.encoding === 'string' && b.encoding) || 'json';
    if (!ENCODINGS.has(encoding)) encoding = 'json';
    if (noop) encoding = 'no-op';
    return {
      index: bi,
      hosts,
      sd,
      sdScheme,
      urlPattern,
      method: typeof b.method === 'string' && b.method ? b.method.toUpperCase() : method,
      encoding: encoding as Encoding,
      isCollection: b.is_collection === true,
      target: b.target ?? '',
      allow: b.allow ?? [],
      deny: b.deny ?? [],
      mapping: b.mapping ?? {},
      group: b.group ?? '',
      inputHeaders: Array.isArray(b.input_headers) && b.input_headers.length ? allowList(b.input_headers, true) : null,
      inputQueryStrings:
        Array.isArray(b.input_query_strings) && b.input_query_strings.length ? allowList(b.input_query_strings, false) : null,
      extraConfig: normaliseNamespaces(b.extra_config),
    };
  });

  const unsupported = { warnings: inh.warnings, enforcing: [] as string[] };
  checkNamespaces(extra, `endpoints[${index}] (${path})`, 'endpoint', unsupported);
  backendsRaw.forEach((_, bi) => {
    checkNamespaces(backends[bi]!.extraConfig, `endpoints[${index}] (${path}), backend ${bi}`, 'backend', unsupported);
  });

  return {
    index,
    path,
    route,
    unenforced: unsupported.enforcing,
    method,
    params,
    timeoutMs: parseDuration(e.timeout) || inh.timeoutMs,
    cacheTtlS: Math.floor(parseDuration(e.cache_ttl) / 1000) || inh.cacheTtlS,
    outputEncoding: outputEncoding as OutputEncoding,
    inputHeaders: allowList(e.input_headers ?? [], true),
    inputQueryStrings: allowList(e.input_query_strings ?? [], false),
    concurrentCalls: e.concurrent_calls || 1,
    backends,
    extraConfig: extra,
    maxPayload:
      positiveInt((extra.router as Record<string, unknown> | undefined)?.max_payload, `endpoints[${index}].extra_config.router.max_payload`) ||
      inh.maxPayload,
  };
}

function allowList(list: readonly string[], headers: boolean): AllowList {
  if (list.includes('*')) return '*';
  return headers ? [...new Set(list.map(canonicalHeader))] : [...new Set(list)];
}

export { canonicalHeader };

const LEVEL_NAMES: readonly string[] = ['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'];

/**
 * `telemetry/logging`. Without it KrakenD logs with lura's basic logger at DEBUG; with it, the
 * krakend-gologging line. `stdout` defaults to true (KrakenD's schema and docs; its code says
 * false, which would silence a config that only sets `level`).
 */
function parseLogging(l: Record<string, unknown> | null, warnings: string[]): LoggingOptions {
  const where = 'extra_config["telemetry/logging"]';
  if (l === null) return { level: 'DEBUG', prefix: '', format: 'basic', customFormat: '', stdout: true, syslog: false, syslogFacility: 'local3' };
  const level = String(l.level ?? '').toUpperCase();
  if (!LEVEL_NAMES.includes(level)) {
    warnings.push(`${where}.level: ${JSON.stringify(l.level ?? null)} is not one of ${LEVEL_NAMES.join(', ')}; logging at DEBUG (as KrakenD's fallback logger)`);
  }
  const str = (k: string): string => {
    const v = l[k];
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') throw new ConfigError(`${where}.${k}: ${JSON.stringify(v)} is not a string`);
    return v;
  };
  const bool = (k: string, dflt: boolean): boolean => {
    const v = l[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') throw new ConfigError(`${where}.${k}: ${JSON.stringify(v)} is not true or false`);
    return v;
  };
  let format = str('format') || 'default';
  if (!['default', 'logstash', 'custom'].includes(format)) {
    warnings.push(`${where}.format: '${format}' is not default, logstash or custom; using default (as KrakenD)`);
    format = 'default';
  }
  const customFormat = str('custom_format');
  if (format === 'custom') {
    if (customFormat === '') throw new ConfigError(`${where}: format "custom" needs a custom_format`);
    try {
      compilePattern(customFormat, false);
    } catch (err) {
      throw new ConfigError(`${where}.custom_format: ${(err as Error).message}`);
    }
  }
  const facility = (str('syslog_facility') || 'local3').toLowerCase();
  if (!/^local[0-7]$/.test(facility)) warnings.push(`${where}.syslog_facility: '${facility}' is not local0…local7; using local3 (as KrakenD)`);
  return {
    level: (LEVEL_NAMES.includes(level) ? level : 'DEBUG') as LogLevel,
    prefix: str('prefix'),
    format: format as LoggingOptions['format'],
    customFormat,
    stdout: bool('stdout', true),
    syslog: bool('syslog', false),
    syslogFacility: /^local[0-7]$/.test(facility) ? facility : 'local3',
  };
}

function stringList(v: unknown, where: string): readonly string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new ConfigError(`${where}: ${JSON.stringify(v)} is not a list of strings`);
  return v as string[];
}

/** lura's host sanitiser: the pattern must match exactly once; the scheme defaults to http. */
export function sanitizeHost(host: string): string {
  const matches = [...host.matchAll(HOST_PATTERN)].filter((m) => m[0] !== '');
  if (matches.length !== 1) throw new ConfigError(`host ${host} not valid: invalid host`);
  const m = matches[0]!;
  return `${m[1] ?? 'http://'}${m[2]}${m[3] ?? ''}`;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
