// JSON endpoint responses: status mapping, gateway headers, cache_ttl, gzip, timeouts,
// unreachable backends (spec §2.1, §2.4, §2.7, §2.8).
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, freePort, h, req, sendJSON, sleep, startBackend, startGateway } from './helpers/gw.ts';

let backend: Backend;
let gw: Gateway;
let gwMsg: Gateway; // router.return_error_msg = true
const slowClosed: { at: number; ended: boolean }[] = [];

before(async () => {
  backend = await startBackend((_req, res, rec) => {
    switch (rec.url) {
      case '/ok':
        return sendJSON(res, 200, { a: 1, b: 'x' }, { 'x-backend-secret': 'leak', 'set-cookie': ['s=1'] });
      case '/created':
        return sendJSON(res, 201, { c: 1 });
      case '/empty':
        return sendJSON(res, 200, {});
      case '/s404':
        return sendJSON(res, 404, { err: 'not found' });
      case '/s204':
        res.writeHead(204);
        return res.end();
      case '/s500':
        res.writeHead(500, { 'content-type': 'text/plain' });
        return res.end('boom');
      case '/html':
        res.writeHead(200, { 'content-type': 'text/html' });
        return res.end('<html>not json</html>');
      case '/gz': {
        const body = zlib.gzipSync(JSON.stringify({ zipped: true, n: [1, 2, 3] }));
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': body.length });
        return res.end(body);
      }
      case '/slow': {
        const t = setTimeout(() => sendJSON(res, 200, { late: true }), 1000);
        res.on('close', () => {
          clearTimeout(t);
          slowClosed.push({ at: Date.now(), ended: res.writableEnded });
        });
        return;
      }
      default:
        return sendJSON(res, 404, {});
    }
  });
  const host = [backend.url];
  const down = `http://127.0.0.1:${await freePort()}`;
  const endpoints = [
    { endpoint: '/ok', backend: [{ host, url_pattern: '/ok' }] },
    { endpoint: '/ttl', cache_ttl: '1h', backend: [{ host, url_pattern: '/ok' }] },
    { endpoint: '/created', backend: [{ host, url_pattern: '/created' }] },
    { endpoint: '/empty', cache_ttl: '1h', backend: [{ host, url_pattern: '/empty' }] },
    { endpoint: '/e404', backend: [{ host, url_pattern: '/s404' }] },
    { endpoint: '/e204', backend: [{ host, url_pattern: '/s204' }] },
    { endpoint: '/e500', cache_ttl: '1h', backend: [{ host, url_pattern: '/s500' }] },
    { endpoint: '/html', backend: [{ host, url_pattern: '/html' }] },
    { endpoint: '/gz', backend: [{ host, url_pattern: '/gz' }] },
    { endpoint: '/slow', timeout: '100ms', backend: [{ host, url_pattern: '/slow' }] },
    { endpoint: '/down', backend: [{ host: [down], url_pattern: '/x' }] },
  ];
  gw = await startGateway({ version: 3, endpoints });
  gwMsg = await startGateway({ version: 3, extra_config: { router: { return_error_msg: true } }, endpoints });
});
after(async () => {
  await gw?.stop();
  await gwMsg?.stop();
  await backend?.close();
});

const VERSION = /^Version \S+/;

describe('json encoding, single backend', () => {
  test('200 → 200 JSON with X-Krakend and X-Krakend-Completed: true', async () => {
    const r = await req(gw.port, '/ok');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'content-type'), 'application/json; charset=utf-8');
    assert.match(h(r.headers, 'x-krakend') ?? '', VERSION);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'true');
    assert.deepEqual(r.json(), { a: 1, b: 'x' });
    assert.equal(h(r.headers, 'cache-control'), undefined, 'no Cache-Control without cache_ttl');
  });

  test('backend response headers are not passed through (json)', async () => {
    const r = await req(gw.port, '/ok');
    assert.equal(h(r.headers, 'x-backend-secret'), undefined);
    assert.equal(r.headers['set-cookie'], undefined);
  });

  test('cache_ttl "1h" → Cache-Control: public, max-age=3600', async () => {
    const r = await req(gw.port, '/ttl');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'cache-control'), 'public, max-age=3600');
    assert.equal(h(r.headers, 'x-krakend-completed'), 'true');
  });

  test('201 counts as success → client 200', async () => {
    const r = await req(gw.port, '/created');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { c: 1 });
  });

  test('backend {} → 200 {}, X-Krakend-Completed: false, no Cache-Control', async () => {
    const r = await req(gw.port, '/empty');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), {});
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.equal(h(r.headers, 'cache-control'), undefined);
  });

  for (const code of [404, 204, 500]) {
    test(`backend ${code} → 500 with an empty body`, async () => {
      const r = await req(gw.port, `/e${code}`);
      assert.equal(r.status, 500);
      assert.equal(r.text, '');
      assert.match(h(r.headers, 'x-krakend') ?? '', VERSION);
      assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
      assert.equal(h(r.headers, 'cache-control'), undefined, 'no Cache-Control on errors even with cache_ttl');
    });
  }

  test('backend 200 with a non-JSON body → 500', async () => {
    const r = await req(gw.port, '/html');
    assert.equal(r.status, 500);
    assert.equal(r.text, '');
  });

  test('router return_error_msg: backend 404 → 500 with "invalid status code" in the body', async () => {
    const r = await req(gwMsg.port, '/e404');
    assert.equal(r.status, 500);
    assert.match(r.text, /invalid status code/);
    assert.match(h(r.headers, 'content-type') ?? '', /^text\/plain/);
  });

  test('gzip-compressed backend JSON is decoded', async () => {
    const r = await req(gw.port, '/gz');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { zipped: true, n: [1, 2, 3] });
    assert.equal(h(r.headers, 'content-encoding'), undefined);
  });

  test('timeout "100ms" with a 1 s backend → 500 quickly, backend request aborted', async () => {
    slowClosed.length = 0;
    const t0 = Date.now();
    const r = await req(gw.port, '/slow');
    assert.equal(r.status, 500);
    assert.equal(r.text, '');
    assert.ok(r.ms < 900, `answered after ${r.ms} ms; the endpoint timeout is 100 ms`);
    for (let i = 0; i < 30 && slowClosed.length === 0; i++) await sleep(50);
    assert.equal(slowClosed.length, 1, 'backend connection should be closed by the gateway');
    assert.equal(slowClosed[0].ended, false, 'backend saw the close before it answered');
    assert.ok(slowClosed[0].at - t0 < 900, `backend saw the close after ${slowClosed[0].at - t0} ms`);
  });

  test('backend down (connection refused) → 500', async () => {
    const r = await req(gw.port, '/down');
    assert.equal(r.status, 500);
    assert.equal(r.text, '');
    assert.match(h(r.headers, 'x-krakend') ?? '', VERSION);
  });

  test('the gateway keeps serving after errors', async () => {
    const r = await req(gw.port, '/ok');
    assert.equal(r.status, 200);
  });
});
