// /__health, /__debug, /__echo, start-up logs and graceful shutdown (spec §3, §4).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, freePort, h, req, sendJSON, sleep, startBackend, startGateway } from './helpers/gw.ts';

let backend: Backend;
let plain: Gateway; // no debug, no echo
let withFlag: Gateway; // run -d
let withCfg: Gateway; // debug_endpoint + echo_endpoint in the config

before(async () => {
  backend = await startBackend(async (_req, res, rec) => {
    if (rec.url === '/slow') await sleep(300);
    sendJSON(res, 200, { ok: true });
  });
  const endpoints = [{ endpoint: '/users/{id}', backend: [{ host: [backend.url], url_pattern: '/u/{id}' }] }];
  [plain, withFlag, withCfg] = await Promise.all([
    startGateway({ version: 3, endpoints }),
    startGateway({ version: 3, endpoints }, { args: ['-d'] }),
    startGateway({ version: 3, debug_endpoint: true, echo_endpoint: true, endpoints }),
  ]);
});
after(async () => {
  await Promise.all([plain?.stop(), withFlag?.stop(), withCfg?.stop()]);
  await backend?.close();
});

describe('/__health', () => {
  test('200 JSON with exactly agents, now, status "ok"', async () => {
    const r = await req(plain.port, '/__health');
    assert.equal(r.status, 200);
    assert.match(h(r.headers, 'content-type') ?? '', /^application\/json/);
    const j = r.json();
    assert.deepEqual(Object.keys(j).sort(), ['agents', 'now', 'status']);
    assert.equal(typeof j.agents, 'object');
    assert.ok(j.agents !== null && !Array.isArray(j.agents));
    assert.equal(typeof j.now, 'string');
    assert.ok(j.now.length > 0);
    assert.equal(j.status, 'ok');
  });
});

describe('/__debug', () => {
  test('404 without -d / debug_endpoint', async () => {
    const r = await req(plain.port, '/__debug/anything');
    assert.equal(r.status, 404);
  });

  test('run -d → 200 {"message":"pong"}', async () => {
    const r = await req(withFlag.port, '/__debug/anything');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { message: 'pong' });
  });

  test('debug_endpoint: true → 200 {"message":"pong"}, any method, nested path', async () => {
    for (const [method, path] of [
      ['GET', '/__debug/a/b/c?x=1'],
      ['POST', '/__debug/anything'],
      ['PUT', '/__debug/x'],
      ['DELETE', '/__debug/'],
    ]) {
      const r = await req(withCfg.port, path, { method, body: method === 'POST' || method === 'PUT' ? '{"a":1}' : undefined });
      assert.equal(r.status, 200, `${method} ${path}`);
      assert.deepEqual(r.json(), { message: 'pong' });
    }
  });
});

describe('/__echo', () => {
  test('404 without echo_endpoint (not enabled by -d)', async () => {
    assert.equal((await req(plain.port, '/__echo/x')).status, 404);
    assert.equal((await req(withFlag.port, '/__echo/x')).status, 404);
  });

  test('echo_endpoint: true → req_uri, req_method, req_querystring', async () => {
    const r = await req(withCfg.port, '/__echo/x?q=1');
    assert.equal(r.status, 200);
    const j = r.json();
    assert.equal(j.req_uri, '/__echo/x?q=1');
    assert.equal(j.req_method, 'GET');
    assert.deepEqual(j.req_querystring, { q: ['1'] });
  });

  test('echo reports POST body and method', async () => {
    const r = await req(withCfg.port, '/__echo/y', { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } });
    assert.equal(r.status, 200);
    const j = r.json();
    assert.equal(j.req_method, 'POST');
    assert.equal(j.req_body, 'hello');
  });
});

describe('logs', () => {
  test('Listening on port and [ENDPOINT: /users/:id] Building the proxy pipe', async () => {
    // pino may flush asynchronously: give it a moment
    const want = [
      new RegExp(`Listening on port: ${plain.port}\\b`),
      /\[ENDPOINT: \/users\/(:id|\{id\})\] Building the proxy pipe/,
    ];
    for (let i = 0; i < 40 && !want.every((re) => re.test(plain.output())); i++) await sleep(50);
    for (const re of want) assert.match(plain.output(), re);
  });
});

describe('CLI flags and log level', () => {
  test('run -p PORT overrides the config port', async () => {
    const cfgPort = await freePort();
    const flagPort = await freePort();
    const gw = await startGateway(
      { version: 3, port: cfgPort, endpoints: [{ endpoint: '/x', backend: [{ host: [backend.url], url_pattern: '/x' }] }] },
      { args: ['-p', String(flagPort)], listenPort: flagPort },
    );
    try {
      assert.equal((await req(flagPort, '/__health')).status, 200);
      await assert.rejects(req(cfgPort, '/__health', { timeoutMs: 1000 }), 'the config port must not be used');
    } finally {
      await gw.stop('SIGKILL');
    }
  });

  test('telemetry/logging level ERROR hides INFO start-up lines; -d does not change the level', async () => {
    const gw = await startGateway(
      {
        version: 3,
        extra_config: { 'telemetry/logging': { level: 'ERROR', stdout: true } },
        endpoints: [{ endpoint: '/users/{id}', backend: [{ host: [backend.url], url_pattern: '/u/{id}' }] }],
      },
      { args: ['-d'] },
    );
    try {
      const r = await req(gw.port, '/__debug/x');
      assert.equal(r.status, 200, '-d still enables /__debug/');
      await sleep(300);
      assert.doesNotMatch(gw.output(), /Listening on port/);
      assert.doesNotMatch(gw.output(), /Building the proxy pipe/);
    } finally {
      await gw.stop('SIGKILL');
    }
  });
});

describe('shutdown', () => {
  test('SIGTERM: in-flight request completes with 200, process exits 0, port closed', async () => {
    const backendSlow = await startBackend(async (_req, res) => {
      await sleep(300);
      sendJSON(res, 200, { slow: true });
    });
    const gw = await startGateway({
      version: 3,
      endpoints: [{ endpoint: '/slow', backend: [{ host: [backendSlow.url], url_pattern: '/slow' }] }],
    });
    try {
      const pending = req(gw.port, '/slow');
      for (let i = 0; i < 50 && backendSlow.requests.length === 0; i++) await sleep(10);
      assert.equal(backendSlow.requests.length, 1, 'request should be in flight at the backend');
      const stopped = gw.stop('SIGTERM');
      const r = await pending;
      assert.equal(r.status, 200);
      assert.deepEqual(r.json(), { slow: true });
      const { code, signal } = await stopped;
      assert.equal(signal, null, `killed by signal ${signal}\n${gw.output()}`);
      assert.equal(code, 0, gw.output());
      await assert.rejects(req(gw.port, '/__health', { timeoutMs: 1000 }), 'port should be closed after shutdown');
    } finally {
      await gw.stop('SIGKILL');
      await backendSlow.close();
    }
  });

  test('SIGINT: process exits 0', async () => {
    const gw = await startGateway({
      version: 3,
      endpoints: [{ endpoint: '/x', backend: [{ host: [backend.url], url_pattern: '/x' }] }],
    });
    const { code, signal } = await gw.stop('SIGINT');
    assert.equal(signal, null);
    assert.equal(code, 0, gw.output());
  });
});
