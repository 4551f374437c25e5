// Several backends per endpoint: parallel merge (arrival order, 85 % deadline, partial answers,
// cancellation), error options, and the extra_config.proxy options: sequential, static,
// flatmap_filter, shadow, concurrent_calls (spec §2.4–§2.8).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, h, HOST, req, sendJSON, sleep, startBackend, startGateway } from './helpers/gw.ts';

let backend: Backend;
let gw: Gateway;
let gwMsg: Gateway;
/** url → times the backend saw the client socket close before it answered. */
const cancelled = new Map<string, number>();
let concurrentSeq = 0;

function later(res: http.ServerResponse, url: string, ms: number, data: unknown): void {
  const t = setTimeout(() => sendJSON(res, 200, data), ms);
  res.on('close', () => {
    clearTimeout(t);
    if (!res.writableEnded) cancelled.set(url, (cancelled.get(url) ?? 0) + 1);
  });
}

before(async () => {
  backend = await startBackend((_req, res, rec) => {
    const u = new URL(rec.url, 'http://x');
    switch (u.pathname) {
      case '/a':
        return sendJSON(res, 200, { a: 1, shared: 'A', nested: { from: 'a' } });
      case '/b':
        return later(res, '/b', 80, { b: 2, shared: 'B' });
      case '/c':
        return sendJSON(res, 200, { c: 3 });
      case '/slow':
        return later(res, '/slow', 4000, { slow: true });
      case '/slow2':
        return later(res, '/slow2', 4000, { slow2: true });
      case '/hang':
        return later(res, '/hang', 5000, { hang: true });
      case '/proto':
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end('{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"x":1}},"p":1}');
      case '/e404':
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
        return res.end('nope');
      case '/e500':
        res.writeHead(500, { 'content-type': 'application/json' });
        return res.end('{"err":"boom"}');
      case '/user':
        return sendJSON(res, 200, { id: 7, tags: ['x', 'y'], profile: { slug: 'ann' }, n: 1.5 });
      case '/orders':
        return sendJSON(res, 200, { orders: [u.pathname + u.search] });
      case '/echo':
        return sendJSON(res, 200, { path: rec.url, body: rec.body.toString('utf8'), method: rec.method });
      case '/shadow':
        return sendJSON(res, 200, { shadow: 'must not appear' });
      case '/list':
        return sendJSON(res, 200, { items: [{ id: 1, secret: 's', name: 'one' }, { id: 2, secret: 't', name: 'two' }], extra: [3] });
      case '/more':
        return sendJSON(res, 200, { more: [4, 5] });
      case '/concurrent': {
        const n = ++concurrentSeq;
        // The second of the three parallel calls answers first.
        return later(res, '/concurrent', n % 3 === 2 ? 20 : 1500, { call: n % 3 });
      }
      case '/concurrent-fail':
        res.writeHead(500);
        return res.end();
      default:
        return sendJSON(res, 404, {});
    }
  });
  const host = [backend.url];
  const be = (url_pattern: string, more: Record<string, unknown> = {}) => ({ host, url_pattern, ...more });
  const endpoints = [
    { endpoint: '/merge', backend: [be('/a'), be('/b'), be('/c')] },
    { endpoint: '/partial', timeout: '1s', backend: [be('/a', { group: 'a' }), be('/slow', { group: 's' })] },
    { endpoint: '/all-slow', timeout: '1s', backend: [be('/slow'), be('/slow2')] },
    { endpoint: '/disconnect', timeout: '10s', backend: [be('/a'), be('/hang')] },
    { endpoint: '/proto', backend: [be('/proto'), be('/c')] },
    { endpoint: '/all-failed', backend: [be('/e404'), be('/e500')] },
    { endpoint: '/one-failed', backend: [be('/a'), be('/e500')] },
    {
      endpoint: '/code',
      backend: [be('/e404', { extra_config: { 'backend/http': { return_error_code: true } } })],
    },
    {
      endpoint: '/details',
      backend: [be('/a'), be('/e404', { extra_config: { 'backend/http': { return_error_details: 'b' } } })],
    },
    {
      endpoint: '/seq/{id}',
      extra_config: { proxy: { sequential: true } },
      backend: [be('/user'), be('/orders?user={resp0_id}&tags={resp0_tags}&slug={resp0_profile.slug}&n={resp0_n}'), be('/echo?o={resp1_orders}')],
    },
    {
      endpoint: '/seq-first-fails',
      extra_config: { proxy: { sequential: true } },
      backend: [be('/e500'), be('/echo')],
    },
    {
      endpoint: '/seq-later-fails',
      extra_config: { proxy: { sequential: true } },
      backend: [be('/user', { allow: ['id'] }), be('/e500'), be('/c')],
    },
    {
      endpoint: '/seq-whole',
      extra_config: { proxy: { sequential: true } },
      backend: [be('/c', { group: 'first' }), be('/echo?all={resp0}&none={resp0_missing}', { group: 'second' })],
    },
    {
      endpoint: '/static-always',
      extra_config: { proxy: { static: { strategy: 'always', data: { st: 'x', a: 'static wins' } } } },
      backend: [be('/a'), be('/c')],
    },
    {
      endpoint: '/static-errored',
      extra_config: { proxy: { static: { strategy: 'errored', data: { fallback: true } } } },
      backend: [be('/e500'), be('/e404')],
    },
    {
      endpoint: '/static-errored-ok',
      extra_config: { proxy: { static: { strategy: 'errored', data: { fallback: true } } } },
      backend: [be('/a')],
    },
    {
      endpoint: '/static-incomplete',
      extra_config: { proxy: { static: { strategy: 'incomplete', data: { degraded: true } } } },
      backend: [be('/a'), be('/e500')],
    },
    {
      endpoint: '/static-complete',
      extra_config: { proxy: { static: { strategy: 'complete', data: { degraded: false } } } },
      backend: [be('/a'), be('/e500')],
    },
    {
      endpoint: '/flatmap',
      extra_config: {
        proxy: {
          flatmap_filter: [
            { type: 'del', args: ['items.*.secret'] },
            { type: 'move', args: ['items.*.name', 'items.*.label'] },
            { type: 'append', args: ['more', 'extra'] },
            { type: 'move', args: ['c', 'summary.c'] },
          ],
        },
      },
      backend: [be('/list'), be('/more'), be('/c')],
    },
    {
      endpoint: '/flatmap-single',
      // Endpoint-level flatmap is for several backends only; the backend-level one always runs.
      extra_config: { proxy: { flatmap_filter: [{ type: 'del', args: ['items'] }] } },
      backend: [be('/list', { allow: ['nothing'], extra_config: { proxy: { flatmap_filter: [{ type: 'move', args: ['items.0.name', 'first'] }, { type: 'del', args: ['items', 'extra'] }] } } })],
    },
    {
      endpoint: '/shadow',
      method: 'POST',
      backend: [be('/echo'), be('/shadow', { extra_config: { proxy: { shadow: true } } })],
    },
    { endpoint: '/concurrent', concurrent_calls: 3, backend: [be('/concurrent')] },
    { endpoint: '/concurrent-fail', concurrent_calls: 2, backend: [be('/concurrent-fail')] },
    { endpoint: '/post-merge', method: 'POST', backend: [be('/echo', { group: 'one' }), be('/echo', { group: 'two' })] },
  ];
  gw = await startGateway({ version: 3, endpoints });
  gwMsg = await startGateway({ version: 3, extra_config: { router: { return_error_msg: true } }, endpoints });
});

after(async () => {
  await gw?.stop();
  await gwMsg?.stop();
  await backend?.close();
});

describe('parallel merge', () => {
  test('all backends: shallow merge in arrival order, complete', async () => {
    const r = await req(gw.port, '/merge');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'true');
    // /b answers last, so its `shared` overwrites /a's.
    assert.deepEqual(r.json(), { a: 1, b: 2, c: 3, shared: 'B', nested: { from: 'a' } });
    assert.equal(r.text, '{"a":1,"b":2,"c":3,"nested":{"from":"a"},"shared":"B"}');
  });

  test('a slow backend: partial 200 at 85 % of the timeout, its request cancelled', async () => {
    cancelled.delete('/slow');
    const r = await req(gw.port, '/partial');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.deepEqual(r.json(), { a: { a: 1, shared: 'A', nested: { from: 'a' } } });
    // 85 % of 1 s = 850 ms (before the endpoint timeout itself).
    assert.ok(r.ms >= 830 && r.ms < 990, `answered after ${r.ms} ms`);
    await sleep(100);
    assert.equal(cancelled.get('/slow'), 1, 'the backend saw its request aborted');
  });

  test('every backend too slow: 500 at the merge deadline', async () => {
    const r = await req(gw.port, '/all-slow');
    assert.equal(r.status, 500);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.equal(r.text, '');
    assert.ok(r.ms >= 830 && r.ms < 990, `answered after ${r.ms} ms`);
    const m = await req(gwMsg.port, '/all-slow');
    assert.equal(m.status, 500);
    assert.equal(m.text, 'context deadline exceeded');
  });

  test('a client that leaves cancels the outstanding backend requests', async () => {
    cancelled.delete('/hang');
    const before = backend.requests.filter((r) => r.url === '/hang').length;
    await new Promise<void>((resolve) => {
      const c = http.get({ host: HOST, port: gw.port, path: '/disconnect', agent: false });
      c.on('error', () => resolve());
      setTimeout(() => {
        c.destroy();
        resolve();
      }, 300);
    });
    const t0 = Date.now();
    while (cancelled.get('/hang') !== 1 && Date.now() - t0 < 2000) await sleep(20);
    assert.equal(backend.requests.filter((r) => r.url === '/hang').length, before + 1);
    assert.equal(cancelled.get('/hang'), 1, 'backend request aborted after the client left');
    assert.ok(Date.now() - t0 < 1000);
  });

  test('a backend key __proto__ is data, never a prototype', async () => {
    const r = await req(gw.port, '/proto');
    assert.equal(r.status, 200);
    const body = r.json();
    assert.deepEqual(Object.keys(body).sort(), ['__proto__', 'c', 'constructor', 'p']);
    assert.equal(r.text, '{"__proto__":{"polluted":"yes"},"c":3,"constructor":{"prototype":{"x":1}},"p":1}');
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  test('all failed: 500, empty body; the error text with return_error_msg', async () => {
    const r = await req(gw.port, '/all-failed');
    assert.equal(r.status, 500);
    assert.equal(r.text, '');
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    const m = await req(gwMsg.port, '/all-failed');
    assert.equal(m.status, 500);
    assert.match(m.text, /^invalid status code/);
  });

  test('one failed: 200 with the others, incomplete', async () => {
    const r = await req(gw.port, '/one-failed');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.deepEqual(r.json(), { a: 1, shared: 'A', nested: { from: 'a' } });
  });

  test('return_error_code: the backend status (and body with return_error_msg)', async () => {
    const r = await req(gw.port, '/code');
    assert.equal(r.status, 404);
    assert.equal(r.text, '');
    const m = await req(gwMsg.port, '/code');
    assert.equal(m.status, 404);
    assert.equal(m.text, 'nope');
    assert.equal(h(m.headers, 'content-type'), 'text/plain; charset=utf-8');
  });

  test('return_error_details: error_<alias> object, 200, incomplete', async () => {
    const r = await req(gw.port, '/details');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.deepEqual(r.json().error_b, { http_status_code: 404, http_body: 'nope', http_body_encoding: 'text/plain; charset=utf-8' });
    assert.equal(r.json().a, 1);
  });

  test('a POST body is buffered once and sent to every backend', async () => {
    const r = await req(gw.port, '/post-merge', { method: 'POST', body: '{"x":1}', headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 200);
    const j = r.json();
    assert.equal(j.one.body, '{"x":1}');
    assert.equal(j.two.body, '{"x":1}');
    assert.equal(j.one.method, 'POST');
  });
});

describe('sequential', () => {
  test('{respN_field} values from earlier responses fill later url_patterns', async () => {
    const r = await req(gw.port, '/seq/1');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'true');
    const j = r.json();
    const orders = j.orders[0] as string;
    const q = new URL(orders, 'http://x').searchParams;
    assert.equal(q.get('user'), '7');
    assert.equal(q.get('tags'), 'x,y', 'arrays are joined with commas');
    assert.equal(q.get('slug'), 'ann', 'nested dot paths');
    assert.equal(q.get('n'), '1.5');
    // The third backend used the second one's answer (an array of one string).
    assert.equal(new URL(j.path, 'http://x').searchParams.get('o'), orders);
    assert.equal(j.id, 7);
  });

  test('the first backend failing fails the request', async () => {
    const r = await req(gw.port, '/seq-first-fails');
    assert.equal(r.status, 500);
    assert.equal(backend.requests.filter((x) => x.url === '/echo' && x.method === 'GET').length, 0);
  });

  test('a later failure stops the chain with partial data', async () => {
    const before = backend.requests.filter((x) => x.url === '/c').length;
    const r = await req(gw.port, '/seq-later-fails');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.deepEqual(r.json(), { id: 7 });
    assert.equal(backend.requests.filter((x) => x.url === '/c').length, before, 'the chain stopped');
  });
});

describe('sequential (whole response)', () => {
  test('{respN} is the whole earlier response as JSON; a missing field renders empty', async () => {
    const r = await req(gw.port, '/seq-whole');
    assert.equal(r.status, 200);
    const q = new URL(r.json().second.path, 'http://x').searchParams;
    assert.equal(q.get('all'), '{"first":{"c":3}}');
    assert.equal(q.get('none'), '');
  });
});

describe('static', () => {
  test('always: merged over the backends', async () => {
    const r = await req(gw.port, '/static-always');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'true');
    assert.deepEqual(r.json(), { a: 'static wins', c: 3, nested: { from: 'a' }, shared: 'A', st: 'x' });
  });

  test('errored: a total failure answers 200 with the static data, incomplete', async () => {
    const r = await req(gw.port, '/static-errored');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.deepEqual(r.json(), { fallback: true });
    const ok = await req(gw.port, '/static-errored-ok');
    assert.deepEqual(ok.json(), { a: 1, shared: 'A', nested: { from: 'a' } });
  });

  test('incomplete / complete strategies', async () => {
    const inc = await req(gw.port, '/static-incomplete');
    assert.equal(inc.json().degraded, true);
    const comp = await req(gw.port, '/static-complete');
    assert.equal(comp.json().degraded, undefined);
  });
});

describe('flatmap_filter', () => {
  test('endpoint level over the merged answer: del / move with *, append, nested move', async () => {
    const r = await req(gw.port, '/flatmap');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), {
      items: [{ id: 1, label: 'one' }, { id: 2, label: 'two' }],
      extra: [3, 4, 5],
      summary: { c: 3 },
    });
  });

  test('backend level replaces allow; endpoint level is skipped with one backend', async () => {
    const r = await req(gw.port, '/flatmap-single');
    assert.deepEqual(r.json(), { first: 'one' });
  });
});

describe('shadow and concurrent_calls', () => {
  test('a shadow backend gets the request (and body); its answer is ignored', async () => {
    const before = backend.requests.filter((x) => x.url === '/shadow').length;
    const r = await req(gw.port, '/shadow', { method: 'POST', body: 'hello' });
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'true');
    assert.equal(r.json().shadow, undefined);
    assert.equal(r.json().body, 'hello');
    const t0 = Date.now();
    while (backend.requests.filter((x) => x.url === '/shadow').length === before && Date.now() - t0 < 1000) await sleep(10);
    const shadowReqs = backend.requests.filter((x) => x.url === '/shadow');
    assert.equal(shadowReqs.length, before + 1);
    assert.equal(shadowReqs.at(-1)!.body.toString(), 'hello');
  });

  test('concurrent_calls: N parallel calls, the first success wins, the others are cancelled', async () => {
    concurrentSeq = 0;
    cancelled.delete('/concurrent');
    const r = await req(gw.port, '/concurrent');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { call: 2 });
    assert.ok(r.ms < 1000, `answered after ${r.ms} ms`);
    assert.equal(backend.requests.filter((x) => x.url === '/concurrent').length, 3);
    const t0 = Date.now();
    while ((cancelled.get('/concurrent') ?? 0) < 2 && Date.now() - t0 < 1000) await sleep(10);
    assert.equal(cancelled.get('/concurrent'), 2);
  });

  test('concurrent_calls: all failing → 500', async () => {
    const r = await req(gw.port, '/concurrent-fail');
    assert.equal(r.status, 500);
  });
});
