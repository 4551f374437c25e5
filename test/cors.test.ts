// security/cors end to end (core/router/cors.ts): preflights on known and unknown paths, actual
// requests (decoding, no-op, errors, 404), origin lists with wildcards, credentials, passthrough.
// Two real gw processes (an open and a strict policy) in front of one loopback backend; the review
// regressions at the end start a third (`-d`, small limits, a lua-proxy post).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Backend, type ClientResponse, type Gateway, h, rawRequest, req, sendJSON, startBackend, startGateway } from './helpers/gw.ts';

let backend: Backend;
let open: Gateway;
let strict: Gateway;
let hits = 0;

before(async () => {
  backend = await startBackend((r, res) => {
    hits++;
    if (r.url === '/fail') return sendJSON(res, 500, { no: true });
    // A backend that sets its own CORS answer: gw's must replace it on no-op.
    sendJSON(res, 200, { ok: true }, { 'Access-Control-Allow-Origin': 'https://evil.example', 'X-Up': '1' });
  });
  const endpoints = [
    { endpoint: '/data', backend: [{ host: [backend.url], url_pattern: '/data' }] },
    { endpoint: '/raw', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/raw', encoding: 'no-op' }] },
    { endpoint: '/fail', backend: [{ host: [backend.url], url_pattern: '/fail' }] },
    { endpoint: '/del', method: 'DELETE', backend: [{ host: [backend.url], url_pattern: '/data' }] },
  ];
  open = await startGateway(
    {
      version: 3,
      extra_config: {
        'security/cors': { allow_origins: ['*'], allow_methods: ['GET', 'POST'], allow_headers: ['Authorization', 'Content-Type'], expose_headers: ['Content-Length', 'x-up'], max_age: '12h' },
      },
      endpoints,
    },
    { args: ['--workers', '1'] },
  );
  strict = await startGateway(
    {
      version: 3,
      extra_config: {
        'security/cors': {
          allow_origins: ['https://app.example.com', 'https://*.tenant.example'],
          allow_methods: ['GET'],
          allow_credentials: true,
          options_success_status: 200,
        },
      },
      endpoints,
    },
    { args: ['--workers', '1'] },
  );
});

after(async () => {
  await open?.stop();
  await strict?.stop();
  await backend?.close();
});

const preflight = (method: string, headers: string | null, origin = 'https://foo.example') => {
  const hd: Record<string, string> = { Origin: origin, 'Access-Control-Request-Method': method };
  if (headers !== null) hd['Access-Control-Request-Headers'] = headers;
  return hd;
};

describe('security/cors', () => {
  test('an allowed preflight is answered by gw on a known path and on an unknown one, never forwarded', async () => {
    const before = hits;
    for (const path of ['/data', '/nowhere/at/all']) {
      const r = await req(open.port, path, { method: 'OPTIONS', headers: preflight('get', 'content-type,authorization') });
      assert.equal(r.status, 204, path);
      assert.equal(r.text, '');
      assert.equal(h(r.headers, 'access-control-allow-origin'), '*');
      assert.equal(h(r.headers, 'access-control-allow-methods'), 'GET');
      assert.equal(h(r.headers, 'access-control-allow-headers'), 'content-type,authorization', 'echoed as requested');
      assert.equal(h(r.headers, 'access-control-max-age'), '43200');
      assert.match(String(h(r.headers, 'vary')), /Origin, Access-Control-Request-Method, Access-Control-Request-Headers/);
      assert.equal(h(r.headers, 'x-krakend-completed'), undefined);
    }
    assert.equal(hits, before, 'no preflight reached the backend');
  });

  test('a preflight for a method, header or origin outside the policy gets no allow headers', async () => {
    const cases: [Gateway, Record<string, string>][] = [
      [open, preflight('PUT', null)],
      [open, preflight('POST', 'X-Pingother')],
      [strict, preflight('GET', null, 'https://other.example')],
    ];
    for (const [gw, headers] of cases) {
      const r = await req(gw.port, '/data', { method: 'OPTIONS', headers });
      assert.ok(r.status === 204 || r.status === 200, String(r.status));
      assert.equal(h(r.headers, 'access-control-allow-origin'), undefined, JSON.stringify(headers));
      assert.equal(h(r.headers, 'access-control-allow-methods'), undefined);
      assert.ok(h(r.headers, 'vary'));
    }
  });

  test('origin lists: exact and wildcard origins are echoed back, with credentials and the configured status', async () => {
    for (const origin of ['https://app.example.com', 'https://acme.tenant.example', 'HTTPS://APP.EXAMPLE.COM']) {
      const r = await req(strict.port, '/data', { method: 'OPTIONS', headers: preflight('GET', null, origin) });
      assert.equal(r.status, 200, 'options_success_status');
      assert.equal(h(r.headers, 'access-control-allow-origin'), origin);
      assert.equal(h(r.headers, 'access-control-allow-credentials'), 'true');
    }
    const r = await req(strict.port, '/data', { method: 'OPTIONS', headers: preflight('GET', null, 'https://tenant.example.evil.com') });
    assert.equal(h(r.headers, 'access-control-allow-origin'), undefined);
  });

  test('actual requests: Vary: Origin always; allow/expose headers only for an allowed origin and method', async () => {
    const ok = await req(open.port, '/data', { headers: { Origin: 'https://foo.example' } });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.json(), { ok: true });
    assert.equal(h(ok.headers, 'access-control-allow-origin'), '*');
    assert.equal(h(ok.headers, 'access-control-expose-headers'), 'Content-Length, X-Up');
    assert.equal(h(ok.headers, 'vary'), 'Origin');
    assert.equal(h(ok.headers, 'x-krakend-completed'), 'true');

    const noOrigin = await req(open.port, '/data');
    assert.equal(noOrigin.status, 200);
    assert.equal(h(noOrigin.headers, 'vary'), 'Origin');
    assert.equal(h(noOrigin.headers, 'access-control-allow-origin'), undefined);

    const badOrigin = await req(strict.port, '/data', { headers: { Origin: 'https://other.example' } });
    assert.equal(badOrigin.status, 200, 'served anyway: the browser enforces');
    assert.equal(h(badOrigin.headers, 'access-control-allow-origin'), undefined);

    const exact = await req(strict.port, '/data', { headers: { Origin: 'https://app.example.com' } });
    assert.equal(h(exact.headers, 'access-control-allow-origin'), 'https://app.example.com');
    assert.equal(h(exact.headers, 'access-control-allow-credentials'), 'true');

    const badMethod = await req(open.port, '/del', { method: 'DELETE', headers: { Origin: 'https://foo.example' } });
    assert.equal(badMethod.status, 200);
    assert.equal(h(badMethod.headers, 'access-control-allow-origin'), undefined, 'DELETE is not in allow_methods');
  });

  test('no-op: gw\'s CORS answer replaces the backend\'s; errors and 404s carry CORS headers too', async () => {
    const raw = await req(open.port, '/raw', { headers: { Origin: 'https://foo.example' } });
    assert.equal(raw.status, 200);
    assert.equal(h(raw.headers, 'x-up'), '1');
    assert.equal(h(raw.headers, 'access-control-allow-origin'), '*', 'not the backend\'s https://evil.example');

    const fail = await req(open.port, '/fail', { headers: { Origin: 'https://foo.example' } });
    assert.equal(fail.status, 500);
    assert.equal(h(fail.headers, 'access-control-allow-origin'), '*');

    const missing = await req(open.port, '/missing', { headers: { Origin: 'https://foo.example' } });
    assert.equal(missing.status, 404);
    assert.equal(h(missing.headers, 'access-control-allow-origin'), '*');
    assert.equal(h(missing.headers, 'vary'), 'Origin');
  });

  test('an OPTIONS request that is not a preflight goes to the router (405 on a known path)', async () => {
    const r = await req(open.port, '/data', { method: 'OPTIONS', headers: { Origin: 'https://foo.example' } });
    assert.equal(r.status, 405);
    assert.equal(h(r.headers, 'vary'), 'Origin');
  });
});

describe('security/cors: review regressions', () => {
  // A third gateway: `-d` (the debug endpoint), a small max_url_length, a 10-byte max_payload, a
  // path parameter and a lua-proxy post that sets its own Access-Control-Allow-Origin.
  const ORIGIN = 'https://a.example';
  let gw: Gateway;

  before(async () => {
    const be = [{ host: [backend.url], url_pattern: '/data' }];
    gw = await startGateway(
      {
        version: 3,
        extra_config: {
          'security/cors': { allow_origins: [ORIGIN], allow_methods: ['GET', 'POST'] },
          'gw/server': { max_url_length: 64 },
        },
        endpoints: [
          { endpoint: '/small', method: 'POST', extra_config: { router: { max_payload: 10 } }, backend: be },
          { endpoint: '/x/{id}', backend: be },
          {
            endpoint: '/lua-cors',
            extra_config: { 'modifier/lua-proxy': { post: "local r = response.load(); r:headers('Access-Control-Allow-Origin', 'https://a.example')" } },
            backend: be,
          },
        ],
      },
      { args: ['--workers', '1', '-d'] },
    );
  });

  after(async () => {
    await gw?.stop();
  });

  test("gw's own refusals (413 max_payload, 414 max_url_length, 400 encoded path parameter) carry the CORS headers", async () => {
    const before = hits;
    const cases: [number, () => Promise<ClientResponse>][] = [
      [413, () => req(gw.port, '/small', { method: 'POST', body: 'x'.repeat(100), headers: { Origin: ORIGIN, 'Content-Type': 'text/plain' } })],
      [414, () => req(gw.port, `/x/${'a'.repeat(100)}`, { headers: { Origin: ORIGIN } })],
      [400, () => req(gw.port, '/x/a%2Fb', { headers: { Origin: ORIGIN } })],
    ];
    for (const [status, send] of cases) {
      const r = await send();
      assert.equal(r.status, status, r.text);
      assert.match(String(h(r.headers, 'vary')), /Origin/, `${status}`);
      assert.equal(h(r.headers, 'access-control-allow-origin'), ORIGIN, `${status}`);
    }
    assert.equal(hits, before, 'a refused request reached the backend');
  });

  test('a preflight to /__debug/x is answered as a preflight, not by the debug handler', async () => {
    const r = await req(gw.port, '/__debug/x', { method: 'OPTIONS', headers: preflight('GET', null, ORIGIN) });
    assert.equal(r.status, 204, r.text);
    assert.equal(r.text, '');
    assert.equal(h(r.headers, 'access-control-allow-origin'), ORIGIN);
    assert.ok(h(r.headers, 'access-control-allow-methods'), JSON.stringify(r.headers));
  });

  test('a lua-proxy post setting Access-Control-Allow-Origin: the client gets exactly one value', async () => {
    const r = await rawRequest(gw.port, `GET /lua-cors HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: ${ORIGIN}\r\nConnection: close\r\n\r\n`);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['access-control-allow-origin'], ORIGIN, JSON.stringify(r.headers));
  });
});
