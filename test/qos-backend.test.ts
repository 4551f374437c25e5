// Backend QoS over real sockets: `qos/circuit-breaker` (krakend-circuitbreaker over gobreaker) and
// `qos/http-cache` (krakend-httpcache). One gw process per namespace, one worker each (breaker
// state and cache entries are per worker process), loopback backends that count what they see.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import {
  type Backend,
  type Gateway,
  HOST,
  req,
  runCli,
  sendJSON,
  sleep,
  startBackend,
  startGateway,
  writeConfig,
} from './helpers/gw.ts';
import { CircuitBreaker, EXCLUDED, FAILURE, parseBreakerConfig, SUCCESS } from '../core/qos/breaker.js';

const ONE_WORKER = { 'gw/server': { workers: 1 } };

/** Waits (bounded) for a line in the gateway's output. */
async function logLine(g: Gateway, re: RegExp, ms = 2000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (re.test(g.output())) return true;
    await sleep(20);
  }
  return re.test(g.output());
}

/** Sends a GET and closes the connection after `ms`, before the answer. */
function hangUp(port: number, path: string, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const r = http.get({ host: HOST, port, path, agent: false });
    r.on('response', () => assert.fail('answered before the client left'));
    r.on('error', () => {});
    setTimeout(() => {
      r.destroy();
      resolve();
    }, ms);
  });
}

/** Requests the backend saw on `path` (without the query). */
function seen(b: Backend, path: string): number {
  return b.requests.filter((r) => new URL(r.url, 'http://x').pathname === path).length;
}

// ---------------------------------------------------------------------------
// qos/circuit-breaker

test('the breaker state machine (fake clock): interval reset, generations, a cancelled probe frees its slot', () => {
  let t = 1000;
  const changes: string[] = [];
  const cfg = parseBreakerConfig({ max_errors: 1, timeout: 2, interval: 10, name: 'x' }, 'test')!;
  const cb = new CircuitBreaker(cfg, (n, f, to) => changes.push(`${n}:${f}->${to}`), () => t);
  const call = (o: typeof SUCCESS | typeof FAILURE | typeof EXCLUDED) => cb.after(cb.before() as number, o);
  call(FAILURE);
  call(SUCCESS); // resets the consecutive count
  call(FAILURE);
  assert.equal(cb.current(), 'closed');
  call(FAILURE);
  assert.equal(cb.current(), 'open');
  assert.equal((cb.before() as Error).message, 'circuit breaker is open');
  t += 2001;
  const probe = cb.before();
  assert.equal(typeof probe, 'number');
  assert.equal((cb.before() as Error).message, 'too many requests');
  cb.after(probe as number, EXCLUDED);
  call(FAILURE); // the slot was free again: this probe fails → open
  assert.equal(cb.current(), 'open');
  t += 2001;
  call(SUCCESS);
  assert.equal(cb.current(), 'closed');
  call(FAILURE);
  t += 10_001; // the interval resets the counts
  call(FAILURE);
  assert.equal(cb.current(), 'closed');
  const old = cb.before() as number;
  call(FAILURE); // two in a row → open
  cb.after(old, SUCCESS); // from an older generation: ignored
  assert.equal(cb.current(), 'open');
  assert.deepEqual(changes, ['x:closed->open', 'x:open->half-open', 'x:half-open->open', 'x:open->half-open', 'x:half-open->closed', 'x:closed->open']);
  assert.equal(parseBreakerConfig({}, 'test'), null);
  assert.equal(parseBreakerConfig({ max_errors: 2 }, 'test')!.timeoutMs, 60_000);
  assert.throws(() => parseBreakerConfig({ maxErrors: 1 }, 'test'), /unknown key "maxErrors"/);
});

describe('qos/circuit-breaker', () => {
  let backend: Backend;
  let gw: Gateway;
  /** How each backend path answers now. */
  const mode: Record<string, 'ok' | 'fail' | 'reset' | 'slow' | 'alternate'> = {};
  let alternate = 0;

  before(async () => {
    backend = await startBackend(async (req, res, rec) => {
      const path = new URL(rec.url, 'http://x').pathname;
      switch (mode[path] ?? 'ok') {
        case 'fail':
          return sendJSON(res, 500, { error: 'down' });
        case 'reset':
          req.socket.resetAndDestroy();
          return;
        case 'slow':
          await sleep(400);
          if (!res.destroyed) sendJSON(res, 200, { slow: true });
          return;
        case 'alternate':
          // Every other call is slow: with concurrent_calls 2 it loses and is cancelled.
          if (++alternate % 2 === 0) await sleep(300);
          if (!res.destroyed) sendJSON(res, 200, { ok: path });
          return;
        default:
          return sendJSON(res, 200, { ok: path });
      }
    });
    const host = [backend.url];
    const cb = (name: string, maxErrors: number, extra: Record<string, unknown> = {}) => ({
      'qos/circuit-breaker': { name, interval: 60, timeout: 1, max_errors: maxErrors, log_status_change: true, ...extra },
    });
    gw = await startGateway({
      version: 3,
      extra_config: ONE_WORKER,
      endpoints: [
        { endpoint: '/status', backend: [{ host, url_pattern: '/status', extra_config: cb('status-cb', 2) }] },
        { endpoint: '/reset', backend: [{ host, url_pattern: '/reset', extra_config: cb('reset-cb', 1) }] },
        {
          endpoint: '/noop',
          output_encoding: 'no-op',
          backend: [{ host, url_pattern: '/noop', encoding: 'no-op', extra_config: cb('noop-cb', 0) }],
        },
        {
          endpoint: '/noop-500',
          output_encoding: 'no-op',
          backend: [{ host, url_pattern: '/noop-500', encoding: 'no-op', extra_config: cb('noop-500-cb', 0) }],
        },
        { endpoint: '/cancel', timeout: '3s', backend: [{ host, url_pattern: '/cancel', extra_config: cb('cancel-cb', 0) }] },
        { endpoint: '/concurrent', concurrent_calls: 2, backend: [{ host, url_pattern: '/concurrent', extra_config: cb('concurrent-cb', 0) }] },
        { endpoint: '/plain', backend: [{ host, url_pattern: '/plain' }] },
      ],
    });
  });

  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  test('a decoding backend answering 500: opens after max_errors+1 failures, refuses without a connection, half-open probe re-opens on failure and closes on success', async () => {
    mode['/status'] = 'fail';
    for (let i = 0; i < 3; i++) assert.equal((await req(gw.port, '/status')).status, 500);
    assert.equal(seen(backend, '/status'), 3);
    assert.ok(await logLine(gw, /\[CB\] Circuit breaker named 'status-cb' went from 'closed' to 'open'/), gw.output());

    // Open: fails at once, the backend sees nothing.
    for (let i = 0; i < 3; i++) {
      const r = await req(gw.port, '/status');
      assert.equal(r.status, 500);
      assert.ok(r.ms < 200, `refused in ${r.ms} ms`);
    }
    assert.equal(seen(backend, '/status'), 3);
    assert.ok(await logLine(gw, /circuit breaker is open/), gw.output());

    // After `timeout`, one probe goes through; it fails: open again, and refusing.
    await sleep(1100);
    assert.equal((await req(gw.port, '/status')).status, 500);
    assert.equal(seen(backend, '/status'), 4);
    assert.ok(await logLine(gw, /named 'status-cb' went from 'open' to 'half-open'/), gw.output());
    assert.ok(await logLine(gw, /named 'status-cb' went from 'half-open' to 'open'/), gw.output());
    assert.equal((await req(gw.port, '/status')).status, 500);
    assert.equal(seen(backend, '/status'), 4);

    // The backend is fixed: the next probe succeeds and closes the breaker.
    mode['/status'] = 'ok';
    await sleep(1100);
    const probe = await req(gw.port, '/status');
    assert.equal(probe.status, 200);
    assert.deepEqual(probe.json(), { ok: '/status' });
    assert.ok(await logLine(gw, /named 'status-cb' went from 'half-open' to 'closed'/), gw.output());
    for (let i = 0; i < 3; i++) assert.equal((await req(gw.port, '/status')).status, 200);
    assert.equal(seen(backend, '/status'), 8);
  });

  test('transport errors (connection reset) count as failures', async () => {
    mode['/reset'] = 'reset';
    for (let i = 0; i < 2; i++) assert.equal((await req(gw.port, '/reset')).status, 500);
    const calls = seen(backend, '/reset');
    assert.equal(calls, 2);
    assert.ok(await logLine(gw, /named 'reset-cb' went from 'closed' to 'open'/), gw.output());
    assert.equal((await req(gw.port, '/reset')).status, 500);
    assert.equal(seen(backend, '/reset'), calls, 'no connection attempt while open');
  });

  test('a no-op endpoint: transport failures open it, a streamed answer after the timeout closes it', async () => {
    mode['/noop'] = 'reset';
    assert.equal((await req(gw.port, '/noop')).status, 500);
    assert.equal(seen(backend, '/noop'), 1);
    assert.ok(await logLine(gw, /named 'noop-cb' went from 'closed' to 'open'/), gw.output());
    assert.equal((await req(gw.port, '/noop')).status, 500);
    assert.equal(seen(backend, '/noop'), 1, 'refused before any backend request');

    mode['/noop'] = 'ok';
    await sleep(1100);
    const r = await req(gw.port, '/noop');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { ok: '/noop' });
    assert.ok(await logLine(gw, /named 'noop-cb' went from 'half-open' to 'closed'/), gw.output());
    assert.equal((await req(gw.port, '/noop')).status, 200);
    assert.equal(seen(backend, '/noop'), 3);
  });

  test('a no-op endpoint streams a backend 500 as an answer, which is not a failure', async () => {
    mode['/noop-500'] = 'fail';
    for (let i = 0; i < 3; i++) {
      const r = await req(gw.port, '/noop-500');
      assert.equal(r.status, 500);
      assert.deepEqual(r.json(), { error: 'down' });
    }
    assert.equal(seen(backend, '/noop-500'), 3);
    assert.doesNotMatch(gw.output(), /noop-500-cb' went from/);
  });

  test('a client that goes away does not count as a failure', async () => {
    mode['/cancel'] = 'slow';
    await hangUp(gw.port, '/cancel', 100);
    await sleep(100);
    assert.equal(seen(backend, '/cancel'), 1);
    mode['/cancel'] = 'ok';
    // max_errors 0: had the cancelled call counted, this one would be refused.
    const r = await req(gw.port, '/cancel');
    assert.equal(r.status, 200);
    assert.equal(seen(backend, '/cancel'), 2);
    assert.doesNotMatch(gw.output(), /cancel-cb' went from/);
  });

  test('concurrent_calls: the calls that lose to a complete answer are cancelled, not failed', async () => {
    mode['/concurrent'] = 'alternate';
    // max_errors 0: one counted loser would open the breaker and fail the next request.
    for (let i = 0; i < 3; i++) assert.equal((await req(gw.port, '/concurrent')).status, 200);
    // (A loser still connecting when the winner answered never reaches the backend.)
    assert.ok(seen(backend, '/concurrent') >= 3);
    assert.doesNotMatch(gw.output(), /concurrent-cb' went from/);
  });

  test('a backend without the namespace is untouched', async () => {
    assert.equal((await req(gw.port, '/plain')).status, 200);
  });
});

// ---------------------------------------------------------------------------
// qos/http-cache

describe('qos/http-cache', () => {
  let backend: Backend;
  let gw: Gateway;
  const counts = new Map<string, number>();
  const BIG = Buffer.alloc(10_000);
  for (let i = 0; i < BIG.length; i++) BIG[i] = (i * 7) % 251;

  before(async () => {
    backend = await startBackend(async (req, res, rec) => {
      const url = new URL(rec.url, 'http://x');
      const path = url.pathname;
      const n = (counts.get(path) ?? 0) + 1;
      counts.set(path, n);
      if (path.startsWith('/lru/') || path === '/max-age' || path === '/shared' || path === '/own') {
        return sendJSON(res, 200, { path, n }, { 'cache-control': 'max-age=60' });
      }
      switch (path) {
        case '/no-store':
          return sendJSON(res, 200, { n }, { 'cache-control': 'no-store' });
        case '/private':
          return sendJSON(res, 200, { n }, { 'cache-control': 'private, max-age=60' });
        case '/short':
          return sendJSON(res, 200, { n }, { 'cache-control': 'max-age=1' });
        case '/vary':
          return sendJSON(res, 200, { accept: req.headers.accept ?? null, n }, { 'cache-control': 'max-age=60', vary: 'Accept' });
        case '/etag':
          if (req.headers['if-none-match'] === '"v1"') {
            res.writeHead(304, { etag: '"v1"', 'cache-control': 'no-cache' });
            res.end();
            return;
          }
          return sendJSON(res, 200, { n, v: 1 }, { 'cache-control': 'no-cache', etag: '"v1"' });
        case '/big':
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG.length, 'cache-control': 'max-age=60' });
          res.end(BIG);
          return;
        case '/big-chunked': {
          // No Content-Length: gw learns the size only while it streams.
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'max-age=60' });
          for (let i = 0; i < BIG.length; i += 1000) {
            res.write(BIG.subarray(i, i + 1000));
            await sleep(1);
          }
          res.end();
          return;
        }
        case '/abort':
          if (n === 1) {
            // Headers and a tenth of the announced body, then a reset.
            res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 1000, 'cache-control': 'max-age=60' });
            res.write(Buffer.alloc(100, 0x61));
            await sleep(30);
            req.socket.resetAndDestroy();
            return;
          }
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 1000, 'cache-control': 'max-age=60' });
          res.end(Buffer.alloc(1000, 0x62));
          return;
        default:
          return sendJSON(res, 404, { path });
      }
    });
    const host = [backend.url];
    const cached = (path: string, cfg: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => ({
      endpoint: path,
      ...extra,
      backend: [{ host, url_pattern: path, ...(extra.output_encoding === 'no-op' ? { encoding: 'no-op' } : {}), extra_config: { 'qos/http-cache': cfg } }],
    });
    const noop = { output_encoding: 'no-op' };
    gw = await startGateway({
      version: 3,
      extra_config: ONE_WORKER,
      endpoints: [
        cached('/max-age'),
        cached('/no-store'),
        cached('/private'),
        cached('/short'),
        cached('/vary', {}, { input_headers: ['Accept'] }),
        cached('/etag'),
        cached('/lru/{id}', { max_items: 2 }),
        cached('/big', { max_size: 4096 }, noop),
        cached('/big-chunked', { max_size: 4096 }, noop),
        cached('/abort', {}, noop),
        // The same backend URL from two endpoints: one cache when shared, one each otherwise.
        { endpoint: '/s1', backend: [{ host, url_pattern: '/shared', extra_config: { 'qos/http-cache': { shared: true } } }] },
        { endpoint: '/s2', backend: [{ host, url_pattern: '/shared', extra_config: { 'qos/http-cache': { shared: true } } }] },
        { endpoint: '/o1', backend: [{ host, url_pattern: '/own', extra_config: { 'qos/http-cache': {} } }] },
        { endpoint: '/o2', backend: [{ host, url_pattern: '/own', extra_config: { 'qos/http-cache': {} } }] },
        // A no-op endpoint on the same URL as /max-age, with its own cache.
        { endpoint: '/n-max-age', output_encoding: 'no-op', backend: [{ host, url_pattern: '/max-age', encoding: 'no-op', extra_config: { 'qos/http-cache': {} } }] },
      ],
    });
  });

  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  test('max-age=60: the second GET is a hit (decoding endpoint)', async () => {
    const a = await req(gw.port, '/max-age');
    const b = await req(gw.port, '/max-age');
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.deepEqual(a.json(), { path: '/max-age', n: 1 });
    assert.deepEqual(b.json(), { path: '/max-age', n: 1 });
    assert.equal(seen(backend, '/max-age'), 1);
  });

  test('a no-op endpoint serves hits with the stored status, headers and body, and Age', async () => {
    const before = seen(backend, '/max-age');
    const a = await req(gw.port, '/n-max-age');
    const b = await req(gw.port, '/n-max-age');
    assert.equal(seen(backend, '/max-age'), before + 1);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(b.text, a.text);
    assert.equal(b.headers['content-type'], 'application/json');
    assert.equal(b.headers['cache-control'], 'max-age=60');
    assert.match(String(b.headers['age']), /^\d+$/);
    assert.equal(a.headers['age'], undefined, 'a miss has no Age');
    assert.equal(b.headers['x-from-cache'], undefined, 'KrakenD marks no hit');
  });

  test('no-store and private answers are never stored', async () => {
    for (let i = 1; i <= 3; i++) assert.deepEqual((await req(gw.port, '/no-store')).json(), { n: i });
    assert.equal(seen(backend, '/no-store'), 3);
    for (let i = 1; i <= 2; i++) assert.deepEqual((await req(gw.port, '/private')).json(), { n: i });
    assert.equal(seen(backend, '/private'), 2);
  });

  test('Vary: Accept is honoured', async () => {
    const json = { accept: 'application/json' };
    const text = { accept: 'text/plain' };
    assert.deepEqual((await req(gw.port, '/vary', { headers: json })).json(), { accept: 'application/json', n: 1 });
    assert.deepEqual((await req(gw.port, '/vary', { headers: json })).json(), { accept: 'application/json', n: 1 });
    assert.equal(seen(backend, '/vary'), 1);
    // Another Accept never gets the stored variant.
    assert.deepEqual((await req(gw.port, '/vary', { headers: text })).json(), { accept: 'text/plain', n: 2 });
    assert.deepEqual((await req(gw.port, '/vary', { headers: text })).json(), { accept: 'text/plain', n: 2 });
    assert.equal(seen(backend, '/vary'), 2);
  });

  test('an expired entry is fetched again', async () => {
    assert.deepEqual((await req(gw.port, '/short')).json(), { n: 1 });
    assert.deepEqual((await req(gw.port, '/short')).json(), { n: 1 });
    await sleep(1100);
    assert.deepEqual((await req(gw.port, '/short')).json(), { n: 2 });
    assert.equal(seen(backend, '/short'), 2);
  });

  test('a stale entry with an ETag is revalidated: a 304 serves the stored body', async () => {
    assert.deepEqual((await req(gw.port, '/etag')).json(), { n: 1, v: 1 });
    const r = await req(gw.port, '/etag');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { n: 1, v: 1 });
    assert.equal(seen(backend, '/etag'), 2);
    const last = backend.requests.filter((x) => x.url === '/etag').at(-1)!;
    assert.equal(last.headers['if-none-match'], '"v1"');
  });

  test('max_items bounds the LRU: the least recently used entry is fetched again', async () => {
    for (const id of ['1', '2', '3']) assert.equal((await req(gw.port, `/lru/${id}`)).status, 200);
    assert.deepEqual((await req(gw.port, '/lru/3')).json(), { path: '/lru/3', n: 1 });
    assert.deepEqual((await req(gw.port, '/lru/1')).json(), { path: '/lru/1', n: 2 });
    assert.equal(seen(backend, '/lru/1'), 2);
    assert.equal(seen(backend, '/lru/2'), 1);
    assert.equal(seen(backend, '/lru/3'), 1);
  });

  test('a body larger than max_size streams through intact and is never stored', async () => {
    for (const path of ['/big', '/big-chunked']) {
      for (let i = 0; i < 2; i++) {
        const r = await req(gw.port, path);
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(BIG), `${path}: ${r.body.length} bytes`);
      }
      assert.equal(seen(backend, path), 2, path);
    }
  });

  test('an answer cut mid-body is not stored: the next request goes to the backend', async () => {
    await assert.rejects(req(gw.port, '/abort'));
    const b = await req(gw.port, '/abort');
    assert.equal(b.status, 200);
    assert.ok(b.body.equals(Buffer.alloc(1000, 0x62)));
    const c = await req(gw.port, '/abort');
    assert.ok(c.body.equals(Buffer.alloc(1000, 0x62)));
    assert.match(String(c.headers['age']), /^\d+$/, 'the third answer is a hit');
    assert.equal(seen(backend, '/abort'), 2);
  });

  test('shared: true is one cache across backends; without it each backend has its own', async () => {
    assert.deepEqual((await req(gw.port, '/s1')).json(), { path: '/shared', n: 1 });
    assert.deepEqual((await req(gw.port, '/s2')).json(), { path: '/shared', n: 1 });
    assert.equal(seen(backend, '/shared'), 1);
    await req(gw.port, '/o1');
    await req(gw.port, '/o2');
    assert.equal(seen(backend, '/own'), 2);
  });
});

// ---------------------------------------------------------------------------
// gw check

describe('gw check', () => {
  const config = (ns: string, value: unknown) =>
    writeConfig({ version: 3, endpoints: [{ endpoint: '/x', backend: [{ host: ['http://127.0.0.1:8080'], url_pattern: '/y', extra_config: { [ns]: value } }] }] });

  test('rejects bad values, naming the place', async () => {
    const cases: [string, unknown, RegExp][] = [
      ['qos/circuit-breaker', { max_errors: -1 }, /endpoint \/x, backend 0 \(\/y\): "qos\/circuit-breaker" max_errors must be a non-negative integer/],
      ['qos/circuit-breaker', { timeout: '10s' }, /"qos\/circuit-breaker" timeout must be a non-negative integer/],
      ['qos/circuit-breaker', { log_status_change: 'yes' }, /"qos\/circuit-breaker" log_status_change must be a boolean/],
      ['qos/http-cache', { max_items: 0 }, /endpoint \/x, backend 0 \(\/y\): "qos\/http-cache" max_items must be a positive integer/],
      ['qos/http-cache', { shared: 'true' }, /"qos\/http-cache" shared must be a boolean/],
    ];
    for (const [ns, value, re] of cases) {
      const r = await runCli(['check', '-c', config(ns, value)]);
      assert.notEqual(r.code, 0, r.output);
      assert.match(r.output, re);
    }
    const ok = await runCli(['check', '-c', config('qos/http-cache', { shared: true, max_items: 10, max_size: 1000 })]);
    assert.equal(ok.code, 0, ok.output);
  });
});
