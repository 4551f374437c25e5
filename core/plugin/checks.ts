/**
 * What gw checks in what plugins hand it, in one place: the gateway (client plugin answers, server
 * plugin answers and the requests they pass to next()) and the test harness (`gw/plugin/testing`)
 * apply the same rules with the same messages. No heavy imports: the harness loads this.
 */
import type { BackendResponse, Headers, ServerRequest } from './types.js';

/** Go's `http.CanonicalHeaderKey` (`x-request-id` → `X-Request-Id`); names with non-token bytes are kept. */
export function canonicalHeader(name: string): string {
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) return name;
  let out = '';
  let upper = true;
  for (const ch of name) {
    out += upper ? ch.toUpperCase() : ch.toLowerCase();
    upper = ch === '-';
  }
  return out;
}

const canonicalCache = new Map<string, string>();

/** canonicalHeader for names seen per request: a bounded cache of the names met so far. */
export function canonicalHeaderCached(name: string): string {
  let c = canonicalCache.get(name);
  if (c === undefined) {
    c = canonicalHeader(name);
    if (canonicalCache.size < 4096) canonicalCache.set(name, c);
  }
  return c;
}

const SCALAR: Readonly<Record<string, boolean>> = { string: true, number: true, boolean: true };

/**
 * Why gw would refuse a handler's answer, or null: the rules gw applies to what a client or server
 * handler returns (status an integer from 200 to 599; headers a plain object whose values are
 * strings, numbers or booleans, or lists of them; a body that is bytes, a string, a stream, a JSON
 * value or null). The one check gw applies (plugin/client.ts, router/plugin-entry.ts) and the test harness reports.
 */
export function responseProblem(resp: unknown): string | null {
  if (resp === null || typeof resp !== 'object') return 'returned no response ({ status, headers, body })';
  const r = resp as BackendResponse;
  const st = r.status as unknown;
  if (typeof st !== 'number' || !Number.isInteger(st) || st < 200 || st > 599) {
    const shown = typeof st === 'string' ? JSON.stringify(st) : typeof st === 'number' ? String(st) : typeof st;
    if (typeof st === 'number' && Number.isInteger(st) && st >= 100 && st < 200) {
      return `returned status ${shown}, an informational (1xx) status: a handler returns the final response`;
    }
    return `returned status ${shown}: a status is an integer from 200 to 599`;
  }
  const h = r.headers as unknown;
  if (h !== undefined && h !== null) {
    if (typeof h !== 'object' || Array.isArray(h)) {
      return `returned headers of type ${Array.isArray(h) ? 'array' : typeof h}: headers must be an object, not ${Array.isArray(h) ? 'an array' : 'a ' + typeof h}`;
    }
    const proto = Object.getPrototypeOf(h);
    if (proto !== Object.prototype && proto !== null) {
      return `returned headers as a ${(proto as { constructor?: { name?: string } }).constructor?.name ?? 'non-plain object'}: headers must be a plain object ({ name: value })`;
    }
    const rec = h as Record<string, unknown>;
    for (const k in rec) {
      const v = rec[k];
      if (v === undefined || v === null || SCALAR[typeof v] === true) continue;
      if (Array.isArray(v)) {
        for (const x of v) if (SCALAR[typeof x] !== true) return `returned header "${k}" with a value of type ${typeof x} in its list: header values are strings`;
        continue;
      }
      return `returned header "${k}" with a value of type ${typeof v}: header values are strings (or lists of strings)`;
    }
  }
  const bt = typeof r.body;
  if (bt === 'function' || bt === 'symbol' || bt === 'bigint') {
    return `returned a body of type ${bt}: a body is bytes, a string, a stream, a JSON value or null`;
  }
  return null;
}

/** An HTTP token (method, header name). */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_PATH = /[\x00-\x20\x7f?#]/;
const BAD_QUERY = /[\x00-\x20\x7f#]/;
const BAD_VALUE = /[\r\n\0]/;

/** Why gw's router could not route a request a server plugin hands to `next()`, or null (router/virtual.ts
 *  and the test harness). */
export function serverRequestProblem(req: unknown): string | null {
  if (req === null || typeof req !== 'object') return `next() needs a request object, got ${req === null ? 'null' : typeof req}`;
  const r = req as ServerRequest;
  if (typeof r.method !== 'string' || !TOKEN.test(r.method)) return `the request's method ${JSON.stringify(r.method)} is not an HTTP token`;
  if (typeof r.path !== 'string' || !r.path.startsWith('/') || BAD_PATH.test(r.path)) {
    return `the request's path ${JSON.stringify(r.path)} must start with "/" and hold no spaces, controls, "?" or "#"`;
  }
  if (r.query !== undefined && r.query !== null && (typeof r.query !== 'string' || BAD_QUERY.test(r.query))) {
    return `the request's query ${JSON.stringify(r.query)} must be a string without spaces, controls or "#"`;
  }
  const h = r.headers as unknown;
  if (h !== undefined && h !== null) {
    if (typeof h !== 'object' || Array.isArray(h)) return "the request's headers must be an object ({ name: value })";
    for (const k in h as Headers) {
      if (!TOKEN.test(k)) return `the request header name ${JSON.stringify(k)} is not an HTTP token`;
      const v = (h as Headers)[k];
      if (v === undefined) continue;
      for (const x of Array.isArray(v) ? v : [v]) {
        if (typeof x !== 'string' && typeof x !== 'number') return `the request header "${k}" has a value of type ${typeof x}`;
        if (BAD_VALUE.test(String(x))) return `the request header "${k}" holds CR, LF or NUL`;
      }
    }
  }
  return null;
}
