/**
 * Path parameter checks, run on the raw (still percent-encoded) segment uWS hands over.
 * KrakenD rejects encoded params (`error: encoded url params`) and bad escapes
 * (`error: invalid URL escape "%zz"`); gw is stricter on purpose: a value can never be (or be read by
 * a backend as) a dot-segment (`dotSegmentLike`: `..;`, `%2e%2e;`, fullwidth dots...), hold a slash
 * or a backslash, or carry CR, LF, NUL or other control characters. Overlong UTF-8 (`%c0%ae`) is
 * not UTF-8 and IIS-style `%u002e` is not an escape: both are refused.
 */
import { dotSegmentLike } from '../proxy/request.js';

export class ParamError {
  constructor(readonly message: string) {}
}

const ENCODED = new ParamError('error: encoded url params');
const HEX = /^[0-9a-fA-F]{2}$/;

/** Returns the decoded value, or a ParamError. */
export function decodeParam(raw: string): string | ParamError {
  let v = raw;
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
