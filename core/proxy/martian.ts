/**
 * `modifier/martian` (krakend-martian over google/martian v3): static changes to a backend's
 * request before it is sent and to its raw response before the status check and decoding.
 *
 * The config is a tree of one-key objects (`{"header.Modifier": {...}}`): modifiers, filters that
 * run a `modifier` (or `else`) on a condition, and groups. It is compiled once per backend into two
 * closures, one per phase; a request runs them over a small view of the built backend request
 * ({@link MartianRequest}) and of the response ({@link MartianResponse}). Nothing is parsed per
 * request but the URL parts a modifier touches.
 *
 * Where gw differs from KrakenD, on purpose:
 * - A martian block KrakenD cannot parse is logged and dropped there, and the backend runs without
 *   it (so an `Authorization` the block was to add silently goes missing); gw refuses to start and
 *   names the path. Types gw does not implement (`static.Modifier`, verifiers) are refused the same way.
 * - Hop-by-hop headers and `Content-Length` cannot be set by a modifier (gw never forwards the
 *   former and computes the latter).
 * - `header.Filter` without `value` tests that the header exists, as KrakenD's docs say (martian's
 *   code would only match a header present with an empty value).
 * - Regular expressions are JavaScript's (a leading `(?i)`/`(?s)` is read as a flag); martian's are RE2.
 */
import { randomUUID } from 'node:crypto';
import { canonicalHeader as canonical } from '../plugin/checks.js';
import type { BackendResponse, Headers } from '../plugin/types.js';
import { releaseBody } from '../transport/body.js';
import { HOP_BY_HOP, validHeaderName, validHeaderValue } from './request.js';
import type { OutboundRequest } from './types.js';

export const MARTIAN_NS = 'modifier/martian';

// ---------------------------------------------------------------------------
// The request and response views

/** The backend request as martian sees it: URL parts, Go's `req.Host`, headers and body. */
export class MartianRequest {
  scheme: string;
  host: string;
  /** Path as sent (escaped), without the query. */
  path: string;
  /** Raw query, without `?`. */
  query: string;
  /** Go's `req.Host`: the Host line sent. Fixed when the request was built, so a new URL host does not change it; '' = the URL's host. */
  reqHost: string;
  urlChanged = false;

  constructor(readonly out: OutboundRequest) {
    const u = out.url;
    const s = u.indexOf('://');
    this.scheme = u.slice(0, s).toLowerCase();
    let i = s + 3;
    let end = i;
    while (end < u.length && u.charCodeAt(end) !== 47 /* / */ && u.charCodeAt(end) !== 63 /* ? */) end++;
    this.host = u.slice(i, end);
    i = u.indexOf('?', end);
    this.path = i < 0 ? u.slice(end) : u.slice(end, i);
    if (this.path === '') this.path = '/';
    this.query = i < 0 ? '' : u.slice(i + 1);
    this.reqHost = this.host;
  }

  get headers(): Headers {
    return this.out.headers;
  }

  /** Go's `req.URL.String()`. */
  url(): string {
    return `${this.scheme}://${this.host}${this.path}${this.query === '' ? '' : '?' + this.query}`;
  }

  /** Go's `req.Host` as sent: the URL's host when no other was set. */
  hostLine(): string {
    return this.reqHost === '' ? this.host : this.reqHost;
  }

  /** The request to send: rebased when the URL changed; a Host header when the Host line is not the URL's host. */
  finish(): OutboundRequest {
    let out = this.out;
    if (this.urlChanged) out = out.moved(`${this.scheme}://${this.host}`, this.path + (this.query === '' ? '' : '?' + this.query));
    const line = this.hostLine();
    if (line !== this.host) setHeader(out.headers, 'Host', 'host', line);
    return out;
  }
}

/** The backend response before the status check and decoding (header names in lower case). */
export class MartianResponse {
  status: number;
  readonly headers: Headers;
  body: BackendResponse['body'];

  constructor(r: BackendResponse, readonly request: MartianRequest) {
    this.status = r.status;
    this.body = r.body;
    const h: Headers = {};
    for (const k in r.headers) h[k.toLowerCase()] = r.headers[k]!;
    this.headers = h;
  }

  result(): BackendResponse {
    return { status: this.status, headers: this.headers, body: this.body };
  }
}

type ReqFn = (r: MartianRequest) => void;
type ResFn = (r: MartianResponse) => void;

export interface Martian {
  readonly request: ReqFn | null;
  readonly response: ResFn | null;
}

// ---------------------------------------------------------------------------
// Header helpers (case-insensitive; requests keep Go's canonical names, responses lower case)

function keyOf(h: Headers, lname: string): string | undefined {
  for (const k in h) if (k.length === lname.length && k.toLowerCase() === lname) return k;
  return undefined;
}

function values(h: Headers, lname: string): string[] {
  const out: string[] = [];
  for (const k in h) {
    if (k.length !== lname.length || k.toLowerCase() !== lname) continue;
    const v = h[k]!;
    if (Array.isArray(v)) out.push(...v);
    else out.push(v);
  }
  return out;
}

function first(h: Headers, lname: string): string {
  const k = keyOf(h, lname);
  if (k === undefined) return '';
  const v = h[k]!;
  return Array.isArray(v) ? (v[0] ?? '') : v;
}

function deleteHeader(h: Headers, lname: string): void {
  for (const k in h) if (k.length === lname.length && k.toLowerCase() === lname) delete h[k];
}

function setHeader(h: Headers, name: string, lname: string, v: string): void {
  deleteHeader(h, lname);
  h[name] = v;
}

function addHeader(h: Headers, name: string, lname: string, v: string): void {
  const all = values(h, lname);
  deleteHeader(h, lname);
  h[name] = all.length === 0 ? v : [...all, v];
}

// ---------------------------------------------------------------------------
// Go's url.Values: ParseQuery (bad pairs dropped, as Query() does) and Encode (sorted, QueryEscape)

/** Bytes as a binary string (one char per byte), so sorting compares bytes as Go does. */
function unescapeQuery(s: string): string | null {
  if (s.indexOf('%') < 0) return Buffer.from(s.replace(/\+/g, ' '), 'utf8').toString('latin1');
  const bytes: number[] = [];
  const src = Buffer.from(s, 'utf8');
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === 0x25 /* % */) {
      const hex = src.subarray(i + 1, i + 3).toString('latin1');
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null;
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else bytes.push(c === 0x2b ? 0x20 : c);
  }
  return Buffer.from(bytes).toString('latin1');
}

const UNRESERVED = /[A-Za-z0-9\-_.~]/;

function escapeQuery(bin: string): string {
  let out = '';
  for (let i = 0; i < bin.length; i++) {
    const ch = bin[i]!;
    const c = bin.charCodeAt(i);
    if (c < 0x80 && UNRESERVED.test(ch)) out += ch;
    else if (c === 0x20) out += '+';
    else out += '%' + (c < 16 ? '0' : '') + c.toString(16).toUpperCase();
  }
  return out;
}

function parseQuery(raw: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const pair of raw.split('&')) {
    if (pair === '' || pair.includes(';')) continue;
    const eq = pair.indexOf('=');
    const k = unescapeQuery(eq < 0 ? pair : pair.slice(0, eq));
    const v = unescapeQuery(eq < 0 ? '' : pair.slice(eq + 1));
    if (k === null || v === null) continue;
    const l = m.get(k);
    if (l === undefined) m.set(k, [v]);
    else l.push(v);
  }
  return m;
}

function encodeQuery(m: Map<string, string[]>): string {
  const keys = [...m.keys()].sort();
  const parts: string[] = [];
  for (const k of keys) for (const v of m.get(k)!) parts.push(escapeQuery(k) + '=' + escapeQuery(v));
  return parts.join('&');
}

const bin = (s: string) => Buffer.from(s, 'utf8').toString('latin1');

// ---------------------------------------------------------------------------
// Config reading

class MartianError extends Error {}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
/**
 * Comment keys (`@comment`, `$x`, `_x`, `#x`) are ignored next to the type, as gw ignores them
 * everywhere (KrakenD's martian parser would count them as a second type and drop the block).
 */
const COMMENT = /^[@$_#]/;

function fail(path: string, msg: string): never {
  throw new MartianError(`${path}: ${msg}`);
}

function str(o: Obj, k: string, path: string, required: boolean): string {
  const v = o[k];
  if (v === undefined || v === null) {
    if (required) fail(path, `"${k}" is required`);
    return '';
  }
  if (typeof v !== 'string') fail(path, `"${k}" must be a string`);
  return v;
}

function bool(o: Obj, k: string, path: string): boolean {
  const v = o[k];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') fail(path, `"${k}" must be true or false`);
  return v;
}

function int(o: Obj, k: string, path: string): number | null {
  const v = o[k];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v)) fail(path, `"${k}" must be an integer`);
  return v;
}

/** Headers a modifier may not set: hop-by-hop (never forwarded by gw) and Content-Length (computed). */
function settableName(name: string, path: string, key: string, hostOk: boolean): string {
  if (!validHeaderName(name)) fail(path, `"${key}" ${JSON.stringify(name)} is not a valid header name`);
  const l = name.toLowerCase();
  if (l === 'host') {
    if (hostOk) return l;
    fail(path, `"${key}" cannot be Host here; set the Host line with header.Modifier`);
  }
  if (HOP_BY_HOP.has(l)) fail(path, `"${key}" ${JSON.stringify(name)} is a hop-by-hop header: gw never forwards those`);
  if (l === 'content-length') fail(path, `"${key}" "Content-Length" cannot be set: gw computes it from the body`);
  return l;
}

function headerValue(v: string, path: string, key: string): string {
  if (!validHeaderValue(v)) fail(path, `"${key}" holds a character a header value cannot (CR, LF or NUL)`);
  return v;
}

const AUTHORITY = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(:\d{1,5})?$/;

/** A host[:port] a URL (and a Host line) can carry. */
function hostPort(v: string, path: string, key: string): string {
  let ok = AUTHORITY.test(v);
  if (ok) {
    try {
      new URL(`http://${v}/`);
    } catch {
      ok = false;
    }
  }
  if (!ok) fail(path, `"${key}" ${JSON.stringify(v)} is not a host[:port]`);
  return v;
}

function regex(src: string, path: string, key: string): RegExp {
  let flags = '';
  let s = src;
  for (;;) {
    const m = /^\(\?([is]+)\)/.exec(s);
    if (m === null) break;
    for (const f of m[1]!) if (!flags.includes(f)) flags += f;
    s = s.slice(m[0].length);
  }
  try {
    // 'u': escapes JavaScript does not know (RE2's \\z, \\A, \\Q…) are errors, not letters.
    return new RegExp(s, flags + 'u');
  } catch (err) {
    return fail(path, `"${key}" is not a valid regular expression: ${(err as Error).message}`);
  }
}

interface Phases {
  req: boolean;
  res: boolean;
}

interface Built {
  req: ReqFn | null;
  res: ResFn | null;
}

interface TypeSpec {
  /** Phases the type implements. */
  readonly phases: Phases;
  build(o: Obj, path: string, scope: Phases): Built;
}

function scopeOf(o: Obj, path: string, type: string, supported: Phases): Phases {
  const s = o['scope'];
  if (s === undefined || s === null) return { ...supported };
  if (!Array.isArray(s)) fail(path, '"scope" must be a list of "request" and/or "response"');
  const out: Phases = { req: false, res: false };
  for (const v of s) {
    if (v === 'request') out.req = true;
    else if (v === 'response') out.res = true;
    else fail(path, `invalid scope ${JSON.stringify(v)}: not "request" nor "response"`);
    if ((v === 'request' && !supported.req) || (v === 'response' && !supported.res)) {
      fail(path, `${type} does not apply to the ${v} (scope ${supported.req ? '"request"' : '"response"'} only)`);
    }
  }
  return out;
}

/** One node of the tree: `{ "type": {...} }` (comment keys aside). */
function node(v: unknown, path: string): Built {
  if (!isObj(v)) fail(path, 'must be an object holding one modifier, filter or group');
  const keys = Object.keys(v).filter((k) => !COMMENT.test(k));
  if (keys.length !== 1) fail(path, `must hold exactly one modifier, filter or group, but holds ${keys.length}${keys.length > 0 ? ': ' + keys.join(', ') : ''}`);
  const type = keys[0]!;
  const p = `${path}["${type}"]`;
  const spec = TYPES.get(type);
  if (spec === undefined) {
    fail(p, `unknown or unsupported martian type; gw implements ${[...TYPES.keys()].join(', ')}`);
  }
  const o = v[type];
  if (!isObj(o)) fail(p, 'must be an object');
  const scope = scopeOf(o, p, type, spec.phases);
  const b = spec.build(o, p, scope);
  return { req: scope.req ? b.req : null, res: scope.res ? b.res : null };
}

// ---------------------------------------------------------------------------
// Modifiers

const BOTH: Phases = { req: true, res: true };
const REQ: Phases = { req: true, res: false };
const RES: Phases = { req: false, res: true };

function headerModifier(o: Obj, path: string): Built {
  const name = str(o, 'name', path, true);
  const l = settableName(name, path, 'name', true);
  const cn = canonical(name);
  const value = headerValue(str(o, 'value', path, true), path, 'value');
  if (l === 'host') hostPort(value, path, 'value');
  const sent = bin(value); // the UTF-8 bytes, as Go sends them (undici writes header strings as latin1)
  return {
    req:
      l === 'host'
        ? (r) => {
            r.reqHost = value;
          }
        : (r) => setHeader(r.headers, cn, l, sent),
    // A response has no Host to set (martian's response header Set skips it).
    res: l === 'host' ? null : (r) => setHeader(r.headers, l, l, value),
  };
}

function headerAppend(o: Obj, path: string): Built {
  const name = str(o, 'name', path, true);
  if (name.toLowerCase() === 'host') fail(path, 'header.Append cannot add a second Host (KrakenD fails every request with it); use header.Modifier');
  const l = settableName(name, path, 'name', false);
  const cn = canonical(name);
  const value = headerValue(str(o, 'value', path, true), path, 'value');
  const sent = bin(value);
  return {
    req: (r) => addHeader(r.headers, cn, l, sent),
    res: (r) => addHeader(r.headers, l, l, value),
  };
}

function headerBlacklist(o: Obj, path: string): Built {
  const names = o['names'];
  if (!Array.isArray(names) || names.some((n) => typeof n !== 'string')) fail(path, '"names" must be a list of header names');
  const ls = (names as string[]).map((n) => n.toLowerCase());
  const dropHost = ls.includes('host');
  const others = ls.filter((n) => n !== 'host');
  return {
    req: (r) => {
      if (dropHost) r.reqHost = '';
      for (const n of others) deleteHeader(r.headers, n);
    },
    res: (r) => {
      for (const n of others) deleteHeader(r.headers, n);
    },
  };
}

function headerCopy(o: Obj, path: string): Built {
  const from = str(o, 'from', path, true);
  const to = str(o, 'to', path, true);
  if (!validHeaderName(from)) fail(path, `"from" ${JSON.stringify(from)} is not a valid header name`);
  const lf = from.toLowerCase();
  if (to.toLowerCase() === 'host') fail(path, '"to" "Host": gw does not let a copied header (one a client may send) choose the Host line; set it with header.Modifier');
  const lt = settableName(to, path, 'to', false);
  const ct = canonical(to);
  return {
    req: (r) => {
      // A missing source sets the target to "" (martian copies Get's empty answer).
      setHeader(r.headers, ct, lt, lf === 'host' ? r.reqHost : first(r.headers, lf));
    },
    res: (r) => setHeader(r.headers, lt, lt, first(r.headers, lf)),
  };
}

function headerId(o: Obj, path: string): Built {
  const name = str(o, 'header', path, false) || 'X-Krakend-Id';
  const l = settableName(name, path, 'header', false);
  const cn = canonical(name);
  return {
    req: (r) => {
      if (first(r.headers, l) === '') setHeader(r.headers, cn, l, randomUUID());
    },
    res: null,
  };
}

function queryModifier(o: Obj, path: string): Built {
  const name = bin(str(o, 'name', path, true));
  const value = bin(str(o, 'value', path, true));
  return {
    req: (r) => {
      const q = parseQuery(r.query);
      q.set(name, [value]);
      r.query = encodeQuery(q);
      r.urlChanged = true;
    },
    res: null,
  };
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function bodyModifier(o: Obj, path: string): Built {
  const b64 = str(o, 'body', path, true).replace(/[\r\n]/g, '');
  if (!BASE64.test(b64)) fail(path, '"body" must be standard base64 (the body, uncompressed, base64-encoded)');
  const body = Buffer.from(b64, 'base64');
  const ct = headerValue(str(o, 'contentType', path, false), path, 'contentType');
  const sentCt = bin(ct);
  return {
    req: (r) => {
      const h = r.headers;
      setHeader(h, 'Content-Type', 'content-type', sentCt);
      deleteHeader(h, 'content-encoding');
      deleteHeader(h, 'content-length'); // sent with the new body's length
      r.out.body = body;
    },
    res: (r) => {
      const h = r.headers;
      setHeader(h, 'content-type', 'content-type', ct);
      deleteHeader(h, 'content-encoding');
      deleteHeader(h, 'content-length');
      releaseBody(r.body);
      r.body = body;
    },
  };
}

// cookie-octet, plus space and comma (Go quotes a value holding them)
const COOKIE_VALUE = /^"?[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e,]*"?$/;
const DOMAIN = /^\.?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function cookieModifier(o: Obj, path: string): Built {
  const name = str(o, 'name', path, true);
  if (!validHeaderName(name)) fail(path, `"name" ${JSON.stringify(name)} is not a valid cookie name`);
  const raw = str(o, 'value', path, true);
  if (!COOKIE_VALUE.test(raw)) fail(path, '"value" holds a character a cookie value cannot (";", "\\", a quote inside, or a control character)');
  const unq = raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"') ? raw.slice(1, -1) : raw;
  const value = /[ ,]/.test(unq) ? `"${unq}"` : unq;
  const cookiePath = str(o, 'path', path, false);
  if (/[;\x00-\x1f\x7f]/.test(cookiePath)) fail(path, '"path" holds ";" or a control character');
  const domain = str(o, 'domain', path, false);
  if (domain !== '' && !DOMAIN.test(domain)) fail(path, `"domain" ${JSON.stringify(domain)} is not a valid cookie domain`);
  let expires = '';
  if (o['expires'] !== undefined && o['expires'] !== null) {
    const e = str(o, 'expires', path, true);
    const t = RFC3339.test(e) ? Date.parse(e) : NaN;
    if (Number.isNaN(t)) fail(path, `"expires" ${JSON.stringify(e)} is not an RFC 3339 time (e.g. "2025-04-12T23:20:50.52Z")`);
    if (new Date(t).getUTCFullYear() >= 1601) expires = new Date(t).toUTCString();
  }
  const maxAge = int(o, 'maxAge', path) ?? 0;
  const pair = `${name}=${value}`;
  let set = pair;
  if (cookiePath !== '') set += `; Path=${cookiePath}`;
  if (domain !== '') set += `; Domain=${domain.startsWith('.') ? domain.slice(1) : domain}`;
  if (expires !== '') set += `; Expires=${expires}`;
  if (maxAge > 0) set += `; Max-Age=${maxAge}`;
  else if (maxAge < 0) set += '; Max-Age=0';
  if (bool(o, 'httpOnly', path)) set += '; HttpOnly';
  if (bool(o, 'secure', path)) set += '; Secure';
  return {
    // Go's AddCookie: name=value only, appended to the Cookie header.
    req: (r) => {
      const c = first(r.headers, 'cookie');
      setHeader(r.headers, 'Cookie', 'cookie', c === '' ? pair : `${c}; ${pair}`);
    },
    res: (r) => addHeader(r.headers, 'set-cookie', 'set-cookie', set),
  };
}

function urlModifier(o: Obj, path: string): Built {
  const scheme = str(o, 'scheme', path, false).toLowerCase();
  if (scheme !== '' && scheme !== 'http' && scheme !== 'https') fail(path, `"scheme" ${JSON.stringify(scheme)}: gw's client speaks http and https`);
  const host = str(o, 'host', path, false);
  if (host !== '') hostPort(host, path, 'host');
  let p = str(o, 'path', path, false);
  if (p !== '') {
    if (!p.startsWith('/') || /[?#]/.test(p)) fail(path, `"path" ${JSON.stringify(p)} must start with "/" and hold no "?" or "#"`);
    p = new URL(p, 'http://x').pathname; // escaped as Go's EscapedPath would
  }
  const query = str(o, 'query', path, false);
  if (/[#\s\x00-\x1f\x7f]/.test(query)) fail(path, '"query" holds "#", a space or a control character');
  return {
    req: (r) => {
      if (scheme !== '') r.scheme = scheme;
      if (host !== '') r.host = host;
      if (p !== '') r.path = p;
      if (query !== '') r.query = query;
      r.urlChanged = true;
    },
    res: null,
  };
}

/** The host without its port (Go's SplitHostPort host, brackets dropped). */
function hostname(host: string): string {
  if (host.startsWith('[')) {
    const e = host.indexOf(']');
    return host.slice(1, e < 0 ? host.length : e);
  }
  const c = host.lastIndexOf(':');
  return c < 0 ? host : host.slice(0, c);
}

function joinHostPort(h: string, port: number): string {
  return h.includes(':') ? `[${h}]:${port}` : `${h}:${port}`;
}

/** The URL's port: explicit, or the scheme's default (0 for others). */
function portOf(r: MartianRequest): number {
  const h = r.host;
  const close = h.lastIndexOf(']');
  const c = h.lastIndexOf(':');
  if (c > close) return Number(h.slice(c + 1));
  return r.scheme === 'http' ? 80 : r.scheme === 'https' ? 443 : 0;
}

function portModifier(o: Obj, path: string): Built {
  const port = int(o, 'port', path);
  const dflt = bool(o, 'defaultForScheme', path);
  const remove = bool(o, 'remove', path);
  const n = (port !== null && port !== 0 ? 1 : 0) + (dflt ? 1 : 0) + (remove ? 1 : 0);
  if (n !== 1) fail(path, 'give exactly one of "port", "defaultForScheme": true or "remove": true');
  if (port !== null && port !== 0 && (port < 1 || port > 65535)) fail(path, `"port" ${port} is not a TCP port`);
  return {
    req: (r) => {
      const h = hostname(r.host);
      if (remove) r.host = h.includes(':') ? `[${h}]` : h;
      else if (dflt) {
        if (r.scheme !== 'http' && r.scheme !== 'https') return;
        r.host = joinHostPort(h, r.scheme === 'http' ? 80 : 443);
      } else r.host = joinHostPort(h, port!);
      r.urlChanged = true;
    },
    res: null,
  };
}

function stashModifier(o: Obj, path: string, scope: Phases): Built {
  const name = str(o, 'headerName', path, true);
  const l = settableName(name, path, 'headerName', false);
  const cn = canonical(name);
  if (scope.res && !scope.req) fail(path, 'to write the header on a response, the scope must hold both "request" and "response"');
  return {
    req: (r) => setHeader(r.headers, cn, l, r.url()),
    res: (r) => setHeader(r.headers, l, l, first(r.request.headers, l)),
  };
}

function statusModifier(o: Obj, path: string): Built {
  const code = int(o, 'statusCode', path);
  if (code === null || code < 100 || code > 599) fail(path, '"statusCode" must be an HTTP status (100-599)');
  return {
    req: null,
    res: (r) => {
      r.status = code;
    },
  };
}

// ---------------------------------------------------------------------------
// Filters

interface Cond {
  req: (r: MartianRequest) => boolean;
  res: (r: MartianResponse) => boolean;
}

function filter(o: Obj, path: string, cond: Cond, hasElse: boolean): Built {
  if (o['modifier'] === undefined || o['modifier'] === null) fail(path, '"modifier" is required');
  const then = node(o['modifier'], `${path}.modifier`);
  const other = hasElse && o['else'] !== undefined && o['else'] !== null ? node(o['else'], `${path}.else`) : { req: null, res: null };
  const tq = then.req;
  const fq = other.req;
  const ts = then.res;
  const fs = other.res;
  return {
    req:
      tq === null && fq === null
        ? null
        : (r) => {
            const f = cond.req(r) ? tq : fq;
            if (f !== null) f(r);
          },
    res:
      ts === null && fs === null
        ? null
        : (r) => {
            const f = cond.res(r) ? ts : fs;
            if (f !== null) f(r);
          },
  };
}

function headerFilter(o: Obj, path: string): Built {
  const name = str(o, 'name', path, true);
  if (!validHeaderName(name)) fail(path, `"name" ${JSON.stringify(name)} is not a valid header name`);
  const l = name.toLowerCase();
  const has = o['value'] !== undefined && o['value'] !== null;
  const value = str(o, 'value', path, false);
  const match = (vs: string[]) => (has ? vs.includes(value) : vs.length > 0);
  return filter(o, path, {
    req: (r) => match(l === 'host' ? (r.reqHost === '' ? [] : [r.reqHost]) : values(r.headers, l)),
    res: (r) => match(values(r.headers, l)),
  }, true);
}

function headerRegexFilter(o: Obj, path: string): Built {
  const name = str(o, 'header', path, true);
  if (!validHeaderName(name)) fail(path, `"header" ${JSON.stringify(name)} is not a valid header name`);
  const l = name.toLowerCase();
  const re = regex(str(o, 'regex', path, true), path, 'regex');
  const then = node(o['modifier'] ?? fail(path, '"modifier" is required'), `${path}.modifier`);
  // No else; an absent or empty header runs nothing. Both phases read the request's header.
  const test = (r: MartianRequest) => {
    const v = first(r.headers, l);
    return v !== '' && re.test(v);
  };
  const tq = then.req;
  const ts = then.res;
  return {
    req: tq === null ? null : (r) => {
      if (test(r)) tq(r);
    },
    res: ts === null ? null : (r) => {
      if (test(r.request)) ts(r);
    },
  };
}

function queryFilter(o: Obj, path: string): Built {
  const name = bin(str(o, 'name', path, true));
  const value = bin(str(o, 'value', path, false));
  const test = (r: MartianRequest) => {
    const vs = parseQuery(r.query).get(name);
    return vs !== undefined && (value === '' || vs.includes(value));
  };
  return filter(o, path, { req: test, res: (r) => test(r.request) }, true);
}

/** martian's MatchHost: exact, or `*` labels matching one label each. */
function matchHost(host: string, pattern: string): boolean {
  if (host === pattern) return true;
  if (!pattern.includes('*')) return false;
  const hl = host.split('.');
  const pl = pattern.split('.');
  if (hl.length !== pl.length) return false;
  return pl.every((p, i) => p === '*' || p === hl[i]);
}

function decodedPath(p: string): string {
  try {
    return decodeURIComponent(p);
  } catch {
    return p;
  }
}

function urlFilter(o: Obj, path: string): Built {
  const scheme = str(o, 'scheme', path, false);
  const host = str(o, 'host', path, false);
  const p = str(o, 'path', path, false);
  const query = str(o, 'query', path, false);
  const test = (r: MartianRequest) =>
    (scheme === '' || r.scheme === scheme) &&
    (host === '' || matchHost(r.host, host)) &&
    (p === '' || decodedPath(r.path) === p) &&
    (query === '' || r.query === query);
  return filter(o, path, { req: test, res: (r) => test(r.request) }, true);
}

function urlRegexFilter(o: Obj, path: string): Built {
  const re = regex(str(o, 'regex', path, true), path, 'regex');
  // The whole URL, query included (martian matches req.URL.String()).
  const test = (r: MartianRequest) => re.test(r.url());
  return filter(o, path, { req: test, res: (r) => test(r.request) }, true);
}

function cookies(header: string[], set: boolean): Map<string, string[]> {
  const m = new Map<string, string[]>();
  const add = (pair: string) => {
    let eq = pair.indexOf('=');
    if (eq < 0 && !set) eq = pair.length; // a bare `flag` in a Cookie header is flag=""
    if (eq <= 0) return;
    const k = pair.slice(0, eq).trim();
    if (k === '') return;
    let v = pair.slice(eq + 1).trim();
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
    const l = m.get(k);
    if (l === undefined) m.set(k, [v]);
    else l.push(v);
  };
  for (const h of header) {
    if (set) add(h.split(';', 1)[0]!);
    else for (const part of h.split(';')) add(part);
  }
  return m;
}

function cookieFilter(o: Obj, path: string): Built {
  const name = str(o, 'name', path, true);
  const value = str(o, 'value', path, false);
  const match = (m: Map<string, string[]>) => {
    const vs = m.get(name);
    return vs !== undefined && (value === '' || vs.includes(value));
  };
  return filter(o, path, {
    req: (r) => match(cookies(values(r.headers, 'cookie'), false)),
    res: (r) => match(cookies(values(r.headers, 'set-cookie'), true)),
  }, true);
}

function portFilter(o: Obj, path: string): Built {
  const port = int(o, 'port', path);
  if (port === null || port < 1 || port > 65535) fail(path, '"port" must be a TCP port');
  const test = (r: MartianRequest) => portOf(r) === port;
  return filter(o, path, { req: test, res: (r) => test(r.request) }, false);
}

// ---------------------------------------------------------------------------
// Groups

function chain(built: Built[]): Built {
  const reqs = built.map((b) => b.req).filter((f): f is ReqFn => f !== null);
  const ress = built.map((b) => b.res).filter((f): f is ResFn => f !== null);
  return {
    req: reqs.length === 0 ? null : reqs.length === 1 ? reqs[0]! : (r) => {
      for (const f of reqs) f(r);
    },
    res: ress.length === 0 ? null : ress.length === 1 ? ress[0]! : (r) => {
      for (const f of ress) f(r);
    },
  };
}

function fifoGroup(o: Obj, path: string): Built {
  const mods = o['modifiers'];
  if (!Array.isArray(mods)) fail(path, '"modifiers" must be a list');
  // aggregateErrors only changes how errors are reported; gw's modifiers cannot fail once started.
  bool(o, 'aggregateErrors', path);
  return chain(mods.map((m, i) => node(m, `${path}.modifiers[${i}]`)));
}

function priorityGroup(o: Obj, path: string): Built {
  const mods = o['modifiers'];
  if (!Array.isArray(mods)) fail(path, '"modifiers" must be a list of {"priority": n, "modifier": {...}}');
  const entries = mods.map((m, i) => {
    const p = `${path}.modifiers[${i}]`;
    if (!isObj(m)) fail(p, 'must be {"priority": n, "modifier": {...}}');
    return { priority: int(m, 'priority', p) ?? 0, built: node(m['modifier'] ?? fail(p, '"modifier" is required'), `${p}.modifier`), i };
  });
  // martian: the highest priority first; of equal ones, the later declared first.
  entries.sort((a, b) => b.priority - a.priority || b.i - a.i);
  return chain(entries.map((e) => e.built));
}

const TYPES: ReadonlyMap<string, TypeSpec> = new Map<string, TypeSpec>([
  ['header.Modifier', { phases: BOTH, build: headerModifier }],
  ['header.Append', { phases: BOTH, build: headerAppend }],
  ['header.Blacklist', { phases: BOTH, build: headerBlacklist }],
  ['header.Copy', { phases: BOTH, build: headerCopy }],
  ['header.Id', { phases: REQ, build: headerId }],
  ['querystring.Modifier', { phases: REQ, build: queryModifier }],
  ['body.Modifier', { phases: BOTH, build: bodyModifier }],
  ['cookie.Modifier', { phases: BOTH, build: cookieModifier }],
  ['url.Modifier', { phases: REQ, build: urlModifier }],
  ['port.Modifier', { phases: REQ, build: portModifier }],
  ['stash.Modifier', { phases: BOTH, build: stashModifier }],
  ['status.Modifier', { phases: RES, build: statusModifier }],
  ['header.Filter', { phases: BOTH, build: headerFilter }],
  ['header.RegexFilter', { phases: BOTH, build: headerRegexFilter }],
  ['querystring.Filter', { phases: BOTH, build: queryFilter }],
  ['url.Filter', { phases: BOTH, build: urlFilter }],
  ['url.RegexFilter', { phases: BOTH, build: urlRegexFilter }],
  ['cookie.Filter', { phases: BOTH, build: cookieFilter }],
  ['port.Filter', { phases: BOTH, build: portFilter }],
  ['fifo.Group', { phases: BOTH, build: fifoGroup }],
  ['priority.Group', { phases: BOTH, build: priorityGroup }],
]);

/** Compiles a backend's `modifier/martian` (null when absent or when it changes nothing). Throws naming the path. */
export function compileMartian(v: unknown, where: string): Martian | null {
  if (v === undefined || v === null) return null;
  const b = node(v, `${where}: "${MARTIAN_NS}"`);
  if (b.req === null && b.res === null) return null;
  return { request: b.req, response: b.res };
}

type Client = (r: OutboundRequest) => Promise<BackendResponse>;

/** The client with martian around it (KrakenD: martian wraps the request executor, client plugins included). */
export function martianClient(client: Client, m: Martian): Client {
  const rq = m.request;
  const rs = m.response;
  return (out) => {
    let r: MartianRequest;
    let o: OutboundRequest;
    try {
      r = new MartianRequest(out);
      if (rq !== null) rq(r);
      o = r.finish();
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const p = client(o);
    if (rs === null) return p;
    return p.then((resp) => {
      const x = new MartianResponse(resp, r);
      rs(x);
      return x.result();
    });
  };
}

/** Request modifiers only, for gw's receiver-mode client (the response streams untouched). */
export function martianRequest(m: Martian): (out: OutboundRequest) => OutboundRequest {
  const rq = m.request!;
  return (out) => {
    const r = new MartianRequest(out);
    rq(r);
    return r.finish();
  };
}
