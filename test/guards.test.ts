// Request guards that answer before anything is forwarded (core/validation/guards.ts):
// security/bot-detector (service and endpoint level) and validation/json-schema. One real gw
// process in front of a loopback backend that counts what reaches it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, h, req, runCli, sendJSON, startBackend, startGateway, writeConfig } from './helpers/gw.ts';

let backend: Backend;
let gw: Gateway;
let hits = 0;

before(async () => {
  backend = await startBackend((_r, res) => {
    hits++;
    sendJSON(res, 200, { ok: true });
  });
  gw = await startGateway(
    {
      version: 3,
      extra_config: {
        router: { return_error_msg: true },
        'security/bot-detector': { deny: ['a', 'b'], allow: ['c', 'Pingdom.com_bot_version_1.1'], patterns: ['(Pingdom.com_bot_version_).*', '(facebookexternalhit)/.*'], cache_size: 2 },
      },
      endpoints: [
        { endpoint: '/open', backend: [{ host: [backend.url], url_pattern: '/x' }] },
        {
          endpoint: '/strict',
          extra_config: { 'security/bot-detector': { empty_user_agent_is_bot: true, patterns: ['curl'] } },
          backend: [{ host: [backend.url], url_pattern: '/x' }],
        },
        {
          endpoint: '/orders',
          method: 'POST',
          extra_config: {
            'validation/json-schema': {
              type: 'object',
              required: ['id', 'qty'],
              properties: { id: { type: 'string' }, qty: { type: 'integer', minimum: 1 } },
            },
          },
          backend: [{ host: [backend.url], url_pattern: '/x' }],
        },
        {
          endpoint: '/orders-raw',
          method: 'POST',
          output_encoding: 'no-op',
          extra_config: { 'validation/json-schema': { type: 'number' } },
          backend: [{ host: [backend.url], url_pattern: '/x', encoding: 'no-op' }],
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

describe('security/bot-detector', () => {
  test('deny list and patterns get 403 with an empty body and reach nothing; the allow list wins over patterns', async () => {
    const before = hits;
    // Repeated agents exercise the verdict cache (cache_size 2) on both sides of an eviction.
    for (const ua of ['a', 'b', 'Pingdom.com_bot_version_1.14', 'facebookexternalhit/1.2.3', 'a', 'b']) {
      const r = await req(gw.port, '/open', { headers: { 'User-Agent': ua } });
      assert.equal(r.status, 403, ua);
      assert.equal(r.text, '');
      assert.equal(h(r.headers, 'content-type'), undefined);
    }
    assert.equal(hits, before, 'no bot request reached the backend');
    for (const ua of ['c', 'Pingdom.com_bot_version_1.1', 'Mozilla/5.0', 'ab']) {
      const r = await req(gw.port, '/open', { headers: { 'User-Agent': ua } });
      assert.equal(r.status, 200, ua);
    }
    assert.equal(hits, before + 4);
  });

  test('an endpoint detector applies on top of the service one (empty User-Agent, its own patterns)', async () => {
    assert.equal((await req(gw.port, '/strict', { headers: { 'User-Agent': '' } })).status, 403);
    assert.equal((await req(gw.port, '/strict', { headers: { 'User-Agent': 'curl/8.0' } })).status, 403);
    assert.equal((await req(gw.port, '/strict', { headers: { 'User-Agent': 'a' } })).status, 403, 'service deny list still applies');
    assert.equal((await req(gw.port, '/strict', { headers: { 'User-Agent': 'Mozilla/5.0' } })).status, 200);
    assert.equal((await req(gw.port, '/open', { headers: { 'User-Agent': '' } })).status, 200, 'empty agents pass where not configured');
  });

  test('a pattern that is not a valid regexp is a start-up error naming it', async () => {
    const r = await runCli(['check', '-c', writeConfig({ version: 3, extra_config: { 'security/bot-detector': { patterns: ['(unclosed'] } }, endpoints: [{ endpoint: '/x', backend: [{ host: [backend.url], url_pattern: '/x' }] }] })]);
    assert.notEqual(r.code, 0, r.output);
    assert.match(r.output, /security\/bot-detector" patterns\[0\] "\(unclosed"/);
  });
});

describe('validation/json-schema', () => {
  const post = (path: string, body: string) => req(gw.port, path, { method: 'POST', body, headers: { 'Content-Type': 'application/json', 'User-Agent': 'test' } });

  test('a valid body is forwarded; an invalid, non-JSON or missing one gets 400 naming the problem and reaches nothing', async () => {
    const ok = await post('/orders', '{"id":"a1","qty":2}');
    assert.equal(ok.status, 200);
    const before = hits;
    const cases: [string, RegExp][] = [
      ['{"id":"a1"}', /must have required property 'qty'/],
      ['{"id":"a1","qty":0}', /\/qty must be >= 1/],
      ['{"id":7,"qty":1}', /\/id must be string/],
      ['{not json', /invalid JSON body/],
    ];
    for (const [body, why] of cases) {
      const r = await post('/orders', body);
      assert.equal(r.status, 400, body);
      assert.match(r.text, why);
    }
    const empty = await req(gw.port, '/orders', { method: 'POST', headers: { 'User-Agent': 'test' } });
    assert.equal(empty.status, 400, 'no body is not an object');
    assert.equal(hits, before, 'no invalid body reached the backend');
  });

  test('on a no-op endpoint too', async () => {
    assert.equal((await post('/orders-raw', '42')).status, 200);
    assert.equal((await post('/orders-raw', '"42"')).status, 400);
  });

  test('a schema that does not compile is a start-up error naming the endpoint', async () => {
    const r = await runCli(['check', '-c', writeConfig({ version: 3, endpoints: [{ endpoint: '/x', method: 'POST', extra_config: { 'validation/json-schema': { type: 'nonsense' } }, backend: [{ host: [backend.url], url_pattern: '/x' }] }] })]);
    assert.notEqual(r.code, 0, r.output);
    assert.match(r.output, /endpoint \/x: "validation\/json-schema" is not a valid JSON schema/);
  });
});
