/**
 * `auth/signer` (KrakenD's krakend-jose signer): the values under `keys_to_sign` in an endpoint's
 * answer are replaced by JWS tokens of their JSON (Go's encoding: sorted keys), signed with the key
 * `kid` of the configured JWK set; compact serialisation, or the JSON one with `full: true`. A value
 * that cannot be signed fails the request: an unsigned token must never reach the client.
 */
import type { Proxy } from '../proxy/types.js';
import { goJson } from '../router/json.js';
import { keySetOf, loadJose } from './jwt.js';

export const SIGNER_NS = 'auth/signer';

const encoder = new TextEncoder();

export function wrapSigner(next: Proxy, extra: Readonly<Record<string, unknown>>, where: string): Proxy {
  const raw = extra[SIGNER_NS];
  if (raw === undefined) return next;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where}: "${SIGNER_NS}" must be an object`);
  const c = raw as Record<string, unknown>;
  const alg = typeof c.alg === 'string' && c.alg !== '' ? c.alg : 'RS256';
  const kid = typeof c.kid === 'string' ? c.kid : '';
  if (kid === '') throw new Error(`${where}: "${SIGNER_NS}" needs the "kid" of the signing key`);
  const keys = keySetOf(c, where, SIGNER_NS);
  const toSign = Array.isArray(c.keys_to_sign) ? c.keys_to_sign.filter((k): k is string => typeof k === 'string') : [];
  const full = c.full === true;
  const header = { alg, kid, typ: 'JWT' };

  const sign = async (value: unknown): Promise<unknown> => {
    const key = await keys.key({ alg, kid }, alg);
    const payload = encoder.encode(goJson(value));
    const { CompactSign, FlattenedSign } = await loadJose();
    if (full) return new FlattenedSign(payload).setProtectedHeader(header).sign(key);
    return new CompactSign(payload).setProtectedHeader(header).sign(key);
  };

  return async (req) => {
    const r = await next(req);
    for (const k of toSign) {
      // As KrakenD's SignFields: only objects are signed.
      if (!Object.prototype.hasOwnProperty.call(r.data, k)) continue;
      const v = r.data[k];
      if (typeof v !== 'object' || v === null || Array.isArray(v)) continue;
      try {
        r.data[k] = await sign(r.data[k]);
      } catch (err) {
        throw new Error(`${SIGNER_NS}: signing "${k}": ${(err as Error).message}`);
      }
    }
    return r;
  };
}
