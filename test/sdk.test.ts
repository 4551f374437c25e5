// The plugin SDK (issue 12): the `gw/plugin/testing` harness on each plugin kind (in-process, with
// fake and real loopback backends), `gw test-plugin` kind flags and `--config` (the built CLI), and
// `gw plugin init` (each kind's generated test run with `node --test` in a fresh folder).
// Run: npm run build && node --import tsx --test test/sdk.test.ts
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { HTTPResponseError, type ModifierRegisterer } from '../core/plugin/types.js';
import {
  LogRecorder,
  PluginTestError,
  TestBody,
  backendRequest,
  buildClient,
  buildModifier,
  httpHandler,
  httpNext,
  loadPlugin,
  readText,
  requestWrapper,
  response,
  responseBody,
  responseWrapper,
  serverRequest,
  type LoadedPlugin,
} from '../core/plugin/testing.js';
import { type Backend, ROOT, runCli, startBackend, streamBytes } from './helpers/gw.ts';

// ---------------------------------------------------------------------------
// fixtures

const tmpRoots: string[] = [];
after(() => {
  for (const d of tmpRoots) fs.rmSync(d, { recursive: true, force: true });
});

function tmp(prefix = 'gw-sdk-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpRoots.push(dir);
  return dir;
}

const CLIENT_PLUGIN = `
export const ClientRegisterer = {
  name: 'sdk-client',
  registerLogger(l) { l.info('logger loaded'); },
  registerClients(register) {
    register('sdk-client', (ctx, extra) => {
      const cfg = extra['sdk-client'] ?? {};
      if (cfg.fail) throw new Error('bad config: ' + cfg.fail);
      ctx.logger.debug('built for', ctx.method, ctx.endpoint, ctx.backend.urlPattern);
      return async (req, next) => {
        const u = new URL(req.url);
        if (u.pathname === cfg.hijack) {
          return { status: 200, headers: { 'Content-Type': 'application/json' }, body: { hijacked: u.pathname, id: req.params.id ?? null } };
        }
        if (u.pathname === '/throw') throw new Error('handler exploded');
        if (u.pathname === '/bad-status') return { status: 700, headers: {}, body: null };
        if (u.pathname === '/bad-header') return { status: 200, headers: { 'x-n': { no: 1 } }, body: null };
        req.headers['X-Sdk'] = 'yes';
        const res = await next(req);
        res.headers['x-sdk-seen'] = String(res.status);
        return res;
      };
    });
    register('sdk-null', () => null);
  },
};
`;

const SERVER_PLUGIN = `
export const HandlerRegisterer = {
  registerHandlers(register) {
    register('sdk-server', (ctx, extra, next) => {
      const cfg = extra['sdk-server'] ?? {};
      if (cfg.fail) throw new Error('server config refused');
      return async (req) => {
        if (req.path === '/__sdk') return { status: 200, headers: { 'content-type': 'text/plain' }, body: 'served by ' + ctx.name };
        if (req.path === '/rewrite') return next({ ...req, path: '/rewritten', headers: { ...req.headers, 'x-sdk': 'yes' } });
        if (req.path === '/bad') return next({ ...req, path: 'no-slash' });
        const res = await next(req);
        res.headers['x-sdk'] = 'wrapped';
        return res;
      };
    });
  },
};
`;

const MODIFIER_PLUGIN = `
async function text(body) {
  if (body === null) return '';
  if (typeof body === 'string') return body;
  let s = '';
  for await (const c of body) s += Buffer.from(c).toString();
  return s;
}
export const ModifierRegisterer = {
  registerContext(signal) { globalThis.__sdkSignal = signal; },
  registerModifiers(register) {
    register('sdk-req', (extra, ctx) => {
      ctx.logger.info('request modifier at', ctx.where);
      return async (req) => {
        if (!req.headers['Authorization']) throw Object.assign(new Error('no credentials'), { statusCode: 401 });
        req.headers['X-Sdk'] = ['yes'];
        if (req.url !== null) req.url = req.url.replace('/old', '/new');
        req.body = (await text(req.body)).toUpperCase();
      };
    }, true, false);
    register('sdk-res', () => async (res) => {
      const out = { ...res, statusCode: 203, headers: { ...res.headers, 'x-sdk': ['yes'] }, data: { ...res.data, added: true } };
      if (res.io !== null) out.io = (await text(res.io)).replace('backend', 'modified');
      return out;
    }, false, true);
    register('sdk-both', () => (w) => { w.headers['X-Both'] = ['1']; }, true, true);
    register('sdk-skip', () => null, true, false);
    register('sdk-odd', () => () => 42, true, false);
    register('sdk-bad', () => (w) => ({ ...w, method: 'NOT A TOKEN' }), true, false);
    register('sdk-bad-status', () => (w) => { w.statusCode = 99; }, false, true);
  },
};
`;

let dir: string;
before(() => {
  dir = tmp();
  fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
  fs.writeFileSync(path.join(dir, 'client.js'), CLIENT_PLUGIN);
  fs.writeFileSync(path.join(dir, 'server.js'), SERVER_PLUGIN);
  fs.writeFileSync(path.join(dir, 'modifier.js'), MODIFIER_PLUGIN);
  fs.writeFileSync(path.join(dir, 'broken.js'), 'throw new Error("kaboom at import");');
  fs.writeFileSync(path.join(dir, 'none.js'), 'export const nothing = 1;');
  fs.writeFileSync(path.join(dir, 'bad-register.js'), 'export const ClientRegisterer = { registerClients(r) { r("x", () => () => null); throw new Error("half done"); } };');
});

// ---------------------------------------------------------------------------
// loading

describe('loadPlugin', () => {
  test('collects what a file registers per kind, with its logs', async () => {
    const p = await loadPlugin(path.join(dir, 'client.js'));
    assert.equal(p.file, path.join(dir, 'client.js'));
    assert.deepEqual(p.kinds, ['client']);
    assert.deepEqual(p.names('client'), ['sdk-client', 'sdk-null']);
    assert.deepEqual(p.names('server'), []);
    assert.equal(typeof p.clients.get('sdk-client'), 'function');
    assert.deepEqual(p.logs.lines, [{ level: 'INFO', message: '[PLUGIN: sdk-client] logger loaded' }]);

    const m = await loadPlugin(new URL(`file://${path.join(dir, 'modifier.js')}`));
    assert.deepEqual(m.names('modifier'), ['sdk-req', 'sdk-res', 'sdk-both', 'sdk-skip', 'sdk-odd', 'sdk-bad', 'sdk-bad-status']);
    assert.deepEqual(
      { ...m.modifiers.get('sdk-res'), factory: undefined },
      { factory: undefined, appliesToRequest: false, appliesToResponse: true },
    );
    // registerContext got the plugin's signal: close() is gw's shutdown.
    const signal = (globalThis as { __sdkSignal?: AbortSignal }).__sdkSignal!;
    assert.equal(signal.aborted, false);
    m.close();
    assert.equal(signal.aborted, true);
  });

  test('a module object works too; all kinds of one module are collected', async () => {
    let logged = '';
    const mod: { ModifierRegisterer: ModifierRegisterer; HandlerRegisterer: object } = {
      ModifierRegisterer: {
        registerLogger: (l) => l.warning('hello', 42),
        RegisterModifiers: (r) => r('m', () => null, true, false),
      },
      HandlerRegisterer: { registerHandlers: (r: (n: string, f: unknown) => void) => r('s', () => () => null) },
    };
    const p = await loadPlugin(mod, { name: 'inline' });
    assert.deepEqual(p.kinds, ['server', 'modifier']);
    assert.equal(p.file, null);
    logged = p.logs.text();
    assert.equal(logged, 'WARNING [PLUGIN: inline] hello 42');
  });

  test('import, registration and empty modules are rejections that say why', async () => {
    await assert.rejects(loadPlugin(path.join(dir, 'broken.js')), (e: PluginTestError) => {
      assert.ok(e instanceof PluginTestError);
      assert.equal(e.stage, 'import');
      assert.match(e.message, /broken\.js: unable to import the module: kaboom at import$/);
      return true;
    });
    await assert.rejects(loadPlugin(path.join(dir, 'none.js')), /none\.js exports none of ClientRegisterer, HandlerRegisterer, ModifierRegisterer$/);
    await assert.rejects(loadPlugin(path.join(dir, 'bad-register.js')), { stage: 'register', message: /ClientRegisterer: registering the plugin failed: half done/ });
    await assert.rejects(loadPlugin(path.join(dir, 'missing.js')), { stage: 'import' });
    const p = await loadPlugin(path.join(dir, 'client.js'));
    await assert.rejects(p.buildClient('nope'), /registers no client plugin named 'nope' \(registered: sdk-client, sdk-null\)/);
    await assert.rejects(p.buildServer('x'), /registers no server plugin named 'x' \(no server plugin registered\)/);
  });
});

// ---------------------------------------------------------------------------
// bodies

describe('bodies', () => {
  test('TestBody: read once as bytes/text/json/stream/iteration; dump', async () => {
    assert.deepEqual(await responseBody('{"a":1}').json(), { a: 1 });
    assert.equal((await responseBody(Buffer.from('xyz')).bytes()).toString(), 'xyz');
    const chunks: string[] = [];
    for await (const c of responseBody(['a', Buffer.from('b'), new Uint8Array([99])])) chunks.push(c.toString());
    assert.deepEqual(chunks, ['a', 'b', 'c']);
    assert.equal(await readText(responseBody(Readable.from(['s1', 's2'])).stream()), 's1s2');
    assert.equal(await responseBody(null).text(), '');

    const once = responseBody('x');
    await once.text();
    assert.equal(once.consumed, true);
    await assert.rejects(once.text(), /already consumed/);
    const dumped = new TestBody(Readable.from(['x']));
    dumped.dump();
    assert.equal(dumped.dumped, true);
    assert.throws(() => dumped.stream(), /already consumed/);
  });

  test('response(): JSON values serialised with a content type, chunks streamed, names lower-cased', async () => {
    const j = response({ status: 201, headers: { 'X-A': 'b' }, body: [1, 2] });
    assert.deepEqual(j.headers, { 'x-a': 'b', 'content-type': 'application/json' });
    assert.equal(await j.body.text(), '[1,2]');
    const s = response({ chunks: ['a', 'b'] });
    assert.equal(s.status, 200);
    assert.equal(await s.body.text(), 'ab');
  });

  test('request builders: defaults, canonical names, streamed bodies', async () => {
    const r = backendRequest({ method: 'post', url: 'http://b.test/x', headers: { 'x-api-key': 'k' }, json: { a: 1 }, params: { id: '7' } });
    assert.equal(r.method, 'POST');
    assert.deepEqual(r.headers, {
      'User-Agent': 'KrakenD Version 2.13.8',
      'X-Forwarded-For': '127.0.0.1',
      'X-Forwarded-Host': 'localhost:8080',
      'X-Api-Key': 'k',
      'Content-Type': 'application/json',
    });
    assert.ok(r.body instanceof Readable);
    assert.equal(await readText(r.body), '{"a":1}');
    assert.equal(backendRequest().body, null);
    assert.equal(backendRequest({ timeoutMs: 1 }).signal.aborted, false);

    const s = serverRequest({ path: '/a/b?x=1&y=2', headers: { 'X-Up': 'U' }, body: 'hi' });
    assert.deepEqual([s.method, s.path, s.query, s.headers, s.clientIp], ['GET', '/a/b', 'x=1&y=2', { host: 'localhost:8080', 'x-up': 'U' }, '127.0.0.1']);
    assert.equal(await readText(s.body), 'hi');

    const w = requestWrapper({ headers: { 'x-a': 'b', 'X-M': ['1', '2'] }, query: '?q=1&q=2&r=3' });
    assert.deepEqual(w.headers, { 'X-A': ['b'], 'X-M': ['1', '2'] });
    assert.deepEqual(w.query, { q: ['1', '2'], r: ['3'] });
    assert.deepEqual([w.method, w.url, w.path, w.body], ['GET', null, '/', null]);
  });
});

// ---------------------------------------------------------------------------
// client plugins

describe('harness: client plugins', () => {
  let p: LoadedPlugin;
  let backend: Backend;
  before(async () => {
    p = await loadPlugin(path.join(dir, 'client.js'));
    backend = await startBackend();
  });
  after(async () => {
    p.close();
    await backend.close();
  });

  test('context defaults, extra from config, logs', async () => {
    const c = await p.buildClient('sdk-client', { config: { hijack: '/h' }, ctx: { endpoint: '/users/{id}' } });
    assert.deepEqual(c.extra, { name: 'sdk-client', 'sdk-client': { hijack: '/h' } });
    assert.equal(c.ctx.endpoint, '/users/{id}');
    assert.equal(c.ctx.method, 'GET');
    assert.deepEqual(c.ctx.backend, { index: 0, urlPattern: '/', hosts: ['http://backend.test'] });
    assert.equal(c.logs, p.logs);
    assert.ok(p.logs.messages('DEBUG').includes('[PLUGIN: sdk-client] built for GET /users/{id} /'));
    assert.equal(c.ctx.signal.aborted, false);
    c.close();
    assert.equal(c.ctx.signal.aborted, true);
  });

  test('hijack: the plugin answers, next() is never called', async () => {
    const c = await p.buildClient('sdk-client', { config: { hijack: '/h' } });
    const r = await c.call({ url: 'http://backend.test/h?x=1', params: { id: '9' } }, () => assert.fail('next must not be called'));
    assert.equal(r.delegated, false);
    assert.deepEqual(r.calls, []);
    assert.equal(r.status, 200);
    assert.deepEqual(r.headers, { 'Content-Type': 'application/json' });
    assert.deepEqual(await r.body.json(), { hijacked: '/h', id: '9' });
    assert.equal(r.bodyFromNext, false);
  });

  test('delegation with a fake next: the changed request, the streamed body kept', async () => {
    const c = await p.buildClient('sdk-client', { config: {} });
    const seen: string[] = [];
    const r = await c.call({ url: 'http://backend.test/users' }, (req) => {
      seen.push(String(req.headers['X-Sdk']));
      return response({ status: 202, chunks: ['po', 'ng'] });
    });
    assert.deepEqual(seen, ['yes']);
    assert.equal(r.calls.length, 1);
    assert.equal(r.calls[0]!.headers['X-Sdk'], 'yes');
    assert.equal(r.status, 202);
    assert.equal(r.headers['x-sdk-seen'], '202');
    assert.equal(r.bodyFromNext, true);
    assert.equal(await r.body.text(), 'pong');

    // A canned response as the build's default next, rebuilt per call.
    const d = await p.buildClient('sdk-client', { next: { status: 200, body: { ok: true } } });
    for (let i = 0; i < 2; i++) assert.deepEqual(await (await d.call()).body.json(), { ok: true });
  });

  test('delegation to a real loopback backend (undici)', async () => {
    const c = await p.buildClient('sdk-client');
    const next = httpNext(backend.url);
    try {
      const r = await c.call({ method: 'POST', url: 'http://backend.test/users/1?x=1', body: 'hello', headers: { 'content-type': 'text/plain' } }, next);
      assert.equal(r.status, 200);
      assert.equal(r.bodyFromNext, true);
      const echo = (await r.body.json()) as { method: string; url: string; headers: Record<string, string>; body: string };
      assert.equal(echo.method, 'POST');
      assert.equal(echo.url, '/users/1?x=1');
      assert.equal(echo.headers['x-sdk'], 'yes');
      assert.equal(echo.headers['user-agent'], 'KrakenD Version 2.13.8');
      assert.equal(echo.body, 'hello');
      const last = backend.requests.at(-1)!;
      assert.equal(last.headers['x-forwarded-for'], '127.0.0.1');
    } finally {
      await next.close();
    }
  });

  test('a streamed backend body reaches the test untouched', async () => {
    const big = await startBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      return streamBytes(res, 1024 * 1024);
    });
    const next = httpNext(big.url);
    try {
      const c = await p.buildClient('sdk-client');
      const r = await c.call({ url: 'http://backend.test/big' }, next);
      let n = 0;
      for await (const chunk of r.body) n += chunk.length;
      assert.equal(n, 1024 * 1024);
    } finally {
      await next.close();
      await big.close();
    }
  });

  test('factory, handler and answer errors are rejections naming the plugin and the step', async () => {
    await assert.rejects(p.buildClient('sdk-client', { config: { fail: 'no key' } }), (e: PluginTestError) => {
      assert.ok(e instanceof PluginTestError);
      assert.deepEqual([e.plugin, e.kind, e.stage], ['sdk-client', 'client', 'factory']);
      assert.equal(e.message, "client plugin 'sdk-client' failed to start: bad config: no key");
      assert.equal((e.cause as Error).message, 'bad config: no key');
      return true;
    });
    await assert.rejects(p.buildClient('sdk-null'), /client plugin 'sdk-null': the factory returned null, not a handler function/);
    // extra is frozen, as gw's configuration is: a factory writing into it fails here as in gw.
    await assert.rejects(
      buildClient((_ctx, extra) => ((extra.name = 'changed'), () => ({ status: 200, headers: {}, body: null })), 'writer'),
      /client plugin 'writer' failed to start: TypeError: Cannot assign to read only property 'name'/,
    );
    const c = await p.buildClient('sdk-client');
    await assert.rejects(c.call({ url: 'http://backend.test/throw' }), { stage: 'handler', message: "client plugin 'sdk-client': the handler failed: handler exploded" });
    await assert.rejects(c.call({ url: 'http://backend.test/bad-status' }), { stage: 'response', message: /the handler returned status 700: a status is an integer from 200 to 599/ });
    await assert.rejects(c.call({ url: 'http://backend.test/bad-header' }), { stage: 'response', message: /header "x-n" with a value of type object/ });
    // A next() error the plugin does not catch; and no next given at all.
    await assert.rejects(c.call({ url: 'http://backend.test/x' }, () => { throw new Error('connection refused'); }), /the handler failed: connection refused/);
    await assert.rejects(c.call({ url: 'http://backend.test/x' }), /called next\(\), but the test gave no next/);
    // A real backend that is not there.
    const dead = httpNext('http://127.0.0.1:9');
    await assert.rejects(c.call({ url: 'http://backend.test/x' }, dead), /the handler failed: GET http:\/\/127\.0\.0\.1:9\/x: .*ECONNREFUSED/);
    await dead.close();
  });

  test('a bare factory, without loading a module', async () => {
    const c = await buildClient((ctx) => (req) => ({ status: 200, headers: {}, body: `${ctx.endpoint} ${req.method}` }), 'inline');
    const r = await c.call({ method: 'delete' });
    assert.equal(await r.body.text(), '/test DELETE');
    assert.ok(c.logs instanceof LogRecorder);
  });
});

// ---------------------------------------------------------------------------
// server plugins

describe('harness: server plugins', () => {
  let p: LoadedPlugin;
  let backend: Backend;
  before(async () => {
    p = await loadPlugin(path.join(dir, 'server.js'));
    backend = await startBackend();
  });
  after(async () => {
    p.close();
    await backend.close();
  });

  const router = (req: { method: string; path: string; query: string }) =>
    response({ status: 200, headers: { 'content-type': 'text/plain' }, body: `router ${req.method} ${req.path}?${req.query}` });

  test('hijack: the plugin answers its own path', async () => {
    const s = await p.buildServer('sdk-server', { next: router });
    assert.deepEqual(s.extra, { name: ['sdk-server'] });
    assert.equal(s.ctx.name, 'sdk-server');
    const r = await s.call({ path: '/__sdk' });
    assert.equal(r.delegated, false);
    assert.equal(await r.body.text(), 'served by sdk-server');
  });

  test('delegation with a fake next: calls recorded per call, answer wrapped', async () => {
    const s = await p.buildServer('sdk-server', { next: router });
    const [a, b] = await Promise.all([s.call({ path: '/one?x=1' }), s.call({ method: 'PUT', path: '/rewrite' })]);
    assert.deepEqual(a.calls.map((c) => c.path), ['/one']);
    assert.equal(a.headers['x-sdk'], 'wrapped');
    assert.equal(a.bodyFromNext, true);
    assert.equal(await a.body.text(), 'router GET /one?x=1');
    assert.deepEqual(b.calls.map((c) => [c.path, c.headers['x-sdk']]), [['/rewritten', 'yes']]);
    assert.equal(await b.body.text(), 'router PUT /rewritten?');
    // A per-call next overrides the build's.
    const c = await s.call({ path: '/z' }, { status: 418, body: 'teapot' });
    assert.equal(c.status, 418);
    // A request gw's router could not route is refused, as in gw.
    await assert.rejects(s.call({ path: '/bad' }), /the handler failed: the request's path "no-slash" must start with "\/"/);
  });

  test('delegation to a real loopback backend (undici)', async () => {
    const next = httpHandler(backend.url);
    try {
      const s = await p.buildServer('sdk-server', { next });
      const r = await s.call({ method: 'POST', path: '/users?page=2', headers: { 'x-client': 'c1' }, json: { a: 1 } });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-sdk'], 'wrapped');
      const echo = (await r.body.json()) as { method: string; url: string; headers: Record<string, string>; body: string };
      assert.deepEqual([echo.method, echo.url, echo.headers['x-client'], echo.body], ['POST', '/users?page=2', 'c1', '{"a":1}']);
    } finally {
      await next.close();
    }
  });

  test('a handler error carries the status gw answers with', async () => {
    const s = await p.buildServer('sdk-server', { next: () => { throw new HTTPResponseError('denied', 403); } });
    await assert.rejects(s.call({ path: '/x' }), { stage: 'handler', statusCode: 403, message: "server plugin 'sdk-server': the handler failed: HTTPResponseError: denied" });
    await assert.rejects(s.call({ path: '/x' }, () => { throw new Error('plain'); }), { statusCode: 500 });
  });

  test('a factory error', async () => {
    await assert.rejects(p.buildServer('sdk-server', { config: { fail: true } }), {
      name: 'PluginTestError',
      stage: 'factory',
      message: "server plugin 'sdk-server' failed to start: server config refused",
    });
  });
});

// ---------------------------------------------------------------------------
// modifier plugins

describe('harness: modifier plugins', () => {
  let p: LoadedPlugin;
  before(async () => {
    p = await loadPlugin(path.join(dir, 'modifier.js'));
  });
  after(() => p.close());

  test('a request modifier changes the request (in place)', async () => {
    const m = await p.buildModifier('sdk-req', { where: '[BACKEND: GET /a -> /old]' });
    assert.deepEqual([m.appliesToRequest, m.appliesToResponse, m.role, m.skipped], [true, false, 'request', false]);
    assert.deepEqual(p.logs.messages('INFO').at(-1), '[PLUGIN: sdk-req] request modifier at [BACKEND: GET /a -> /old]');
    const w = await m.request({ method: 'POST', url: 'http://b.test/old/1', path: '/a', headers: { authorization: 'Bearer t' }, body: 'quiet' });
    assert.deepEqual(w.headers, { Authorization: ['Bearer t'], 'X-Sdk': ['yes'] });
    assert.equal(w.url, 'http://b.test/new/1');
    assert.equal(w.body, 'QUIET');
  });

  test('a response modifier returns a new wrapper (decoding and no-op)', async () => {
    const m = await p.buildModifier('sdk-res');
    const d = await m.response({ data: { id: 1 }, headers: { 'X-Up': 'u' } });
    assert.deepEqual([d.statusCode, d.data, d.headers], [203, { id: 1, added: true }, { 'x-up': ['u'], 'x-sdk': ['yes'] }]);
    const n = await m.response(responseWrapper({ io: 'from backend', statusCode: 200 }));
    assert.equal(n.statusCode, 203);
    assert.equal(await readText(n.io), 'from modified');
  });

  test('errors carry the status; flags are enforced as gw applies them', async () => {
    const m = await p.buildModifier('sdk-req');
    await assert.rejects(m.request({ path: '/a' }), (e: PluginTestError) => {
      assert.equal(e.statusCode, 401);
      assert.equal(e.stage, 'modifier');
      assert.equal(e.message, "modifier plugin 'sdk-req': the request modifier failed: no credentials");
      return true;
    });
    await assert.rejects(m.response(), /not a response modifier: it is registered as a request modifier/);
    const both = await p.buildModifier('sdk-both');
    assert.equal(both.role, 'request');
    await assert.rejects(both.response(), /registered for both, and gw \(like KrakenD\) applies such a name to requests only/);
    const skip = await p.buildModifier('sdk-skip');
    assert.equal(skip.skipped, true);
    const w = requestWrapper({ path: '/same' });
    assert.equal(await skip.request(w), w);
    // As in gw: a return value that is not an object is ignored (the wrapper is kept); a wrapper gw
    // cannot go on with is a failure (500).
    const odd = await p.buildModifier('sdk-odd');
    const w2 = requestWrapper();
    assert.equal(await odd.request(w2), w2);
    const bad = await p.buildModifier('sdk-bad');
    await assert.rejects(bad.request(), {
      statusCode: 500,
      message: `modifier plugin 'sdk-bad': the request modifier set the method to "NOT A TOKEN", not an HTTP token`,
    });
    const badStatus = await p.buildModifier('sdk-bad-status');
    await assert.rejects(badStatus.response({ io: 'x' }), /set statusCode to 99: a status is an integer from 200 to 599/);
    // On a decoding endpoint (no io) the status is not gw's concern.
    assert.equal((await badStatus.response({ data: {} })).statusCode, 99);
  });

  test('a bare factory; HTTPResponseError; a factory error', async () => {
    const m = await buildModifier(() => () => {
      throw new HTTPResponseError('teapot', 418, 'text/plain');
    }, 'inline');
    assert.equal(m.role, 'any');
    await assert.rejects(m.response(), (e: PluginTestError) => e.statusCode === 418 && e.cause instanceof HTTPResponseError);
    // A plain error is a 500; a status gw cannot answer with (204) too; a Go-style StatusCode() is read.
    for (const [err, status] of [[new Error('x'), 500], [Object.assign(new Error('x'), { statusCode: 204 }), 500], [Object.assign(new Error('x'), { StatusCode: () => 403 }), 403]] as const) {
      const t = await buildModifier(() => () => {
        throw err;
      }, 'inline');
      await assert.rejects(t.request(), { statusCode: status });
    }
    await assert.rejects(
      buildModifier(() => {
        throw new Error('bad modifier config');
      }, 'inline'),
      { stage: 'factory', message: "modifier plugin 'inline' failed to start: bad modifier config" },
    );
    await assert.rejects(buildModifier((() => 'nope') as never, 'inline'), /the factory returned string, not a modifier function/);
  });
});

// ---------------------------------------------------------------------------
// gw test-plugin (the built CLI)

describe('gw test-plugin', () => {
  let cliDir: string;
  before(() => {
    cliDir = tmp();
    fs.writeFileSync(path.join(cliDir, 'package.json'), '{"type":"module"}');
    fs.writeFileSync(
      path.join(cliDir, 'both.js'),
      `export const HandlerRegisterer = { registerHandlers(r) { r('srv', () => (req) => ({ status: 200, headers: {}, body: null })); } };
       export const ModifierRegisterer = { registerModifiers(r) { r('mod', () => null, true, false); } };`,
    );
  });

  test('-s, -c, -m and their long forms select the kinds', async () => {
    const file = path.join(cliDir, 'both.js');
    let r = await runCli(['test-plugin', '-s', '-m', file]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.stdout, /^\[OK\] SERVER\tsrv\n\[OK\] MODIFIER\tmod\n\[OK\] 1 tested plugin\(s\) in \S+\n$/);

    r = await runCli(['test-plugin', '--server', '--modifier', '--client', file]);
    assert.equal(r.code, 1);
    assert.deepEqual(r.stdout.split('\n').slice(0, 3), [
      '[OK] SERVER\tsrv',
      '[OK] MODIFIER\tmod',
      '[KO] CLIENT\tboth.js: The plugin does not contain a ClientRegisterer.',
    ]);
    assert.match(r.stdout, /\n1 plugin\(s\) failed\.\n$/);

    r = await runCli(['test-plugin', '-c', file]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^\[KO\] CLIENT\tboth\.js: The plugin does not contain a ClientRegisterer\.\n/);
    r = await runCli(['test-plugin', '--modifier', file]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^\[OK\] MODIFIER\tmod\n/);
    r = await runCli(['test-plugin', file]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, 'You must declare the expected type of the plugin.\n');
  });

  test('--help says what each flag means', async () => {
    const r = await runCli(['test-plugin', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /-s, --server +test the files as HTTP server plugins \(they must export\s+HandlerRegisterer\)/);
    assert.match(r.stdout, /-c, --client +test the files as HTTP client plugins/);
    assert.match(r.stdout, /-m, --modifier +test the files as request\/response modifier plugins/);
    assert.match(r.stdout, /--config <file> +gw only: load this gw configuration/);
  });

  function config(endpoints: unknown[], extra: Record<string, unknown> = {}): string {
    const file = path.join(cliDir, `gw-${Math.random().toString(36).slice(2)}.json`);
    fs.writeFileSync(file, JSON.stringify({ version: 3, plugin: { folder: dir, pattern: '.js' }, extra_config: extra, endpoints }));
    return file;
  }
  const backend = (extra: Record<string, unknown>, urlPattern = '/x') => ({ host: ['http://127.0.0.1:8999'], url_pattern: urlPattern, extra_config: extra });

  test('--config builds every configured factory: a failing factory and an unregistered name', async () => {
    const file = config(
      [
        {
          endpoint: '/a',
          extra_config: { 'plugin/req-resp-modifier': { name: ['sdk-req', 'sdk-res', 'ghost'] } },
          backend: [
            backend({ 'plugin/http-client': { name: 'sdk-client', 'sdk-client': { fail: 'no key' } } }, '/a'),
            backend({ 'plugin/http-client': { name: 'sdk-client' }, 'plugin/req-resp-modifier': { name: ['sdk-skip'] } }, '/b'),
          ],
        },
        { endpoint: '/c', backend: [backend({ 'plugin/http-client': { name: 'unknown-client' } }, '/c')] },
      ],
      { 'plugin/http-server': { name: 'sdk-server' } },
    );
    const r = await runCli(['test-plugin', '--config', file]);
    assert.equal(r.code, 1, r.output);
    const lines = r.stdout.trimEnd().split('\n');
    // broken.js and bad-register.js in the folder are loading problems; none.js is not a plugin.
    assert.deepEqual(lines.slice(0, 2).sort(), [
      `[KO] ${path.join(dir, 'broken.js')}: unable to import the module: kaboom at import`,
      `[KO] CLIENT\t${path.join(dir, 'bad-register.js')}: registering the plugin failed: half done`,
    ].sort());
    assert.deepEqual(lines.slice(2, 9), [
      '[OK] SERVER\tsdk-server\tservice',
      "[OK] MODIFIER\tsdk-req\tendpoint 'GET /a' (request modifier)",
      "[OK] MODIFIER\tsdk-res\tendpoint 'GET /a' (response modifier)",
      "[KO] MODIFIER\tghost\tendpoint 'GET /a': no modifier plugin registered as ghost (registered: sdk-req, sdk-res, sdk-both, sdk-skip, sdk-odd, sdk-bad, sdk-bad-status)",
      "[KO] CLIENT\tsdk-client\tendpoint 'GET /a', backend 0 (/a): the factory failed: bad config: no key",
      "[OK] MODIFIER\tsdk-skip\tendpoint 'GET /a', backend 1 (/b) (the factory returned nothing: skipped)",
      "[OK] CLIENT\tsdk-client\tendpoint 'GET /a', backend 1 (/b)",
    ]);
    assert.match(lines[9]!, /^\[KO\] CLIENT\tunknown-client\tendpoint 'GET \/c', backend 0 \(\/c\): no client plugin registered as unknown-client \(registered: sdk-client, sdk-null; built-in: no-redirect, static-filesystem\)$/);
    assert.match(lines[10]!, /^\[KO\] 8 tested plugin factory\(ies\) in \S+\.$/);
    assert.deepEqual(lines.slice(11), ['3 factory(ies) failed.', '2 plugin loading problem(s).']);

    // -s limits the check to the server kind (the folder's client problem is not reported).
    const s = await runCli(['test-plugin', '-s', '--config', file]);
    assert.equal(s.code, 1, s.output); // broken.js still fails to import
    assert.match(s.stdout, /\[OK\] SERVER\tsdk-server\tservice\n\[KO\] 1 tested plugin factory\(ies\) in \S+\.\n1 plugin loading problem\(s\)\.\n$/);
    assert.doesNotMatch(s.stdout, /CLIENT|MODIFIER/);
  });

  test('--config passes when every factory starts; config errors are reported', async () => {
    const clean = tmp();
    fs.writeFileSync(path.join(clean, 'package.json'), '{"type":"module"}');
    for (const f of ['client.js', 'server.js', 'modifier.js']) fs.copyFileSync(path.join(dir, f), path.join(clean, f));
    const file = path.join(clean, 'gw.json');
    fs.writeFileSync(
      file,
      JSON.stringify({
        version: 3,
        plugin: { folder: clean, pattern: '.js' },
        extra_config: { 'plugin/http-server': { name: ['sdk-server'] } },
        endpoints: [{ endpoint: '/a', backend: [backend({ 'plugin/http-client': { name: 'sdk-client' }, 'plugin/req-resp-modifier': { name: ['sdk-res'] } })] }],
      }),
    );
    const r = await runCli(['test-plugin', '--config', file]);
    assert.equal(r.code, 0, r.output);
    assert.deepEqual(r.stdout.trimEnd().split('\n').slice(0, 3), [
      '[OK] SERVER\tsdk-server\tservice',
      "[OK] MODIFIER\tsdk-res\tendpoint 'GET /a', backend 0 (/x) (response modifier)",
      "[OK] CLIENT\tsdk-client\tendpoint 'GET /a', backend 0 (/x)",
    ]);
    assert.match(r.stdout, /\[OK\] 3 tested plugin factory\(ies\) in \S+\n$/);

    const m = await runCli(['test-plugin', '-c', '--config', file]);
    assert.equal(m.code, 0, m.output);
    assert.match(m.stdout, /^\[OK\] CLIENT\tsdk-client\tendpoint 'GET \/a', backend 0 \(\/x\)\n\[OK\] 1 tested/);

    const missing = await runCli(['test-plugin', '--config', path.join(clean, 'nope.json')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stdout, /^\[KO\] Unable to load the configuration .*nope\.json: '.*nope\.json' \(open\): no such file or directory\n$/);

    fs.writeFileSync(file, JSON.stringify({ version: 3, endpoints: [{ endpoint: '/a', backend: [backend({})] }] }));
    const none = await runCli(['test-plugin', '--config', file]);
    assert.equal(none.code, 1);
    assert.match(none.stdout, /^\[KO\] .*gw\.json uses no plugin \(plugin\/http-server, plugin\/req-resp-modifier, plugin\/http-client\): nothing to test\.\n$/);

    // Without a "plugin" section, a name can only be a built-in client plugin.
    fs.writeFileSync(file, JSON.stringify({ version: 3, endpoints: [{ endpoint: '/a', backend: [backend({ 'plugin/http-client': { name: 'sdk-client' } })] }] }));
    const noFolder = await runCli(['test-plugin', '--config', file]);
    assert.equal(noFolder.code, 1);
    assert.match(noFolder.stdout, /^\[KO\] CLIENT\tsdk-client\tendpoint 'GET \/a', backend 0 \(\/x\): no client plugin registered as sdk-client \(the configuration has no "plugin": \{"folder", "pattern"\} to load plugins from/);
  });

  test('--config knows gw\'s built-in client plugins', async () => {
    const file = path.join(tmp(), 'gw.json');
    fs.writeFileSync(file, JSON.stringify({ version: 3, endpoints: [{ endpoint: '/a', backend: [backend({ 'plugin/http-client': { name: 'no-redirect' } })] }] }));
    const r = await runCli(['test-plugin', '-c', '--config', file]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.stdout, /^\[OK\] CLIENT\tno-redirect\tendpoint 'GET \/a', backend 0 \(\/x\) \(built-in\)\n\[OK\] 1 tested/);
  });
});

// ---------------------------------------------------------------------------
// gw plugin init

/** Runs `node --test` in `cwd` (without the parent test runner's context). */
function nodeTest(cwd: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    delete env.NODE_OPTIONS;
    const proc = spawn(process.execPath, ['--test'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    const t = setTimeout(() => proc.kill('SIGKILL'), 60_000);
    proc.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, output });
    });
  });
}

describe('gw plugin init', () => {
  for (const kind of ['client', 'server', 'modifier'] as const) {
    test(`${kind}: a plugin whose generated test passes`, async () => {
      const root = tmp('gw-init-');
      const target = path.join(root, `my-${kind}`);
      // The client one uses --link; the others get the symlink by hand.
      const args = ['plugin', 'init', kind, `my-${kind}`, '--dir', target, ...(kind === 'client' ? ['--link'] : [])];
      const r = await runCli(args);
      assert.equal(r.code, 0, r.output);
      assert.match(r.stdout, new RegExp(`^Created the ${kind} plugin 'my-${kind}' in `));
      const files = [`my-${kind}.js`, path.join('test', `my-${kind}.test.js`), 'package.json', 'README.md'];
      for (const f of files) assert.ok(fs.existsSync(path.join(target, f)), f);
      if (kind === 'client') assert.equal(fs.realpathSync(path.join(target, 'node_modules', 'gw')), fs.realpathSync(ROOT));
      else {
        fs.mkdirSync(path.join(target, 'node_modules'));
        fs.symlinkSync(ROOT, path.join(target, 'node_modules', 'gw'), 'dir');
      }
      const pkg = JSON.parse(fs.readFileSync(path.join(target, 'package.json'), 'utf8')) as { type: string; scripts: { test: string } };
      assert.equal(pkg.type, 'module');
      assert.equal(pkg.scripts.test, 'node --test');
      const readme = fs.readFileSync(path.join(target, 'README.md'), 'utf8');
      const ns = { client: 'plugin/http-client', server: 'plugin/http-server', modifier: 'plugin/req-resp-modifier' }[kind];
      assert.ok(readme.includes(`"${ns}"`), readme);
      assert.match(fs.readFileSync(path.join(target, `my-${kind}.js`), 'utf8'), /^\/\/ @ts-check\n/);

      const t = await nodeTest(target);
      assert.equal(t.code, 0, t.output);
      assert.match(t.output, /# fail 0/);
      assert.match(t.output, /# pass [1-9]/);

      // The plugin file loads in gw's own test-plugin, from the folder gw would load.
      const flag = { client: '-c', server: '-s', modifier: '-m' }[kind];
      const tp = await runCli(['test-plugin', flag, path.join(target, `my-${kind}.js`)]);
      assert.equal(tp.code, 0, tp.output);

      // Never overwrites.
      const again = await runCli(args);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /^ERROR: refusing to overwrite .*my-.*\.js/);
    });
  }

  test('names and kinds are validated', async () => {
    const root = tmp('gw-init-');
    for (const bad of ['../evil', 'Upper', '-dash', 'a b', 'x..y', '']) {
      // After `--`, so that '-dash' reaches the name check instead of commander's option parser.
      const r = await runCli(['plugin', 'init', '--dir', path.join(root, 'x'), '--', 'client', bad]);
      assert.equal(r.code, 1, bad);
      assert.match(r.stderr, /^ERROR: invalid plugin name/, bad);
    }
    const k = await runCli(['plugin', 'init', 'router', 'ok', '--dir', path.join(root, 'x')]);
    assert.equal(k.code, 1);
    assert.match(k.stderr, /^ERROR: unknown plugin kind "router": use one of client, server, modifier/);
    assert.equal(fs.existsSync(path.join(root, 'x')), false);
  });
});
