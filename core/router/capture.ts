/**
 * What an endpoint reads from uWS's HttpRequest while it is alive (it dies when the handler
 * returns): the allow-listed client headers and the client's address. Both compiled or cached so
 * the per-request work is a few lookups.
 */
import { canonicalHeader } from '../config/load.js';
import { canonicalHeaderCached } from '../plugin/checks.js';
import type { EndpointConfig } from '../config/types.js';
import { HOP_BY_HOP, type CapturedHeaders } from '../proxy/request.js';
import type { HttpRequest, HttpResponse } from './uws.js';

/** Builds the header capture for an endpoint's `input_headers`. */
export function compileCapture(list: EndpointConfig['inputHeaders']): (req: HttpRequest) => CapturedHeaders {
  if (list === '*') {
    return (req) => {
      const m: CapturedHeaders = new Map();
      let connection = '';
      req.forEach((k, v) => {
        if (HOP_BY_HOP.has(k)) {
          if (k === 'connection') connection += (connection ? ',' : '') + v;
          return;
        }
        const name = canonicalHeaderCached(k);
        const prev = m.get(name);
        if (prev) prev.push(v);
        else m.set(name, [v]);
      });
      if (connection !== '') {
        // Headers named by Connection are hop-by-hop too.
        for (const t of connection.split(',')) m.delete(canonicalHeader(t.trim()));
      }
      return m;
    };
  }
  const names = list.length === 0 ? ['Content-Type'] : list.filter((n) => !HOP_BY_HOP.has(n.toLowerCase()));
  const lower = names.map((n) => n.toLowerCase());
  const n = names.length;
  return (req) => {
    const m: CapturedHeaders = new Map();
    for (let i = 0; i < n; i++) {
      const v = req.getHeader(lower[i]!);
      if (v !== '') m.set(names[i]!, [v]);
    }
    return m;
  };
}

const textDecoder = new TextDecoder();
const ipv4Cache = new Map<number, string>();
const ipv6Cache = new Map<string, string>();

/** The client's address as text; IPv4(-mapped) addresses come from a small cache, without decoding. */
export function clientIp(res: HttpResponse): string {
  const b = new Uint8Array(res.getRemoteAddress());
  let v4 = -1;
  if (b.length === 4) v4 = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
  else if (b.length === 16 && b[10] === 0xff && b[11] === 0xff && (b[0]! | b[1]! | b[2]! | b[3]! | b[4]! | b[5]! | b[6]! | b[7]! | b[8]! | b[9]!) === 0) {
    v4 = ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0;
  }
  if (v4 >= 0) {
    let s = ipv4Cache.get(v4);
    if (s === undefined) {
      s = `${v4 >>> 24}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`;
      if (ipv4Cache.size >= 4096) ipv4Cache.clear();
      ipv4Cache.set(v4, s);
    }
    return s;
  }
  const raw = textDecoder.decode(res.getRemoteAddressAsText());
  let ip = ipv6Cache.get(raw);
  if (ip === undefined) {
    // uWS prints IPv6 uncompressed (0000:...:0001); Go (and so KrakenD) sends the short form (::1).
    try {
      ip = new URL(`http://[${raw}]/`).hostname.slice(1, -1);
    } catch {
      ip = raw;
    }
    if (ipv6Cache.size >= 4096) ipv6Cache.clear();
    ipv6Cache.set(raw, ip);
  }
  return ip;
}
