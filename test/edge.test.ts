// The edge (issue 6): request limits (413 / 414 / 503 on a full backend queue, 7 KB headers),
// framing defences over raw `net` sockets (the backend must never see an ambiguous or smuggled
// request), hop-by-hop headers in both directions, and path params that could escape the
// backend URL.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  type Backend,
  type Gateway,
  HOST,
  rawRequest,
  req,
  sendJSON,
  sleep,
  startBackend,
  startGateway,
} from './helpers/gw.ts';

let backend: Backend;
let gw: Gateway;

const SERVICE_MAX = 1024;
const MAX_URL = 256;
const MAX_HEADER_BYTES = 12 * 1024;

before(async () => {
  backend = await startBackend((_req, res, rec) => {
    const u = new URL(rec.url, 'http://x');
    if (u.pathname === '/hop-resp') {
      // Hop-by-hop response headers a no-op endpoint must not pass to the client.
      res.writeHead(200, [
        'Content-Type', 'text/plain',
        'Connection', 'close, X-Private',
        'X-Private', 'secret',
        'Keep-Alive', 'timeout=5, max=100',
        'Proxy-Connection', 'keep-alive',
        'Upgrade', 'h2c',
        'Trailer', 'X-Trail',
        'X-Public', 'ok',
      ]);
      return res.end('hello');
    }
    sendJSON(res, 200, {
      method: rec.method,
      url: rec.url,
      headers: rec.headers,
      len: rec.body.length,
      sum: rec.body.reduce((a, b) => (a + b) % 65521, 0),
    });
  });
  const host = [backend.url];
  gw = await startGateway(
    {
      version: 3,
      max_header_bytes: MAX_HEADER_BYTES,
      extra_config: {
        router: { max_payload: SERVICE_MAX },
        'gw/server': { max_url_length: MAX_URL },
      },
      endpoints: [
        { endpoint: '/upload', method: 'POST', backend: [{ host, url_pattern: '/upload' }] },
        {
          endpoint: '/upload-big',
          method: 'POST',
          extra_config: { router: { max_payload: 4096 } },
          backend: [{ host, url_pattern: '/upload-big' }],
        },
        {
          endpoint: '/upload-small',
          method: 'POST',
          extra_config: { router: { max_payload: 10 } },
          backend: [{ host, url_pattern: '/upload-small' }],
        },
        { endpoint: '/upload-noop', method: 'POST', output_encoding: 'no-op', backend: [{ host, url_pattern: '/upload-noop' }] },
        // framing cases: the case name travels in the path, so the backend log identifies it
        {
          endpoint: '/f/{case}',
          method: 'POST',
          output_encoding: 'no-op',
          input_headers: ['*'],
          backend: [{ host, url_pattern: '/f/{case}' }],
        },
        { endpoint: '/fj/{case}', method: 'POST', backend: [{ host, url_pattern: '/fj/{case}' }] },
        { endpoint: '/f/{case}', method: 'GET', backend: [{ host, url_pattern: '/f/{case}' }] },
        { endpoint: '/smuggled/{case}', method: 'GET', backend: [{ host, url_pattern: '/smuggled/{case}' }] },
        // hop-by-hop
        { endpoint: '/star', input_headers: ['*'], backend: [{ host, url_pattern: '/star' }] },
        { endpoint: '/noop-star', output_encoding: 'no-op', input_headers: ['*'], backend: [{ host, url_pattern: '/noop-star' }] },
        { endpoint: '/noop', output_encoding: 'no-op', backend: [{ host, url_pattern: '/noop' }] },
        { endpoint: '/hop-resp', output_encoding: 'no-op', backend: [{ host, url_pattern: '/hop-resp' }] },
        // path params
        { endpoint: '/param/{id}', backend: [{ host, url_pattern: '/param/{id}' }] },
        { endpoint: '/param-noop/{id}', output_encoding: 'no-op', backend: [{ host, url_pattern: '/param-noop/{id}' }] },
        { endpoint: '/hdr', input_headers: ['X-Big'], backend: [{ host, url_pattern: '/hdr' }] },
      ],
    },
    { args: ['--workers', '1'] },
  );
});

after(async () => {
  await gw?.stop('SIGKILL');
  await backend?.close();
});

const seen = (pred: (url: string) => boolean) => backend.requests.filter((r) => pred(r.url));

// ---------------------------------------------------------------------------
// Raw exchange: exact bytes over one fresh socket; collects everything until the peer closes
// (or `waitMs` passes).

interface Exchange {
  raw: string;
  /** every status code found at the start of a response head */
  statuses: number[];
  closed: boolean;
  error: string | null;
}

function exchange(port: number, data: string | Buffer | (string | Buffer)[], waitMs = 1500, gapMs = 30): Promise<Exchange> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: HOST, port });
    let buf = '';
    let error: string | null = null;
    let settled = false;
    const done = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      const statuses = [...buf.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
      resolve({ raw: buf, statuses, closed, error });
    };
    const timer = setTimeout(() => done(false), waitMs);
    sock.on('connect', async () => {
      const parts = Array.isArray(data) ? data : [data];
      for (const p of parts) {
        if (sock.destroyed) return;
        sock.write(p);
        if (parts.length > 1) await sleep(gapMs);
      }
    });
    sock.on('data', (d: Buffer) => (buf += d.toString('latin1')));
    sock.on('end', () => done(true));
    sock.on('close', () => done(true));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
      done(true);
    });
  });
}

// ---------------------------------------------------------------------------

describe('limits', () => {
  test('max_payload (service): Content-Length under the limit passes, over it → 413 before the body is read', async () => {
    const ok = await req(gw.port, '/upload', { method: 'POST', body: Buffer.alloc(SERVICE_MAX, 7) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json().len, SERVICE_MAX);

    const before = seen((u) => u === '/upload').length;
    const big = await req(gw.port, '/upload', { method: 'POST', body: Buffer.alloc(SERVICE_MAX + 1, 7) });
    assert.equal(big.status, 413, big.text);

    // Announce 10 MB and send nothing: the answer must not wait for the body.
    const t0 = Date.now();
    const x = await exchange(gw.port, `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n`, 3000);
    assert.deepEqual(x.statuses, [413], x.raw);
    assert.ok(Date.now() - t0 < 2000, `413 took ${Date.now() - t0} ms`);
    await sleep(50);
    assert.equal(seen((u) => u === '/upload').length, before, 'the oversized body must never reach the backend');
  });

  test('max_payload: a chunked body over the limit → 413, never forwarded; under it → forwarded intact', async () => {
    const chunk = 'a'.repeat(400);
    const part = `${(400).toString(16)}\r\n${chunk}\r\n`;
    const head = `POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const before = seen((u) => u === '/upload').length;
    const over = await exchange(gw.port, [head, part, part, part, part, '0\r\n\r\n'], 3000);
    assert.deepEqual(over.statuses, [413], over.raw);
    // the no-op endpoint is bounded the same way
    const overNoop = await exchange(gw.port, [head.replace('/upload', '/upload-noop'), part, part, part, part, '0\r\n\r\n'], 3000);
    assert.deepEqual(overNoop.statuses, [413], overNoop.raw);
    await sleep(100);
    assert.equal(seen((u) => u === '/upload').length, before, 'backend must not see the oversized chunked body');
    assert.equal(seen((u) => u === '/upload-noop').length, 0, 'backend must not see the oversized chunked no-op body');

    const under = await exchange(gw.port, [head, part, part, '0\r\n\r\n'], 3000);
    assert.deepEqual(under.statuses, [200], under.raw);
    const json = JSON.parse(under.raw.slice(under.raw.indexOf('\r\n\r\n') + 4).replace(/^[0-9a-f]+\r\n/, ''));
    assert.equal(json.len, 800);
  });

  test('max_payload per endpoint overrides the service value (larger and smaller)', async () => {
    const big = await req(gw.port, '/upload-big', { method: 'POST', body: Buffer.alloc(3000, 1) });
    assert.equal(big.status, 200, 'endpoint limit 4096 allows 3000 bytes although the service limit is 1024');
    assert.equal(big.json().len, 3000);
    const tooBig = await req(gw.port, '/upload-big', { method: 'POST', body: Buffer.alloc(4097, 1) });
    assert.equal(tooBig.status, 413);
    const small = await req(gw.port, '/upload-small', { method: 'POST', body: 'x'.repeat(11) });
    assert.equal(small.status, 413);
    const smallOk = await req(gw.port, '/upload-small', { method: 'POST', body: 'x'.repeat(10) });
    assert.equal(smallOk.status, 200);
    await sleep(50);
    assert.ok(seen((u) => u === '/upload-big').every((r) => r.body.length <= 4096));
    assert.ok(seen((u) => u === '/upload-small').every((r) => r.body.length <= 10));
  });

  test('max_url_length → 414 (path or query), never forwarded', async () => {
    const before = backend.requests.length;
    const longPath = await req(gw.port, `/param/${'a'.repeat(MAX_URL)}`);
    assert.equal(longPath.status, 414);
    const longQuery = await req(gw.port, `/param/a?q=${'b'.repeat(MAX_URL)}`);
    assert.equal(longQuery.status, 414);
    await sleep(50);
    assert.equal(backend.requests.length, before);
    const fine = await req(gw.port, `/param/${'a'.repeat(100)}?q=1`);
    assert.equal(fine.status, 200);
  });

  test('a normal 7 KB header passes', async () => {
    const v = 'v'.repeat(7 * 1024);
    const r = await req(gw.port, '/hdr', { headers: { 'X-Big': v } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json().headers['x-big'], v);
  });

  test('max_header_bytes: a header block over the limit → 431 promptly, never forwarded', async () => {
    const before = seen((u) => u === '/hdr').length;
    const t0 = Date.now();
    const x = await exchange(gw.port, `GET /hdr HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ${'w'.repeat(MAX_HEADER_BYTES + 2048)}\r\n\r\n`, 3000);
    assert.deepEqual(x.statuses, [431], `expected 431 after ${Date.now() - t0} ms, got ${JSON.stringify(x.raw.slice(0, 200))}`);
    await sleep(50);
    assert.equal(seen((u) => u === '/hdr').length, before, 'the oversized header block reached the backend');
  });

  // Known gap: the bundled uWS build (20.30) stops parsing past its header-count limit and holds
  // the connection until its idle timeout (~10 s) without answering. Nothing is forwarded (asserted
  // below), but the prompt 431/close needs a uWS build that reports the error. Kept as a todo so the
  // suite shows it until then.
  test('too many header fields → 431 (or closed) promptly, never forwarded', { todo: 'uWS 20.30 holds the connection instead of answering 431' }, async () => {
    const before = seen((u) => u === '/hdr').length;
    const many = Array.from({ length: 300 }, (_, i) => `X-H${i}: v\r\n`).join('');
    const t0 = Date.now();
    const x = await exchange(gw.port, `GET /hdr HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${many}\r\n`, 3000);
    const ms = Date.now() - t0;
    assert.deepEqual(x.statuses.filter((s) => s !== 431), [], JSON.stringify(x.raw.slice(0, 200)));
    assert.ok(x.statuses.length === 1 || x.closed, `no answer and still open after ${ms} ms`);
    await sleep(50);
    assert.equal(seen((u) => u === '/hdr').length, before);
  });

  test('backend_max_queue: connections + queue busy → further calls 503 at once; default max_url_length is 8192', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = await startBackend(async (_req, res) => {
      await Promise.race([gate, sleep(5000)]);
      sendJSON(res, 200, { ok: true });
    });
    const g = await startGateway(
      {
        version: 3,
        max_idle_connections_per_host: 1,
        extra_config: { 'gw/server': { backend_max_queue: 2 } },
        endpoints: [
          { endpoint: '/slow', backend: [{ host: [slow.url], url_pattern: '/slow' }] },
          { endpoint: '/slow-noop', output_encoding: 'no-op', backend: [{ host: [slow.url], url_pattern: '/slow' }] },
          { endpoint: '/u/{x}', backend: [{ host: [backend.url], url_pattern: '/u' }] },
        ],
      },
      { args: ['--workers', '1'] },
    );
    try {
      // 1 connection + 2 queued = 3 admitted; 3 more must fail fast.
      const pending = [0, 1, 2].map(() => req(g.port, '/slow', { timeoutMs: 8000 }));
      for (let i = 0; i < 100 && slow.requests.length === 0; i++) await sleep(10);
      assert.equal(slow.requests.length, 1, 'one backend connection only');
      const fast = await Promise.all([req(g.port, '/slow'), req(g.port, '/slow-noop'), req(g.port, '/slow')]);
      for (const r of fast) {
        assert.equal(r.status, 503, `expected 503, got ${r.status} ${r.text}`);
        assert.ok(r.ms < 1000, `503 took ${r.ms} ms`);
      }
      release();
      const rs = await Promise.all(pending);
      assert.deepEqual(rs.map((r) => r.status), [200, 200, 200]);
      assert.equal(slow.requests.length, 3);
      // slots are given back: a new call is admitted again
      assert.equal((await req(g.port, '/slow')).status, 200);

      // default max_url_length (8192)
      assert.equal((await req(g.port, `/u/${'a'.repeat(8000)}`)).status, 200);
      const long = await exchange(g.port, `GET /u/${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 3000);
      assert.ok(long.statuses.length === 0 ? long.closed : long.statuses[0] === 414, `9000-byte URL: ${long.raw.slice(0, 100)}`);
    } finally {
      release();
      await g.stop('SIGKILL');
      await slow.close();
    }
  });
});

// ---------------------------------------------------------------------------

/** A second request hidden where a differently-framing hop would see body bytes. */
const smuggled = (name: string) => `GET /smuggled/${name} HTTP/1.1\r\nHost: x\r\n\r\n`;

interface FramingCase {
  name: string;
  bytes: (name: string) => string | Buffer;
}

const C = (name: string, build: (sm: string, path: string) => string): FramingCase => ({
  name,
  bytes: (n) => build(smuggled(n), `/f/${n}`),
});

const framingCases: FramingCase[] = [
  C('cl-te', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${sm}`),
  C('te-cl', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n${sm}`),
  C('te-chunked-gzip', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n${sm}`),
  C('te-gzip', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n${sm}`),
  C('te-chunked-chunked', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n${sm}`),
  C('te-two-headers', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${sm}`),
  C('cl-non-numeric', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n${sm}`),
  C('cl-plus', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd${sm}`),
  C('cl-two-disagreeing', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd${sm}`),
  C('cl-list', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nabcde${sm}`),
  C('cl-negative', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n${sm}`),
  C('chunk-size-invalid', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n${sm}`),
  C('chunk-size-overflow', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n${sm}`),
  C('ws-before-colon-te', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${sm}`),
  C('ws-before-colon-cl', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length : 40\r\n\r\n${sm}`),
  C('obs-fold-te', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nX-A: a\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n${sm}`),
  C('obs-fold', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\nContent-Length: 0\r\n\r\n${sm}`),
  C('bare-lf', (sm, p) => `POST ${p} HTTP/1.1\nHost: x\nContent-Length: 0\n\n${sm}`),
  C('bare-lf-te', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nX-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${sm}`),
  C('bare-cr', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n${sm}`),
  C('nul', (sm, p) => `POST ${p} HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\nContent-Length: 0\r\n\r\n${sm}`),
];

/** uWS closes a connection it cannot parse at its idle timeout (~10 s) at the latest. */
const FRAMING_WAIT_MS = 14_000;
/** uWS 20.57 (btc-vision) holds a bare CR inside a header value ~30 s before closing (README, uWebSockets.js). */
const SLOW_CLOSE_WAIT_MS: Record<string, number> = { 'bare-cr': 40_000, 'json-bare-cr': 40_000 };
/** Refusals by the parser itself: 400, or 505 from uWS 20.57 for a request line ending in a bare LF (read as HTTP/1.0). */
const REFUSALS = new Set([400, 505]);

describe('framing: ambiguous requests are refused and never forwarded', () => {
  // Every case on its own connection, all at once (several are only closed at uWS's idle timeout).
  const results = new Map<string, Exchange & { ms: number }>();
  before(async () => {
    const all = [
      ...framingCases.map((c) => ({ key: c.name, bytes: c.bytes(c.name) })),
      // the same bytes on a json endpoint
      ...framingCases.map((c) => ({ key: `json-${c.name}`, bytes: Buffer.from(c.bytes(`json-${c.name}`)).toString('latin1').replace(' /f/', ' /fj/') })),
    ];
    await Promise.all(
      all.map(async ({ key, bytes }) => {
        const t0 = Date.now();
        const x = await exchange(gw.port, typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes, SLOW_CLOSE_WAIT_MS[key] ?? FRAMING_WAIT_MS);
        results.set(key, { ...x, ms: Date.now() - t0 });
      }),
    );
    await sleep(50);
  });

  for (const c of framingCases) {
    for (const key of [c.name, `json-${c.name}`]) {
      test(key, () => {
        const x = results.get(key)!;
        const show = JSON.stringify(x.raw.slice(0, 400));
        assert.deepEqual(x.statuses.filter((s) => !REFUSALS.has(s)), [], `${key}: gw answered something else than a refusal (400, 505): ${show}`);
        assert.ok(x.statuses.length <= 1, `${key}: more than one response on the connection: ${show}`);
        assert.ok(x.closed, `${key}: the connection is still open after ${x.ms} ms (statuses ${x.statuses}): ${show}`);
        const urls = new Set([`/f/${key}`, `/fj/${key}`, `/smuggled/${key}`]);
        assert.deepEqual(seen((u) => urls.has(u)).map((r) => r.url), [], `${key}: the backend saw the ambiguous or smuggled request`);
      });
    }
  }

  test('no framing case left the connection hanging until the idle timeout (diagnostic)', (t) => {
    const slow = [...results].filter(([, x]) => x.ms > 2000).map(([k, x]) => `${k} (${x.ms} ms, ${x.statuses.length ? x.statuses : 'no answer'})`);
    // uWS does not answer these and only drops the connection at its idle timeout; reported, not failed.
    if (slow.length) t.diagnostic(`closed only at the idle timeout: ${slow.join(', ')}`);
    assert.equal(results.size, framingCases.length * 2);
  });

  test('control: well-formed chunked and Content-Length requests on the same route are forwarded', async () => {
    const a = await exchange(gw.port, `POST /f/ok-cl HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd`, 3000);
    assert.deepEqual(a.statuses, [200], a.raw);
    const b = await exchange(gw.port, `POST /f/ok-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n`, 3000);
    assert.deepEqual(b.statuses, [200], b.raw);
    await sleep(30);
    assert.deepEqual(seen((u) => u.startsWith('/f/ok-')).map((r) => [r.url, r.body.toString()]), [
      ['/f/ok-cl', 'abcd'],
      ['/f/ok-chunked', 'abcd'],
    ]);
  });

  test('control: a request pipelined after a synchronous answer is served (so "not served" above means refused)', async () => {
    // (uWS serves pipelined requests only after a response that was written synchronously, like
    // gw's own 400s; after an async proxied answer it drops the connection.)
    const x = await exchange(gw.port, `GET /__health HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled/control HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 3000);
    assert.deepEqual(x.statuses, [200, 200], x.raw);
    await sleep(30);
    assert.equal(seen((u) => u === '/smuggled/control').length, 1);
  });
});

// ---------------------------------------------------------------------------

const HOP_REQUEST_HEADERS = ['keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'x-named', 'x-named2'];

function hopRequest(path: string): string {
  return (
    `GET ${path} HTTP/1.1\r\n` +
    'Host: client-host.example\r\n' +
    'Connection: keep-alive, X-Named, x-named2\r\n' +
    'X-Named: must-not-pass\r\n' +
    'X-Named2: must-not-pass\r\n' +
    'Keep-Alive: timeout=5, max=100\r\n' +
    'Proxy-Connection: keep-alive\r\n' +
    'TE: trailers\r\n' +
    'Trailer: X-Trail\r\n' +
    'Upgrade: websocket\r\n' +
    'X-Keep: yes\r\n' +
    '\r\n'
  );
}

describe('hop-by-hop headers', () => {
  for (const path of ['/star', '/noop-star', '/noop']) {
    test(`request headers are not forwarded: ${path}`, async () => {
      const r = await rawRequest(gw.port, hopRequest(path));
      assert.equal(r.status, 200, r.raw.toString());
      const rec = seen((u) => u === path).at(-1);
      assert.ok(rec, 'backend saw the request');
      for (const hname of HOP_REQUEST_HEADERS) assert.equal(rec.headers[hname], undefined, `${path}: ${hname} reached the backend`);
      // gw's own hop to the backend may say `Connection: keep-alive`; the client's value must not pass.
      const conn = String(rec.headers.connection ?? '').toLowerCase();
      assert.ok(conn === '' || conn === 'keep-alive' || conn === 'close', `${path}: Connection at the backend: ${conn}`);
      assert.notEqual(rec.headers.host, 'client-host.example', 'the client Host reached the backend');
      assert.equal(rec.headers.host, `127.0.0.1:${backend.port}`);
      if (path !== '/noop') assert.equal(rec.headers['x-keep'], 'yes', 'end-to-end headers pass with input_headers ["*"]');
    });
  }

  test('no-op: hop-by-hop response headers (and those named by Connection) are not passed to the client', async () => {
    const r = await rawRequest(gw.port, 'GET /hop-resp HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'hello');
    assert.equal(r.headers['x-public'], 'ok');
    const leaked = ['x-private', 'keep-alive', 'proxy-connection', 'upgrade', 'trailer'].filter((k) => r.headers[k] !== undefined);
    assert.deepEqual(leaked, [], `hop-by-hop response headers reached the client:\n${r.raw.toString('latin1').split('\r\n\r\n')[0]}`);
    const conn = String(r.headers['connection'] ?? '').toLowerCase();
    assert.ok(!conn.includes('x-private'), `Connection: ${conn}`);
  });
});

// ---------------------------------------------------------------------------

describe('path params cannot escape the backend URL', () => {
  const cases: [string, RegExp][] = [
    ['%2e%2e', /encoded url params/],
    ['%2E%2E', /encoded url params/],
    ['..', /encoded url params/],
    ['.%2e', /encoded url params/],
    ['%2e', /encoded url params/],
    ['a%2Fb', /encoded url params/],
    ['a%2fb', /encoded url params/],
    ['a%5cb', /encoded url params/],
    ['a%3Fx=1', /encoded url params/],
    ['a%23frag', /encoded url params/],
    ['a%0d%0aX-Injected:%201', /encoded url params/],
    ['a%0Ab', /encoded url params/],
    ['a%00b', /encoded url params/],
    ['%252e%252e', /encoded url params/],
    ['a%2', /invalid URL escape/],
    ['a%zz', /invalid URL escape "%zz"/],
    ['%ff', /encoded url params/],
  ];
  for (const base of ['/param', '/param-noop']) {
    test(`${base}/{id}: 400 and the backend is never called`, async () => {
      const before = seen((u) => u.startsWith(`${base}/`)).length;
      for (const [v, re] of cases) {
        const r = await req(gw.port, `${base}/${v}`);
        assert.equal(r.status, 400, `${base}/${v} → ${r.status} ${r.text}`);
        assert.match(r.text, re, `${base}/${v}`);
      }
      await sleep(30);
      assert.equal(seen((u) => u.startsWith(`${base}/`)).length, before, 'backend was called');
      assert.equal(seen((u) => /X-Injected|\.\./i.test(u)).length, 0);
      // control: ordinary (even encoded) values pass
      const ok = await req(gw.port, `${base}/hello%20world`);
      assert.equal(ok.status, 200, ok.text);
      assert.equal(seen((u) => u.startsWith(`${base}/`)).at(-1)!.url, `${base}/hello%20world`);
    });
  }
});
