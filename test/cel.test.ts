// validation/cel end to end (core/validation/cel.ts): request checks at the endpoint and at a
// backend, response checks on one backend's answer and on the merged one, start-up errors.
// One real gw process in front of a loopback backend that records what reaches it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, h, req, runCli, sendJSON, startBackend, startGateway, writeConfig } from './helpers/gw.ts';

let backend: Backend;
let gw: Gateway;
const seen: string[] = [];

before(async () => {
  backend = await startBackend((r, res) => {
    seen.push(r.url ?? '');
    if (r.url?.startsWith('/status/')) return sendJSON(res, 200, { status: r.url.slice(8), n: 3 });
    sendJSON(res, 200, { path: r.url, n: 7 });
  });
  const cel = (...exprs: string[]) => ({ 'validation/cel': exprs.map((check_expr) => ({ check_expr })) });
  gw = await startGateway(
    {
      version: 3,
      extra_config: { router: { return_error_msg: true } },
      endpoints: [
        {
          endpoint: '/req/{id}',
          input_headers: ['X-Tenant'],
          input_query_strings: ['mode'],
          extra_config: cel("'acme' in req_headers['X-Tenant']", 'int(req_params.Id) > 10', "req_querystring.mode[0] != 'forbidden'", "req_method == 'GET' && req_path.startsWith('/req/')"),
          backend: [{ host: [backend.url], url_pattern: '/r/{id}' }],
        },
        {
          endpoint: '/split/{id}',
          backend: [
            { host: [backend.url], url_pattern: '/a/{id}', group: 'a', extra_config: cel('int(req_params.Id) % 2 == 0') },
            { host: [backend.url], url_pattern: '/b/{id}', group: 'b', extra_config: cel("req_path == '/b/' + req_params.Id") },
          ],
        },
        {
          endpoint: '/resp/{s}',
          backend: [{ host: [backend.url], url_pattern: '/status/{s}', extra_config: cel("resp_data.status == 'ok'") }],
        },
        {
          endpoint: '/merged',
          extra_config: cel('resp_completed && resp_data.a.n + resp_data.b.n == 10'),
          backend: [
            { host: [backend.url], url_pattern: '/status/x', group: 'a' },
            { host: [backend.url], url_pattern: '/r/y', group: 'b' },
          ],
        },
        {
          endpoint: '/merged-bad',
          extra_config: cel('resp_data.a.n > 100'),
          backend: [{ host: [backend.url], url_pattern: '/status/x', group: 'a' }],
        },
        // For the review regressions at the end of the file.
        {
          endpoint: '/lua-order',
          method: 'POST',
          input_headers: ['X-Role'],
          extra_config: {
            'modifier/lua-proxy': { pre: `local r = request.load(); r:body('{"bad":true}'); r:headers('X-Role', 'admin')` },
            'validation/json-schema': { type: 'object', required: ['name'] },
            ...cel("!('X-Role' in req_headers)"),
          },
          backend: [{ host: [backend.url], url_pattern: '/lua-order' }],
        },
        {
          endpoint: '/checks-order',
          method: 'POST',
          input_headers: ['X-Role'],
          extra_config: { 'validation/json-schema': { type: 'object', required: ['name'] }, ...cel("!('X-Role' in req_headers)") },
          backend: [{ host: [backend.url], url_pattern: '/checks-order' }],
        },
        {
          endpoint: '/re2',
          input_headers: ['X-Key'],
          extra_config: cel(String.raw`req_headers['X-Key'][0].matches('^(\\w+\\s?)*$')`),
          backend: [{ host: [backend.url], url_pattern: '/re2' }],
        },
        {
          endpoint: '/xff',
          input_headers: ['X-Forwarded-For'],
          extra_config: cel("req_headers['X-Forwarded-For'][0] == '127.0.0.1'"),
          backend: [{ host: [backend.url], url_pattern: '/xff' }],
        },
        { endpoint: '/ua', extra_config: cel("'User-Agent' in req_headers"), backend: [{ host: [backend.url], url_pattern: '/ua' }] },
        {
          endpoint: '/qs',
          input_query_strings: ['page'],
          extra_config: cel("!('tenant' in req_querystring)", "req_querystring.page[0] == '1'"),
          backend: [{ host: [backend.url], url_pattern: '/qs' }],
        },
        { endpoint: '/ae', backend: [{ host: [backend.url], url_pattern: '/ae', extra_config: cel("!('Accept-Encoding' in req_headers)") }] },
      ],
    },
    { args: ['--workers', '1'] },
  );
});

after(async () => {
  await gw?.stop();
  await backend?.close();
});

describe('validation/cel', () => {
  test('endpoint request checks: all must hold, else 500 naming the first one that did not, and nothing is called', async () => {
    const ok = await req(gw.port, '/req/42?mode=x', { headers: { 'X-Tenant': 'acme' } });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json().path, '/r/42?mode=x');
    const before = seen.length;
    const cases: [string, Record<string, string>, number][] = [
      ['/req/42', {}, 0], // no X-Tenant: evaluating the missing key fails the check
      ['/req/42', { 'X-Tenant': 'other' }, 0],
      ['/req/7', { 'X-Tenant': 'acme' }, 1],
      ['/req/42?mode=forbidden', { 'X-Tenant': 'acme' }, 2],
    ];
    for (const [path, headers, index] of cases) {
      const r = await req(gw.port, path, { headers });
      assert.equal(r.status, 500, path);
      assert.equal(r.text, `request aborted by evaluator #${index}`);
      assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    }
    assert.equal(seen.length, before, 'no refused request reached the backend');
  });

  test('a backend request check fails only that backend: a partial answer', async () => {
    const before = seen.length;
    const odd = await req(gw.port, '/split/3');
    assert.equal(odd.status, 200);
    assert.deepEqual(Object.keys(odd.json()), ['b']);
    assert.equal(h(odd.headers, 'x-krakend-completed'), 'false');
    assert.deepEqual(seen.slice(before), ['/b/3'], 'the refused backend was not called');
    const even = await req(gw.port, '/split/4');
    assert.deepEqual(Object.keys(even.json()).sort(), ['a', 'b']);
    assert.equal(h(even.headers, 'x-krakend-completed'), 'true');
  });

  test('response checks: on one backend\'s answer and on the merged one', async () => {
    assert.equal((await req(gw.port, '/resp/ok')).status, 200);
    const bad = await req(gw.port, '/resp/ko');
    assert.equal(bad.status, 500);
    assert.equal(bad.text, 'request aborted by evaluator #0');
    const merged = await req(gw.port, '/merged');
    assert.equal(merged.status, 200, merged.text);
    assert.equal(merged.json().a.n + merged.json().b.n, 10);
    const mergedBad = await req(gw.port, '/merged-bad');
    assert.equal(mergedBad.status, 500);
    assert.equal(mergedBad.text, 'request aborted by evaluator #0');
  });

  test('start-up: an expression that does not parse, and response checks on a no-op endpoint, fail gw check', async () => {
    const bad = await runCli(['check', '-c', writeConfig({ version: 3, endpoints: [{ endpoint: '/x', extra_config: { 'validation/cel': [{ check_expr: 'req_method ==' }] }, backend: [{ host: [backend.url], url_pattern: '/x' }] }] })]);
    assert.notEqual(bad.code, 0, bad.output);
    assert.match(bad.output, /endpoint \/x: "validation\/cel"\[0\] "req_method =="/);
    const noop = await runCli(['check', '-c', writeConfig({ version: 3, endpoints: [{ endpoint: '/x', output_encoding: 'no-op', extra_config: { 'validation/cel': [{ check_expr: 'resp_completed' }] }, backend: [{ host: [backend.url], url_pattern: '/x', encoding: 'no-op' }] }] })]);
    assert.notEqual(noop.code, 0, noop.output);
    assert.match(noop.output, /response checks \(resp_\*\) need a decoding endpoint/);
  });
});

describe('validation/cel: review regressions', () => {
  const called = (prefix: string) => seen.filter((u) => u.startsWith(prefix)).length;

  test('with a lua-proxy pre, the JSON schema and CEL checks see what the script changed; without one they still run first', async () => {
    const post = (path: string, body: string, headers: Record<string, string> = {}) =>
      req(gw.port, path, { method: 'POST', body, headers: { 'Content-Type': 'application/json', ...headers } });
    // The script replaces a valid body by {"bad":true} and adds X-Role: admin.
    const lua = await post('/lua-order', '{"name":"x"}');
    assert.ok(lua.status === 400 || lua.status === 500, `${lua.status} ${lua.text}`);
    assert.equal(called('/lua-order'), 0, 'the backend got what the checks should have refused');
    // No script: the same checks, before anything is called.
    assert.equal((await post('/checks-order', '{"bad":true}')).status, 400);
    assert.equal((await post('/checks-order', '{"name":"x"}', { 'X-Role': 'admin' })).status, 500);
    assert.equal(called('/checks-order'), 0);
    const ok = await post('/checks-order', '{"name":"x"}');
    assert.equal(ok.status, 200, ok.text);
    assert.equal(called('/checks-order'), 1);
  });

  test("req_headers has gw's X-Forwarded-For (the client's address), not the one the client sent", async () => {
    const r = await req(gw.port, '/xff', { headers: { 'X-Forwarded-For': '10.0.0.7' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(called('/xff'), 1);
  });

  test('req_headers has the User-Agent gw sends on', async () => {
    const r = await req(gw.port, '/ua'); // undici sends no User-Agent of its own
    assert.equal(r.status, 200, r.text);
  });

  test('req_querystring only has the keys input_query_strings lets through', async () => {
    const r = await req(gw.port, '/qs?tenant=acme&page=1');
    assert.equal(r.status, 200, r.text);
    assert.equal(called('/qs'), 1);
  });

  test('a backend check does not see the Accept-Encoding gw adds on its own', async () => {
    const r = await req(gw.port, '/ae'); // the client sends no Accept-Encoding
    assert.equal(r.status, 200, r.text);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'true');
    assert.equal(called('/ae'), 1);
  });

  // Last: before the fix, this request stalled the gateway for the tests after it.
  test('matches() runs in linear time (RE2): a nested-quantifier pattern answers at once', async () => {
    const evil = await req(gw.port, '/re2', { headers: { 'X-Key': 'a'.repeat(30) + '!' }, timeoutMs: 2000 });
    assert.equal(evil.status, 500, evil.text);
    assert.equal(evil.text, 'request aborted by evaluator #0');
    assert.ok(evil.ms < 500, `matches() took ${evil.ms} ms`);
    assert.equal((await req(gw.port, '/re2', { headers: { 'X-Key': 'hello world' } })).status, 200, 'the pattern still matches');
  });
});
