/**
 * Request building, compiled once per backend at start-up:
 *  - `compileUrlPattern`: `url_pattern` → literal parts + parameter slots, each slot knowing
 *    whether it sits in the path (segment escaping) or in the query (component escaping), so a
 *    value can never add a path segment, a query parameter or a CR/LF.
 *  - `compileQueryFilter`: `input_query_strings` → a function over the raw query string.
 *  - `compileHeaderBuilder`: `input_headers` (endpoint, then backend) → a function that builds the
 *    backend header object from the captured client headers.
 */
import { paramKey } from '../config/load.js';
import type { AllowList } from '../config/types.js';
import type { Headers } from '../plugin/types.js';
import { USER_AGENT } from '../version.js';

const PLACEHOLDER = /\{([\w\-.:/]+)\}/g;

/** Renders a url_pattern for one request: `render(params)` → `/path?query`. */
export interface UrlTemplate {
  readonly hasQuery: boolean;
  /** Placeholders that are not endpoint parameters (sequential `resp0_x`, `JWT.sub`). */
  readonly unknown: readonly string[];
  render(params: readonly string[], extra?: Readonly<Record<string, string>> | null): string;
}

/** Go's path escaping keeps unreserved characters and the sub-delims `!$&'()*+,;=:@`. */
const PATH_SAFE = /^[A-Za-z0-9\-._~!$&'()*+,;=:@]*$/;

export function escapePathSegment(v: string): string {
  if (PATH_SAFE.test(v)) return v;
  let out = '';
  for (const ch of v) {
    out += PATH_SAFE.test(ch) ? ch : encodeURIComponent(ch);
  }
  // encodeURIComponent leaves !'()* alone, which PATH_SAFE also allows.
  return out;
}

export function compileUrlPattern(pattern: string, endpointParams: readonly string[]): UrlTemplate {
  const keys = endpointParams.map(paramKey);
  const qIndex = pattern.indexOf('?');
  const literals: string[] = [];
  const slots: number[] = [];
  const names: string[] = [];
  const inQuery: boolean[] = [];
  const unknown: string[] = [];
  let last = 0;
  for (const m of pattern.matchAll(PLACEHOLDER)) {
    const at = m.index!;
    const idx = keys.indexOf(paramKey(m[1]!));
    literals.push(pattern.slice(last, at));
    // Unknown names (sequential `{resp0_x}`) are looked up in the request's `extra` values and
    // render empty when there is none (`{JWT.sub}` until its stage exists).
    slots.push(idx);
    names.push(m[1]!);
    if (idx < 0 && !unknown.includes(m[1]!)) unknown.push(m[1]!);
    inQuery.push(qIndex !== -1 && at > qIndex);
    last = at + m[0].length;
  }
  const tail = pattern.slice(last);
  const hasQuery = qIndex !== -1;
  if (slots.length === 0) {
    return { hasQuery, unknown, render: () => pattern };
  }
  const n = slots.length;
  return {
    hasQuery,
    unknown,
    render(params: readonly string[], extra?: Readonly<Record<string, string>> | null): string {
      let out = '';
      for (let i = 0; i < n; i++) {
        const idx = slots[i]!;
        let v: string;
        if (idx >= 0) v = params[idx] ?? '';
        else if (extra != null && Object.prototype.hasOwnProperty.call(extra, names[i]!)) {
          v = extra[names[i]!]!;
          // Values from responses or tokens are checked like path params: never a dot-segment.
          if ((v === '.' || v === '..') && !inQuery[i]) throw new Error(`{${names[i]}} value "${v}" would be a dot-segment`);
        } else v = '';
        out += literals[i]! + (inQuery[i] ? encodeURIComponent(v) : escapePathSegment(v));
      }
      return out + tail;
    },
  };
}

/** Returns the query string (without `?`) to forward, or '' for none. */
export type QueryFilter = (rawQuery: string) => string;

export function compileQueryFilter(endpoint: AllowList, backend: AllowList | null): QueryFilter {
  if (endpoint !== '*' && endpoint.length === 0) return () => '';
  const allowed = intersect(endpoint, backend);
  if (allowed === '*') return (q) => q;
  if (allowed.length === 0) return () => '';
  const set = new Set(allowed);
  return (q) => {
    if (q === '') return '';
    let out = '';
    let start = 0;
    while (start <= q.length) {
      let end = q.indexOf('&', start);
      if (end === -1) end = q.length;
      if (end > start) {
        const pair = q.slice(start, end);
        const eq = pair.indexOf('=');
        const rawKey = eq === -1 ? pair : pair.slice(0, eq);
        if (set.has(decodeQueryComponent(rawKey))) out += (out === '' ? '' : '&') + pair;
      }
      start = end + 1;
    }
    return out;
  };
}

function decodeQueryComponent(s: string): string {
  if (s.indexOf('%') === -1 && s.indexOf('+') === -1) return s;
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

function intersect(endpoint: AllowList, backend: AllowList | null): AllowList {
  if (backend === null || backend === '*') return endpoint;
  if (endpoint === '*') return backend;
  return endpoint.filter((k) => backend.includes(k));
}

/** Client headers captured by the endpoint handler: canonical name → values. */
export type CapturedHeaders = Map<string, string[]>;

export interface ClientInfo {
  readonly headers: CapturedHeaders;
  /** The incoming Host header. */
  readonly host: string;
  /** The request path as received (no query). */
  readonly path: string;
  readonly ip: string;
}

export type HeaderBuilder = (client: ClientInfo) => Headers;

/**
 * Hop-by-hop headers never cross the gateway (stricter than KrakenD, even with `"*"`), and the
 * client's Host never reaches a backend. `Expect: 100-continue` is answered at the edge (uWS
 * writes the interim `100 Continue` itself, then the body is streamed on); forwarded, it would ask
 * the backend for an interim answer gw's client cannot take (undici refuses the header).
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'host', 'proxy-authenticate', 'proxy-authorization', 'expect',
]);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\r\n\0]/;

/** An HTTP field name (a token). uWS writes whatever it is given, so gw checks what it did not build. */
export function validHeaderName(n: string): boolean {
  return TOKEN.test(n);
}

/** A field value that cannot start another header line. */
export function validHeaderValue(v: string): boolean {
  return !BAD_VALUE.test(v);
}

export function compileHeaderBuilder(backend: AllowList | null, disableCompression: boolean): HeaderBuilder {
  // The endpoint list was applied at capture time; the backend list filters further and, as in
  // KrakenD, also removes X-Forwarded-* and User-Agent unless it names them.
  const allow = backend === null || backend === '*' ? null : new Set(backend);
  const keepXff = allow === null || allow.has('X-Forwarded-For');
  const keepXfh = allow === null || allow.has('X-Forwarded-Host');
  const keepUa = allow === null || allow.has('User-Agent');
  const keepVia = allow === null || allow.has('X-Forwarded-Via');
  return (client) => {
    const out: Headers = {};
    for (const [name, values] of client.headers) {
      if (allow !== null && !allow.has(name)) continue;
      out[name] = values.length === 1 ? values[0]! : values;
    }
    if (out['User-Agent'] !== undefined) {
      if (keepVia) out['X-Forwarded-Via'] = USER_AGENT;
    } else if (keepUa) {
      out['User-Agent'] = USER_AGENT;
    }
    if (keepXff) out['X-Forwarded-For'] = client.ip;
    if (keepXfh) out['X-Forwarded-Host'] = client.host;
    if (out['Accept-Encoding'] === undefined && !disableCompression) out['Accept-Encoding'] = 'gzip';
    return out;
  };
}
