/**
 * `auth/validator` (KrakenD's krakend-jose): JWT validation per endpoint, on `jose`.
 *
 * The token comes from `auth_header_name` (default Authorization, `Bearer <token>`) or the
 * `cookie_key` cookie. Signature (`alg`, keys from `jwk_url` or `jwk_local_path`), `exp`/`nbf`
 * (with `leeway`), `issuer` and `audience` are checked: any failure → 401. Then `roles` (any of them
 * in `roles_key`, dot path with `roles_key_is_nested`) and `scopes` (`scopes_matcher` any/all) →
 * 403. Both with an empty body, as KrakenD. Accepted claims fill `{JWT.x}` url_pattern placeholders
 * and the `propagate_claims` headers (which overwrite whatever the client sent).
 *
 * Keys are fetched on first use and cached (`cache_duration`, default 15 min, also without
 * `cache: true`: fetching the key set per request would hand every client a way to make gw hammer
 * the identity provider). A token naming an unknown `kid` refetches at most once per
 * {@link REFETCH_COOLDOWN_MS}.
 */
import { readFileSync } from 'node:fs';
import type { JWK, JWTPayload, JWTHeaderParameters } from 'jose';
import { request } from 'undici';
import { parseDuration } from '../config/duration.js';
import { canonicalHeader } from '../config/load.js';
import type { AllowList } from '../config/types.js';

export const JWT_NS = 'auth/validator';

/** An authentication (401) or authorisation (403) failure; `message` is for the log only. */
export class AuthError extends Error {
  constructor(
    readonly status: 401 | 403,
    message: string,
    /** True when gw could not check the token (the key set could not be fetched): logged as an error. */
    readonly fault = false,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

type Jose = typeof import('jose');
type Key = Awaited<ReturnType<Jose['importJWK']>>;

let jose: Promise<Jose> | null = null;
/** jose is loaded on first use: gateways without JWT never load it. */
export function loadJose(): Promise<Jose> {
  return (jose ??= import('jose'));
}

const REFETCH_COOLDOWN_MS = 10_000;
const FETCH_TIMEOUT_MS = 5_000;
const DEFAULT_CACHE_MS = 15 * 60_000;

/** JWK sets, by URL or file, shared by every endpoint that names the same one. */
export class KeySet {
  private keys = new Map<string, JWK>();
  private imported = new Map<string, Key>();
  private fetchedAt = 0;
  /** Last fetch attempt, successful or not: fetches are at least REFETCH_COOLDOWN_MS apart. */
  private attemptedAt = 0;
  private lastError: Error | null = null;
  private pending: Promise<void> | null = null;

  constructor(
    private readonly source: { url: string } | { file: string },
    private readonly ttlMs: number,
  ) {
    if ('file' in source) this.load(JSON.parse(readFileSync(source.file, 'utf8')) as unknown, Infinity);
  }

  private load(body: unknown, at: number): void {
    const list = (body as { keys?: unknown })?.keys;
    if (!Array.isArray(list)) throw new Error('the JWK set has no "keys" array');
    const keys = new Map<string, JWK>();
    list.forEach((k: JWK, i) => keys.set(typeof k.kid === 'string' ? k.kid : `#${i}`, k));
    this.keys = keys;
    this.imported = new Map();
    this.fetchedAt = at;
  }

  private async fetch(): Promise<void> {
    if (!('url' in this.source)) return;
    const url = this.source.url;
    try {
      const res = await request(url, { headersTimeout: FETCH_TIMEOUT_MS, bodyTimeout: FETCH_TIMEOUT_MS });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
      this.load(JSON.parse(text) as unknown, Date.now());
    } catch (err) {
      throw new KeyFetchError(`fetching the JWK set ${url}: ${(err as Error).message}`);
    }
  }

  /**
   * Fetches the set when it is stale (or `force`: a kid it lacks), at most once per cooldown even
   * when the identity provider fails, so no client can make gw hammer it. A failed refresh keeps
   * serving the keys it has; with none, requests fail fast with the last error until the next try.
   */
  private refresh(force: boolean): Promise<void> {
    if (this.pending !== null) return this.pending;
    const now = Date.now();
    const stale = now - this.fetchedAt > this.ttlMs;
    if (!stale && !force) return Promise.resolve();
    if (now - this.attemptedAt < REFETCH_COOLDOWN_MS) {
      return this.keys.size === 0 && this.lastError !== null ? Promise.reject(this.lastError) : Promise.resolve();
    }
    this.attemptedAt = now;
    this.pending = this.fetch().then(
      () => {
        this.lastError = null;
      },
      (err: Error) => {
        this.lastError = err;
        if (this.keys.size === 0) throw err;
      },
    ).finally(() => {
      this.pending = null;
    });
    return this.pending;
  }

  async key(header: JWTHeaderParameters, alg: string): Promise<Key> {
    await this.refresh(false);
    let id = this.pick(header.kid);
    if (id === null && header.kid !== undefined) {
      await this.refresh(true); // a key rotation
      id = this.pick(header.kid);
    }
    if (id === null) throw new Error(header.kid === undefined ? 'no key for a token without kid' : `no key with kid "${header.kid}"`);
    // A key imported for one algorithm cannot verify another (RS256 vs PS256 on one RSA key).
    const slot = `${id}\n${alg}`;
    let k = this.imported.get(slot);
    if (k === undefined) {
      k = await (await loadJose()).importJWK(this.keys.get(id)!, alg);
      this.imported.set(slot, k);
    }
    return k;
  }

  private pick(kid: string | undefined): string | null {
    if (kid !== undefined) return this.keys.has(kid) ? kid : null;
    return this.keys.size === 1 ? this.keys.keys().next().value! : null;
  }
}

export class KeyFetchError extends Error {}
class NoKeySource extends Error {}

const keySets = new Map<string, KeySet>();

/** The key set a validator or signer config names (`jwk_url` or `jwk_local_path`); shared by URL. */
export function keySetOf(c: Record<string, unknown>, where: string, ns: string): KeySet {
  // KrakenD's cache_duration is in seconds.
  const ttl = typeof c.cache_duration === 'number' && c.cache_duration > 0 ? c.cache_duration * 1000 : DEFAULT_CACHE_MS;
  if (typeof c.jwk_local_path === 'string' && c.jwk_local_path !== '') {
    try {
      return new KeySet({ file: c.jwk_local_path }, Infinity);
    } catch (err) {
      throw new Error(`${where}: "${ns}" jwk_local_path ${c.jwk_local_path}: ${(err as Error).message}`);
    }
  }
  if (typeof c.jwk_url === 'string' && c.jwk_url !== '') {
    const url = c.jwk_url;
    if (!url.startsWith('https://') && c.disable_jwk_security !== true) {
      throw new Error(`${where}: "${ns}" jwk_url ${url} is not HTTPS; set "disable_jwk_security": true to allow it`);
    }
    const id = `${url} ${ttl}`;
    let keys = keySets.get(id);
    if (keys === undefined) {
      keys = new KeySet({ url }, ttl);
      keySets.set(id, keys);
    }
    return keys;
  }
  throw new Error(`${where}: "${ns}" needs "jwk_url" or "jwk_local_path"`);
}

export interface JwtValidator {
  /** Lower-case header to read the token from (synchronously, in the uWS handler). */
  readonly header: string;
  /** Checks the token; resolves to the claims, or rejects with an {@link AuthError}. */
  validate(headerValue: string, cookieHeader: string): Promise<JWTPayload>;
  /** `{JWT.x}` placeholder names (as written) and header names to fill from the claims. */
  readonly placeholders: readonly string[];
  readonly propagate: readonly (readonly [claim: string, header: string])[];
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : typeof v === 'string' ? [v] : [];
}

/** A claim by name, else by dot path (`realm_access.roles`). */
export function claim(payload: JWTPayload, name: string, nested = true): unknown {
  if (Object.prototype.hasOwnProperty.call(payload, name)) return payload[name];
  if (!nested) return undefined;
  let cur: unknown = payload;
  for (const p of name.split('.')) {
    if (typeof cur !== 'object' || cur === null || !Object.prototype.hasOwnProperty.call(cur, p)) return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

/** A claim as header / url text, the way Go's `%v` prints it (arrays comma-joined). */
export function claimText(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return v.map(claimText).join(',');
  if (typeof v === 'object') return JSON.stringify(v);
  // Go prints whole floats as integers and the others with %f.
  if (typeof v === 'number' && !Number.isInteger(v)) return v.toFixed(6);
  return String(v);
}

/**
 * Compiles an endpoint's validator, or returns null without `auth/validator`. Throws start-up
 * errors (`where` names the endpoint); `warn` receives configuration hints.
 */
export function compileJwt(
  extra: Readonly<Record<string, unknown>>,
  where: string,
  urlPatterns: readonly string[],
  inputHeaders: AllowList,
  warn: (msg: string) => void,
): JwtValidator | null {
  const raw = extra[JWT_NS];
  if (raw === undefined) return null;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where}: "${JWT_NS}" must be an object`);
  const c = raw as Record<string, unknown>;
  const alg = typeof c.alg === 'string' && c.alg !== '' ? c.alg : 'RS256';
  // No key source: KrakenD starts and the endpoint refuses every token (it has no key to check
  // one with); gw does the same, and says so at start-up instead of at every request.
  const hasSource = (typeof c.jwk_local_path === 'string' && c.jwk_local_path !== '') || (typeof c.jwk_url === 'string' && c.jwk_url !== '');
  const keys = hasSource ? keySetOf(c, where, JWT_NS) : null;
  if (keys === null) {
    warn(`${where}: "${JWT_NS}" has neither "jwk_url" nor "jwk_local_path": no token can be validated, so every request to this endpoint answers 401`);
  }

  const issuer = typeof c.issuer === 'string' && c.issuer !== '' ? c.issuer : undefined;
  const audience = strings(c.audience);
  const leewayS = c.leeway !== undefined ? Math.floor(parseDuration(c.leeway) / 1000) : 0;
  const roles = strings(c.roles);
  const rolesKey = typeof c.roles_key === 'string' && c.roles_key !== '' ? c.roles_key : 'roles';
  const rolesNested = c.roles_key_is_nested === true;
  const scopes = strings(c.scopes);
  const scopesKey = typeof c.scopes_key === 'string' && c.scopes_key !== '' ? c.scopes_key : 'scope';
  const scopesAll = c.scopes_matcher === 'all';
  const header = (typeof c.auth_header_name === 'string' && c.auth_header_name !== '' ? c.auth_header_name : 'Authorization').toLowerCase();
  // KrakenD reads the `access_token` cookie when no cookie_key is set.
  const cookie = typeof c.cookie_key === 'string' && c.cookie_key !== '' ? c.cookie_key : 'access_token';

  const propagate: [string, string][] = [];
  if (Array.isArray(c.propagate_claims)) {
    for (const pair of c.propagate_claims) {
      if (!Array.isArray(pair) || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') continue;
      const h = canonicalHeader(pair[1]);
      if (inputHeaders !== '*' && !inputHeaders.includes(h)) {
        warn(`${where}: "${JWT_NS}" propagate_claims header ${h} is not in input_headers, so it never reaches the backend`);
        continue;
      }
      propagate.push([pair[0], h]);
    }
  }
  const placeholders = [...new Set(urlPatterns.flatMap((u) => [...u.matchAll(/\{(JWT\.[^{}]+)\}/g)].map((m) => m[1]!)))];

  // Audiences are checked below: KrakenD (go-jose) wants every configured one in the token, where
  // jose's own option accepts any of them.
  const opts = { algorithms: [alg], issuer, clockTolerance: leewayS };
  const getKey = (h: JWTHeaderParameters) => {
    if (keys === null) throw new NoKeySource('no key source configured ("jwk_url" or "jwk_local_path")');
    return keys.key(h, alg);
  };

  // The Bearer header first, then the cookie (a non-Bearer Authorization header falls through).
  const tokenOf = (headerValue: string, cookieHeader: string): string | null => {
    if (headerValue !== '') {
      const sp = headerValue.indexOf(' ');
      if (sp > 0 && headerValue.slice(0, sp).toLowerCase() === 'bearer') return headerValue.slice(sp + 1).trim();
    }
    if (cookieHeader !== '') {
      for (const part of cookieHeader.split(';')) {
        const eq = part.indexOf('=');
        if (eq > 0 && part.slice(0, eq).trim() === cookie) return part.slice(eq + 1).trim();
      }
    }
    return null;
  };

  return {
    header,
    placeholders,
    propagate,
    async validate(headerValue, cookieHeader) {
      const token = tokenOf(headerValue, cookieHeader);
      if (token === null || token === '') throw new AuthError(401, 'no token found in the request');
      let payload: JWTPayload;
      try {
        payload = (await (await loadJose()).jwtVerify(token, getKey, opts)).payload;
      } catch (err) {
        if (err instanceof NoKeySource) throw new AuthError(401, err.message);
        if (err instanceof KeyFetchError) throw new AuthError(401, err.message, true);
        throw new AuthError(401, `invalid token: ${(err as Error).message}`);
      }
      if (audience.length > 0) {
        const aud = strings(payload.aud);
        const missing = audience.find((a) => !aud.includes(a));
        if (missing !== undefined) throw new AuthError(401, `invalid token: audience ${missing} missing`);
      }
      if (roles.length > 0) {
        const v = claim(payload, rolesKey, rolesNested);
        // A space-separated string counts as a list, as KrakenD's CanAccess splits it.
        const have = typeof v === 'string' ? v.split(' ').filter(Boolean) : strings(v);
        if (!roles.some((r) => have.includes(r))) throw new AuthError(403, `none of the roles ${roles.join(', ')} in "${rolesKey}"`);
      }
      if (scopes.length > 0) {
        const v = claim(payload, scopesKey);
        const have = typeof v === 'string' ? v.split(' ').filter(Boolean) : strings(v);
        const ok = scopesAll ? scopes.every((s) => have.includes(s)) : scopes.some((s) => have.includes(s));
        if (!ok) throw new AuthError(403, `scopes ${scopes.join(' ')} not granted (${scopesAll ? 'all' : 'any'} needed)`);
      }
      return payload;
    },
  };
}
