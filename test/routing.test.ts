// Router behaviour: 404/405, encoded params, trailing-slash redirects, methods (spec §1.2, §1.4, §2.7).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, h, rawRequest, req, startBackend, startGateway } from './helpers/gw.ts';

let backend: Backend;
let gw: Gateway;
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

before(async () => {
  backend = await startBackend();
  const host = [backend.url];
  gw = await startGateway({
    version: 3,
    endpoints: [
      { endpoint: '/users/{id}', method: 'GET', backend: [{ host, url_pattern: '/u/{id}' }] },
      { endpoint: '/users/{id}', method: 'POST', backend: [{ host, url_pattern: '/u/{id}' }] },
      { endpoint: '/only-get', backend: [{ host, url_pattern: '/og' }] },
      ...METHODS.map((m) => ({ endpoint: '/m', method: m, backend: [{ host, url_pattern: `/m-${m.toLowerCase()}` }] })),
    ],
  });
});
after(async () => {
  await gw?.stop();
  await backend?.close();
});

describe('routing', () => {
  test('unknown path → 404 "404 page not found", text/plain', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/nope/nothing');
    assert.equal(r.status, 404);
    assert.equal(r.text, '404 page not found');
    assert.match(h(r.headers, 'content-type') ?? '', /^text\/plain/);
    assert.equal(backend.requests.length, n, 'backend must not be called');
  });

  test('paths are case-sensitive: /USERS/1 is not served, only fixed-path redirected (301 → /users/1)', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/USERS/1');
    // gin's RedirectFixedPath (on in KrakenD) answers with a case-insensitive redirect; a plain 404 is also acceptable
    if (r.status === 301) assert.equal(h(r.headers, 'location'), '/users/1');
    else assert.equal(r.status, 404);
    assert.equal(backend.requests.length, n, 'backend must not be called');
  });

  test('fixed-path redirect cleans superfluous elements (GET //users/1 → 301 /users/1)', async () => {
    const r = await req(gw.port, '//users/1');
    assert.equal(r.status, 301);
    assert.equal(h(r.headers, 'location'), '/users/1');
  });

  test('known path, wrong method → 405 "405 method not allowed"', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/only-get', { method: 'DELETE' });
    assert.equal(r.status, 405);
    assert.equal(r.text, '405 method not allowed');
    assert.equal(backend.requests.length, n, 'backend must not be called');
  });

  test('405 also for PUT on a GET+POST path', async () => {
    const r = await req(gw.port, '/users/1', { method: 'PUT', body: '{}' });
    assert.equal(r.status, 405);
    assert.equal(r.text, '405 method not allowed');
  });

  test('double-encoded slash in a param (/users/a%252Fb) → 400 error: encoded url params', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/users/a%252Fb');
    assert.equal(r.status, 400);
    assert.equal(r.text, 'error: encoded url params');
    assert.equal(backend.requests.length, n, 'backend must not be called');
  });

  test('encoded dot-segment param (/users/%2e%2e) → 400, backend not called', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/users/%2e%2e');
    assert.equal(r.status, 400);
    assert.equal(backend.requests.length, n, 'backend must not be called');
  });

  test('encoded "?" in a param (/users/a%3Fb) → 400, backend not called', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/users/a%3Fb');
    assert.equal(r.status, 400);
    assert.equal(r.text, 'error: encoded url params');
    assert.equal(backend.requests.length, n, 'backend must not be called');
  });

  test('encoded "#" in a param (/users/a%23b) → 400, backend not called', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/users/a%23b');
    assert.equal(r.status, 400);
    assert.equal(backend.requests.length, n, 'backend must not be called');
  });

  test('trailing slash: GET /users/1/ → 301 Location /users/1', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/users/1/');
    assert.equal(r.status, 301);
    assert.equal(h(r.headers, 'location'), '/users/1');
    assert.equal(backend.requests.length, n, 'backend must not be called');
  });

  test('trailing slash: POST /users/1/ → 307 Location /users/1', async () => {
    const r = await req(gw.port, '/users/1/', { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 307);
    assert.equal(h(r.headers, 'location'), '/users/1');
  });

  test('the redirect target itself is served (GET /users/1 → backend /u/1)', async () => {
    const r = await req(gw.port, '/users/1');
    assert.equal(r.status, 200);
    assert.equal(backend.requests.at(-1)!.url, '/u/1');
  });

  test('GET/POST/PUT/PATCH/DELETE on one path each reach their own endpoint', async () => {
    for (const m of METHODS) {
      const body = m === 'GET' || m === 'DELETE' ? undefined : '{"k":1}';
      const r = await req(gw.port, '/m', { method: m, body, headers: body ? { 'content-type': 'application/json' } : {} });
      assert.equal(r.status, 200, `${m} /m → ${r.status} ${r.text}`);
      const last = backend.requests.at(-1)!;
      assert.equal(last.url, `/m-${m.toLowerCase()}`, `${m} routed to the wrong endpoint`);
      assert.equal(last.method, m, 'backend method defaults to the endpoint method');
    }
  });

  test('OPTIONS on a GET-only endpoint → 405 (only GET/POST/PUT/PATCH/DELETE are registered)', async () => {
    const r = await rawRequest(gw.port, `OPTIONS /only-get HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    assert.equal(r.status, 405);
  });
});
