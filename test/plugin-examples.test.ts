// KrakenD's documented example plugins, ported (issue 12 parts 5 and 6): the hello-world server
// plugin (plugins/krakend-server-example, examples/plugin-server.json) and the request/response
// modifiers (plugins/krakend-modifier-example: the krakend-debugger dumper and the modifying
// example, examples/plugin-modifier.json). A real gw process runs the compiled plugins from dist/,
// first with the example configs as they are shipped (only the port changed), then in front of
// real loopback backends that record what they get.
// Run: npm run build && node --import tsx --test test/plugin-examples.test.ts
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  type Backend,
  type Gateway,
  type RecordedRequest,
  HOST,
  ROOT,
  freePort,
  h,
  req,
  runCli,
  sendJSON,
  sleep,
  startBackend,
  startGateway,
  streamBytes,
} from './helpers/gw.ts';

const SERVER_DIR = path.join(ROOT, 'dist', 'plugins', 'krakend-server-example');
const MODIFIER_DIR = path.join(ROOT, 'dist', 'plugins', 'krakend-modifier-example');
const MB = 1024 * 1024;

/**
 * An example config as shipped, made runnable on a free port: `port`, the `http://localhost:8080`
 * hosts that point gw at itself, and the plugin folder made absolute (the file names it relative
 * to the repository root). One worker, so that per-request log lines are easy to wait for.
 */
function exampleConfig(file: string, port: number): Record<string, unknown> {
  const text = fs.readFileSync(path.join(ROOT, 'examples', file), 'utf8');
  assert.ok(text.includes('http://localhost:8080'), `${file} no longer points at gw itself`);
  const cfg = JSON.parse(text.replaceAll('http://localhost:8080', `http://${HOST}:${port}`)) as Record<string, unknown>;
  cfg.port = port;
  const plugin = cfg.plugin as { folder: string; pattern: string };
  plugin.folder = path.resolve(ROOT, plugin.folder) + path.sep;
  cfg.extra_config = { ...(cfg.extra_config as object | undefined), 'gw/server': { workers: 1 } };
  return cfg;
}

/** Waits (≤ 3 s) for a stdout line containing every string in `parts`; returns it, or undefined. */
async function logLine(g: Gateway, parts: string[], ms = 3000): Promise<string | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const line = g.stdout().split('\n').find((l) => parts.every((p) => l.includes(p)));
    if (line || Date.now() > deadline) return line;
    await sleep(25);
  }
}

async function hasLog(g: Gateway, parts: string[]): Promise<void> {
  const line = await logLine(g, parts);
  assert.ok(line, `no log line with ${JSON.stringify(parts)}:\n${g.stdout()}`);
}

/** The message of a JSON log line (pino writes `\"` inside it). */
const msgOf = (line: string) => (JSON.parse(line) as { msg: string }).msg;

/** Headers that belong to the connection, not to the request gw builds. */
const CONNECTION_LEVEL = new Set(['connection', 'host', 'content-length', 'transfer-encoding', 'keep-alive']);
function comparable(r: RecordedRequest) {
  const headers: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r.headers)) if (!CONNECTION_LEVEL.has(k)) headers[k] = v;
  return { method: r.method, url: r.url, headers, body: r.body.toString('utf8') };
}

/** Runs `fn` and returns the requests `b` received meanwhile. */
async function received<T>(b: Backend, fn: () => Promise<T>): Promise<{ recs: RecordedRequest[]; out: T }> {
  const n = b.requests.length;
  const out = await fn();
  return { recs: b.requests.slice(n), out };
}

/** A gateway that must not start: resolves with its output. */
async function startFails(config: Record<string, unknown>): Promise<string> {
  try {
    const g = await startGateway(config, { readyTimeout: 8000 });
    await g.stop();
  } catch (err) {
    return (err as Error).message;
  }
  assert.fail('the gateway started');
}

before(() => {
  for (const d of [SERVER_DIR, MODIFIER_DIR]) assert.ok(fs.existsSync(d), `${d} missing: run npm run build`);
});

// ---------------------------------------------------------------------------------------------
// krakend-server-example

describe('krakend-server-example with examples/plugin-server.json', () => {
  let gw: Gateway;
  before(async () => {
    const port = await freePort();
    gw = await startGateway(exampleConfig('plugin-server.json', port));
  });
  after(async () => {
    await gw?.stop();
  });

  test('start-up: loaded, logger registered, hijacking the configured path, injected', async () => {
    await hasLog(gw, ['[PLUGIN: krakend-server-example] Logger loaded']);
    await hasLog(gw, ['[SERVICE: Handler Plugin] Total plugins loaded: 1']);
    await hasLog(gw, ['[PLUGIN: krakend-server-example] The plugin is now hijacking the path /hijack-me']);
    await hasLog(gw, ['[PLUGIN: Server] Injecting plugin krakend-server-example']);
  });

  test('/hijack-me is answered by the plugin: Hello, "/hijack-me" (text/plain), logged', async () => {
    const r = await req(gw.port, '/hijack-me');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, 'Hello, "/hijack-me"');
    assert.equal(h(r.headers, 'content-type'), 'text/plain; charset=utf-8');
    assert.equal(h(r.headers, 'content-length'), String(r.body.length));
    // No endpoint ran: none of the headers gw's endpoints write.
    assert.equal(h(r.headers, 'x-krakend'), undefined);
    assert.equal(h(r.headers, 'x-krakend-completed'), undefined);
    await hasLog(gw, ['[PLUGIN: krakend-server-example] request: /hijack-me']);
  });

  test('every other request passes through: the endpoint (→ /__debug/), /__health, a 404', async () => {
    const normal = await req(gw.port, '/test/normal');
    assert.equal(normal.status, 200, normal.text);
    assert.deepEqual(normal.json(), { message: 'pong' });
    assert.equal(h(normal.headers, 'x-krakend-completed'), 'true');
    // The backend call went through the plugin too (gw calls itself) and reached /__debug/.
    await hasLog(gw, ['[ENDPOINT: /__debug/*] URL: /__debug/normal']);

    const health = await req(gw.port, '/__health');
    assert.equal(health.status, 200);
    assert.equal(health.json().status, 'ok');

    const missing = await req(gw.port, '/hijack-me-not');
    assert.equal(missing.status, 404);
    assert.equal(missing.text, '404 page not found');
  });
});

describe('krakend-server-example in front of a real backend', () => {
  let backend: Backend;
  let gw: Gateway;
  before(async () => {
    backend = await startBackend(async (_req, res, rec) => {
      const u = new URL(rec.url, 'http://x');
      if (u.pathname === '/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        await streamBytes(res, 4 * MB);
        return;
      }
      sendJSON(res, 200, { seen: u.pathname, query: u.search, method: rec.method, body: rec.body.toString('utf8') }, { 'x-backend': 'real' });
    });
    const host = [backend.url];
    gw = await startGateway({
      version: 3,
      plugin: { folder: SERVER_DIR + path.sep, pattern: '.js' },
      endpoints: [
        // An endpoint on the hijacked path itself: the plugin runs first, the router never sees it.
        { endpoint: '/hijack-me', backend: [{ host, url_pattern: '/should-never-be-called' }] },
        { endpoint: '/api/{id}', input_query_strings: ['a'], backend: [{ host, url_pattern: '/target/{id}' }] },
        {
          endpoint: '/upload',
          method: 'POST',
          output_encoding: 'no-op',
          input_headers: ['Content-Type'],
          backend: [{ host, url_pattern: '/upload', encoding: 'no-op' }],
        },
        { endpoint: '/big', output_encoding: 'no-op', timeout: '30s', backend: [{ host, url_pattern: '/big', encoding: 'no-op' }] },
      ],
      extra_config: {
        'gw/server': { workers: 1 },
        'plugin/http-server': { name: ['krakend-server-example'], 'krakend-server-example': { path: '/hijack-me' } },
      },
    });
  });
  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  test('the hijacked path never reaches the backend, even with an endpoint on it; any method, any query', async () => {
    const { recs, out } = await received(backend, async () => [
      await req(gw.port, '/hijack-me'),
      await req(gw.port, '/hijack-me?a=1&b=2'),
      await req(gw.port, '/hijack-me', { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'a request body the plugin ignores' }),
      await req(gw.port, '/hijack-me', { method: 'DELETE' }),
    ]);
    for (const r of out) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, 'Hello, "/hijack-me"');
    }
    assert.equal(recs.length, 0, `the backend got ${recs.map((r) => r.url).join(', ')}`);
  });

  test('the path is compared decoded, as Go\'s req.URL.Path: /hijack%2Dme is hijacked; /hijack-me/ is not', async () => {
    const enc = await req(gw.port, '/hijack%2Dme');
    assert.equal(enc.status, 200);
    assert.equal(enc.text, 'Hello, "/hijack-me"');
    const slash = await req(gw.port, '/hijack-me/');
    assert.notEqual(slash.text, 'Hello, "/hijack-me"');
  });

  test('pass-through GET: the backend gets the request and the client its answer, untouched', async () => {
    const { recs, out } = await received(backend, () => req(gw.port, '/api/42?a=1&c=dropped', { headers: { 'X-Not-Forwarded': 'x' } }));
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.url, '/target/42?a=1');
    assert.equal(recs[0]!.headers['x-not-forwarded'], undefined);
    assert.equal(out.status, 200, out.text);
    assert.deepEqual(out.json(), { seen: '/target/42', query: '?a=1', method: 'GET', body: '' });
    assert.equal(h(out.headers, 'x-krakend-completed'), 'true');
  });

  test('pass-through POST: the body reaches the backend, the no-op answer comes back as it is', async () => {
    const body = 'x'.repeat(100_000);
    const { recs, out } = await received(backend, () => req(gw.port, '/upload', { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body }));
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.body.toString(), body);
    assert.equal(recs[0]!.headers['content-type'], 'text/plain');
    assert.equal(out.status, 200);
    assert.equal(h(out.headers, 'x-backend'), 'real');
    assert.equal(out.json().body.length, body.length);
  });

  test('pass-through of a 4 MiB streamed answer: every byte arrives', async () => {
    const r = await req(gw.port, '/big', { timeoutMs: 30_000 });
    assert.equal(r.status, 200);
    assert.equal(r.body.length, 4 * MB);
    for (let i = 0; i < 64 * 1024; i += 4099) assert.equal(r.body[i], i % 251);
  });
});

describe('krakend-server-example configuration', () => {
  test('a hijacked path with HTML characters is HTML-escaped and quoted as Go prints it', async () => {
    const g = await startGateway({
      version: 3,
      plugin: { folder: SERVER_DIR + path.sep, pattern: '.js' },
      endpoints: [],
      extra_config: {
        'gw/server': { workers: 1 },
        'plugin/http-server': { name: 'krakend-server-example', 'krakend-server-example': { path: '/a<b>&"c"' } },
      },
    });
    try {
      // The client sends it percent-encoded; the plugin compares the decoded path.
      const r = await req(g.port, '/a%3Cb%3E&%22c%22');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, 'Hello, "/a&lt;b&gt;&amp;&#34;c&#34;"');
    } finally {
      await g.stop();
    }
  });

  test('without its own settings the factory fails: gw does not start, the error names the plugin', async () => {
    const out = await startFails({
      version: 3,
      plugin: { folder: SERVER_DIR + path.sep, pattern: '.js' },
      endpoints: [],
      extra_config: { 'gw/server': { workers: 1 }, 'plugin/http-server': { name: ['krakend-server-example'] } },
    });
    assert.match(out, /krakend-server-example/);
    assert.match(out, /configuration not found/);
  });
});

// ---------------------------------------------------------------------------------------------
// krakend-modifier-example (krakend-debugger + krakend-modifier-example)

describe('krakend-modifier-example with examples/plugin-modifier.json', () => {
  let gw: Gateway;
  before(async () => {
    const port = await freePort();
    gw = await startGateway(exampleConfig('plugin-modifier.json', port), { args: ['--log-format', 'json'] });
  });
  after(async () => {
    await gw?.stop();
  });

  test('start-up: both modules loaded with their loggers, the modifiers injected where configured', async () => {
    await hasLog(gw, ['[PLUGIN: krakend-debugger] Logger loaded']);
    await hasLog(gw, ['[PLUGIN: krakend-modifier-example] Logger loaded']);
    await hasLog(gw, ['[SERVICE: Modifier Plugin] Total plugins loaded: 2']);
    await hasLog(gw, ['[ENDPOINT: /modified/{id}][Modifier Plugins] Adding 2 request and 2 response modifiers']);
    await hasLog(gw, ['[BACKEND: GET /modified/:id -> /__echo/{id}][Modifier Plugins] Adding 2 request and 0 response modifiers']);
  });

  test('decoding endpoint: the echo shows the modified backend request, the answer carries modified_by', async () => {
    const r = await req(gw.port, '/modified/abc?q=1&x=2');
    assert.equal(r.status, 200, r.text);
    const echo = r.json();
    // The response modifier added this to the data.
    assert.equal(echo.modified_by, 'krakend-modifier-example');
    // What /__echo/ (the backend) received: the suffix joined to the path, the header set by the
    // request modifiers, the query as the endpoint allows it.
    assert.equal(echo.req_uri, '/__echo/abc/fooo?q=1');
    assert.deepEqual(echo.req_headers['X-Modified-By'], ['krakend-modifier-example']);
    assert.deepEqual(echo.req_querystring, { q: ['1'] });
  });

  test('the debugger logs each place in order: endpoint request, backend request after the modifier, the response', async () => {
    await req(gw.port, '/modified/dump?q=7');
    const ep = '[PLUGIN: krakend-debugger] [ENDPOINT: /modified/{id}]';
    const be = '[PLUGIN: krakend-debugger] [BACKEND: GET /modified/:id -> /__echo/{id}]';
    await hasLog(gw, [ep, 'params: {\\"id\\":\\"dump\\"}']);
    await hasLog(gw, [ep, 'method: GET']);
    await hasLog(gw, [ep, 'url: null']);
    await hasLog(gw, [ep, 'path: /modified/dump']);
    // Listed after krakend-modifier-example-request at backend level: it sees the modified request.
    await hasLog(gw, [be, 'url: http://', '/__echo/dump/fooo?q=7']);
    await hasLog(gw, [be, 'path: /__echo/dump/fooo']);
    await hasLog(gw, [be, 'headers:', 'X-Modified-By']);
    // The response dumper runs after the modifying one: it sees modified_by in the data.
    const data = await logLine(gw, [ep, 'data:', '/__echo/dump/fooo']);
    assert.ok(data, gw.stdout());
    assert.match(msgOf(data), /"modified_by":"krakend-modifier-example"/);
    await hasLog(gw, [ep, 'is complete: true']);
    await hasLog(gw, [ep, 'status code: 200']);
  });

  test('no-op endpoint: the backend-level response modifier sets X-Modified-By on the answer', async () => {
    const r = await req(gw.port, '/modified-noop/xyz');
    assert.equal(r.status, 200, r.text);
    assert.equal(h(r.headers, 'x-modified-by'), 'krakend-modifier-example');
    const echo = r.json();
    assert.equal(echo.req_uri, '/__echo/xyz/fooo');
    assert.deepEqual(echo.req_headers['X-Modified-By'], ['krakend-modifier-example']);
    assert.equal(echo.modified_by, undefined, 'a no-op body is not decoded or changed');
  });
});

describe('krakend-modifier-example in front of a real backend', () => {
  let backend: Backend;
  let gw: Gateway;
  const MODS = 'plugin/req-resp-modifier';
  const debuggerBoth = { [MODS]: { name: ['krakend-debugger-request', 'krakend-debugger-response'] } };
  const modifyBoth = { [MODS]: { name: ['krakend-modifier-example-request', 'krakend-modifier-example-response'] } };
  const modifyBackend = {
    [MODS]: { name: ['krakend-modifier-example-request', 'krakend-modifier-example-response'], 'krakend-modifier-example': { path_suffix: '/fooo' } },
  };
  before(async () => {
    backend = await startBackend((_req, res, rec) => {
      const u = new URL(rec.url, 'http://x');
      sendJSON(res, 200, { seen: u.pathname, query: u.search, method: rec.method, body: rec.body.toString('utf8') }, { 'x-backend': 'real' });
    });
    const host = [backend.url];
    const common = { input_headers: ['X-Custom', 'Content-Type'], input_query_strings: ['a'] };
    gw = await startGateway({
      version: 3,
      plugin: { folder: MODIFIER_DIR + path.sep, pattern: '.js' },
      endpoints: [
        { endpoint: '/plain/{id}', ...common, backend: [{ host, url_pattern: '/target/{id}' }] },
        // The debugger at both levels changes nothing.
        { endpoint: '/debugged/{id}', ...common, extra_config: debuggerBoth, backend: [{ host, url_pattern: '/target/{id}', extra_config: debuggerBoth }] },
        { endpoint: '/plain-post', method: 'POST', output_encoding: 'no-op', ...common, backend: [{ host, url_pattern: '/post', encoding: 'no-op' }] },
        {
          endpoint: '/debugged-post',
          method: 'POST',
          output_encoding: 'no-op',
          ...common,
          extra_config: debuggerBoth,
          backend: [{ host, url_pattern: '/post', encoding: 'no-op', extra_config: debuggerBoth }],
        },
        // The modifying example at endpoint level (header; data) and at backend level (header + suffix).
        { endpoint: '/mod-endpoint/{id}', ...common, extra_config: modifyBoth, backend: [{ host, url_pattern: '/target/{id}' }] },
        { endpoint: '/mod-backend/{id}', ...common, backend: [{ host, url_pattern: '/target/{id}', extra_config: modifyBackend }] },
        {
          endpoint: '/mod-noop',
          method: 'POST',
          output_encoding: 'no-op',
          ...common,
          backend: [{ host, url_pattern: '/post', encoding: 'no-op', extra_config: modifyBackend }],
        },
      ],
      extra_config: { 'gw/server': { workers: 1 } },
    });
  });
  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  const headers = { 'X-Custom': 'c1', 'X-Dropped': 'nope' };

  test('krakend-debugger changes nothing: same backend request, same answer as without it (GET, json)', async () => {
    const plain = await received(backend, () => req(gw.port, '/plain/1?a=1&b=2', { headers }));
    const dbg = await received(backend, () => req(gw.port, '/debugged/1?a=1&b=2', { headers }));
    assert.equal(plain.recs.length, 1);
    assert.equal(dbg.recs.length, 1);
    assert.deepEqual(comparable(dbg.recs[0]!), comparable(plain.recs[0]!));
    assert.equal(dbg.out.status, 200);
    assert.deepEqual(dbg.out.json(), plain.out.json());
    assert.equal(h(dbg.out.headers, 'content-type'), h(plain.out.headers, 'content-type'));
    await hasLog(gw, ['[PLUGIN: krakend-debugger] [BACKEND: GET /debugged/:id -> /target/{id}] headers:', 'X-Custom']);
  });

  test('krakend-debugger changes nothing: POST body and no-op answer (the body stream is not read by it)', async () => {
    const opts = { method: 'POST', headers: { ...headers, 'Content-Type': 'text/plain' }, body: 'the request body' };
    const plain = await received(backend, () => req(gw.port, '/plain-post?a=9', opts));
    const dbg = await received(backend, () => req(gw.port, '/debugged-post?a=9', opts));
    assert.equal(dbg.recs.length, 1);
    assert.equal(dbg.recs[0]!.body.toString(), 'the request body');
    assert.deepEqual(comparable(dbg.recs[0]!), comparable(plain.recs[0]!));
    assert.equal(dbg.out.status, plain.out.status);
    assert.equal(dbg.out.text, plain.out.text);
    assert.equal(h(dbg.out.headers, 'x-backend'), 'real');
    await hasLog(gw, ['[PLUGIN: krakend-debugger] [BACKEND: POST /debugged-post -> /post] status code: 200']);
  });

  test('endpoint level: the header the request modifier sets reaches the backend; the answer gets modified_by', async () => {
    const { recs, out } = await received(backend, () => req(gw.port, '/mod-endpoint/5?a=1', { headers }));
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.url, '/target/5?a=1', 'no path suffix at endpoint level (none configured, and no URL there)');
    assert.equal(recs[0]!.headers['x-modified-by'], 'krakend-modifier-example');
    assert.equal(recs[0]!.headers['x-custom'], 'c1');
    assert.equal(out.status, 200, out.text);
    assert.deepEqual(out.json(), { seen: '/target/5', query: '?a=1', method: 'GET', body: '', modified_by: 'krakend-modifier-example' });
  });

  test('backend level: path suffix and header at the backend, query kept; modified_by in the answer', async () => {
    const { recs, out } = await received(backend, () => req(gw.port, '/mod-backend/6?a=2&b=3', { headers }));
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.url, '/target/6/fooo?a=2');
    assert.equal(recs[0]!.headers['x-modified-by'], 'krakend-modifier-example');
    assert.equal(recs[0]!.headers['x-custom'], 'c1');
    assert.equal(out.status, 200, out.text);
    assert.deepEqual(out.json(), { seen: '/target/6/fooo', query: '?a=2', method: 'GET', body: '', modified_by: 'krakend-modifier-example' });
    await hasLog(gw, ['[PLUGIN: krakend-modifier-example] [BACKEND: GET /mod-backend/:id -> /target/{id}] path: /target/6/fooo']);
  });

  test('backend level, no-op POST: body untouched at the backend, X-Modified-By on the answer, body unchanged', async () => {
    const body = 'y'.repeat(50_000);
    const { recs, out } = await received(backend, () =>
      req(gw.port, '/mod-noop?a=3', { method: 'POST', headers: { ...headers, 'Content-Type': 'text/plain' }, body }),
    );
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.url, '/post/fooo?a=3');
    assert.equal(recs[0]!.body.toString(), body);
    assert.equal(recs[0]!.headers['x-modified-by'], 'krakend-modifier-example');
    assert.equal(out.status, 200);
    assert.equal(h(out.headers, 'x-modified-by'), 'krakend-modifier-example');
    assert.equal(h(out.headers, 'x-backend'), 'real');
    assert.deepEqual(out.json(), { seen: '/post/fooo', query: '?a=3', method: 'POST', body });
  });

  test('a path_suffix that is not a string: gw does not start, the error names the modifier and the setting', async () => {
    const out = await startFails({
      version: 3,
      plugin: { folder: MODIFIER_DIR + path.sep, pattern: '.js' },
      endpoints: [
        {
          endpoint: '/x',
          backend: [
            {
              host: [backend.url],
              url_pattern: '/x',
              extra_config: { [MODS]: { name: ['krakend-modifier-example-request'], 'krakend-modifier-example': { path_suffix: 42 } } },
            },
          ],
        },
      ],
      extra_config: { 'gw/server': { workers: 1 } },
    });
    assert.match(out, /krakend-modifier-example-request/);
    assert.match(out, /path_suffix must be a string/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('gw test-plugin on the examples', () => {
  test('-s / -m: the compiled modules register their server handler and four modifiers', async () => {
    const s = await runCli(['test-plugin', '-s', 'dist/plugins/krakend-server-example/krakend-server-example.js']);
    assert.equal(s.code, 0, s.output);
    assert.match(s.stdout, /\[OK\] SERVER\s+krakend-server-example/);
    const m = await runCli([
      'test-plugin',
      '-m',
      'dist/plugins/krakend-modifier-example/krakend-debugger.js',
      'dist/plugins/krakend-modifier-example/krakend-modifier-example.js',
    ]);
    assert.equal(m.code, 0, m.output);
    for (const n of ['krakend-debugger-request', 'krakend-debugger-response', 'krakend-modifier-example-request', 'krakend-modifier-example-response']) {
      assert.match(m.stdout, new RegExp(`\\[OK\\] MODIFIER\\s+${n}\\n`));
    }
  });

  test('--config: every factory the example configs use builds', async () => {
    const s = await runCli(['test-plugin', '--config', 'examples/plugin-server.json']);
    assert.equal(s.code, 0, s.output);
    assert.match(s.stdout, /\[OK\] SERVER\s+krakend-server-example\s+service/);
    const m = await runCli(['test-plugin', '--config', 'examples/plugin-modifier.json']);
    assert.equal(m.code, 0, m.output);
    assert.match(m.stdout, /\[OK\] 8 tested plugin factory/);
    assert.doesNotMatch(m.output, /\[KO\]/);
  });
});
