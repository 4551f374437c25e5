/**
 * `security/cors` (KrakenD's krakend-cors on rs/cors), compiled once at start-up.
 *
 *  - Preflight (OPTIONS with Access-Control-Request-Method), on any path, known or not: answered by
 *    gw itself with `options_success_status` (default 204) and no body. The allow headers are only
 *    added when origin, method and every requested header are allowed; otherwise the answer carries
 *    just `Vary`, and the browser refuses the real request. `options_passthrough` routes it instead.
 *  - Actual requests: `Vary: Origin` always; `Access-Control-Allow-Origin` (+ expose/credentials)
 *    when the origin and the method are allowed. The request itself is served either way, as rs/cors.
 */
import { parseDuration } from '../config/duration.js';
import { canonicalHeader } from '../config/load.js';
import type { HttpRequest, HttpResponse } from './uws.js';
import { statusLine } from './status.js';

export const CORS_NS = 'security/cors';

export interface Cors {
  /**
   * For a preflight: answers it and returns true, or with `options_passthrough` returns the header
   * writer for the router's own answer. False when the request is not a preflight.
   */
  preflight(res: HttpResponse, req: HttpRequest): boolean | ((res: HttpResponse) => void);
  /** The Access-Control-Allow-Origin value for an actual request, or null (not allowed / no Origin). */
  allowOrigin(origin: string, method: string): string | null;
  /** Writes the actual-request headers (inside a cork). */
  write(res: HttpResponse, allowOrigin: string | null): void;
}

function strings(v: unknown): string[] | null {
  return Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : null;
}

type OriginMatch = (origin: string) => boolean;

/** `https://*.example.com` style patterns (one `*`), compared case-insensitively as rs/cors does. */
function compileOrigins(list: readonly string[]): OriginMatch | null {
  if (list.length === 0 || list.includes('*')) return null; // null = every origin
  const exact = new Set<string>();
  const wild: [string, string][] = [];
  for (const o of list) {
    const l = o.toLowerCase();
    const i = l.indexOf('*');
    if (i < 0) exact.add(l);
    else wild.push([l.slice(0, i), l.slice(i + 1)]);
  }
  return (origin) => {
    const l = origin.toLowerCase();
    if (exact.has(l)) return true;
    for (const [pre, post] of wild) if (l.length >= pre.length + post.length && l.startsWith(pre) && l.endsWith(post)) return true;
    return false;
  };
}

export function compileCors(raw: unknown): Cors | null {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return null;
  const c = raw as Record<string, unknown>;
  const originOk = compileOrigins(strings(c.allow_origins) ?? []);
  const allOrigins = originOk === null;
  const methods = new Set((strings(c.allow_methods) ?? ['GET', 'HEAD', 'POST']).map((m) => m.toUpperCase()));
  methods.add('OPTIONS');
  const headerList = strings(c.allow_headers);
  const allHeaders = headerList === null || headerList.length === 0 || headerList.includes('*');
  const headers = new Set((headerList ?? []).map(canonicalHeader));
  headers.add('Origin');
  const expose = (strings(c.expose_headers) ?? []).map(canonicalHeader).join(', ');
  const credentials = c.allow_credentials === true;
  const privateNetwork = c.allow_private_network === true;
  const maxAgeS = typeof c.max_age === 'string' ? Math.floor(parseDuration(c.max_age) / 1000) : 0;
  const passthrough = c.options_passthrough === true;
  const successLine = statusLine(typeof c.options_success_status === 'number' && c.options_success_status >= 200 ? c.options_success_status : 204);
  const preflightVary = privateNetwork
    ? 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers, Access-Control-Request-Private-Network'
    : 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers';
  const maxAge = maxAgeS > 0 ? String(maxAgeS) : '';

  const headersAllowed = (raw: string): boolean => {
    if (allHeaders || raw === '') return true;
    for (const h of raw.split(',')) {
      const name = h.trim();
      if (name !== '' && !headers.has(canonicalHeader(name))) return false;
    }
    return true;
  };

  return {
    preflight(res, req) {
      const reqMethod = req.getHeader('access-control-request-method');
      if (reqMethod === '') return false;
      const origin = req.getHeader('origin');
      const reqHeaders = req.getHeader('access-control-request-headers');
      const ok = origin !== '' && (allOrigins || originOk(origin)) && methods.has(reqMethod.toUpperCase()) && headersAllowed(reqHeaders);
      const pna = privateNetwork && req.getHeader('access-control-request-private-network') === 'true';
      const writeHeaders = () => {
        res.writeHeader('Vary', preflightVary);
        if (!ok) return;
        res.writeHeader('Access-Control-Allow-Origin', allOrigins ? '*' : origin);
        res.writeHeader('Access-Control-Allow-Methods', reqMethod.toUpperCase());
        if (reqHeaders !== '') res.writeHeader('Access-Control-Allow-Headers', reqHeaders);
        if (credentials) res.writeHeader('Access-Control-Allow-Credentials', 'true');
        if (pna) res.writeHeader('Access-Control-Allow-Private-Network', 'true');
        if (maxAge !== '') res.writeHeader('Access-Control-Max-Age', maxAge);
      };
      // rs/cors sets the headers and lets the router answer (gw routes no OPTIONS: 404/405).
      if (passthrough) return writeHeaders;
      res.cork(() => {
        res.writeStatus(successLine);
        writeHeaders();
        res.end();
      });
      return true;
    },
    allowOrigin(origin, method) {
      if (origin === '' || !methods.has(method)) return null;
      if (allOrigins) return '*';
      return originOk(origin) ? origin : null;
    },
    write(res, allowOrigin) {
      res.writeHeader('Vary', 'Origin');
      if (allowOrigin === null) return;
      res.writeHeader('Access-Control-Allow-Origin', allowOrigin);
      if (expose !== '') res.writeHeader('Access-Control-Expose-Headers', expose);
      if (credentials) res.writeHeader('Access-Control-Allow-Credentials', 'true');
    },
  };
}
