// Regressions from the hot-path review: each "regression N" test reproduced a defect (it failed
// on the code as reviewed: titles describe the old failure) and passes since the fix; "lock-in"
// tests cover a risky path verified to work, so it stays that way.
// Run: npm run build && node --import tsx --test test/regressions.test.ts
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { HOST, agent, freePort, h, req, uploadWhileAnswered, sendJSON, sleep, startBackend, startGateway, streamBytes, type Backend, type Gateway } from './helpers/gw.ts';

const MB = 1024 * 1024;
const PLUGIN_NS = 'plugin/http-client';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function gateway(config: Record<string, unknown>): Promise<Gateway> {
  const gw = await startGateway(config, { args: ['--workers', '1'] });
  cleanups.push(() => gw.stop('SIGKILL'));
  return gw;
}

async function backendOf(handler: Parameters<typeof startBackend>[0]): Promise<Backend> {
  const b = await startBackend(handler);
  cleanups.push(() => b.close());
  return b;
}

/** A raw TCP backend: `onHead(socket)` runs once the request head arrived; the body is never read. */
async function rawBackend(onHead: (s: net.Socket) => void): Promise<string> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString('latin1');
      if (!got.includes('\r\n\r\n')) return;
      s.off('data', onData);
      s.pause(); // never read the request body
      onHead(s);
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => srv.listen(0, HOST, r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        srv.close(() => r());
        // A net.Server has no closeAllConnections(): destroy the (paused) sockets ourselves, or
        // close() waits for them forever and the test file never exits.
        for (const sock of sockets) sock.destroy();
      }),
  );
  return `http://${HOST}:${(srv.address() as net.AddressInfo).port}`;
}

/** Plugin modules in a temp folder. */
function pluginFolder(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-review-plugins-'));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const usePlugin = (name: string, own: Record<string, unknown> = {}) => ({ [PLUGIN_NS]: { name, ...own } });

// ---------------------------------------------------------------------------

describe('request body still arriving when the response is done', () => {
  test('regression 1 (fixed): a backend that answers before reading the upload crashes the gateway (res.pause() after end)', async () => {
    // The backend answers 200 as soon as it has the head (auth failures, 413s and early answers do
    // this). undici stops sending the body; gw's RequestBodyStream is destroyed, and the next uWS
    // onData chunk calls res.pause() on a response that has already been sent.
    const origin = await rawBackend((s) => s.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'));
    const gw = await gateway({
      version: 3,
      timeout: '3s',
      endpoints: [
        { endpoint: '/up', method: 'POST', output_encoding: 'no-op', backend: [{ host: [origin], url_pattern: '/x', encoding: 'no-op' }] },
        { endpoint: '/ping', backend: [{ host: [origin], url_pattern: '/ping' }] },
      ],
    });
    const { resp } = await uploadWhileAnswered(gw.port, '/up', 32 * MB);
    assert.match(resp, /^HTTP\/1\.1 200 OK/, 'the client got its answer');
    await sleep(300);
    assert.equal(gw.proc.exitCode, null, `the gateway process died:\n${gw.stderr().slice(-800)}`);
    const health = await req(gw.port, '/__health', { timeoutMs: 2000 });
    assert.equal(health.status, 200);
  });

  test('regression 1 (json endpoint) (fixed): same crash on a decoding endpoint', async () => {
    const origin = await rawBackend((s) => s.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'));
    const gw = await gateway({
      version: 3,
      timeout: '3s',
      endpoints: [{ endpoint: '/up', method: 'POST', backend: [{ host: [origin], url_pattern: '/x' }] }],
    });
    const { resp } = await uploadWhileAnswered(gw.port, '/up', 32 * MB);
    assert.match(resp, /^HTTP\/1\.1 200 OK/);
    await sleep(300);
    assert.equal(gw.proc.exitCode, null, `the gateway process died:\n${gw.stderr().slice(-800)}`);
  });
});

describe('gw refuses or fails a request while its upload is still arriving', () => {
  test('401, 503 (router rate limit) and 500 (backend refused) reach a client still writing its 32 MB body, instead of a reset', async () => {
    // Closing right after such an answer sends RST over the unread upload, and a client busy
    // writing can lose the answer before it reads it. gw drops the rest first (linger.ts).
    const closed = `http://${HOST}:${await freePort()}`;
    const gw = await gateway({
      version: 3,
      timeout: '3s',
      endpoints: [
        { endpoint: '/auth', method: 'POST', extra_config: { 'auth/validator': { alg: 'RS256', audience: ['x'] } }, backend: [{ host: [closed], url_pattern: '/x' }] },
        { endpoint: '/limited', method: 'POST', extra_config: { 'qos/ratelimit/router': { max_rate: 1, every: '1h' } }, backend: [{ host: [closed], url_pattern: '/x' }] },
        { endpoint: '/down', method: 'POST', backend: [{ host: [closed], url_pattern: '/x' }] },
      ],
    });
    assert.equal((await req(gw.port, '/limited', { method: 'POST', body: 'x' })).status, 500, 'the one token: the backend is down');
    for (let round = 0; round < 3; round++) {
      for (const [p, status] of [['/auth', 401], ['/limited', 503], ['/down', 500]] as const) {
        const { resp, sent } = await uploadWhileAnswered(gw.port, p, 32 * MB);
        assert.match(resp, new RegExp(`^HTTP/1\\.1 ${status} `), `${p}, round ${round}: the client got its answer (${sent} bytes sent): ${JSON.stringify(resp.slice(0, 300))}`);
      }
    }
    assert.equal(gw.proc.exitCode, null, `the gateway process died:\n${gw.stderr().slice(-800)}`);
    assert.equal((await req(gw.port, '/__health', { timeoutMs: 2000 })).status, 200);
  });
});

describe('endpoint timeout', () => {
  test('regression 2 (fixed): a decoding backend body over the 64 MB decode limit leaves the client without any answer', async () => {
    // UpstreamBody.bytes(limit) calls body.abort(): abort() sets `failed` first, so the fail() that
    // undici's onResponseError triggers returns early and never reaches the sink → bytes() never
    // settles; the endpoint timer only aborts the (already aborted) controller.
    const b = await backendOf(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(65 * MB) });
      await streamBytes(res, 65 * MB);
    });
    const gw = await gateway({ version: 3, timeout: '2s', endpoints: [{ endpoint: '/huge', backend: [{ host: [b.url], url_pattern: '/huge' }] }] });
    let status: number | string;
    try {
      status = (await req(gw.port, '/huge', { timeoutMs: 6000 })).status;
    } catch (err) {
      status = `no answer within 6 s (endpoint timeout 2 s): ${(err as Error).message}`;
    }
    assert.equal(status, 500);
  });

  test('regression 3 (fixed): a request waiting for a pool connection is not answered at the endpoint timeout', async () => {
    // onTimeout() only aborts the controller; an Exchange still queued in the undici Pool has no
    // controller yet (onRequestStart not called), so nothing happens until a connection frees up.
    const b = await backendOf(async (_req, res, rec) => {
      if (rec.url === '/slow') await sleep(3000);
      sendJSON(res, 200, { url: rec.url });
    });
    const gw = await gateway({
      version: 3,
      max_idle_connections_per_host: 1,
      endpoints: [
        { endpoint: '/slow', timeout: '10s', backend: [{ host: [b.url], url_pattern: '/slow' }] },
        { endpoint: '/fast', timeout: '500ms', backend: [{ host: [b.url], url_pattern: '/fast' }] },
      ],
    });
    const slow = req(gw.port, '/slow', { timeoutMs: 10_000 });
    await sleep(200);
    const fast = await req(gw.port, '/fast', { timeoutMs: 10_000 });
    assert.equal(fast.status, 500);
    assert.ok(fast.ms < 1500, `/fast (timeout 500ms) answered after ${fast.ms} ms`);
    await slow;
  });
});

describe('rendering', () => {
  test('regression 10 (fixed): a deeply nested backend JSON crashes the gateway (renderOk throws inside .then → unhandled rejection)', async () => {
    // JSON.parse is iterative, goJson's sorted()/JSON.stringify are recursive: RangeError in
    // renderOk, which runs as the fulfilled handler of proxy(...).then(ok, err), so nothing catches it.
    const depth = 20_000;
    const body = '{"a":' + '['.repeat(depth) + ']'.repeat(depth) + '}';
    const b = await backendOf((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
    const gw = await gateway({ version: 3, endpoints: [{ endpoint: '/deep', backend: [{ host: [b.url], url_pattern: '/deep' }] }] });
    let status: number | string;
    try {
      status = (await req(gw.port, '/deep', { timeoutMs: 3000 })).status;
    } catch (err) {
      status = (err as Error).message;
    }
    await sleep(300);
    assert.equal(gw.proc.exitCode, null, `the gateway process died:\n${gw.stderr().slice(-600)}`);
    assert.equal(status, 500);
  });
});

describe('no-op endpoints', () => {
  test('regression 4 (fixed): backend method HEAD (Content-Length, no body) on a no-op endpoint → 500', async () => {
    // ClientSink gets total = Content-Length, the body ends with 0 bytes → "backend body shorter
    // than its Content-Length" → failBeforeHead → 500.
    const b = await backendOf((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5', 'x-from': 'backend' });
      res.end();
    });
    const gw = await gateway({
      version: 3,
      endpoints: [{ endpoint: '/probe', output_encoding: 'no-op', backend: [{ host: [b.url], url_pattern: '/probe', method: 'HEAD', encoding: 'no-op' }] }],
    });
    const r = await req(gw.port, '/probe');
    assert.equal(b.requests[0]?.method, 'HEAD');
    assert.equal(r.status, 200, `got ${r.status} ${r.text}`);
    assert.equal(h(r.headers, 'x-from'), 'backend');
  });
});

describe('client plugins', () => {
  // Hijacking plugins never call it; any valid host will do.
  const nowhere = 'http://127.0.0.1:19';
  const dir = pluginFolder({
    'review.mjs': `
      import { Readable } from 'node:stream';
      import fs from 'node:fs';
      export const ClientRegisterer = {
        registerClients(register) {
          // A Node Readable of text (Readable.from(string) emits the string as one chunk).
          register('text-stream', (ctx, extra) => () => ({
            status: 200,
            headers: { 'content-type': 'application/json' },
            body: Readable.from(extra.text),
          }));
          // A JSON value body: documented as serialised with Content-Type: application/json.
          register('json-value', () => () => ({ status: 200, headers: {}, body: { a: 1 } }));
          // A header whose value is a number (plain-JS plugins do this).
          register('num-header', () => () => ({ status: 200, headers: { 'X-Count': 5 }, body: 'ok' }));
          // An endless event stream; every tick is recorded in a file.
          register('ticker', (ctx, extra) => (req) => {
            async function* gen() {
              for (let i = 0; ; i++) {
                fs.appendFileSync(extra.file, 'x');
                yield Buffer.from('data: ' + i + '\\n\\n');
                await new Promise((r) => setTimeout(r, 20));
              }
            }
            return { status: 200, headers: { 'content-type': 'text/event-stream' }, body: gen() };
          });
          // Retry once on 5xx without discarding the first body.
          register('retry', () => async (req, next) => {
            const r = await next();
            if (r.status < 500) return r;
            return next();
          });
        },
      };`,
  });

  test('regression 5 (fixed): a plugin body that is a Readable of strings → 500 (no-op and json endpoints)', async () => {
    const gw = await gateway({
      version: 3,
      plugin: { folder: dir, pattern: '.mjs' },
      endpoints: [
        {
          endpoint: '/noop-text',
          output_encoding: 'no-op',
          backend: [{ host: [nowhere], url_pattern: '/', encoding: 'no-op', extra_config: usePlugin('text-stream', { text: 'hello' }) }],
        },
        { endpoint: '/json-text', backend: [{ host: [nowhere], url_pattern: '/', extra_config: usePlugin('text-stream', { text: '{"a":1}' }) }] },
      ],
    });
    const noop = await req(gw.port, '/noop-text');
    const json = await req(gw.port, '/json-text');
    assert.deepEqual(
      { noop: [noop.status, noop.text], json: [json.status, json.text] },
      { noop: [200, 'hello'], json: [200, '{"a":1}'] },
    );
  });

  test('regression 6 (fixed): a plugin JSON-value body on a no-op endpoint has no Content-Type: application/json', async () => {
    const gw = await gateway({
      version: 3,
      plugin: { folder: dir, pattern: '.mjs' },
      endpoints: [
        { endpoint: '/v', output_encoding: 'no-op', backend: [{ host: [nowhere], url_pattern: '/', encoding: 'no-op', extra_config: usePlugin('json-value') }] },
      ],
    });
    const r = await req(gw.port, '/v');
    assert.equal(r.status, 200);
    assert.equal(r.text, '{"a":1}');
    assert.match(h(r.headers, 'content-type') ?? '(none)', /^application\/json/);
  });

  test('regression 7 (fixed): a non-string header value from a plugin crashes the gateway (throw inside .then → unhandled rejection)', async () => {
    const gw = await gateway({
      version: 3,
      plugin: { folder: dir, pattern: '.mjs' },
      endpoints: [
        { endpoint: '/n', output_encoding: 'no-op', backend: [{ host: [nowhere], url_pattern: '/', encoding: 'no-op', extra_config: usePlugin('num-header') }] },
      ],
    });
    let status: number | string;
    try {
      status = (await req(gw.port, '/n', { timeoutMs: 3000 })).status;
    } catch (err) {
      status = (err as Error).message;
    }
    await sleep(300);
    assert.equal(gw.proc.exitCode, null, `the gateway process died:\n${gw.stderr().slice(-800)}`);
    assert.ok(status === 200 || status === 500, `answer: ${status}`);
  });

  test('regression 8 (fixed): a plugin stream keeps being pulled forever after the client left', async () => {
    const file = path.join(dir, 'ticks.txt');
    fs.writeFileSync(file, '');
    const gw = await gateway({
      version: 3,
      plugin: { folder: dir, pattern: '.mjs' },
      endpoints: [
        { endpoint: '/sse', output_encoding: 'no-op', backend: [{ host: [nowhere], url_pattern: '/', encoding: 'no-op', extra_config: usePlugin('ticker', { file }) }] },
      ],
    });
    await new Promise<void>((resolve, reject) => {
      const r = http.get({ host: HOST, port: gw.port, path: '/sse', agent: false }, (res) => {
        res.once('data', () => {
          setTimeout(() => {
            r.destroy();
            resolve();
          }, 100);
        });
      });
      r.on('error', () => {});
      setTimeout(() => reject(new Error('no stream')), 3000);
    });
    await sleep(300);
    const a = fs.statSync(file).size;
    await sleep(600);
    const b = fs.statSync(file).size;
    assert.equal(b, a, `the plugin's generator ran ${b - a} more times after the client disconnected`);
  });

  test('regression 9 (fixed): a retry plugin (next() twice) leaves the first response on its pool connection: SIGTERM then hangs', async () => {
    // The unread UpstreamBody of the first next() stays paused on its connection until undici's
    // 300 s body timeout; nothing releases it when the request ends, and gw.close() awaits
    // pools.close(), which waits for that request to finish. (With max_idle_connections_per_host: 1
    // the retry itself queues behind it and the endpoint answers 500 at its timeout.)
    let n = 0;
    const b = await backendOf((_req, res) => sendJSON(res, ++n === 1 ? 503 : 200, { n }));
    const gw = await gateway({
      version: 3,
      plugin: { folder: dir, pattern: '.mjs' },
      endpoints: [
        { endpoint: '/r', timeout: '2s', output_encoding: 'no-op', backend: [{ host: [b.url], url_pattern: '/r', encoding: 'no-op', extra_config: usePlugin('retry') }] },
      ],
    });
    const r = await req(gw.port, '/r', { timeoutMs: 5000 });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { n: 2 });
    await sleep(100);
    const t0 = Date.now();
    const exit = await gw.stop('SIGTERM'); // the helper SIGKILLs after 4 s
    assert.deepEqual(exit, { code: 0, signal: null }, `SIGTERM did not end the gateway (${Date.now() - t0} ms)`);
  });
});

describe('lock-in (verified working)', () => {
  test('lock-in: chunked no-op stream to a slow reader: backpressure resumes to the last byte', async () => {
    // Exercises ClientSink write()=false → onWritable → UpstreamBody.resume() with a chunked
    // (length-less) backend body, including the final chunk under backpressure.
    const b = await backendOf(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }); // no length → chunked
      await streamBytes(res, 24 * MB);
    });
    const gw = await gateway({
      version: 3,
      endpoints: [{ endpoint: '/s', output_encoding: 'no-op', timeout: '20s', backend: [{ host: [b.url], url_pattern: '/s', encoding: 'no-op' }] }],
    });
    const res = await agent.request({ origin: gw.url, path: '/s', method: 'GET', bodyTimeout: 15_000, headersTimeout: 15_000 });
    let total = 0;
    let i = 0;
    for await (const c of res.body) {
      total += (c as Buffer).length;
      if (++i % 64 === 0) await sleep(5); // a slow reader, so gw's socket backs up
    }
    assert.equal(total, 24 * MB);
  });
});
