/**
 * Request building, compiled once per backend at start-up:
 *  - `compileUrlPattern`: `url_pattern` → literal parts + parameter slots, each slot knowing
 *    whether it sits in the path (segment escaping) or in the query (component escaping), so a
 *    value can never add a path segment, a query parameter or a CR/LF.
 *  - `compileQueryFilter`: `input_query_strings` → a function over the raw query string (raw
 *    non-ASCII characters leave percent-encoded as UTF-8).
 *  - `dotSegmentLike`: the one rule for values that must never become a dot-segment in a backend
 *    path (path params, claims, sequential values).
 *  - `compileHeaderBuilder`: `input_headers` (endpoint, then backend) → a function that builds the
 *    backend header object from the captured client headers.
 */
import type { RequestTrace } from '../telemetry/tracing.js';
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

/**
 * True when `v`, placed in a URL path, could be read as a dot-segment (`.` or `..`) by a common
 * backend, and so climb out of the path gw built. `v` is the value as the backend decodes it: a path
 * param after gw's one percent-decoding, a claim or a sequential value as it is (gw escapes it).
 * Every piece of `v` between `/` and `\` counts (gw sends them as %2F / %5C, which nginx and others
 * decode before resolving dot-segments), and a piece is dot-like when
 *  - cut at its first `;` (Tomcat, Jetty and Spring drop `;` path parameters before resolving
 *    dot-segments: `..;x` is `..` there),
 *  - it is only dots and spaces, starting with a dot (`.`, `..`, and `...` or `.. `, which Windows
 *    path handling trims to `..`).
 * Non-ASCII is compared after NFKC (fullwidth `．` U+FF0E and `‥` U+2025 are dots there), and a
 * value holding `%` is checked once more with its ASCII escapes decoded (backends that decode twice).
 * Allocation-free for ASCII values without `%`.
 */
export function dotSegmentLike(v: string): boolean {
  let ascii = true;
  let pct = false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c >= 0x80) ascii = false;
    else if (c === 0x25) pct = true;
  }
  let s = v;
  if (!ascii) {
    s = v.normalize('NFKC');
    pct = s.indexOf('%') !== -1; // fullwidth ％ is % too
  }
  if (dotPiece(s)) return true;
  return pct && dotPiece(s.replace(ASCII_ESCAPE, decodeAsciiEscape));
}

const ASCII_ESCAPE = /%[0-7][0-9A-Fa-f]/g;
const decodeAsciiEscape = (m: string): string => String.fromCharCode(parseInt(m.slice(1), 16));

/** True when a piece of `s` (split at `/` and `\`), cut at its first `;`, is dots and spaces starting with a dot. */
function dotPiece(s: string): boolean {
  const n = s.length;
  let start = 0;
  while (start <= n) {
    let len = 0; // length of the piece before `;`
    let dotLike = true;
    let inHead = true;
    let j = start;
    for (; j < n; j++) {
      const c = s.charCodeAt(j);
      if (c === 0x2f || c === 0x5c) break;
      if (!inHead) continue;
      if (c === 0x3b) {
        inHead = false;
        continue;
      }
      if (c !== 0x2e && (len === 0 || c !== 0x20)) dotLike = false;
      len++;
    }
    if (dotLike && len > 0) return true;
    start = j + 1;
  }
  return false;
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
        else if (extra != null && Object.prototype.hasOwnProperty.call(extra, names[i]!)) v = extra[names[i]!]!;
        else v = '';
        if (inQuery[i]) out += literals[i]! + encodeURIComponent(v);
        else {
          // Values from tokens, responses or scripts are held to the path-param rule (the router
          // already refused such params with a 400): never a dot-segment for the backend.
          if (dotSegmentLike(v)) throw new Error(`{${names[i]}} value ${JSON.stringify(v)} would be a dot-segment in the backend path`);
          out += literals[i]! + escapePathSegment(v);
        }
      }
      return out + tail;
    },
  };
}

/** Returns the query string (without `?`) to forward, or '' for none. */
export type QueryFilter = (rawQuery: string) => string;

/**
 * The query with raw non-ASCII characters percent-encoded as UTF-8 (`é` → `%C3%A9`: the bytes the
 * client sent, in the only form undici sends), or null when it holds U+FFFD: uWS decodes the request
 * target as UTF-8 and replaces bytes that are not UTF-8 with U+FFFD, so the original bytes are lost
 * (a literal U+FFFD sent raw cannot be told apart; sent as %EF%BF%BD it is plain ASCII).
 */
export function asciiQuery(q: string): string | null {
  if (!NON_ASCII.test(q)) return q;
  if (q.indexOf('\ufffd') !== -1) return null;
  try {
    return q.replace(NON_ASCII_RUN, encodeURIComponent);
  } catch {
    return null; // a lone surrogate (only a script can produce one)
  }
}
const NON_ASCII = /[^\x00-\x7f]/;
const NON_ASCII_RUN = /[^\x00-\x7f]+/g;

export const QUERY_NOT_UTF8 = 'the query string holds bytes that are not UTF-8';

function forwardable(q: string): string {
  const a = asciiQuery(q);
  if (a === null) throw new Error(`${QUERY_NOT_UTF8}: nothing forwarded`);
  return a;
}

export function compileQueryFilter(endpoint: AllowList, backend: AllowList | null): QueryFilter {
  if (endpoint !== '*' && endpoint.length === 0) return () => '';
  const allowed = intersect(endpoint, backend);
  if (allowed === '*') return forwardable;
  if (allowed.length === 0) return () => '';
  const set = new Set(allowed);
  return (raw) => {
    if (raw === '') return '';
    const q = forwardable(raw);
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
  /** The request's spans when traces are on (telemetry/tracing.ts). */
  readonly trace?: RequestTrace | null;
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
