// no-op encoding: raw passthrough of status, headers and body, with streaming and
// backpressure (spec §2.3).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import {
  type Backend,
  type Gateway,
  HOST,
  agent,
  freePort,
  h,
  req,
  rssBytes,
  withPeakRss,
  sleep,
  startBackend,
  startGateway,
  streamBytes,
} from './helpers/gw.ts';

const MB = 1024 * 1024;
let backend: Backend;
let gw: Gateway;

before(async () => {
  backend = await startBackend(async (_req, res, rec) => {
    const u = new URL(rec.url, 'http://x');
    switch (u.pathname) {
      case '/custom':
        res.writeHead(404, [
          'Content-Type', 'text/plain; charset=us-ascii',
          'X-Custom', 'custom-value',
          'Set-Cookie', 'a=1; Path=/',
          'Set-Cookie', 'b=2; HttpOnly',
        ]);
        return res.end('nothing here');
      case '/stream': {
        // /stream?mb=N[&cl=1] streams N MiB, chunked unless cl=1 (then with Content-Length)
        const total = Number(u.searchParams.get('mb') ?? '1') * MB;
        const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/octet-stream' };
        if (u.searchParams.get('cl') === '1') headers['content-length'] = total;
        res.writeHead(200, headers);
        await streamBytes(res, total);
        return;
      }
      case '/echo':
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ url: rec.url, ua: rec.headers['user-agent'], body: rec.body.toString() }));
      default:
        res.writeHead(418);
        return res.end();
    }
  });
  const host = [backend.url];
  const down = `http://127.0.0.1:${await freePort()}`;
  gw = await startGateway({
    version: 3,
    endpoints: [
      { endpoint: '/custom', output_encoding: 'no-op', cache_ttl: '1h', backend: [{ host, url_pattern: '/custom' }] },
      {
        endpoint: '/stream',
        output_encoding: 'no-op',
        timeout: '30s',
        input_query_strings: ['mb', 'cl'],
        backend: [{ host, url_pattern: '/stream' }],
      },
      { endpoint: '/echo', method: 'POST', output_encoding: 'no-op', backend: [{ host, url_pattern: '/echo' }] },
      { endpoint: '/down', output_encoding: 'no-op', backend: [{ host: [down], url_pattern: '/x' }] },
    ],
  });
});
after(async () => {
  await gw?.stop();
  await backend?.close();
});

/** GET through undici, counting body bytes (never holding the body). */
async function countBytes(port: number, path: string, onChunk?: () => void) {
  const res = await agent.request({ origin: `http://${HOST}:${port}`, path, method: 'GET', bodyTimeout: 30_000 });
  let total = 0;
  let ok = true;
  let pos = 0;
  for await (const c of res.body) {
    const b = c as Buffer;
    // verify the repeating pattern written by streamBytes (i % 251 within each 64 KiB chunk)
    for (let i = 0; i < b.length; i += 4093) {
      const off = (pos + i) % (64 * 1024);
      if (b[i] !== off % 251) ok = false;
    }
    pos += b.length;
    total += b.length;
    onChunk?.();
  }
  return { status: res.statusCode, headers: res.headers, total, patternOk: ok };
}

describe('no-op', () => {
  test('status, headers (two Set-Cookie) and body pass through unchanged', async () => {
    const r = await req(gw.port, '/custom');
    assert.equal(r.status, 404);
    assert.equal(r.text, 'nothing here');
    assert.equal(h(r.headers, 'content-type'), 'text/plain; charset=us-ascii');
    assert.equal(h(r.headers, 'x-custom'), 'custom-value');
    assert.deepEqual(r.headers['set-cookie'], ['a=1; Path=/', 'b=2; HttpOnly']);
    assert.match(h(r.headers, 'x-krakend') ?? '', /^Version \S+/);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.equal(h(r.headers, 'cache-control'), undefined, 'no Cache-Control on no-op even with cache_ttl');
  });

  test('request forwarding rules still apply (body passes, UA is the gateway\'s)', async () => {
    const r = await req(gw.port, '/echo', { method: 'POST', body: 'raw-body', headers: { 'user-agent': 'client/1' } });
    assert.equal(r.status, 200);
    const j = r.json();
    assert.equal(j.url, '/echo');
    assert.equal(j.body, 'raw-body');
    assert.match(j.ua, /^KrakenD Version /);
  });

  test('backend down → 500', async () => {
    const r = await req(gw.port, '/down');
    assert.equal(r.status, 500);
  });

  test('100 MB body streams through; gateway RSS grows < 50 MB', async (t) => {
    const pids = gw.workerPids();
    // warm up the pipe so lazy initialisation is not counted
    const w = await countBytes(gw.port, '/stream?mb=16');
    assert.equal(w.total, 16 * MB);
    await sleep(200);
    const { result: r, base, peak } = await withPeakRss(pids, 20, () => countBytes(gw.port, '/stream?mb=100'));
    assert.equal(r.status, 200);
    assert.equal(r.total, 100 * MB, 'byte count');
    assert.ok(r.patternOk, 'body bytes were altered');
    const growth = peak - base;
    t.diagnostic(`RSS base ${(base / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB`);
    assert.ok(growth < 50 * MB, `gateway RSS grew by ${(growth / MB).toFixed(1)} MB (base ${(base / MB).toFixed(1)} MB)`);
  });

  test('slow client: pauses reading, then reads all 100 MB (Content-Length); no unbounded buffering', async (t) => {
    const pids = gw.workerPids();
    await sleep(200);
    const base = rssBytes(pids);
    let peak = base;
    const timer = setInterval(() => {
      try {
        peak = Math.max(peak, rssBytes(pids));
      } catch {
        /* ignore */
      }
    }, 20);
    try {
      const { status, total, contentLength } = await new Promise<{ status: number; total: number; contentLength?: string }>(
        (resolve, reject) => {
          const r = http.get({ host: HOST, port: gw.port, path: '/stream?mb=100&cl=1', agent: false }, (res) => {
            let total = 0;
            let paused = false;
            res.on('data', (c: Buffer) => {
              total += c.length;
              if (!paused && total > 256 * 1024) {
                paused = true;
                res.pause();
                setTimeout(() => res.resume(), 2000);
              }
            });
            res.on('end', () => resolve({ status: res.statusCode!, total, contentLength: res.headers['content-length'] }));
            res.on('error', reject);
          });
          r.on('error', reject);
          r.setTimeout(30_000, () => r.destroy(new Error('client timeout')));
        },
      );
      assert.equal(status, 200);
      assert.equal(total, 100 * MB, 'byte count');
      if (contentLength !== undefined) assert.equal(contentLength, String(100 * MB));
    } finally {
      clearInterval(timer);
    }
    const growth = peak - base;
    t.diagnostic(`RSS base ${(base / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB`);
    assert.ok(growth < 50 * MB, `gateway RSS grew by ${(growth / MB).toFixed(1)} MB while the client was paused`);
  });

  test('client disconnects mid-stream: gateway survives and keeps serving', async () => {
    await new Promise<void>((resolve, reject) => {
      const r = http.get({ host: HOST, port: gw.port, path: '/stream?mb=50', agent: false }, (res) => {
        let total = 0;
        res.on('data', (c: Buffer) => {
          total += c.length;
          if (total > MB) {
            r.destroy();
            resolve();
          }
        });
      });
      r.on('error', () => resolve());
      r.setTimeout(10_000, () => reject(new Error('timeout')));
    });
    await sleep(200);
    assert.ok(gw.proc.exitCode === null && gw.proc.signalCode === null, `gateway died:\n${gw.output().slice(-3000)}`);
    const r = await req(gw.port, '/custom');
    assert.equal(r.status, 404);
    assert.equal(r.text, 'nothing here');
  });
});
