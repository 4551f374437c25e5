// `http_response.new` — HTTP calls from Lua scripts (krakend-lua's helper) over real sockets: one
// gw process with one worker (so a script that blocked the event loop while waiting would hold
// every other request), a loopback "service" the scripts call and a loopback backend.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, HOST, req, runCli, sendJSON, sleep, startBackend, startGateway, tempDir, writeConfig } from './helpers/gw.ts';

const lines = (...l: string[]) => l.join('\n');

describe('Lua http_response.new', () => {
  let svc: Backend;
  let backend: Backend;
  let gw: Gateway;
  let dead: string;
  let loadsCalling: string;

  before(async () => {
    svc = await startBackend(async (_r, res, rec) => {
      const u = new URL(rec.url, 'http://x');
      const delay = Number(u.searchParams.get('delay') ?? 0);
      if (delay > 0) await sleep(delay);
      if (u.pathname === '/token') return sendJSON(res, 200, { token: 't-1' }, { 'x-svc': 'yes' });
      if (u.pathname === '/redirect') {
        res.writeHead(302, { location: '/token' });
        return res.end();
      }
      if (u.pathname === '/missing') return sendJSON(res, 404, { error: 'nope' });
      return sendJSON(res, 200, { method: rec.method, body: rec.body.toString(), one: rec.headers['x-one'] ?? null, ct: rec.headers['content-type'] ?? null });
    });
    backend = await startBackend((_r, res, rec) => sendJSON(res, 200, { auth: rec.headers['authorization'] ?? null, svc: rec.headers['x-svc'] ?? null, st: rec.headers['x-status'] ?? null, err: rec.headers['x-err'] ?? null }));
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, HOST, () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    dead = `http://${HOST}:${port}`;
    const dir = fs.mkdtempSync(path.join(tempDir(), 'lua-http-'));
    loadsCalling = path.join(dir, 'calls-at-load.lua');
    fs.writeFileSync(loadsCalling, `local r = http_response.new("${svc.url}/token")\n`);

    const tokenPre = lines(
      `local r = http_response.new("${svc.url}/token")`,
      'local req = request.load()',
      `req:headers("Authorization", "Bearer " .. string.match(r:body(), '"token":"([^"]+)"'))`,
      'req:headers("X-Svc", r:headers("X-Svc"))',
      'req:headers("X-Status", tostring(r:statusCode()))',
      'r:close()',
    );
    const be = (url: string, extra: Record<string, unknown> = {}) => ({ host: [backend.url], url_pattern: url, ...extra });
    const cfg = {
      version: 3,
      extra_config: { 'gw/server': { workers: 1 } },
      endpoints: [
        { endpoint: '/pre-token', backend: [be('/pre-token', { extra_config: { 'modifier/lua-backend': { pre: tokenPre } } })] },
        {
          endpoint: '/post-call',
          extra_config: {
            'modifier/lua-proxy': {
              post: lines(
                `local r = http_response.new("${svc.url}/echo", "POST", '{"a":1}', {["X-One"] = "1", ["Content-Type"] = "application/json"})`,
                'local d = response.load():data()',
                'd:set("called", r:body())',
                'd:set("status", r:statusCode())',
                `local m = http_response.new("${svc.url}/missing")`,
                'd:set("missing", m:statusCode())',
                `local rd = http_response.new("${svc.url}/redirect")`,
                'd:set("redirected", rd:body())',
              ),
            },
          },
          backend: [be('/post-call')],
        },
        {
          endpoint: '/noop-slow',
          output_encoding: 'no-op',
          backend: [be('/noop-slow', {
            encoding: 'no-op',
            extra_config: { 'modifier/lua-backend': { pre: tokenPre.replace('/token"', '/token?delay=400"') } },
          })],
        },
        { endpoint: '/fast', backend: [be('/fast')] },
        {
          endpoint: '/fails',
          backend: [be('/fails', { extra_config: { 'modifier/lua-backend': { pre: `http_response.new("${dead}/x")` } } })],
        },
        {
          endpoint: '/fails-caught',
          backend: [be('/fails-caught', {
            extra_config: {
              'modifier/lua-backend': {
                pre: lines(`local ok, err = pcall(http_response.new, "${dead}/x")`, 'request.load():headers("X-Err", tostring(ok) .. " " .. err)'),
              },
            },
          })],
        },
        {
          endpoint: '/slow-call',
          timeout: '300ms',
          backend: [be('/slow-call', { extra_config: { 'modifier/lua-backend': { pre: `http_response.new("${svc.url}/token?delay=3000")` } } })],
        },
        {
          endpoint: '/loop-after-call',
          timeout: '500ms',
          backend: [be('/loop-after-call', { extra_config: { 'modifier/lua-backend': { pre: lines(`http_response.new("${svc.url}/token")`, 'while true do end') } } })],
        },
        {
          // fengari switched hooks off after a coroutine's pcall caught an error (core/lua/vm.ts patchPcallk).
          endpoint: '/loop-after-pcall',
          timeout: '500ms',
          backend: [be('/loop-after-pcall', { extra_config: { 'modifier/lua-backend': { pre: lines('pcall(error, "x")', 'while true do end') } } })],
        },
      ],
    };
    gw = await startGateway(cfg);
  });

  after(async () => {
    await gw?.stop();
    await svc?.close();
    await backend?.close();
  });

  test('a backend pre script fetches a token and sends it on (status, header and body read from the answer)', async () => {
    const r = await req(gw.port, '/pre-token');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { auth: 'Bearer t-1', svc: 'yes', st: '200', err: null });
  });

  test('a post script POSTs with a body and headers; a 404 answer is a status, not an error; redirects are followed', async () => {
    const r = await req(gw.port, '/post-call');
    assert.equal(r.status, 200, r.text);
    const d = r.json();
    assert.deepEqual(JSON.parse(d.called), { method: 'POST', body: '{"a":1}', one: '1', ct: 'application/json' });
    assert.equal(d.status, 200);
    assert.equal(d.missing, 404);
    assert.deepEqual(JSON.parse(d.redirected), { token: 't-1' });
  });

  test('a script waiting on its call does not hold the worker: a later request is answered first', async () => {
    const order: string[] = [];
    const slow = req(gw.port, '/noop-slow').then((r) => {
      order.push('slow');
      return r;
    });
    await sleep(50);
    const fast = await req(gw.port, '/fast');
    order.push('fast');
    assert.equal(fast.status, 200);
    const s = await slow;
    assert.equal(s.status, 200, s.text);
    assert.equal(s.json().auth, 'Bearer t-1');
    assert.deepEqual(order, ['fast', 'slow']);
  });

  test('a call that fails raises a Lua error: 500, or a value for pcall', async () => {
    const r = await req(gw.port, '/fails');
    assert.equal(r.status, 500);
    assert.match(gw.output(), /GET ".*\/x": .*ECONNREFUSED/);
    const c = await req(gw.port, '/fails-caught');
    assert.equal(c.status, 200, c.text);
    assert.match(c.json().err, /^false .*ECONNREFUSED/);
  });

  test('a call slower than the endpoint timeout ends the request at the timeout', async () => {
    const r = await req(gw.port, '/slow-call');
    assert.equal(r.status, 500);
    assert.ok(r.ms < 2500, `answered after ${r.ms} ms`);
    assert.equal((await req(gw.port, '/fast')).status, 200);
  });

  test('the time limit still stops a script after its call, and after a pcall that caught an error', async () => {
    for (const p of ['/loop-after-call', '/loop-after-pcall']) {
      const r = await req(gw.port, p, { timeoutMs: 10_000 });
      assert.equal(r.status, 500, p);
    }
    assert.match(gw.output(), /script ran past its time limit/);
    assert.equal((await req(gw.port, '/fast')).status, 200);
  });

  test('a client that leaves while the script waits costs nothing: the worker answers on', async () => {
    await new Promise<void>((resolve) => {
      const r = http.get({ host: HOST, port: gw.port, path: '/noop-slow', agent: false });
      r.on('error', () => {});
      setTimeout(() => {
        r.destroy();
        resolve();
      }, 100);
    });
    await sleep(500); // the call's answer arrives after the client left
    const r = await req(gw.port, '/pre-token');
    assert.equal(r.status, 200);
    assert.equal(gw.proc.exitCode, null);
    assert.doesNotMatch(gw.output(), /uncaught|worker \d+ died/i);
  });

  test('sources cannot call out while they load: gw check says so, naming the backend', async () => {
    const cfg = {
      version: 3,
      endpoints: [{ endpoint: '/at-load', backend: [{ host: [backend.url], url_pattern: '/at-load', extra_config: { 'modifier/lua-backend': { sources: [loadsCalling], pre: 'local x = 1' } } }] }],
    };
    const r = await runCli(['check', '-c', writeConfig(cfg)]);
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, /endpoint \/at-load, backend 0 \(\/at-load\): "modifier\/lua-backend": http_response\.new cannot run while the sources load/);
  });
});
