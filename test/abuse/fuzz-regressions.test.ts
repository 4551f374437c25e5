// Defects bench/fuzz.ts found, each as a regression over real sockets.
//
// 1. Conflicting Content-Length values reached the router's own answers: the 404/405 fallback,
//    /__health, /__debug and /__echo never looked at the framing (only endpoint handlers did,
//    issue 10 #20). uWS frames such a body by the first value and serves the bytes after it as the
//    next request — `Content-Length: 0` + `Content-Length: 37` + `GET /__health…` got two answers,
//    so a front proxy that frames by the other value is desynchronised (request smuggling).
//    Found by fuzz seed 7 (`--focus uploads`), case 7:14526. Every answer gw writes itself now
//    refuses ambiguous framing like an endpoint does: 400 + Connection: close, nothing behind it
//    handled.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Gateway, rawRequest, startBackend, startGateway, type Backend } from '../helpers/gw.ts';
import { assertSurvived, rawExchange, workerPids } from './harness.ts';

let backend: Backend;

before(async () => {
  backend = await startBackend();
});

after(async () => {
  await backend?.close();
});

describe('fuzz 7:14526: ambiguous framing on the paths gw answers itself', () => {
  let plain: Gateway;
  let cors: Gateway;
  let pids: number[];
  before(async () => {
    const base = { version: 3, echo_endpoint: true, endpoints: [{ endpoint: '/only-get', backend: [{ host: [backend.url], url_pattern: '/x' }] }] };
    plain = await startGateway(base, { args: ['-d'] });
    cors = await startGateway(
      { ...base, extra_config: { 'security/cors': { allow_origins: ['https://app.example'], allow_methods: ['GET', 'POST'] } } },
      { args: ['-d'] },
    );
    pids = workerPids(plain);
  });
  after(async () => {
    await plain?.stop('SIGKILL');
    await cors?.stop('SIGKILL');
  });

  const SMUGGLED = 'GET /__health HTTP/1.1\r\nHost: x\r\n\r\n';
  const targets: [string, string, string][] = [
    ['404 fallback', 'POST', '/nope'],
    ['405 fallback', 'PUT', '/only-get'],
    ['/__health', 'GET', '/__health'],
    ['/__debug', 'POST', '/__debug/x'],
    ['/__echo', 'POST', '/__echo/x'],
  ];
  for (const [name, method, path] of targets) {
    test(`${name}: conflicting Content-Length values → 400 + Connection: close`, async () => {
      for (const gw of [plain, cors]) {
        const r = await rawRequest(gw.port, `${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`);
        assert.equal(r.status, 400, `${r.statusLine}`);
        assert.equal(r.headers['connection'], 'close');
        assert.match(r.body.toString(), /conflicting Content-Length values/);
      }
    });

    test(`${name}: a request hidden behind Content-Length 0 + N is never answered`, async () => {
      for (const gw of [plain, cors]) {
        const r = await rawExchange(gw.port, `${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`, 1500);
        const answers = [...r.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
        assert.ok(answers.every((s) => s === '400'), `only a 400 (or nothing) may come back, got ${answers.join(',')}:\n${r.text}`);
        assert.ok(r.closed, 'the connection is closed');
      }
    });
  }

  test('a CORS preflight with conflicting Content-Length values is refused the same way', async () => {
    const r = await rawRequest(
      cors.port,
      'OPTIONS /only-get HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
    );
    assert.equal(r.status, 400);
    assert.equal(r.headers['connection'], 'close');
  });

  test('well-framed requests to the same paths are unchanged', async () => {
    assert.equal((await rawRequest(plain.port, 'POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc')).status, 404);
    assert.equal((await rawRequest(plain.port, 'PUT /only-get HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc')).status, 405);
    assert.equal((await rawRequest(plain.port, 'POST /__echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc')).status, 200);
    assert.equal((await rawRequest(plain.port, 'POST /__debug/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n')).status, 200);
    await assertSurvived(plain, pids);
  });
});
