/**
 * Request/response modifier plugins: `extra_config["plugin/req-resp-modifier"]` at endpoint and
 * backend level (spec §5.4). Resolved once at start-up: the listed names' factories get the whole
 * namespace object; a factory that returns nothing is skipped; a name registered for both requests
 * and responses is applied to requests only (KrakenD does the same). An unknown name or a failing
 * factory is a start-up error naming it (KrakenD ignores unknown names; gw refuses, as for client
 * plugins, so that a typo cannot silently skip a check).
 *
 * Per request: request modifiers run in list order before the call, response modifiers in list
 * order after it (not for a partial answer, which carries an error, as in KrakenD). A modifier
 * changes the wrapper in place or returns a replacement; it may return a promise.
 * A thrown error fails the request: 500, or the status/Content-Type/headers an
 * {@link HTTPResponseError} (or any error with a numeric `statusCode`) carries.
 */
import { URLSearchParams } from 'node:url';
import { ConfigError } from '../config/load.js';
import type { Logger } from '../log.js';
import { compileQueryFilter, HOP_BY_HOP, type CapturedHeaders, type ClientInfo, type QueryFilter } from '../proxy/request.js';
import type { AllowList } from '../config/types.js';
import { OutboundRequest, ProxyRequest, StatusError, type ProxyResponse } from '../proxy/types.js';
import { canonicalHeaderCached } from './checks.js';
import { pluginLogger } from './logger.js';
import type { PluginRegistry } from './registry.js';
import type {
  BackendResponse, Headers, ModifierFactory, MultiMap, RequestModifier, RequestWrapper, ResponseModifier, ResponseWrapper,
} from './types.js';

import type { PluginSpans } from '../telemetry/tracing.js';
import { inSpan } from '../telemetry/span.js';

export const MODIFIER_NAMESPACE = 'plugin/req-resp-modifier';

export interface Modifiers {
  readonly request: readonly RequestModifier[];
  readonly response: readonly ResponseModifier[];
}

/**
 * The modifiers an `extra_config` lists, or null when it lists none. `where` is KrakenD's log tag
 * (`[ENDPOINT: /path]` or `[BACKEND: GET /path -> /url]`), `place` names it in errors.
 */
export function resolveModifiers(
  extra: Readonly<Record<string, unknown>>,
  registry: PluginRegistry | null,
  logger: Logger,
  where: string,
  place: string,
): Modifiers | null {
  const ns = extra[MODIFIER_NAMESPACE];
  if (ns === undefined) return null;
  const at = `${place}: extra_config["${MODIFIER_NAMESPACE}"]`;
  if (typeof ns !== 'object' || ns === null || Array.isArray(ns)) throw new ConfigError(`${at} must be an object with a "name" list`);
  const names = (ns as { name?: unknown }).name;
  if (!Array.isArray(names)) {
    throw new ConfigError(`${at}.name must be a list of modifier names (KrakenD reads a list only${typeof names === 'string' ? `: write ["${names}"]` : ''})`);
  }
  const request: RequestModifier[] = [];
  const response: ResponseModifier[] = [];
  for (const [i, name] of names.entries()) {
    if (typeof name !== 'string' || name === '') throw new ConfigError(`${at}.name[${i}] must be a non-empty string`);
    const reg = registry?.get('modifier', name) as { factory: ModifierFactory; file: string; request?: boolean; response?: boolean } | undefined;
    if (!reg) {
      const known = registry?.names('modifier') ?? [];
      throw new ConfigError(
        `${at}: modifier plugin '${name}' is not registered` +
          (registry === null
            ? ' (the configuration has no "plugin": {"folder", "pattern"} to load plugins from)'
            : known.length
              ? ` (registered: ${known.join(', ')})`
              : ' (no modifier plugin was loaded; see the plugin loader lines above)'),
      );
    }
    let fn: unknown;
    try {
      fn = reg.factory(ns as Record<string, unknown>, { where, logger: pluginLogger(logger, name) });
    } catch (err) {
      throw new ConfigError(`${at}: modifier plugin '${name}' (${reg.file}) failed to start: ${(err as Error)?.message ?? String(err)}`);
    }
    if (fn === null || fn === undefined) {
      logger.debug(`${where}[Modifier Plugins] ${name}: the factory returned nothing; skipped`);
      continue;
    }
    if (typeof fn !== 'function') {
      throw new ConfigError(`${at}: modifier plugin '${name}' (${reg.file}): the factory returned ${typeof fn}, not a modifier function`);
    }
    if (reg.request) request.push(named(name, fn as RequestModifier));
    else if (reg.response) response.push(named(name, fn as ResponseModifier));
    else logger.warn(`${where}[Modifier Plugins] ${name} is registered for neither requests nor responses; skipped`);
  }
  logger.debug(`${where}[Modifier Plugins] Adding ${request.length} request and ${response.length} response modifiers`);
  if (request.length === 0 && response.length === 0) return null;
  return { request, response };
}

type Mod<T> = ((w: T) => T | void | Promise<T | void>) & { readonly pluginName?: string };

/** A modifier's failure carries its name, and becomes the request's error (status kept). */
function named<T>(name: string, fn: (w: T) => T | void | Promise<T | void>): Mod<T> {
  const wrap = (err: unknown): never => {
    throw asRequestError(name, err);
  };
  return Object.assign(
    (w: T) => {
      let r: T | void | Promise<T | void>;
      try {
        r = fn(w);
      } catch (err) {
        return wrap(err);
      }
      return isThenable(r) ? r.then(undefined, wrap) : r;
    },
    { pluginName: name },
  );
}

function isThenable<T>(v: unknown): v is Promise<T> {
  return v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function';
}

/** KrakenD's HTTPResponseError (StatusCode, Encoding, Headers), read from any error shape. */
function asRequestError(name: string, err: unknown): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  const sc = readProp(e, 'statusCode', 'StatusCode');
  const msg = `modifier ${name}: ${e.message}`;
  if (typeof sc === 'number' && Number.isInteger(sc) && sc >= 200 && sc <= 599 && sc !== 204 && sc !== 205 && sc !== 304) {
    const enc = readProp(e, 'encoding', 'Encoding');
    const hs = readProp(e, 'headers', 'Headers');
    return new StatusError(msg, sc, e.message, typeof enc === 'string' && enc !== '' ? enc : null, true, typeof enc === 'string' && enc !== '', headersOf(hs));
  }
  return new Error(msg, { cause: e });
}

/** A property, or what a Go-style method of that name returns. */
function readProp(e: object, prop: string, method: string): unknown {
  const o = e as Record<string, unknown>;
  const v = o[prop];
  if (typeof v === 'function') return callSafe(v, e);
  if (v !== undefined) return v;
  const m = o[method];
  return typeof m === 'function' ? callSafe(m, e) : m;
}

function callSafe(f: Function, self: object): unknown {
  try {
    return f.call(self);
  } catch {
    return undefined;
  }
}

function headersOf(v: unknown): Headers | null {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
  const out: Headers = {};
  for (const k in v as Record<string, unknown>) {
    const x = (v as Record<string, unknown>)[k];
    if (typeof x === 'string') out[k] = x;
    else if (Array.isArray(x)) out[k] = x.map(String);
  }
  return out;
}

/**
 * Runs `mods` in order on `w`; each may change it in place, return a new one, or a promise. With
 * `spans` (a traced request), each call is a `plugin/req-resp-modifier: <name>` span.
 */
function run<T extends object>(mods: readonly Mod<T>[], w: T, spans: PluginSpans | null | undefined, from = 0): T | Promise<T> {
  for (let i = from; i < mods.length; i++) {
    const r = spans == null ? mods[i]!(w) : traced(mods[i]!, w, spans);
    if (isThenable<T | void>(r)) return r.then((v) => run(mods, pick(v, w), spans, i + 1));
    w = pick(r, w);
  }
  return w;
}

function traced<T>(mod: Mod<T>, w: T, spans: PluginSpans): T | void | Promise<T | void> {
  return inSpan(spans.plugin(MODIFIER_NAMESPACE, mod.pluginName ?? '?'), () => mod(w));
}

function pick<T extends object>(v: T | void, prev: T): T {
  return v !== null && typeof v === 'object' ? v : prev;
}

// ---- conversions ----

function multi(h: Headers | undefined): MultiMap {
  const out: MultiMap = {};
  if (h === undefined) return out;
  for (const k in h) {
    const v = h[k];
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? v.map(String) : [String(v)];
  }
  return out;
}

function single(m: MultiMap, what: string): Headers {
  const out: Headers = {};
  if (m === null || typeof m !== 'object') throw new Error(`a modifier set ${what} to ${m === null ? 'null' : typeof m}, not an object`);
  for (const k in m) {
    const v = m[k] as unknown;
    if (v === undefined || v === null) continue;
    const list = Array.isArray(v) ? v.map(String) : [String(v)];
    if (list.length === 0) continue;
    out[k] = list.length === 1 ? list[0]! : list;
  }
  return out;
}

function parseQuery(q: string): MultiMap {
  const out: MultiMap = {};
  if (q === '') return out;
  for (const [k, v] of new URLSearchParams(q)) (out[k] ??= []).push(v);
  return out;
}

function sameQuery(a: MultiMap, b: MultiMap): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    const x = a[k];
    const y = b[k];
    if (!Array.isArray(x) || !Array.isArray(y) || x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (String(x[i]) !== y[i]) return false;
  }
  return true;
}

function formatQuery(m: MultiMap): string {
  const p = new URLSearchParams();
  for (const k of Object.keys(m).sort()) for (const v of m[k] ?? []) p.append(k, String(v));
  return p.toString();
}

function checkMethod(m: unknown): string {
  if (typeof m !== 'string' || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(m)) throw new Error(`a modifier set the method to ${JSON.stringify(m)}, not an HTTP token`);
  return m.toUpperCase();
}

// ---- endpoint level ----

/** What endpointWrapper hands the modifiers, and what applyEndpoint compares their result with. */
interface EndpointView {
  w: RequestWrapper;
  /** The query as the modifiers got it (a separate copy: they may change `w.query` in place). */
  query: MultiMap;
  raw: string;
}

function endpointWrapper(req: ProxyRequest, filter: QueryFilter): EndpointView {
  const params: Record<string, string> = {};
  for (let i = 0; i < req.paramNames.length; i++) params[req.paramNames[i]!] = req.params[i] ?? '';
  const headers: MultiMap = {};
  for (const [k, v] of req.client.headers) headers[k] = v.slice();
  // As in KrakenD, the modifier sees the query the endpoint lets through (input_query_strings).
  const raw = filter(req.query);
  const w: RequestWrapper = { params, headers, body: req.body, method: req.method, url: null, query: parseQuery(raw), path: req.client.path };
  return { w, query: raw === '' ? EMPTY_QUERY : parseQuery(raw), raw };
}

const EMPTY_QUERY: MultiMap = Object.freeze({}) as MultiMap;

function applyEndpoint(req: ProxyRequest, w: RequestWrapper, query0: MultiMap, raw0: string): ProxyRequest {
  const params = req.paramNames.map((n, i) => {
    const v = w.params?.[n];
    return v === undefined || v === null ? req.params[i]! : String(v);
  });
  const headers = new Map<string, string[]>();
  const hs = w.headers ?? {};
  const captured = req.client.headers;
  for (const k in hs) {
    const v = hs[k] as unknown;
    if (v === undefined || v === null) continue;
    // A name the client sent is canonical and not hop-by-hop already (router/capture.ts).
    let name = k;
    if (!captured.has(k)) {
      name = canonicalHeaderCached(k);
      if (HOP_BY_HOP.has(name.toLowerCase())) continue;
    }
    headers.set(name, Array.isArray(v) ? v.map(String) : [String(v)]);
  }
  const query = w.query === undefined || w.query === null || sameQuery(w.query, query0) ? raw0 : formatQuery(w.query);
  const body = (w.body ?? null) as ProxyRequest['body'];
  const method = w.method === req.method ? req.method : checkMethod(w.method);
  const out = new ProxyRequest(params, req.paramNames, query, withHeaders(req.client, headers), body, req.scope, method, req.extra);
  // Filtered by the endpoint's list already: what the modifier added goes on (backends apply their own list).
  out.endpointFiltered = true;
  return out;
}

/** The client with other headers, in the shapes router/endpoint.ts builds (one shape per call site downstream). */
function withHeaders(c: ClientInfo, headers: CapturedHeaders): ClientInfo {
  return c.trace === undefined
    ? { headers, host: c.host, path: c.path, ip: c.ip }
    : { headers, host: c.host, path: c.path, ip: c.ip, trace: c.trace };
}

/** Endpoint-level modifiers around a decoding endpoint's proxy. */
export function modifyProxy(next: (r: ProxyRequest) => Promise<ProxyResponse>, mods: Modifiers, endpointQuery: AllowList): (r: ProxyRequest) => Promise<ProxyResponse> {
  const filter = compileQueryFilter(endpointQuery, null);
  const reqMods = mods.request;
  const respMods = mods.response;
  // A partial answer carries the merge error: KrakenD skips the response modifiers.
  const after = (resp: ProxyResponse, request: RequestWrapper | null, spans: PluginSpans | null | undefined): ProxyResponse | Promise<ProxyResponse> =>
    respMods.length === 0 || resp.errors !== null ? resp : modifyDecoded(mods, resp, request, spans);
  if (reqMods.length === 0) return (req) => next(req).then((r) => after(r, null, req.client.trace));
  return (req) => {
    let r: RequestWrapper | Promise<RequestWrapper>;
    let e: EndpointView;
    const spans = req.client.trace;
    let call: Promise<ProxyResponse>;
    try {
      e = endpointWrapper(req, filter);
      r = run(reqMods, e.w, spans);
      if (isThenable<RequestWrapper>(r)) return Promise.resolve(r).then((out) => next(applyEndpoint(req, out, e.query, e.raw)).then((resp) => after(resp, out, spans)));
      call = next(applyEndpoint(req, r, e.query, e.raw));
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const out = r;
    return call.then((resp) => after(resp, out, spans));
  };
}

/**
 * Endpoint-level request modifiers for a no-op endpoint: the ProxyRequest the backend request is
 * built from. Returns the request as it is when there are none.
 */
export function modifyEndpointRequest(
  mods: Modifiers | null, endpointQuery: AllowList,
): ((req: ProxyRequest) => Promise<{ req: ProxyRequest; wrapper: RequestWrapper | null }>) | null {
  if (mods === null) return null;
  const reqMods = mods.request;
  const filter = compileQueryFilter(endpointQuery, null);
  return (req) => {
    if (reqMods.length === 0) return Promise.resolve({ req, wrapper: null });
    let e: EndpointView;
    let r: RequestWrapper | Promise<RequestWrapper>;
    try {
      e = endpointWrapper(req, filter);
      r = run(reqMods, e.w, req.client.trace);
      if (!isThenable<RequestWrapper>(r)) return Promise.resolve({ req: applyEndpoint(req, r, e.query, e.raw), wrapper: r });
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return Promise.resolve(r).then((out) => ({ req: applyEndpoint(req, out, e.query, e.raw), wrapper: out }));
  };
}

// ---- backend level, and the no-op answer ----

function backendWrapper(out: OutboundRequest): { w: RequestWrapper; query: MultiMap } {
  const u = new URL(out.url);
  const q = u.search.length > 1 ? u.search.slice(1) : '';
  const w: RequestWrapper = {
    params: { ...out.params }, headers: multi(out.headers), body: out.body, method: out.method, url: out.url, query: parseQuery(q), path: u.pathname,
  };
  return { w, query: parseQuery(q) };
}

function applyBackend(out: OutboundRequest, w: RequestWrapper, query0: MultiMap): OutboundRequest {
  let url = typeof w.url === 'string' && w.url !== '' ? w.url : out.url;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`a request modifier set the URL to ${JSON.stringify(w.url)}, not an absolute URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`a request modifier set the URL to ${JSON.stringify(url)}: only http and https`);
  if (url === out.url && w.query !== undefined && w.query !== null && !sameQuery(w.query, query0)) {
    const q = formatQuery(w.query);
    u.search = q === '' ? '' : `?${q}`;
    url = u.toString();
  }
  const headers = single(w.headers ?? {}, 'headers');
  for (const k of Object.keys(headers)) if (HOP_BY_HOP.has(k.toLowerCase())) delete headers[k];
  return out.with(checkMethod(w.method), url, headers, w.body ?? null);
}

/** Backend-level request modifiers: the built request before the call. */
export function modifyOutbound(mods: Modifiers): ((out: OutboundRequest) => Promise<{ out: OutboundRequest; wrapper: RequestWrapper }>) | null {
  const reqMods = mods.request;
  if (reqMods.length === 0) return null;
  return (out) => {
    const { w, query } = backendWrapper(out);
    let r: RequestWrapper | Promise<RequestWrapper>;
    try {
      r = run(reqMods, w, out.trace);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return Promise.resolve(r).then((o) => ({ out: applyBackend(out, o, query), wrapper: o }));
  };
}

/** Response modifiers on a decoded backend answer (data, isComplete, headers). */
export function modifyDecoded(mods: Modifiers, resp: ProxyResponse, request: RequestWrapper | null, spans: PluginSpans | null | undefined): ProxyResponse | Promise<ProxyResponse> {
  const respMods = mods.response;
  if (respMods.length === 0) return resp;
  const w: ResponseWrapper = { data: resp.data, isComplete: resp.isComplete, io: null, headers: multi(resp.headers), statusCode: 200, request };
  const done = (o: ResponseWrapper): ProxyResponse => {
    const data = o.data;
    if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new Error('a response modifier set data to something that is not an object');
    resp.data = data;
    resp.isComplete = o.isComplete === true;
    const h = single(o.headers ?? {}, 'headers');
    resp.headers = Object.keys(h).length > 0 ? h : undefined;
    return resp;
  };
  const r = run(respMods, w, spans);
  return isThenable<ResponseWrapper>(r) ? r.then(done) : done(r);
}

/** Response modifiers on a no-op answer: `io` (the streamed body), `statusCode`, `headers`. */
export function modifyStreamed(mods: Modifiers, resp: BackendResponse, request: RequestWrapper | null, spans: PluginSpans | null | undefined): BackendResponse | Promise<BackendResponse> {
  const respMods = mods.response;
  if (respMods.length === 0) return resp;
  const w: ResponseWrapper = {
    data: {}, isComplete: true, io: resp.body as ResponseWrapper['io'], headers: multi(resp.headers), statusCode: resp.status, request,
  };
  const done = (o: ResponseWrapper): BackendResponse => {
    const st = o.statusCode;
    if (typeof st !== 'number' || !Number.isInteger(st) || st < 200 || st > 599) {
      throw new Error(`a response modifier set statusCode to ${JSON.stringify(st)}: a status is an integer from 200 to 599`);
    }
    // A replaced body usually wraps the original (a transform reading it), so the original is
    // not discarded here; one nobody reads ends with its backend's body timeout.
    return { status: st, headers: single(o.headers ?? {}, 'headers'), body: o.io ?? null };
  };
  const r = run(respMods, w, spans);
  return isThenable<ResponseWrapper>(r) ? r.then(done) : done(r);
}
