// Lua modifiers end to end (modifier/lua-backend, modifier/lua-proxy; docs/lua.md): one real gw
// process (`--workers 1`, so a script that blocked the event loop would block every request) with
// one endpoint per behaviour, in front of a loopback backend that records what it gets; plus
// `gw check` runs for the start-up errors (md5, syntax, no-op endpoints).
// Run: npm run build && node --import tsx --test test/lua.test.ts
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from 'undici';
import {
  type Backend,
  type Gateway,
  type RecordedRequest,
  h,
  rawRequest,
  req,
  runCli,
  sendJSON,
  sleep,
  startBackend,
  startGateway,
  tempDir,
  writeConfig,
} from './helpers/gw.ts';

const LUA_BACKEND = 'modifier/lua-backend';
const LUA_PROXY = 'modifier/lua-proxy';
const lb = (cfg: Record<string, unknown>) => ({ [LUA_BACKEND]: cfg });
const lp = (cfg: Record<string, unknown>) => ({ [LUA_PROXY]: cfg });
/** A script written one statement a line. */
const lua = (...lines: string[]) => lines.join('\n');

/** What `/data` answers: the object the `post` scripts edit. */
const DATA = { keep: 1, secret: 's3cr3t', obj: { a: 1 }, list: [10, 20, 30] };

let luaDir: string;
let helpersFile: string;
let helpersMd5: string;
let missingFile: string;
let backend: Backend;
let gw: Gateway;

/** Every request the backend got whose path+query starts with `prefix`. */
const seen = (prefix: string): RecordedRequest[] => backend.requests.filter((r) => r.url.startsWith(prefix));
/** The last of them (fails when there is none). */
function last(prefix: string): RecordedRequest {
  const all = seen(prefix);
  assert.ok(all.length > 0, `the backend never saw ${prefix}; it saw ${backend.requests.map((r) => r.url).join(' ')}`);
  return all.at(-1)!;
}

before(async () => {
  luaDir = fs.mkdtempSync(path.join(tempDir(), 'lua-'));
  helpersFile = path.join(luaDir, 'helpers.lua');
  const helpers = lua('function tag(r)', '  r:headers("X-Tag", string.format("from-%s", "source"))', 'end');
  fs.writeFileSync(helpersFile, helpers);
  helpersMd5 = createHash('md5').update(helpers).digest('hex');
  missingFile = path.join(luaDir, 'does-not-exist.lua');

  backend = await startBackend(async (_req, res, rec) => {
    const u = new URL(rec.url, 'http://x');
    switch (u.pathname) {
      case '/seq/first':
        return sendJSON(res, 200, { foo: 'bar42', other: 1 });
      case '/data':
        return sendJSON(res, 200, DATA);
      case '/iso':
        // Answers in a shuffled order, so the parallel requests overlap.
        await sleep(Math.floor(Math.random() * 30));
        return sendJSON(res, 200, { url: rec.url });
      case '/gslow':
        await sleep(60);
        return sendJSON(res, 200, { ok: true });
      default:
        return sendJSON(res, 200, { method: rec.method, url: rec.url, body: rec.body.toString('utf8') });
    }
  });

  const host = [backend.url];
  const be = (url_pattern: string, extra_config?: Record<string, unknown>, more: Record<string, unknown> = {}) => ({
    host,
    url_pattern,
    ...(extra_config ? { extra_config } : {}),
    ...more,
  });

  const endpoints = [
    // 1. backend pre: url, params
    {
      endpoint: '/b/url/{id}',
      backend: [be('/u/', lb({ pre: lua('local r = request.load()', 'r:url(r:url() .. "42?id=" .. r:params("Id") .. "&lower=" .. r:params("id"))') }))],
    },
    {
      endpoint: '/b/seq',
      extra_config: { proxy: { sequential: true, sequential_propagated_params: ['resp0_first.foo'] } },
      backend: [
        be('/seq/first', undefined, { group: 'first', allow: ['foo'] }),
        be('/x/', lb({ pre: 'local req = request.load(); req:url(req:url() .. req:params("Resp0_first.foo"))' }), { group: 'second' }),
      ],
    },
    // 2. backend pre: headers
    {
      endpoint: '/b/headers',
      input_headers: ['X-Drop', 'X-Keep'],
      backend: [
        be(
          '/hdr',
          lb({
            pre: lua(
              'local r = request.load()',
              'r:headers("X-Added", "yes")',
              'r:headers("X-Drop", nil)',
              'r:headers("X-Keep-Copy", r:headers("X-Keep"))',
              'r:headers("Connection", "close")',
              'r:headers("Transfer-Encoding", "chunked")',
              'r:headers("Keep-Alive", "timeout=999")',
              'r:headers("Upgrade", "websocket")',
              'r:headers("Host", "evil.example")',
            ),
          }),
        ),
      ],
    },
    // 3. backend pre: method and body
    { endpoint: '/b/method', backend: [be('/mb', lb({ pre: `local r = request.load(); r:method("POST"); r:body('{"a":1}')` }))] },
    { endpoint: '/b/body', method: 'POST', backend: [be('/rb', lb({ pre: 'local r = request.load(); r:headers("X-Body", r:body())' }))] },
    {
      endpoint: '/b/body-star',
      method: 'POST',
      input_headers: ['*'],
      backend: [be('/rbs', lb({ pre: `local r = request.load(); r:body('{"replaced":true}')` }))],
    },
    // 4. backend post: data
    {
      endpoint: '/b/post',
      backend: [
        be(
          '/data',
          lb({
            post: lua(
              'local r = response.load()',
              'r:data():set("added", 1)',
              'r:data():del("secret")',
              'r:data():get("obj"):set("x", "y")',
              'local l = r:data():get("list")',
              'r:data():set("first", l:get(0))',
              'r:data():set("n", l:len())',
              'r:data():set("beyond", l:get(3) == nil)',
              // A Lua sequence set into data is an object keyed "1".."n" (KrakenD's lua_1); a
              // luaList is a list; json.marshal writes a sequence as an array.
              'r:data():set("seq", {"x", "y", {"z"}})',
              'local nl = luaList.new(); nl:set(0, "p"); nl:set(1, "q"); r:data():set("lst", nl)',
              'r:data():set("marshalled", json.marshal({1, 2, {a = 3}}))',
            ),
          }),
        ),
      ],
    },
    // 5. endpoint pre: params, query, headers
    {
      endpoint: '/p/pre/{id}',
      input_query_strings: ['a'],
      input_headers: ['X-From-Lua', 'X-Orig'],
      extra_config: lp({
        pre: lua(
          'local r = request.load()',
          'r:headers("X-Orig", r:params("Id") .. "|" .. r:query())',
          'r:params("Id", "99")',
          'r:query("a=1")',
          'r:headers("X-From-Lua", "1")',
        ),
      }),
      backend: [be('/pp/{id}')],
    },
    // 6. endpoint post: response headers, completeness
    {
      endpoint: '/p/post',
      extra_config: lp({ post: 'local r = response.load(); r:headers("X-Custom", "v"); r:isComplete(false); r:data():set("from_post", true)' }),
      backend: [be('/data')],
    },
    // 7. custom_error and runtime errors
    { endpoint: '/e/backend-teapot', backend: [be('/never-backend-teapot', lb({ pre: 'custom_error("teapot", 418)' }))] },
    { endpoint: '/e/proxy-teapot', extra_config: lp({ pre: 'custom_error("teapot", 418)' }), backend: [be('/never-proxy-teapot')] },
    { endpoint: '/e/json', backend: [be('/never-json', lb({ pre: `custom_error('{"m":1}', 418, "application/json")` }))] },
    { endpoint: '/e/plain', extra_config: lp({ pre: 'custom_error("plain")' }), backend: [be('/never-plain')] },
    {
      endpoint: '/e/runtime',
      input_query_strings: ['boom'],
      extra_config: lp({ pre: 'local r = request.load(); if r:query() == "boom=1" then local x = nil; x() end' }),
      backend: [be('/after-runtime')],
    },
    // 8. skip_next
    { endpoint: '/b/skip', backend: [be('/never-skip', lb({ skip_next: true, post: 'response.load():data():set("skipped", "yes")' }))] },
    // 9. sources
    { endpoint: '/src/ok', backend: [be('/src-ok', lb({ sources: [helpersFile], md5: { [helpersFile]: helpersMd5 }, pre: 'tag(request.load())' }))] },
    { endpoint: '/src/missing', backend: [be('/never-missing', lb({ sources: [missingFile], pre: 'tag(request.load())' }))] },
    // 10. libraries
    {
      endpoint: '/lib/closed',
      backend: [
        be(
          '/lib-closed',
          lb({
            pre: lua(
              'if io ~= nil or os ~= nil then custom_error("io/os are open", 500) end',
              'local r = request.load()',
              'r:headers("X-Types", type(io) .. "," .. type(os) .. "," .. type(load) .. "," .. type(require))',
              'r:headers("X-Upper", string.upper("abc"))',
            ),
          }),
        ),
      ],
    },
    {
      endpoint: '/lib/open',
      backend: [be('/lib-open', lb({ allow_open_libs: true, pre: 'local r = request.load(); r:headers("X-Io", type(io)); r:headers("X-Time", tostring(os.time()))' }))],
    },
    // 11. a script that never ends
    { endpoint: '/loop', timeout: '300ms', backend: [be('/never-loop', lb({ pre: 'while true do end' }))] },
    {
      endpoint: '/pattern',
      timeout: '100ms',
      input_headers: ['X-Input'],
      backend: [be('/pattern', lb({ pre: 'local s = request.load():headers("X-Input"); s:find(".-.-.-.-.-.-b")' }))],
    },
    // 12. no-op endpoint, backend pre only
    {
      endpoint: '/noop',
      output_encoding: 'no-op',
      backend: [be('/noop-be', lb({ pre: 'request.load():headers("X-Noop", "1")' }), { encoding: 'no-op' })],
    },
    // 13. a global in pre, concurrent requests
    { endpoint: '/iso/{id}', backend: [be('/iso', lb({ pre: 'current = request.load(); current:url(current:url() .. "?v=" .. current:params("Id"))' }))] },
    {
      endpoint: '/g/{id}',
      extra_config: lp({ pre: 'g_id = request.load():params("Id")', post: 'response.load():data():set("id_from_pre", g_id)' }),
      backend: [be('/gslow')],
    },
    // a plain endpoint, to show the others keep answering
    { endpoint: '/plain', backend: [be('/plain')] },
  ];
  gw = await startGateway({ version: 3, extra_config: { router: { return_error_msg: true } }, endpoints }, { args: ['--workers', '1'] });
});

after(async () => {
  await gw?.stop();
  await backend?.close();
});

// ---------------------------------------------------------------------------

describe('lua-backend pre', () => {
  test('req:url(req:url() .. "42") changes the backend path; req:params("Id") is the {id} param (capitalised)', async () => {
    const r = await req(gw.port, '/b/url/7');
    assert.equal(r.status, 200, r.text);
    assert.equal(last('/u/').url, '/u/42?id=7&lower=');
    assert.equal(r.json().url, '/u/42?id=7&lower=');
  });

  test('sequential: req:params("Resp0_first.foo") is the value propagated from the first backend', async () => {
    const r = await req(gw.port, '/b/seq');
    assert.equal(r.status, 200, r.text);
    assert.equal(last('/x/').url, '/x/bar42');
    assert.deepEqual(r.json().first, { foo: 'bar42' });
  });

  test('headers: set and delete reach the backend; hop-by-hop headers (and Host) set by a script do not', async () => {
    const r = await req(gw.port, '/b/headers', { headers: { 'X-Drop': 'must go', 'X-Keep': 'kept' } });
    assert.equal(r.status, 200, r.text);
    const rec = last('/hdr');
    assert.equal(rec.headers['x-added'], 'yes');
    assert.equal(rec.headers['x-drop'], undefined);
    assert.equal(rec.headers['x-keep'], 'kept');
    assert.equal(rec.headers['x-keep-copy'], 'kept', 'req:headers(k) reads the client header');
    assert.notEqual(rec.headers['connection'], 'close');
    assert.equal(rec.headers['transfer-encoding'], undefined);
    assert.equal(rec.headers['keep-alive'], undefined);
    assert.equal(rec.headers['upgrade'], undefined);
    assert.equal(rec.headers['host'], `127.0.0.1:${backend.port}`);
  });

  test('req:method("POST") and req:body(...) on a GET endpoint: the backend gets a POST with that body', async () => {
    const r = await req(gw.port, '/b/method');
    assert.equal(r.status, 200, r.text);
    const rec = last('/mb');
    assert.equal(rec.method, 'POST');
    assert.equal(rec.body.toString('utf8'), '{"a":1}');
    assert.equal(rec.headers['content-length'], '7');
  });

  test('req:body() reads the client body (and the body is still forwarded)', async () => {
    const r = await req(gw.port, '/b/body', { method: 'POST', body: '{"x":1}', headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 200, r.text);
    const rec = last('/rb');
    assert.equal(rec.headers['x-body'], '{"x":1}');
    assert.equal(rec.method, 'POST');
    assert.equal(rec.body.toString('utf8'), '{"x":1}');
  });

  test(
    'req:body(new) with input_headers "*": the backend gets the new body with its own Content-Length (KrakenD forwards the stale one and fails)',
    async () => {
      const r = await req(gw.port, '/b/body-star', { method: 'POST', body: '{"x":1}', headers: { 'content-type': 'application/json' } });
      assert.equal(r.status, 200, r.text);
      const rec = last('/rbs');
      assert.equal(rec.body.toString('utf8'), '{"replaced":true}');
    },
  );
});

describe('lua-backend post', () => {
  test('data():set / del, nested get():set, luaList get(0) / len(); a Lua sequence set into data is an object keyed "1"…"n" (as KrakenD), a luaList a list', async () => {
    const r = await req(gw.port, '/b/post');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), {
      keep: 1,
      obj: { a: 1, x: 'y' },
      list: [10, 20, 30],
      added: 1,
      first: 10,
      n: 3,
      beyond: true,
      seq: { 1: 'x', 2: 'y', 3: { 1: 'z' } },
      lst: ['p', 'q'],
      marshalled: JSON.stringify([1, 2, { a: 3 }], null, '\t'),
    });
    assert.equal(r.json().secret, undefined);
  });

  test('skip_next: the backend is never called; the client gets the data post set', async () => {
    const r = await req(gw.port, '/b/skip');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { skipped: 'yes' });
    assert.equal(seen('/never-skip').length, 0, 'skip_next must not call the backend');
  });
});

describe('lua-proxy (endpoint)', () => {
  test('pre: params("Id", "99") changes the url_pattern; query("a=1") and headers reach the backend', async () => {
    const r = await req(gw.port, '/p/pre/5?a=7&b=2', { headers: { 'X-From-Lua': '0' } });
    assert.equal(r.status, 200, r.text);
    const rec = last('/pp/');
    assert.equal(rec.url, '/pp/99?a=1');
    assert.equal(rec.headers['x-from-lua'], '1');
    assert.equal(rec.headers['x-orig'], '5|a=7&b=2', 'the script read the original param and query');
  });

  test('post: response headers reach the client; isComplete(false) → X-Krakend-Completed: false', async () => {
    const r = await req(gw.port, '/p/post');
    assert.equal(r.status, 200, r.text);
    assert.equal(h(r.headers, 'x-custom'), 'v');
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.equal(r.json().from_post, true);
    assert.equal(r.json().keep, 1);
    // The same backend without the script: complete.
    const plain = await req(gw.port, '/plain');
    assert.equal(h(plain.headers, 'x-krakend-completed'), 'true');
    assert.equal(h(plain.headers, 'x-custom'), undefined);
  });

  test(
    'a global set in pre is the one post of the same request reads (one environment per request, as KrakenD)',
    async () => {
      const ids = Array.from({ length: 8 }, (_, i) => `g${i}`);
      const rs = await Promise.all(ids.map((id) => req(gw.port, `/g/${id}`)));
      for (let i = 0; i < ids.length; i++) {
        assert.equal(rs[i]!.status, 200);
        assert.equal(rs[i]!.json().id_from_pre, ids[i], `request ${ids[i]} read another request's global`);
      }
    },
  );
});

describe('errors', () => {
  test('custom_error("teapot", 418) in a backend pre → 418 "teapot"; the backend is not called', async () => {
    const r = await req(gw.port, '/e/backend-teapot');
    assert.equal(r.status, 418);
    assert.equal(r.text, 'teapot');
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.equal(seen('/never-backend-teapot').length, 0);
  });

  test('custom_error("teapot", 418) in an endpoint pre → 418 "teapot"', async () => {
    const r = await req(gw.port, '/e/proxy-teapot');
    assert.equal(r.status, 418);
    assert.equal(r.text, 'teapot');
    assert.equal(seen('/never-proxy-teapot').length, 0);
  });

  test('custom_error(json, 418, "application/json") → that Content-Type and body', async () => {
    const r = await req(gw.port, '/e/json');
    assert.equal(r.status, 418);
    assert.equal(h(r.headers, 'content-type'), 'application/json');
    assert.deepEqual(r.json(), { m: 1 });
  });

  test('custom_error("plain") without a status → 500', async () => {
    const r = await req(gw.port, '/e/plain');
    assert.equal(r.status, 500);
    assert.equal(r.text, 'plain');
    assert.equal(seen('/never-plain').length, 0);
  });

  test('a runtime error (calling nil) → 500; the same script and the gateway keep serving', async () => {
    const r = await req(gw.port, '/e/runtime?boom=1');
    assert.equal(r.status, 500);
    assert.match(r.text, /nil/);
    assert.equal(seen('/after-runtime').length, 0);
    const again = await req(gw.port, '/e/runtime?boom=0');
    assert.equal(again.status, 200, again.text);
    assert.equal(last('/after-runtime').url, '/after-runtime?boom=0');
    const other = await req(gw.port, '/plain');
    assert.equal(other.status, 200);
  });

  test('while true do end (timeout 300ms) → 500 within seconds; the worker still answers', async () => {
    const loop = req(gw.port, '/loop', { timeoutMs: 5000 });
    await sleep(20);
    const during = req(gw.port, '/plain', { timeoutMs: 5000 });
    const [l, d] = await Promise.all([loop, during]);
    assert.equal(l.status, 500);
    assert.ok(l.ms < 3000, `the looping script ended after ${l.ms} ms`);
    assert.ok(l.ms >= 250, `answered after ${l.ms} ms: the script did not run until its limit`);
    assert.equal(seen('/never-loop').length, 0);
    assert.equal(d.status, 200);
    const afterwards = await req(gw.port, '/plain', { timeoutMs: 2000 });
    assert.equal(afterwards.status, 200);
    assert.ok(afterwards.ms < 1000);
  });

  test(
    'the time limit also stops a script stuck in a string function (a client header fed to a slow pattern)',
    {
      todo:
        'known limitation (docs/lua.md; KrakenD\'s gopher-lua has the same): the deadline is checked between Lua ' +
        'instructions, never inside one library call; string.find(42 × "a", ".-.-.-.-.-.-b") holds the worker ' +
        '~1.5 s past a 100ms timeout (80 characters: about a minute), and every other request waits',
    },
    async () => {
      const slow = req(gw.port, '/pattern', { headers: { 'X-Input': 'a'.repeat(42) }, timeoutMs: 10_000 });
      await sleep(20);
      const during = await req(gw.port, '/plain', { timeoutMs: 10_000 });
      const s = await slow;
      assert.equal(s.status, 500);
      assert.ok(s.ms < 600, `the script was stopped after ${s.ms} ms (timeout 100ms)`);
      assert.equal(during.status, 200);
      assert.ok(during.ms < 600, `another endpoint waited ${during.ms} ms for the worker`);
    },
  );
});

describe('sources and libraries', () => {
  test('a function from a source file (right md5) is callable from pre', async () => {
    const r = await req(gw.port, '/src/ok');
    assert.equal(r.status, 200, r.text);
    assert.equal(last('/src-ok').headers['x-tag'], 'from-source');
  });

  test('a missing source file: logged at start-up, 500 through that endpoint, the others answer', async () => {
    assert.ok(gw.output().includes(missingFile), `no log line naming ${missingFile}:\n${gw.output()}`);
    const r = await req(gw.port, '/src/missing');
    assert.equal(r.status, 500);
    assert.ok(r.text.includes(missingFile), `the error names the file: ${r.text}`);
    assert.equal(seen('/never-missing').length, 0);
    const ok = await req(gw.port, '/src/ok');
    assert.equal(ok.status, 200);
  });

  test('without allow_open_libs: io, os, load and require are nil; string.upper works', async () => {
    const r = await req(gw.port, '/lib/closed');
    assert.equal(r.status, 200, r.text);
    const rec = last('/lib-closed');
    assert.equal(rec.headers['x-types'], 'nil,nil,nil,nil');
    assert.equal(rec.headers['x-upper'], 'ABC');
  });

  test('with allow_open_libs: io is a table and os.time() works', async () => {
    const r = await req(gw.port, '/lib/open');
    assert.equal(r.status, 200, r.text);
    const rec = last('/lib-open');
    assert.equal(rec.headers['x-io'], 'table');
    const t = Number(rec.headers['x-time']);
    assert.ok(Math.abs(t - Date.now() / 1000) < 60, `os.time() gave ${rec.headers['x-time']}`);
  });
});

describe('no-op endpoint', () => {
  test('lua-backend pre sets a header the backend sees; the answer streams through', async () => {
    const r = await req(gw.port, '/noop');
    assert.equal(r.status, 200, r.text);
    assert.equal(last('/noop-be').headers['x-noop'], '1');
    assert.equal(r.json().url, '/noop-be');
  });
});

describe('isolation', () => {
  test('20 parallel requests through one pre script that keeps the request in a global each reach the backend with their own param', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `n${i}`);
    const before = seen('/iso').length;
    const rs = await Promise.all(ids.map((id) => req(gw.port, `/iso/${id}`)));
    for (let i = 0; i < ids.length; i++) {
      assert.equal(rs[i]!.status, 200, rs[i]!.text);
      assert.equal(rs[i]!.json().url, `/iso?v=${ids[i]}`);
    }
    const got = seen('/iso').slice(before).map((r) => r.url).sort();
    assert.deepEqual(got, ids.map((id) => `/iso?v=${id}`).sort());
  });
});

// ---------------------------------------------------------------------------

describe('gw check', () => {
  const config = (endpoint: Record<string, unknown>) => ({ version: 3, endpoints: [{ endpoint: '/x', ...endpoint }] });
  const backendWith = (extra: Record<string, unknown>, more: Record<string, unknown> = {}) => ({
    backend: [{ host: [backend.url], url_pattern: '/x', extra_config: extra, ...more }],
  });
  const noop = (extra: Record<string, unknown>, endpointExtra?: Record<string, unknown>) => ({
    output_encoding: 'no-op',
    ...(endpointExtra ? { extra_config: endpointExtra } : {}),
    ...backendWith(extra, { encoding: 'no-op' }),
  });

  test('start-up errors: wrong md5, syntax error, post / skip_next / lua-proxy on a no-op endpoint', async () => {
    const cases = {
      md5: config(backendWith(lb({ sources: [helpersFile], md5: { [helpersFile]: '0'.repeat(32) }, pre: 'tag(request.load())' }))),
      syntax: config(backendWith(lb({ pre: 'local = = 1' }))),
      noopPost: config(noop(lb({ pre: 'request.load()', post: 'response.load()' }))),
      noopSkip: config(noop(lb({ skip_next: true }))),
      noopProxy: config(noop({}, lp({ pre: 'request.load()' }))),
      noopPreOnly: config(noop(lb({ pre: 'request.load():headers("X-A", "1")' }))),
    };
    const names = Object.keys(cases) as (keyof typeof cases)[];
    const results = await Promise.all(names.map((n) => runCli(['check', '-c', writeConfig(cases[n])], { timeoutMs: 30_000 })));
    const r = Object.fromEntries(names.map((n, i) => [n, results[i]!])) as Record<keyof typeof cases, (typeof results)[number]>;

    assert.notEqual(r.md5.code, 0, r.md5.output);
    assert.ok(r.md5.output.includes(helpersFile), r.md5.output);
    assert.match(r.md5.output, /checksum/);

    assert.notEqual(r.syntax.code, 0, r.syntax.output);
    assert.match(r.syntax.output, /pre-script/);

    for (const n of ['noopPost', 'noopSkip'] as const) {
      assert.notEqual(r[n].code, 0, r[n].output);
      assert.ok(r[n].output.includes(LUA_BACKEND), r[n].output);
    }
    assert.notEqual(r.noopProxy.code, 0, r.noopProxy.output);
    assert.ok(r.noopProxy.output.includes(LUA_PROXY), r.noopProxy.output);

    // The control: pre alone is fine on a no-op endpoint.
    assert.equal(r.noopPreOnly.code, 0, r.noopPreOnly.output);
    assert.match(r.noopPreOnly.output, /Syntax OK/);
  });
});

// ---------------------------------------------------------------------------
// Regressions from the Lua review: each of these failed before the fix. One more gateway
// (`--workers 1`) with its own loopback backend; the scripts that loop run last.

describe('lua review regressions', () => {
  let rdir: string;
  let liveFile: string;
  let missingSrc: string;
  let rb: Backend;
  let rgw: Gateway;
  /** The requests the regression backend got on exactly `pathname` (query ignored). */
  const hits = (pathname: string) => rb.requests.filter((r) => new URL(r.url, 'http://x').pathname === pathname);
  /** A deterministic mtime change for the live source (no reliance on the clock's resolution). */
  let liveStamp = Math.floor(Date.now() / 1000);
  const writeLive = (code: string) => {
    fs.writeFileSync(liveFile, code);
    liveStamp += 10;
    fs.utimesSync(liveFile, liveStamp, liveStamp);
  };
  const rawGet = (p: string) => rawRequest(rgw.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  /** No header line of the raw answer is a Set-Cookie (nor one smuggled into the body). */
  const assertNoSetCookie = (raw: Buffer) => {
    const text = raw.toString('latin1');
    assert.doesNotMatch(text, /^set-cookie/im, `a Set-Cookie line reached the client:\n${JSON.stringify(text)}`);
  };

  before(async () => {
    rdir = fs.mkdtempSync(path.join(tempDir(), 'lua-rev-'));
    const rememberFile = path.join(rdir, 'remember.lua');
    fs.writeFileSync(rememberFile, 'function remember(v) saved = v end\n');
    liveFile = path.join(rdir, 'live.lua');
    writeLive('function tag(d) d:set("v", "one") end\n');
    missingSrc = path.join(rdir, 'never-written.lua');

    rb = await startBackend(async (_req, res, rec) => {
      const u = new URL(rec.url, 'http://x');
      switch (u.pathname) {
        case '/slow':
          await sleep(300);
          return sendJSON(res, 200, { path: u.pathname });
        case '/r-list':
          return sendJSON(res, 200, { l: ['a'] });
        default:
          return sendJSON(res, 200, { path: u.pathname, len: rec.body.length });
      }
    });
    const be = (url_pattern: string, extra_config?: Record<string, unknown>, more: Record<string, unknown> = {}) => ({
      host: [rb.url],
      url_pattern,
      ...(extra_config ? { extra_config } : {}),
      ...more,
    });
    const endpoints = [
      // 2. response splitting
      {
        endpoint: '/r/split-value',
        extra_config: lp({ post: 'local r = response.load(); r:headers("X-Trace", "abc\\r\\nSet-Cookie: pwned=1")' }),
        backend: [be('/r-split-value')],
      },
      {
        endpoint: '/r/split-name',
        extra_config: lp({ post: 'local r = response.load(); r:headers("X-A: 1\\r\\nSet-Cookie", "pwned=2")' }),
        backend: [be('/r-split-name')],
      },
      {
        endpoint: '/r/split-ct',
        extra_config: lp({ post: 'custom_error("boom", 418, "text/plain\\r\\nSet-Cookie: ct=1")' }),
        backend: [be('/r-split-ct')],
      },
      // 3. globals set by source functions, concurrent requests
      {
        endpoint: '/r/who/{which}',
        input_headers: ['X-User'],
        extra_config: lp({
          sources: [rememberFile],
          pre: 'remember(request.load():headers("X-User"))',
          post: 'response.load():data():set("saved_user", saved)',
        }),
        backend: [be('/{which}')],
      },
      // 4. missing source, post only
      {
        endpoint: '/r/missing-proxy',
        method: 'POST',
        extra_config: lp({ sources: [missingSrc], post: 'response.load():data():set("x", 1)' }),
        backend: [be('/r-missing-proxy')],
      },
      {
        endpoint: '/r/missing-backend',
        method: 'POST',
        backend: [be('/r-missing-backend', lb({ sources: [missingSrc], post: 'response.load():data():set("x", 1)' }))],
      },
      // 5. binary body
      { endpoint: '/r/binary', method: 'POST', backend: [be('/r-binary', lb({ pre: 'local r = request.load(); r:body(r:body() .. "-changed")' }))] },
      // 6. custom_error with a status that is no usable status
      {
        endpoint: '/r/status/{code}',
        extra_config: lp({ pre: 'custom_error("x", tonumber(request.load():params("Code")))' }),
        backend: [be('/r-status')],
      },
      // 7. luaList:set growing / negative
      { endpoint: '/r/list-grow', backend: [be('/r-list', lb({ post: 'local r = response.load(); local l = r:data():get("l"); l:set(3, "d")' }))] },
      { endpoint: '/r/list-neg', backend: [be('/r-list', lb({ post: 'local r = response.load(); local l = r:data():get("l"); l:set(-1, "x")' }))] },
      // 8. live source
      { endpoint: '/r/live', extra_config: lp({ sources: [liveFile], live: true, post: 'tag(response.load():data())' }), backend: [be('/r-live')] },
      // 9. Lua tables to JSON
      {
        endpoint: '/r/deep',
        extra_config: lp({ post: 'local r = response.load(); local t = {} for i = 1, 20 do t = {a = t} end r:data():set("deep", t)' }),
        backend: [be('/r-deep')],
      },
      { endpoint: '/r/boolkey', extra_config: lp({ post: 'response.load():data():set("t", {[true] = 1})' }), backend: [be('/r-boolkey')] },
      // 1. scripts that try to outlive their time limit
      {
        endpoint: '/r/pcall-loop',
        timeout: '300ms',
        backend: [be('/r-pcall-loop', lb({ pre: 'while true do pcall(function() while true do end end) end' }))],
      },
      {
        endpoint: '/r/sethook',
        timeout: '300ms',
        input_headers: ['X-Mode'],
        backend: [
          be(
            '/r-sethook',
            lb({
              allow_open_libs: true,
              pre: lua('if request.load():headers("X-Mode") == "hook" then', '  debug.sethook()', '  return', 'end', 'while true do end'),
            }),
          ),
        ],
      },
      { endpoint: '/r/plain', backend: [be('/r-plain')] },
    ];
    rgw = await startGateway({ version: 3, extra_config: { router: { return_error_msg: true } }, endpoints }, { args: ['--workers', '1'] });
  });

  after(async () => {
    await rgw?.stop();
    await rb?.close();
  });

  test('response splitting: CR/LF in a post header value, a header name or a custom_error content type never reaches the client as a header', async () => {
    for (const p of ['/r/split-value', '/r/split-name', '/r/split-ct']) {
      const r = await rawGet(p);
      assertNoSetCookie(r.raw);
      assert.equal(r.headers['set-cookie'], undefined, p);
      assert.equal(r.status, 500, `${p}: ${r.statusLine} ${r.body.toString('latin1')}`);
    }
  });

  test('a global set by a function from `sources` belongs to its request: a slow alice and a fast bob 50 ms later each read their own', async () => {
    const alice = req(rgw.port, '/r/who/slow', { headers: { 'X-User': 'alice' } });
    await sleep(50);
    const bob = await req(rgw.port, '/r/who/fast', { headers: { 'X-User': 'bob' } });
    const a = await alice;
    assert.equal(a.status, 200, a.text);
    assert.equal(bob.status, 200, bob.text);
    assert.ok(bob.ms < a.ms, 'bob answered before alice: the two requests overlapped');
    assert.equal(a.json().saved_user, 'alice');
    assert.equal(bob.json().saved_user, 'bob');
  });

  test('a missing source file with only a post (lua-proxy and lua-backend, POST): 500 naming the file, the backend is never called', async () => {
    for (const p of ['/r/missing-proxy', '/r/missing-backend']) {
      const r = await req(rgw.port, p, { method: 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json' } });
      assert.equal(r.status, 500, `${p}: ${r.text}`);
      assert.ok(r.text.includes(missingSrc), `${p}: the error names the file: ${r.text}`);
    }
    assert.equal(hits('/r-missing-proxy').length, 0, 'lua-proxy: the backend was called');
    assert.equal(hits('/r-missing-backend').length, 0, 'lua-backend: the backend was called');
  });

  test('binary body: r:body(r:body() .. "-changed") keeps the bytes 0xff 0x00 0x80 (11 bytes, Content-Length 11)', async () => {
    const sent = Buffer.from([0xff, 0x00, 0x80]);
    const r = await req(rgw.port, '/r/binary', { method: 'POST', body: sent, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(r.status, 200, r.text);
    const rec = hits('/r-binary').at(-1);
    assert.ok(rec, 'the backend was not called');
    assert.deepEqual(rec.body, Buffer.concat([sent, Buffer.from('-changed')]));
    assert.equal(rec.headers['content-length'], '11');
  });

  test('custom_error("x", 42 | 204 | 1000) → 500 with the message, framed so the keep-alive connection stays usable', async () => {
    for (const code of [42, 204, 1000]) {
      const r = await rawGet(`/r/status/${code}`);
      assert.equal(r.status, 500, `${code}: ${r.statusLine}`);
      assert.match(r.statusLine, /^HTTP\/1\.1 500 /);
      assert.equal(r.body.toString('latin1'), 'x');
      assert.equal(r.headers['content-length'], '1');
    }
    // The same answers, then a normal one, over a single connection.
    const client = new Client(rgw.url, { pipelining: 1 });
    try {
      for (const p of ['/r/status/42', '/r/status/204', '/r/status/1000', '/r/plain']) {
        const r = await client.request({ path: p, method: 'GET', headersTimeout: 3000, bodyTimeout: 3000 });
        const text = await r.body.text();
        if (p === '/r/plain') assert.equal(r.statusCode, 200, text);
        else {
          assert.equal(r.statusCode, 500, `${p}: ${text}`);
          assert.equal(text, 'x');
        }
      }
    } finally {
      await client.close();
    }
    assert.equal(hits('/r-status').length, 0);
  });

  test('luaList: l:set(3, "d") on ["a"] grows it with nulls; l:set(-1, "x") is ignored', async () => {
    const grow = await req(rgw.port, '/r/list-grow');
    assert.equal(grow.status, 200, grow.text);
    assert.deepEqual(grow.json().l, ['a', null, null, 'd']);
    const neg = await req(rgw.port, '/r/list-neg');
    assert.equal(neg.status, 200, neg.text);
    assert.deepEqual(neg.json().l, ['a']);
  });

  test('live: a source edited into a syntax error fails every request until it is fixed, then the new code runs', async () => {
    const one = await req(rgw.port, '/r/live');
    assert.equal(one.status, 200, one.text);
    assert.equal(one.json().v, 'one');
    writeLive('function tag(d) d:set("v", \n');
    for (let i = 0; i < 3; i++) {
      const broken = await req(rgw.port, '/r/live');
      assert.equal(broken.status, 500, `request ${i + 1} after the bad edit: ${broken.text}`);
      assert.ok(broken.text.includes(liveFile), `the error names the file: ${broken.text}`);
    }
    writeLive('function tag(d) d:set("v", "two") end\n');
    const two = await req(rgw.port, '/r/live');
    assert.equal(two.status, 200, two.text);
    assert.equal(two.json().v, 'two');
  });

  test('Lua tables to JSON: 20 levels deep stays 20 levels deep; {[true]=1} becomes {"true":1}', async () => {
    const deep = await req(rgw.port, '/r/deep');
    assert.equal(deep.status, 200, deep.text);
    let o = deep.json().deep;
    let levels = 0;
    while (o !== null && typeof o === 'object' && 'a' in o) {
      o = o.a;
      levels++;
    }
    assert.equal(levels, 20);
    const bool = await req(rgw.port, '/r/boolkey');
    assert.equal(bool.status, 200, bool.text);
    assert.deepEqual(bool.json().t, { true: 1 });
  });

  test('gw check: lua-backend post on a no-op backend inside a decoding endpoint is refused', async () => {
    const cfg = (extra: Record<string, unknown>) =>
      writeConfig({ version: 3, endpoints: [{ endpoint: '/x', backend: [{ host: [rb.url], url_pattern: '/x', encoding: 'no-op', extra_config: lb(extra) }] }] });
    const [bad, ok] = await Promise.all([
      runCli(['check', '-c', cfg({ post: 'response.load():data():set("a", 1)' })]),
      runCli(['check', '-c', cfg({ pre: 'request.load():headers("X-A", "1")' })]),
    ]);
    assert.notEqual(bad.code, 0, bad.output);
    assert.ok(bad.output.includes(LUA_BACKEND), bad.output);
    assert.ok(bad.output.includes('no-op backend'), bad.output);
    // The control: pre alone is fine there.
    assert.equal(ok.code, 0, ok.output);
  });

  test('while true do pcall(function() while true do end end) end (timeout 300ms) → 500 within seconds; another endpoint answers meanwhile', async () => {
    const loop = req(rgw.port, '/r/pcall-loop', { timeoutMs: 4000 });
    await sleep(20);
    const during = req(rgw.port, '/r/plain', { timeoutMs: 4000 });
    const [l, d] = await Promise.all([loop, during]);
    assert.equal(l.status, 500, l.text);
    assert.ok(l.ms < 3000, `the looping script ended after ${l.ms} ms`);
    assert.equal(d.status, 200, d.text);
    assert.equal(hits('/r-pcall-loop').length, 0);
    const afterwards = await req(rgw.port, '/r/plain', { timeoutMs: 2000 });
    assert.equal(afterwards.status, 200);
  });

  test('allow_open_libs: debug.sethook() is an error, and the next request\'s infinite loop is still stopped', async () => {
    const hook = await req(rgw.port, '/r/sethook', { headers: { 'X-Mode': 'hook' }, timeoutMs: 4000 });
    assert.equal(hook.status, 500, hook.text);
    assert.match(hook.text, /sethook/);
    const loop = await req(rgw.port, '/r/sethook', { timeoutMs: 4000 });
    assert.equal(loop.status, 500, loop.text);
    assert.ok(loop.ms < 3000, `the looping script ended after ${loop.ms} ms`);
    assert.equal(hits('/r-sethook').length, 0);
    const plain = await req(rgw.port, '/r/plain', { timeoutMs: 2000 });
    assert.equal(plain.status, 200);
  });
});
