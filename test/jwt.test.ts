// auth/validator end to end (core/auth/jwt.ts): one real gw process (`--workers 1`, service-level
// security/cors) with one endpoint per behaviour, in front of a loopback backend that records what
// it gets, and a loopback JWK server that counts its hits per key set; plus `gw check` runs for the
// start-up errors. Tokens are made here with jose (HS256 secrets, RS256 key pairs).
// Run: npm run build && node --import tsx --test test/jwt.test.ts
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { exportJWK, generateKeyPair, importJWK, type JWTPayload, SignJWT, UnsecuredJWT } from 'jose';
import {
  type Backend,
  type ClientResponse,
  type Gateway,
  type RecordedRequest,
  freePort,
  h,
  req,
  runCli,
  sendJSON,
  sleep,
  startBackend,
  startGateway,
  tempDir,
  writeConfig,
  jsonLogLines,
  type JsonLogLine,
} from './helpers/gw.ts';

const JWT = 'auth/validator';
const ORIGIN = 'https://app.example';
const ISSUER = 'https://issuer.example';
const AUDIENCE = 'api.example';

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

/** The HS256 secret (kid hs1) every HS256 key set serves. */
const secret = new Uint8Array(randomBytes(32));
let rsKeys: { k1: PrivateKey; k2: PrivateKey; rogue: PrivateKey; k1Pss: PrivateKey };
/** Key sets served by the JWK backend, by path. */
const jwkSets: Record<string, unknown> = {};
/** JWK backend hits, by path. */
const jwkHits: Record<string, number> = {};

let backend: Backend;
let jwks: Backend;
let gw: Gateway;
let closedPort: number;
let localJwks: string;

const now = () => Math.floor(Date.now() / 1000);

interface Sign {
  kid?: string;
  /** Seconds since the epoch; default: in 5 minutes. */
  exp?: number;
  nbf?: number;
  iss?: string;
  aud?: string;
}

/** An HS256 token signed with `secret` (kid hs1 unless told). */
function hs(claims: JWTPayload = {}, o: Sign = {}): Promise<string> {
  return signed(new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid: o.kid ?? 'hs1', typ: 'JWT' }), o, secret);
}

/** An RS256 (or `alg`) token with kid `kid`, signed by `key`. */
function rs(key: PrivateKey, kid: string, claims: JWTPayload = { sub: 'rs-user' }, o: Sign = {}, alg = 'RS256'): Promise<string> {
  return signed(new SignJWT(claims).setProtectedHeader({ alg, kid, typ: 'JWT' }), o, key);
}

function signed(t: SignJWT, o: Sign, key: PrivateKey | Uint8Array): Promise<string> {
  t.setIssuedAt().setExpirationTime(o.exp ?? now() + 300);
  if (o.nbf !== undefined) t.setNotBefore(o.nbf);
  if (o.iss !== undefined) t.setIssuer(o.iss);
  if (o.aud !== undefined) t.setAudience(o.aud);
  return t.sign(key);
}

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** Every request the backend got whose path starts with `prefix`. */
const seen = (prefix: string): RecordedRequest[] => backend.requests.filter((r) => r.url.startsWith(prefix));
/** The last of them (fails when there is none). */
function last(prefix: string): RecordedRequest {
  const all = seen(prefix);
  assert.ok(all.length > 0, `the backend never saw ${prefix}; it saw ${backend.requests.map((r) => r.url).join(' ')}`);
  return all.at(-1)!;
}

/** A refusal: `status`, an empty body. */
function refused(r: ClientResponse, status: number, what: string): void {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.text}`);
  assert.equal(r.text, '', `${what}: the body is empty`);
}

type LogLine = JsonLogLine;

function logLines(): LogLine[] {
  return jsonLogLines(gw.output());
}

/** Waits (bounded) for a log line at `minLevel` or worse whose message includes `text`. */
async function logLine(text: string, minLevel: number): Promise<LogLine> {
  for (let i = 0; i < 40; i++) {
    const hit = logLines().find((l) => l.level >= minLevel && l.msg.includes(text));
    if (hit) return hit;
    await sleep(25);
  }
  assert.fail(`no log line (level >= ${minLevel}) naming ${text}\n--- output\n${gw.output().slice(-4000)}`);
}

before(async () => {
  const [p1, p2, p3] = await Promise.all([generateKeyPair('RS256', { extractable: true }), generateKeyPair('RS256'), generateKeyPair('RS256')]);
  // k1's private key as an RSA-PSS key too, for PS256 tokens.
  const k1Pss = (await importJWK(await exportJWK(p1.privateKey), 'PS256')) as PrivateKey;
  rsKeys = { k1: p1.privateKey, k2: p2.privateKey, rogue: p3.privateKey, k1Pss };
  const pub = async (k: (typeof p1)['publicKey'], kid: string) => ({ ...(await exportJWK(k)), kid, alg: 'RS256', use: 'sig' });
  const oct = { kty: 'oct', k: Buffer.from(secret).toString('base64url'), kid: 'hs1', alg: 'HS256' };
  const hsSet = { keys: [oct] };
  jwkSets['/hs.json'] = hsSet;
  jwkSets['/cache.json'] = hsSet;
  jwkSets['/rs.json'] = { keys: [await pub(p1.publicKey, 'k1'), await pub(p2.publicKey, 'k2')] };
  // An RSA key and the HS256 secret in one set: only `alg` keeps HS256 tokens off an RS256 endpoint.
  jwkSets['/mixed.json'] = { keys: [await pub(p1.publicKey, 'k1'), oct] };
  // k1 without "alg" (and "use"): usable for RS256 and PS256.
  jwkSets['/noalg.json'] = { keys: [{ ...(await exportJWK(p1.publicKey)), kid: 'k1' }] };

  localJwks = path.join(fs.mkdtempSync(path.join(tempDir(), 'jwk-')), 'jwks.json');
  fs.writeFileSync(localJwks, JSON.stringify(hsSet));
  closedPort = await freePort();

  jwks = await startBackend((_req, res, rec) => {
    jwkHits[rec.url] = (jwkHits[rec.url] ?? 0) + 1;
    const set = jwkSets[rec.url];
    if (set === undefined) return sendJSON(res, 500, { error: 'identity provider down' });
    sendJSON(res, 200, set);
  });
  backend = await startBackend((_req, res, rec) => {
    // What the auth/signer regression signs (keys_to_sign: ok, tok).
    if (rec.url === '/signed-be') return sendJSON(res, 200, { ok: true, tok: { a: 1 } });
    sendJSON(res, 200, { url: rec.url, from: 'backend' });
  });

  const host = [backend.url];
  const jwtEp = (
    endpoint: string,
    urlPattern: string,
    auth: Record<string, unknown>,
    more: Record<string, unknown> = {},
  ): Record<string, unknown> => ({
    endpoint,
    ...more,
    extra_config: { [JWT]: { disable_jwk_security: true, ...auth } },
    backend: [{ host, url_pattern: urlPattern }],
  });
  const hsAuth = { alg: 'HS256', jwk_url: `${jwks.url}/hs.json` };

  const endpoints = [
    jwtEp('/hs', '/hs-be', { ...hsAuth, roles: ['admin', 'user'], roles_key: 'roles' }, { method: 'GET' }),
    jwtEp('/hs-post', '/hs-post-be', hsAuth, { method: 'POST' }),
    jwtEp('/nested', '/nested-be', { ...hsAuth, roles: ['admin'], roles_key: 'realm_access.roles', roles_key_is_nested: true }),
    jwtEp('/claims', '/claims-be', { ...hsAuth, issuer: ISSUER, audience: [AUDIENCE] }),
    jwtEp('/leeway', '/leeway-be', { ...hsAuth, leeway: '1m' }),
    jwtEp('/rs', '/rs-be', { alg: 'RS256', jwk_url: `${jwks.url}/rs.json` }),
    jwtEp('/rs-mixed', '/rs-mixed-be', { alg: 'RS256', jwk_url: `${jwks.url}/mixed.json` }),
    jwtEp('/shared-rs', '/shared-rs-be', { alg: 'RS256', jwk_url: `${jwks.url}/noalg.json` }),
    jwtEp('/shared-ps', '/shared-ps-be', { alg: 'PS256', jwk_url: `${jwks.url}/noalg.json` }),
    jwtEp('/sub', '/users/{JWT.sub}/items?who={JWT.sub}', hsAuth),
    jwtEp('/prop', '/prop-be', { ...hsAuth, propagate_claims: [['sub', 'x-user'], ['tenant', 'x-tenant']] }, { input_headers: ['X-User', 'X-Tenant'] }),
    jwtEp('/prop-warn', '/prop-warn-be', { ...hsAuth, propagate_claims: [['sub', 'x-user'], ['email', 'x-not-passed']] }, { input_headers: ['X-User'] }),
    jwtEp('/cookie', '/cookie-be', { ...hsAuth, cookie_key: 'access_token' }),
    jwtEp('/scope-any', '/scope-any-be', { ...hsAuth, scopes: ['read', 'write'], scopes_key: 'scope', scopes_matcher: 'any' }),
    jwtEp('/scope-all', '/scope-all-be', { ...hsAuth, scopes: ['read', 'write'], scopes_key: 'scope', scopes_matcher: 'all' }),
    jwtEp('/cache', '/cache-be', { alg: 'HS256', jwk_url: `${jwks.url}/cache.json` }),
    jwtEp('/jwk500', '/jwk500-be', { alg: 'HS256', jwk_url: `${jwks.url}/fail.json` }),
    jwtEp('/jwkdown', '/jwkdown-be', { alg: 'HS256', jwk_url: `http://127.0.0.1:${closedPort}/jwks.json` }),
    jwtEp('/local', '/local-be', { alg: 'HS256', jwk_local_path: localJwks, disable_jwk_security: false }),
    { endpoint: '/open', backend: [{ host, url_pattern: '/open-be' }] },
    // For the review regressions at the end of the file.
    jwtEp('/aud-all', '/aud-all-be', { ...hsAuth, audience: ['api-a', 'api-b'] }),
    {
      endpoint: '/signed',
      extra_config: { 'auth/signer': { alg: 'HS256', kid: 'hs1', jwk_local_path: localJwks, keys_to_sign: ['ok', 'tok'] } },
      backend: [{ host, url_pattern: '/signed-be' }],
    },
  ];
  gw = await startGateway(
    {
      version: 3,
      extra_config: { 'security/cors': { allow_origins: ['*'], allow_methods: ['GET', 'POST'], allow_headers: ['Authorization'] } },
      endpoints,
    },
    { args: ['--workers', '1', '--log-format', 'json'] },
  );
});

after(async () => {
  await gw?.stop();
  await backend?.close();
  await jwks?.close();
});

// ---------------------------------------------------------------------------

describe('authentication (401)', () => {
  test('no token → 401, empty body, the backend is never called (nor for a POST with a body)', async () => {
    const r = await req(gw.port, '/hs');
    refused(r, 401, 'no token');
    const p = await req(gw.port, '/hs-post', { method: 'POST', body: '{"a":1}', headers: { 'Content-Type': 'application/json' } });
    refused(p, 401, 'POST without a token');
    assert.equal(seen('/hs-be').length, 0);
    assert.equal(seen('/hs-post-be').length, 0);
    // The control: the same endpoints with a token.
    const ok = await req(gw.port, '/hs-post', { method: 'POST', body: '{"a":1}', headers: { ...bearer(await hs()), 'Content-Type': 'application/json' } });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(last('/hs-post-be').body.toString(), '{"a":1}');
  });

  test('malformed tokens and other schemes → 401: "a.bad.token", "Bearer" alone, Basic, alg none, a tampered payload', async () => {
    const good = await hs({ roles: ['admin'] });
    const [head, , sig] = good.split('.');
    const tampered = `${head}.${Buffer.from(JSON.stringify({ roles: ['admin'], exp: now() + 300, sub: 'mallory' })).toString('base64url')}.${sig}`;
    const none = new UnsecuredJWT({ roles: ['admin'] }).setExpirationTime(now() + 300).encode();
    const cases: Record<string, Record<string, string>> = {
      'a.bad.token': bearer('a.bad.token'),
      'Bearer with no token': { Authorization: 'Bearer ' },
      'a token without a scheme': { Authorization: good },
      'Basic scheme': { Authorization: `Basic ${Buffer.from('u:p').toString('base64')}` },
      'alg none': bearer(none),
      tampered: bearer(tampered),
    };
    for (const [what, headers] of Object.entries(cases)) refused(await req(gw.port, '/hs', { headers }), 401, what);
    assert.equal(seen('/hs-be').length, 0);
    const ok = await req(gw.port, '/hs', { headers: { authorization: `bearer ${good}` } });
    assert.equal(ok.status, 200, 'the scheme is case-insensitive');
  });

  test('a token whose alg is not the configured one → 401 (HS256 on RS256, also with the secret in the set; RS256 on HS256)', async () => {
    refused(await req(gw.port, '/rs', { headers: bearer(await hs({ sub: 'x' }, { kid: 'k1' })) }), 401, 'HS256 token on RS256');
    refused(await req(gw.port, '/rs-mixed', { headers: bearer(await hs({ sub: 'x' })) }), 401, 'HS256 token, its secret in the RS256 set');
    refused(await req(gw.port, '/hs', { headers: bearer(await rs(rsKeys.k1, 'hs1', { roles: ['admin'] })) }), 401, 'RS256 token on HS256');
    assert.equal(seen('/rs-be').length, 0);
    assert.equal(seen('/rs-mixed-be').length, 0);
    const ok = await req(gw.port, '/rs-mixed', { headers: bearer(await rs(rsKeys.k1, 'k1')) });
    assert.equal(ok.status, 200, `the control, RS256 on the mixed set: ${ok.text}`);
    assert.equal(seen('/hs-be').length, 1, 'only the control of the previous test');
  });

  test('exp in the past, nbf in the future, wrong issuer, wrong or missing audience → 401', async () => {
    const base = { iss: ISSUER, aud: AUDIENCE };
    const ok = await req(gw.port, '/claims', { headers: bearer(await hs({ sub: 'c' }, base)) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json().url, '/claims-be');
    const cases: Record<string, Sign> = {
      'expired 10s ago': { ...base, exp: now() - 10 },
      'nbf in a minute': { ...base, nbf: now() + 60 },
      'wrong issuer': { ...base, iss: 'https://evil.example' },
      'no issuer': { aud: AUDIENCE },
      'wrong audience': { ...base, aud: 'other.example' },
      'no audience': { iss: ISSUER },
    };
    for (const [what, o] of Object.entries(cases)) refused(await req(gw.port, '/claims', { headers: bearer(await hs({ sub: 'c' }, o)) }), 401, what);
    assert.equal(seen('/claims-be').length, 1);
  });

  test('leeway "1m" accepts a token expired 10 s ago, not one expired 2 minutes ago', async () => {
    const r = await req(gw.port, '/leeway', { headers: bearer(await hs({}, { exp: now() - 10 })) });
    assert.equal(r.status, 200, r.text);
    refused(await req(gw.port, '/leeway', { headers: bearer(await hs({}, { exp: now() - 120 })) }), 401, 'expired 2m ago');
    const nbf = await req(gw.port, '/leeway', { headers: bearer(await hs({}, { nbf: now() + 30 })) });
    assert.equal(nbf.status, 200, 'nbf 30 s ahead is within the leeway');
  });
});

describe('authorisation (403)', () => {
  test('roles: one of the configured roles → 200 with the backend data; none of them → 403, empty body', async () => {
    const before = seen('/hs-be').length;
    const ok = await req(gw.port, '/hs', { headers: bearer(await hs({ sub: 'u', roles: ['viewer', 'user'] })) });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json(), { url: '/hs-be', from: 'backend' });
    const single = await req(gw.port, '/hs', { headers: bearer(await hs({ roles: 'admin' })) });
    assert.equal(single.status, 200, 'a string-valued roles claim');
    refused(await req(gw.port, '/hs', { headers: bearer(await hs({ roles: ['viewer'] })) }), 403, 'other roles');
    refused(await req(gw.port, '/hs', { headers: bearer(await hs({ sub: 'u' })) }), 403, 'no roles claim');
    refused(await req(gw.port, '/hs', { headers: bearer(await hs({ roles: 'administrator' })) }), 403, 'a role that only contains one');
    assert.equal(seen('/hs-be').length, before + 2);
  });

  test('roles_key_is_nested with "realm_access.roles"', async () => {
    const ok = await req(gw.port, '/nested', { headers: bearer(await hs({ realm_access: { roles: ['x', 'admin'] } })) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json().url, '/nested-be');
    refused(await req(gw.port, '/nested', { headers: bearer(await hs({ realm_access: { roles: ['x'] } })) }), 403, 'nested, other roles');
    refused(await req(gw.port, '/nested', { headers: bearer(await hs({ roles: ['admin'] })) }), 403, 'top-level roles are not the nested key');
    assert.equal(seen('/nested-be').length, 1);
  });

  test('scopes: "any" accepts "read other"; "all" refuses it (403) and accepts "read write" and an array', async () => {
    const readOther = bearer(await hs({ scope: 'read other' }));
    const any = await req(gw.port, '/scope-any', { headers: readOther });
    assert.equal(any.status, 200, any.text);
    assert.equal(any.json().url, '/scope-any-be');
    refused(await req(gw.port, '/scope-any', { headers: bearer(await hs({ scope: 'other readonly' })) }), 403, 'any: none of them');
    refused(await req(gw.port, '/scope-all', { headers: readOther }), 403, 'all: only read');
    const all = await req(gw.port, '/scope-all', { headers: bearer(await hs({ scope: 'read write' })) });
    assert.equal(all.status, 200, all.text);
    const arr = await req(gw.port, '/scope-all', { headers: bearer(await hs({ scope: ['write', 'extra', 'read'] })) });
    assert.equal(arr.status, 200, 'an array-valued scope claim');
    refused(await req(gw.port, '/scope-all', { headers: bearer(await hs({ scope: ['write'] })) }), 403, 'all: array with write only');
    assert.equal(seen('/scope-all-be').length, 2);
  });
});

describe('RS256 key sets', () => {
  test('two keys (k1, k2): tokens signed by either are accepted; kid k1 signed by another key → 401', async () => {
    for (const [kid, key] of [['k1', rsKeys.k1], ['k2', rsKeys.k2]] as const) {
      const r = await req(gw.port, '/rs', { headers: bearer(await rs(key, kid)) });
      assert.equal(r.status, 200, `${kid}: ${r.text}`);
      assert.equal(r.json().url, '/rs-be');
    }
    refused(await req(gw.port, '/rs', { headers: bearer(await rs(rsKeys.rogue, 'k1')) }), 401, 'k1 signed by a rogue key');
    refused(await req(gw.port, '/rs', { headers: bearer(await rs(rsKeys.k2, 'k1')) }), 401, 'k2\'s signature under kid k1');
    assert.equal(seen('/rs-be').length, 2);
  });

  test(
    'one JWK set (keys without "alg") behind an RS256 and a PS256 endpoint: both accept their tokens',
    async () => {
      const r = await req(gw.port, '/shared-rs', { headers: bearer(await rs(rsKeys.k1, 'k1')) });
      assert.equal(r.status, 200, r.text);
      const p = await req(gw.port, '/shared-ps', { headers: bearer(await rs(rsKeys.k1Pss, 'k1', { sub: 'ps' }, {}, 'PS256')) });
      assert.equal(p.status, 200, `PS256 after RS256 on the same set: ${p.status}\n${gw.output().split('\n').filter((l) => l.includes('/shared-ps')).join('\n')}`);
    },
  );
});

// ---------------------------------------------------------------------------

describe('claims to the backend', () => {
  /** The path segment and the query the backend got for `/users/{JWT.sub}/items?who={JWT.sub}`. */
  async function subCall(sub: string): Promise<{ url: string; segments: string[]; query: URLSearchParams }> {
    const r = await req(gw.port, '/sub', { headers: bearer(await hs({ sub })) });
    assert.equal(r.status, 200, `${sub}: ${r.text}`);
    const url = last('/users/').url;
    const q = url.indexOf('?');
    assert.ok(q > 0, url);
    return { url, segments: url.slice(0, q).split('/'), query: new URLSearchParams(url.slice(q + 1)) };
  }

  test('{JWT.sub} in url_pattern: the backend sees the subject in the path and the query', async () => {
    const { url } = await subCall('alice');
    assert.equal(url, '/users/alice/items?who=alice');
  });

  test('a sub with "/", "..", "?", "%2F", "#" or "&" stays inside its segment (and its query value)', async () => {
    for (const sub of ['a/b', 'x?debug=1', 'a%2Fb', 'a#frag', 'x&who=root', 'é ü']) {
      const { url, segments, query } = await subCall(sub);
      assert.equal(segments.length, 4, `${sub} → ${url}`);
      assert.deepEqual(segments.slice(0, 2), ['', 'users']);
      assert.equal(segments[3], 'items', `${sub} → ${url}`);
      assert.equal(decodeURIComponent(segments[2]!), sub, `${sub} → ${url}`);
      assert.deepEqual([...query.keys()], ['who'], `${sub} → ${url}`);
      assert.equal(query.get('who'), sub);
      assert.ok(!url.includes('#'), url);
    }
  });

  // A backend that decodes %2F (nginx) or %25 twice before resolving dot-segments would climb out
  // of the path with the last two (edge-defects.test.ts has the whole rule).
  test('a sub that is exactly ".." or "." never becomes a dot-segment: the call is refused (/users/../items would be /items)', async () => {
    for (const sub of ['..', '.', '../../admin', '..%2F..%2Fadmin']) {
      const before = last('/users/')?.url;
      const r = await req(gw.port, '/sub', { headers: bearer(await hs({ sub })) });
      assert.equal(r.status, 500, `${sub}: ${r.text}`);
      assert.equal(last('/users/')?.url, before, `${sub}: nothing reached the backend`);
    }
  });

  test('propagate_claims: X-User = sub overwrites a spoofed X-User; a missing tenant claim removes a client X-Tenant', async () => {
    const spoof = { 'X-User': 'root', 'X-Tenant': 'other-tenant' };
    const r = await req(gw.port, '/prop', { headers: { ...spoof, ...bearer(await hs({ sub: 'alice' })) } });
    assert.equal(r.status, 200, r.text);
    let rec = last('/prop-be');
    assert.equal(rec.headers['x-user'], 'alice');
    assert.equal(rec.headers['x-tenant'], undefined, 'the client X-Tenant was forwarded');
    assert.equal(rec.rawHeaders.filter((n) => n.toLowerCase() === 'x-user').length, 1, rec.rawHeaders.join(' '));

    const t = await req(gw.port, '/prop', { headers: { ...spoof, ...bearer(await hs({ sub: 'bob', tenant: 'acme' })) } });
    assert.equal(t.status, 200, t.text);
    rec = last('/prop-be');
    assert.equal(rec.headers['x-user'], 'bob');
    assert.equal(rec.headers['x-tenant'], 'acme');

    // Without claims to propagate the input_headers still pass (the control for "removed").
    const before = seen('/prop-be').length;
    refused(await req(gw.port, '/prop', { headers: spoof }), 401, 'spoofed headers, no token');
    assert.equal(seen('/prop-be').length, before);
  });

  test('a propagate_claims header that is not in input_headers: a warning naming it in the run log', async () => {
    const w = await logLine('X-Not-Passed', 40);
    assert.match(w.msg, /\/prop-warn/);
    assert.match(w.msg, /input_headers/);
    const r = await req(gw.port, '/prop-warn', { headers: bearer(await hs({ sub: 'carol', email: 'c@example' })) });
    assert.equal(r.status, 200, r.text);
    const rec = last('/prop-warn-be');
    assert.equal(rec.headers['x-user'], 'carol');
    assert.equal(rec.headers['x-not-passed'], undefined);
  });

  test('cookie_key: a token in "Cookie: a=b; access_token=<jwt>" is accepted without an Authorization header', async () => {
    const token = await hs({ sub: 'cookie-user' });
    const r = await req(gw.port, '/cookie', { headers: { Cookie: `a=b; access_token=${token}` } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json().url, '/cookie-be');
    refused(await req(gw.port, '/cookie', { headers: { Cookie: `a=b; other_token=${token}` } }), 401, 'another cookie');
    refused(await req(gw.port, '/cookie', { headers: { Cookie: 'access_token=a.bad.token' } }), 401, 'a bad cookie token');
    // Without cookie_key, KrakenD (and gw) read the access_token cookie; a Basic header falls through to it.
    const dflt = await req(gw.port, '/hs', { headers: { Cookie: `access_token=${await hs({ roles: ['admin'] })}`, Authorization: 'Basic eDp5' } });
    assert.equal(dflt.status, 200, dflt.text);
    assert.equal(seen('/cookie-be').length, 1);
  });
});

// ---------------------------------------------------------------------------

describe('key sets', () => {
  test('cached: 5 concurrent and 5 sequential requests fetch once; unknown kids refetch at most once, then cool down', async () => {
    assert.equal(jwkHits['/cache.json'] ?? 0, 0, 'not fetched before the first request');
    const token = await hs({ sub: 'c' });
    const first = await Promise.all(Array.from({ length: 5 }, () => req(gw.port, '/cache', { headers: bearer(token) })));
    for (const r of first) assert.equal(r.status, 200, r.text);
    for (let i = 0; i < 5; i++) assert.equal((await req(gw.port, '/cache', { headers: bearer(token) })).status, 200);
    assert.equal(jwkHits['/cache.json'], 1, 'the key set was fetched once');

    refused(await req(gw.port, '/cache', { headers: bearer(await hs({}, { kid: 'unknown-1' })) }), 401, 'unknown kid');
    const afterFirst = jwkHits['/cache.json']!;
    assert.ok(afterFirst <= 2, `an unknown kid fetched the key set ${afterFirst - 1} more times`);
    refused(await req(gw.port, '/cache', { headers: bearer(await hs({}, { kid: 'unknown-2' })) }), 401, 'another unknown kid');
    await Promise.all(Array.from({ length: 5 }, async (_, i) => refused(await req(gw.port, '/cache', { headers: bearer(await hs({}, { kid: `burst-${i}` })) }), 401, 'burst')));
    assert.equal(jwkHits['/cache.json'], afterFirst, 'unknown kids right after a fetch do not refetch (cooldown)');
    assert.equal((await req(gw.port, '/cache', { headers: bearer(token) })).status, 200);
    assert.equal(seen('/cache-be').length, 11);
  });

  test('a JWK URL answering 500 → 401 and an ERROR log line naming the URL; the backend is not called', async () => {
    refused(await req(gw.port, '/jwk500', { headers: bearer(await hs()) }), 401, 'JWK set 500');
    const line = await logLine(`${jwks.url}/fail.json`, 50);
    assert.match(line.msg, /\/jwk500/);
    assert.ok((jwkHits['/fail.json'] ?? 0) >= 1);
    assert.equal(seen('/jwk500-be').length, 0);
  });

  test(
    'a failing JWK URL is not fetched again for every request (at most once per cooldown)',
    async () => {
      const before = jwkHits['/fail.json'] ?? 0;
      for (let i = 0; i < 5; i++) refused(await req(gw.port, '/jwk500', { headers: bearer(await hs()) }), 401, `JWK set 500, #${i}`);
      const fetched = (jwkHits['/fail.json'] ?? 0) - before;
      assert.ok(fetched <= 1, `5 requests fetched the failing key set ${fetched} times`);
    },
  );

  test('a JWK URL on a closed 127.0.0.1 port → 401 and an ERROR log line naming the URL', async () => {
    refused(await req(gw.port, '/jwkdown', { headers: bearer(await hs()) }), 401, 'JWK set unreachable');
    await logLine(`http://127.0.0.1:${closedPort}/jwks.json`, 50);
    assert.equal(seen('/jwkdown-be').length, 0);
  });

  test('jwk_local_path: a JSON JWK set file works for gw run', async () => {
    const r = await req(gw.port, '/local', { headers: bearer(await hs({ sub: 'l' })) });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json().url, '/local-be');
    refused(await req(gw.port, '/local', { headers: bearer(await hs({}, { kid: 'other' })) }), 401, 'unknown kid, local set');
  });
});

describe('CORS with JWT', () => {
  test('a 401 and a 403 to a request with an Origin still carry Access-Control-Allow-Origin', async () => {
    const r = await req(gw.port, '/hs', { headers: { Origin: ORIGIN } });
    refused(r, 401, 'no token, with Origin');
    assert.equal(h(r.headers, 'access-control-allow-origin'), '*');
    const f = await req(gw.port, '/hs', { headers: { Origin: ORIGIN, ...bearer(await hs({ roles: ['nobody'] })) } });
    refused(f, 403, 'wrong role, with Origin');
    assert.equal(h(f.headers, 'access-control-allow-origin'), '*');
    const open = await req(gw.port, '/open', { headers: { Origin: ORIGIN } });
    assert.equal(open.status, 200, 'an endpoint without auth/validator is open');
  });
});

// ---------------------------------------------------------------------------

describe('gw check', () => {
  const config = (endpoint: string, auth: Record<string, unknown>) => ({
    version: 3,
    endpoints: [{ endpoint, extra_config: { [JWT]: auth }, backend: [{ host: [backend.url], url_pattern: '/x' }] }],
  });

  test('start-up errors name the endpoint: http jwk_url without disable_jwk_security, a missing file; no key source is a warning', async () => {
    const cases = {
      http: config('/needs-https', { alg: 'HS256', jwk_url: 'http://127.0.0.1:1/jwks.json' }),
      none: config('/needs-keys', { alg: 'HS256', roles: ['admin'] }),
      missing: config('/needs-file', { alg: 'HS256', jwk_local_path: path.join(tempDir(), 'no-such-jwks.json') }),
      // The controls, in one config: nothing is fetched at check time.
      ok: {
        version: 3,
        endpoints: [
          config('/http-ok', { alg: 'HS256', jwk_url: 'http://127.0.0.1:1/jwks.json', disable_jwk_security: true }).endpoints[0],
          config('/https-ok', { jwk_url: 'https://idp.invalid/jwks.json' }).endpoints[0],
          config('/local-ok', { alg: 'HS256', jwk_local_path: localJwks }).endpoints[0],
        ],
      },
    };
    const names = Object.keys(cases) as (keyof typeof cases)[];
    const results = await Promise.all(names.map((n) => runCli(['check', '-c', writeConfig(cases[n])])));
    const r = Object.fromEntries(names.map((n, i) => [n, results[i]!])) as Record<keyof typeof cases, (typeof results)[number]>;

    assert.notEqual(r.http.code, 0, r.http.output);
    assert.ok(r.http.output.includes('/needs-https'), r.http.output);
    assert.match(r.http.output, /disable_jwk_security/);
    // No key source: KrakenD starts (the endpoint answers 401); check passes with a warning naming it.
    assert.equal(r.none.code, 0, r.none.output);
    assert.match(r.none.output, /WARNING: endpoint \/needs-keys: "auth\/validator" has neither "jwk_url" nor "jwk_local_path"/);
    assert.notEqual(r.missing.code, 0, r.missing.output);
    assert.ok(r.missing.output.includes('/needs-file'), r.missing.output);

    assert.equal(r.ok.code, 0, r.ok.output);
    assert.match(r.ok.output, /Syntax OK/);
  });
});

// ---------------------------------------------------------------------------

describe('auth: review regressions', () => {
  test('audience ["api-a", "api-b"]: the token must carry every configured audience (go-jose), not one of them', async () => {
    refused(await req(gw.port, '/aud-all', { headers: bearer(await hs({ sub: 'a', aud: 'api-a' })) }), 401, 'aud api-a only');
    refused(await req(gw.port, '/aud-all', { headers: bearer(await hs({ sub: 'a', aud: ['api-b'] })) }), 401, 'aud [api-b] only');
    assert.equal(seen('/aud-all-be').length, 0);
    const ok = await req(gw.port, '/aud-all', { headers: bearer(await hs({ sub: 'a', aud: ['api-a', 'api-b'] })) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(seen('/aud-all-be').length, 1);
  });

  test('propagate_claims: a non-ASCII claim reaches the backend as its UTF-8 bytes', async () => {
    for (const [sub, bytes] of [['李', [0xe6, 0x9d, 0x8e]], ['José', [0x4a, 0x6f, 0x73, 0xc3, 0xa9]]] as const) {
      const r = await req(gw.port, '/prop', { headers: bearer(await hs({ sub })) });
      assert.equal(r.status, 200, `${sub}: ${r.status} ${r.text}`);
      // node:http decodes header values as Latin-1: back to the bytes on the wire.
      const got = Buffer.from(String(last('/prop-be').headers['x-user']), 'latin1');
      assert.deepEqual([...got], [...bytes], sub);
      assert.deepEqual(got, Buffer.from(sub, 'utf8'));
    }
  });

  test('auth/signer signs objects only: keys_to_sign ["ok", "tok"] leaves ok: true and makes tok a compact JWS', async () => {
    const r = await req(gw.port, '/signed');
    assert.equal(r.status, 200, r.text);
    const data = r.json();
    assert.equal(data.ok, true);
    assert.equal(typeof data.tok, 'string', JSON.stringify(data));
    const parts = (data.tok as string).split('.');
    assert.equal(parts.length, 3, data.tok);
    assert.deepEqual(JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')), { a: 1 });
  });
});
