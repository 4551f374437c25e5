/**
 * Request-target checks, run on the strings uWS hands over: the raw (still percent-encoded) path
 * segment of each param, and the raw query. uWS decodes the target's bytes as UTF-8, replacing
 * bytes that are not UTF-8 with U+FFFD: such a value cannot be forwarded as the client sent it, so
 * it is refused (a U+FFFD sent raw is refused too; sent as %EF%BF%BD it passes).
 * KrakenD rejects encoded params (`error: encoded url params`) and bad escapes
 * (`error: invalid URL escape "%zz"`); gw is stricter on purpose: a value can never be (or be read by
 * a backend as) a dot-segment (`dotSegmentLike`: `..;`, `%2e%2e;`, fullwidth dots...), hold a slash
 * or a backslash, or carry CR, LF, NUL or other control characters. Overlong UTF-8 (`%c0%ae`) is
 * not UTF-8 and IIS-style `%u002e` is not an escape: both are refused.
 */
import { asciiQuery, dotSegmentLike, QUERY_NOT_UTF8 } from '../proxy/request.js';

export class ParamError {
  constructor(readonly message: string) {}
}

const ENCODED = new ParamError('error: encoded url params');
const PATH_NOT_UTF8 = new ParamError('error: the path holds bytes that are not UTF-8');
const QUERY_ERROR = new ParamError(`error: ${QUERY_NOT_UTF8}`);
const HEX = /^[0-9a-fA-F]{2}$/;

/**
 * The raw query as it is forwarded (raw non-ASCII percent-encoded as UTF-8), or a ParamError (400)
 * when it held bytes that were not UTF-8. For the endpoint handler's edge checks.
 */
export function checkQuery(raw: string): string | ParamError {
  return asciiQuery(raw) ?? QUERY_ERROR;
}

/** Returns the decoded value, or a ParamError. */
export function decodeParam(raw: string): string | ParamError {
  let v = raw;
  if (raw.indexOf('\ufffd') !== -1) return PATH_NOT_UTF8;
  if (raw.indexOf('%') !== -1) {
    const bad = firstBadEscape(raw);
    if (bad !== null) return new ParamError(`error: invalid URL escape "${bad}"`);
    try {
      v = decodeURIComponent(raw);
    } catch {
      return ENCODED; // valid %XX bytes that are not UTF-8
    }
    // Decoded once by the router; what is still an escape was encoded twice.
    if (v.indexOf('%') !== -1) {
      const again = firstBadEscape(v);
      if (again === null) return ENCODED;
      return new ParamError(`error: invalid URL escape "${again}"`);
    }
  }
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    // ? # / \ and control characters (CR, LF, NUL...)
    if (c === 0x3f || c === 0x23 || c === 0x2f || c === 0x5c || c < 0x20 || c === 0x7f) return ENCODED;
  }
  if (dotSegmentLike(v)) return ENCODED;
  return v;
}

function firstBadEscape(s: string): string | null {
  let i = s.indexOf('%');
  while (i !== -1) {
    const hex = s.slice(i + 1, i + 3);
    if (!HEX.test(hex)) return s.slice(i, i + 3);
    i = s.indexOf('%', i + 3);
  }
  return null;
}
