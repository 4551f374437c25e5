// Server (handler) plugins end to end (issue #12, spec §5.2): `extra_config["plugin/http-server"]`
// wraps the whole router. A real gw process loads plugin modules from a temp folder, in front of
// real loopback backends; clients misbehave where it matters (abort mid-body).
// Run: npm run build && node --import tsx --test test/server-plugins.test.ts
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  type Backend,
  type Gateway,
  HOST,
  h,
  req,
  rssBytes,
  runCli,
  sendJSON,
  sleep,
  startBackend,
  startGateway,
  streamBytes,
  tempDir,
  uploadWhileAnswered,
  writeConfig,
} from './helpers/gw.ts';


/** The gateway's output matches `re` within 3 s (worker lines reach the supervisor's stdout asynchronously). */
async function logged(gw: Gateway, re: RegExp): Promise<void> {
  const until = Date.now() + 3000;
  while (!re.test(gw.output())) {
    if (Date.now() > until) assert.match(gw.output(), re);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const MB = 1024 * 1024;
const NS = 'plugin/http-server';

const PLUGINS: Record<string, string> = {
  // Each of "a" and "b" appends its name to X-Trace on the way in and to X-Out on the way out.
  'order.mjs': `
    const tracer = (name) => (ctx, extra, next) => async (req) => {
      const prev = req.headers['x-trace'];
      req.headers['x-trace'] = prev ? prev + ',' + name : name;
      const r = await next(req);
      const out = r.headers['x-out'];
      r.headers['x-out'] = out ? out + ',' + name : name;
      return r;
    };
    export const HandlerRegisterer = {
      registerHandlers(register) {
        register('a', tracer('a'));
        register('b', tracer('b'));
      },
    };`,

  // Answers its configured path itself (hijack); changes the request on the way in otherwise.
  'hello.mjs': `
    export const HandlerRegisterer = {
      registerHandlers(register) {
        register('hello', (ctx, extra, next) => {
          const cfg = extra.hello ?? {};
          ctx.logger.info('hello configured for', cfg.path);
          return async (req) => {
            if (req.path === cfg.path) {
              return { status: 200, headers: { 'content-type': 'text/plain', 'x-hijacked': 'yes' }, body: 'hello from ' + req.clientIp };
            }
            if (req.path === '/json-answer') return { status: 202, headers: {}, body: { b: 1, a: [1, 2] } };
            if (req.path.startsWith('/old/')) req = { ...req, path: '/new/' + req.path.slice(5), query: 'q=rewritten' };
            if (req.path === '/upload-replaced') req = { ...req, path: '/upload', body: 'replaced body' };
            return next(req);
          };
        });
      },
    };`,

  // Failures of every kind, each on its own path.
  'faulty.mjs': `
    export const HandlerRegisterer = {
      registerHandlers(register) {
        register('faulty', (ctx, extra, next) => async (req) => {
          switch (req.path) {
            case '/teapot': { const e = new Error('short and stout'); e.statusCode = 418; throw e; }
            case '/throw': throw new Error('boom in faulty');
            case '/bad-status': return { status: 99, headers: {}, body: '' };
            case '/bad-next': return next({ ...req, path: '/x?y' });
            case '/ignore-inner': { await next({ ...req, path: '/big' }); return { status: 200, headers: {}, body: 'ignored' }; }
            default: return next(req);
          }
        });
        register('broken-factory', () => { throw new Error('cannot start: missing key'); });
        register('not-a-handler', () => 42);
      },
    };`,

  // Modifiers for the all-kinds configuration.
  'mods.mjs': `
    export const ModifierRegisterer = {
      registerModifiers(register) {
        register('ep-mark', () => (req) => { req.headers['X-Trace'] = [(req.headers['X-Trace']?.[0] ?? '') + ',ep-mod']; }, true, false);
        register('be-mark', () => (req) => { req.headers['X-Trace'] = [(req.headers['X-Trace']?.[0] ?? '') + ',be-mod']; }, true, false);
        register('resp-mark', () => (res) => { res.data.modified = true; }, false, true);
      },
    };`,

  // Passes everything through untouched (the streaming case).
  'pass.mjs': `
    export const HandlerRegisterer = {
      registerHandlers(register) {
        register('pass', (ctx, extra, next) => (req) => next(req));
        register('tag', (ctx, extra, next) => async (req) => { const r = await next(req); r.headers['x-tagged'] = '1'; return r; });
      },
    };`,
};

let dir: string;
before(() => {
  dir = path.join(tempDir(), `server-plugins-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  for (const [f, src] of Object.entries(PLUGINS)) fs.writeFileSync(path.join(dir, f), src);
});

function config(backend: Backend, serverExtra: Record<string, unknown>, more: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    version: 3,
    timeout: '5s',
    plugin: { folder: dir, pattern: '.mjs' },
    extra_config: { [NS]: serverExtra },
    endpoints: [
      {
        endpoint: '/new/{id}',
        input_headers: ['X-Trace'],
        input_query_strings: ['q'],
        backend: [{ host: [backend.url], url_pattern: '/echo/{id}' }],
      },
      { endpoint: '/echo', input_headers: ['X-Trace'], backend: [{ host: [backend.url], url_pattern: '/echo' }] },
      {
        endpoint: '/upload',
        method: 'POST',
        output_encoding: 'no-op',
        backend: [{ host: [backend.url], url_pattern: '/upload', encoding: 'no-op' }],
      },
      { endpoint: '/big', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/big', encoding: 'no-op' }] },
    ],
    ...more,
  };
}

function backendHandler(bigBytes: number): (rq: http.IncomingMessage, res: http.ServerResponse, rec: { body: Buffer; url: string; headers: http.IncomingHttpHeaders }) => unknown {
  return (rq, res, rec) => {
    if (rec.url === '/big') return streamBytes(res, bigBytes);
    if (rec.url === '/upload') return sendJSON(res, 200, { bytes: rec.body.length, cl: rec.headers['content-length'] ?? null, body: rec.body.length < 100 ? rec.body.toString() : '' });
    return sendJSON(res, 200, { url: rec.url, trace: rec.headers['x-trace'] ?? null });
  };
}

describe('server plugins: order, hijack, delegation', () => {
  let backend: Backend;
  let gw: Gateway;
  before(async () => {
    backend = await startBackend(backendHandler(1024));
    gw = await startGateway(config(backend, { name: ['a', 'hello', 'b'], hello: { path: '/hi' } }), { args: ['--workers', '1'] });
  });
  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  test('the last listed plugin is the outermost: in b→hello→a, out a→hello→b', async () => {
    const r = await req(gw.port, '/echo');
    assert.equal(r.status, 200);
    assert.equal(r.json().trace, 'b,a', 'the backend sees b first, a last');
    assert.equal(h(r.headers, 'x-out'), 'a,b');
    await logged(gw, /\[PLUGIN: Server\] Injecting plugin a/);
    await logged(gw, /\[PLUGIN: Server\] Injecting plugin b/);
  });

  test('a hijacked path never reaches the backend; the plugins outside it still run', async () => {
    const before = backend.requests.length;
    const r = await req(gw.port, '/hi');
    assert.equal(r.status, 200);
    assert.equal(r.text, 'hello from 127.0.0.1');
    assert.equal(h(r.headers, 'x-hijacked'), 'yes');
    assert.equal(h(r.headers, 'x-out'), 'b', 'b is outside hello, a inside it');
    assert.equal(backend.requests.length, before);
    await logged(gw, /hello configured for \/hi/);
  });

  test('a JSON value answered by a plugin is rendered in Go key order with its status', async () => {
    const r = await req(gw.port, '/json-answer');
    assert.equal(r.status, 202);
    assert.equal(r.text, '{"a":[1,2],"b":1}');
    assert.match(String(h(r.headers, 'content-type')), /application\/json/);
  });

  test('the plugins wrap unknown paths and /__health too', async () => {
    const nf = await req(gw.port, '/nowhere');
    assert.equal(nf.status, 404);
    assert.equal(h(nf.headers, 'x-out'), 'a,b');
    const hl = await req(gw.port, '/__health');
    assert.equal(hl.status, 200);
    assert.equal(h(hl.headers, 'x-out'), 'a,b');
  });

  test('a changed path and query are routed as such', async () => {
    const r = await req(gw.port, '/old/7?q=original');
    assert.equal(r.status, 200);
    assert.equal(r.json().url, '/echo/7?q=rewritten');
  });

  test('the client body streams through; a replaced body is framed by its own length', async () => {
    const body = Buffer.alloc(3 * MB, 7);
    const r = await req(gw.port, '/upload', { method: 'POST', body });
    assert.equal(r.status, 200);
    assert.equal(r.json().bytes, body.length);
    const r2 = await req(gw.port, '/upload-replaced', { method: 'POST', body: 'a much longer original body than the replacement' });
    assert.equal(r2.status, 200);
    assert.equal(r2.json().body, 'replaced body');
  });

  test('a hijacked answer to an upload still arriving goes out at once, then the connection closes', async () => {
    const got = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ host: HOST, port: gw.port }, () => {
        s.write(`POST /hi HTTP/1.1\r\nHost: x\r\nContent-Length: ${5 * MB}\r\n\r\n`);
        s.write(Buffer.alloc(64 * 1024, 1));
      });
      let buf = '';
      s.setEncoding('latin1');
      s.on('data', (d: string) => (buf += d));
      s.on('close', () => resolve(buf));
      s.on('error', () => resolve(buf));
      setTimeout(() => reject(new Error(`no answer and no close within 5 s; got ${JSON.stringify(buf)}`)), 5000).unref();
    });
    assert.match(got, /^HTTP\/1\.1 200 OK/);
    assert.match(got, /hello from 127\.0\.0\.1$/);
    assert.equal((await req(gw.port, '/__health')).status, 200);
  });

  test('a hijacked answer reaches a client still writing its 32 MB body, instead of a reset', async () => {
    // Closing right after the answer would send RST over the unread upload; a client busy writing
    // could lose the answer. The rest is read and dropped first (linger.ts).
    for (let round = 0; round < 3; round++) {
      const { resp, sent } = await uploadWhileAnswered(gw.port, '/hi', 32 * MB);
      assert.match(resp, /^HTTP\/1\.1 200 OK[\s\S]*hello from 127\.0\.0\.1/, `round ${round} (${sent} bytes sent): ${JSON.stringify(resp.slice(0, 200))}`);
    }
    assert.equal((await req(gw.port, '/__health')).status, 200);
  });

  test('HEAD through a plugin: headers only, with the length a GET would get', async () => {
    const r = await req(gw.port, '/hi', { method: 'HEAD' });
    assert.equal(r.status, 200);
    assert.equal(r.body.length, 0);
    assert.equal(h(r.headers, 'content-length'), String('hello from 127.0.0.1'.length));
  });
});

describe('server plugins: failures', () => {
  let backend: Backend;
  let gw: Gateway;
  before(async () => {
    backend = await startBackend(backendHandler(8 * MB));
    gw = await startGateway(config(backend, { name: ['faulty'] }), { args: ['--workers', '1'] });
  });
  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  test('a plugin error reaches a client still writing its 32 MB body as a 500, instead of a reset', async () => {
    for (let round = 0; round < 3; round++) {
      const { resp, sent } = await uploadWhileAnswered(gw.port, '/throw', 32 * MB);
      assert.match(resp, /^HTTP\/1\.1 500 /, `round ${round} (${sent} bytes sent): ${JSON.stringify(resp.slice(0, 200))}`);
    }
  });

  test('an error with a statusCode sets the status; a plain error is a 500; both are logged with the plugin name', async () => {
    const t = await req(gw.port, '/teapot');
    assert.equal(t.status, 418);
    const e = await req(gw.port, '/throw');
    assert.equal(e.status, 500);
    assert.equal(e.text, '', 'no message without return_error_msg');
    await logged(gw, /\[PLUGIN: Server\]\[faulty\] GET \/throw: boom in faulty/);
  });

  test('an invalid answer or an invalid request for next() is a 500 naming the problem', async () => {
    assert.equal((await req(gw.port, '/bad-status')).status, 500);
    await logged(gw, /returned status 99/);
    assert.equal((await req(gw.port, '/bad-next')).status, 500);
    await logged(gw, /\[faulty\] GET \/bad-next: the request's path .*\/x\?y.* must start with .*and hold no spaces, controls/);
  });

  test('an inner answer the plugin ignores is released: 30 of them leave gw healthy, same worker', async () => {
    const pids = gw.workerPids();
    for (let i = 0; i < 30; i++) {
      const r = await req(gw.port, '/ignore-inner');
      assert.equal(r.text, 'ignored');
    }
    const hl = await req(gw.port, '/__health');
    assert.equal(hl.status, 200);
    const ok = await req(gw.port, '/echo');
    assert.equal(ok.status, 200);
    assert.deepEqual(gw.workerPids(), pids, 'no worker died');
    assert.doesNotMatch(gw.output(), /uncaught|died/);
  });
});

describe('server plugins: streaming with backpressure', () => {
  let backend: Backend;
  let gw: Gateway;
  const BIG = 100 * MB;
  /** Bytes the backend has handed to its socket for the current /big answer. */
  let sent = 0;
  before(async () => {
    const inner = backendHandler(BIG);
    backend = await startBackend((rq, res, rec) => {
      if (rec.url === '/big') {
        sent = 0;
        const write = res.write.bind(res) as (c: Buffer) => boolean;
        res.write = ((c: Buffer) => {
          sent += c.length;
          return write(c);
        }) as typeof res.write;
      }
      return inner(rq, res, rec);
    });
    gw = await startGateway(config(backend, { name: ['pass', 'tag'] }), { args: ['--workers', '1'] });
  });
  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  test('100 MB through a plugin that does not read it: every byte; a stalled client holds the backend back', async (t) => {
    const pids = gw.workerPids();
    assert.equal(pids.length, 1);
    let got = 0;
    let tagged: string | undefined;
    // The client reads 8 MB, then stops for 1.5 s. Buffering anywhere in gw (the plugin chain, the
    // inner answer, the client sink) would let the backend write the other 92 MB meanwhile; with
    // backpressure it moves only by what the kernel's socket buffers hold. This asserts the
    // mechanism itself rather than a peak RSS, which V8's lazy collection of 100 MB of chunks
    // makes noisy (40–55 MB seen on an idle box).
    let stall: { backendBefore: number; backendAfter: number; rssBefore: number; rssAfter: number } | undefined;
    await new Promise<void>((resolve, reject) => {
      http.get({ host: HOST, port: gw.port, path: '/big', agent: false }, (res) => {
        tagged = res.headers['x-tagged'] as string | undefined;
        let stalled = false;
        res.on('data', (c: Buffer) => {
          got += c.length;
          if (!stalled && got >= 8 * MB) {
            stalled = true;
            res.pause();
            // Let the pipeline fill whatever it holds before the first sample.
            setTimeout(() => {
              const backendBefore = sent;
              const rssBefore = rssBytes(pids);
              setTimeout(() => {
                stall = { backendBefore, backendAfter: sent, rssBefore, rssAfter: rssBytes(pids) };
                res.resume();
              }, 1000);
            }, 500);
          }
        });
        res.on('end', resolve);
        res.on('error', reject);
      }).on('error', reject);
    });
    assert.equal(got, BIG);
    assert.equal(tagged, '1');
    assert.ok(stall, 'the client stalled once');
    const ahead = (stall.backendBefore - 8 * MB) / MB;
    t.diagnostic(`backend ahead of the client by ${ahead.toFixed(1)} MB at the stall; moved ${((stall.backendAfter - stall.backendBefore) / MB).toFixed(2)} MB during it; worker RSS ${((stall.rssAfter - stall.rssBefore) / MB).toFixed(1)} MB`);
    assert.ok(ahead < 32, `the backend got ${ahead.toFixed(1)} MB ahead of a stalled client: something buffers`);
    assert.ok(stall.backendAfter - stall.backendBefore < 1 * MB, `the backend kept writing while the client stalled (${stall.backendAfter - stall.backendBefore} bytes)`);
    assert.ok(stall.rssAfter - stall.rssBefore < 8 * MB, 'the worker did not grow while the client stalled');
  });

  test('a client that leaves mid-body costs nothing: same worker, healthy, no leak of the backend call', async () => {
    const pids = gw.workerPids();
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect({ host: HOST, port: gw.port }, () => s.write(`GET /big HTTP/1.1\r\nHost: x\r\n\r\n`));
        let n = 0;
        s.on('data', (c) => {
          n += c.length;
          if (n > 2 * MB) {
            s.destroy();
            resolve();
          }
        });
        s.on('error', () => resolve());
      });
    }
    await sleep(200);
    assert.deepEqual(gw.workerPids(), pids);
    assert.equal((await req(gw.port, '/__health')).status, 200);
    assert.equal((await req(gw.port, '/echo')).status, 200);
  });
});

describe('server plugins: CORS stays outside', () => {
  let backend: Backend;
  let gw: Gateway;
  before(async () => {
    backend = await startBackend(backendHandler(1024));
    const cfg = config(backend, { name: ['hello', 'b'], hello: { path: '/hi' } });
    (cfg.extra_config as Record<string, unknown>)['security/cors'] = { allow_origins: ['https://app.example'], allow_methods: ['GET', 'POST'] };
    gw = await startGateway(cfg, { args: ['--workers', '1'] });
  });
  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  test('a preflight is answered before the plugins; a hijacked answer carries the CORS headers', async () => {
    const pre = await req(gw.port, '/echo', {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' },
    });
    assert.ok(pre.status === 200 || pre.status === 204, `preflight status ${pre.status}`);
    assert.equal(h(pre.headers, 'access-control-allow-origin'), 'https://app.example');
    assert.equal(h(pre.headers, 'x-out'), undefined, 'the plugin never saw the preflight');
    const hi = await req(gw.port, '/hi', { headers: { origin: 'https://app.example' } });
    assert.equal(hi.status, 200);
    assert.equal(h(hi.headers, 'access-control-allow-origin'), 'https://app.example');
    const proxied = await req(gw.port, '/echo', { headers: { origin: 'https://app.example' } });
    assert.equal(h(proxied.headers, 'access-control-allow-origin'), 'https://app.example', 'one Allow-Origin, not two');
  });
});

describe('server plugins: start-up errors name the plugin', () => {
  let backend: Backend;
  before(async () => {
    backend = await startBackend(backendHandler(1024));
  });
  after(async () => {
    await backend?.close();
  });

  test('gw check fails on an unregistered name, listing the registered ones', async () => {
    const file = writeConfig(config(backend, { name: ['hello', 'nope'] }));
    const r = await runCli(['check', '-c', file]);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /server plugin 'nope' is not registered \(registered: [^)]*hello/);
  });

  test('gw check names a factory that throws or returns no handler', async () => {
    const r1 = await runCli(['check', '-c', writeConfig(config(backend, { name: 'broken-factory' }))]);
    assert.notEqual(r1.code, 0);
    assert.match(r1.stdout + r1.stderr, /server plugin 'broken-factory' \(.*faulty\.mjs\) failed to start: cannot start: missing key/);
    const r2 = await runCli(['check', '-c', writeConfig(config(backend, { name: ['not-a-handler'] }))]);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stdout + r2.stderr, /server plugin 'not-a-handler' .*the factory returned number, not a handler function/);
  });

  test('gw run stops on an unregistered name', async () => {
    await assert.rejects(startGateway(config(backend, { name: 'nope' }), { readyTimeout: 5000 }), /server plugin 'nope' is not registered/);
  });
});

describe('all plugin kinds in one configuration', () => {
  let backend: Backend;
  let gw: Gateway;
  before(async () => {
    backend = await startBackend((rq, res, rec) => {
      if (rec.url === '/moved') {
        res.writeHead(302, { location: '/elsewhere', 'content-type': 'text/plain' });
        return res.end('moved');
      }
      return sendJSON(res, 200, { url: rec.url, trace: rec.headers['x-trace'] ?? null });
    });
    gw = await startGateway(
      {
        version: 3,
        timeout: '5s',
        plugin: { folder: dir, pattern: '.mjs' },
        extra_config: { [NS]: { name: ['a', 'b'] } },
        endpoints: [
          {
            endpoint: '/mixed',
            input_headers: ['X-Trace'],
            extra_config: { 'plugin/req-resp-modifier': { name: ['ep-mark', 'resp-mark'] } },
            backend: [{ host: [backend.url], url_pattern: '/mixed', extra_config: { 'plugin/req-resp-modifier': { name: ['be-mark'] } } }],
          },
          {
            endpoint: '/moved',
            output_encoding: 'no-op',
            backend: [{ host: [backend.url], url_pattern: '/moved', encoding: 'no-op', extra_config: { 'plugin/http-client': { name: 'no-redirect' } } }],
          },
        ],
      },
      { args: ['--workers', '1'] },
    );
  });
  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  test('two server plugins, endpoint and backend modifiers, a no-redirect backend: each in its place', async () => {
    const r = await req(gw.port, '/mixed');
    assert.equal(r.status, 200);
    assert.equal(r.json().trace, 'b,a,ep-mod,be-mod', 'server plugins (outermost first), then endpoint, then backend modifiers');
    assert.equal(r.json().modified, true);
    assert.equal(h(r.headers, 'x-out'), 'a,b');
    const m = await req(gw.port, '/moved');
    assert.equal(m.status, 302, 'no-redirect hands the redirect back');
    assert.equal(h(m.headers, 'location'), '/elsewhere');
    assert.equal(h(m.headers, 'x-out'), 'a,b');
    assert.equal(m.text, 'moved');
    assert.equal(backend.requests.filter((x) => x.url === '/elsewhere').length, 0);
  });
});
