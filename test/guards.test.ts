// Request guards that answer before anything is forwarded (core/validation/guards.ts):
// security/bot-detector (service and endpoint level) and validation/json-schema. One real gw
// process in front of a loopback backend that counts what reaches it; the review regressions at the
// end start a second one for configs that used to stop start-up.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, h, req, runCli, sendJSON, sleep, startBackend, startGateway, writeConfig } from './helpers/gw.ts';

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
        // For the review regressions at the end of the file.
        {
          endpoint: '/tags',
          method: 'POST',
          extra_config: { 'validation/json-schema': { type: 'object', properties: { tags: { type: 'array', uniqueItems: true } } } },
          backend: [{ host: [backend.url], url_pattern: '/x' }],
        },
        {
          endpoint: '/redos',
          extra_config: { 'security/bot-detector': { patterns: ['^(\\w+\\s?)*bot$'] } },
          backend: [{ host: [backend.url], url_pattern: '/x' }],
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

describe('guards: review regressions', () => {
  // A second gateway for what the first one must not carry: before the fix, a Go-only regexp
  // flag, a draft-04 schema and two schemas sharing one $id each stopped start-up. A start-up
  // failure is kept and reported by the tests that need the gateway, not by the hook.
  let extra: Gateway | undefined;
  let extraFailed: unknown;
  let check: ReturnType<typeof runCli>;
  const be = () => [{ host: [backend.url], url_pattern: '/x' }];
  const sameId = { $id: 'https://example.com/user.json', type: 'object', required: ['name'] };
  const started = (): Gateway => {
    if (extra === undefined) throw extraFailed;
    return extra;
  };

  before(async () => {
    // `gw check` of two endpoints sharing a $id, alongside the gateway start.
    check = runCli([
      'check',
      '-c',
      writeConfig({ version: 3, endpoints: ['POST', 'PUT'].map((method) => ({ endpoint: '/a', method, extra_config: { 'validation/json-schema': sameId }, backend: be() })) }),
    ]);
    extra = await startGateway(
      {
        version: 3,
        extra_config: { router: { return_error_msg: true } },
        endpoints: [
          { endpoint: '/crawl', extra_config: { 'security/bot-detector': { patterns: ['(?i)crawler'] } }, backend: be() },
          {
            endpoint: '/draft4',
            method: 'POST',
            extra_config: {
              'validation/json-schema': {
                $schema: 'http://json-schema.org/draft-04/schema#',
                type: 'object',
                properties: { n: { type: 'number', maximum: 10, exclusiveMaximum: true } },
              },
            },
            backend: be(),
          },
          { endpoint: '/same-id', method: 'POST', extra_config: { 'validation/json-schema': sameId }, backend: be() },
          { endpoint: '/same-id', method: 'PUT', extra_config: { 'validation/json-schema': sameId }, backend: be() },
        ],
      },
      { args: ['--workers', '1'] },
    ).catch((err: unknown) => {
      extraFailed = err;
      return undefined;
    });
  });

  after(async () => {
    await check;
    await extra?.stop();
  });

  const send = (port: number, path: string, body: string, method = 'POST') =>
    req(port, path, { method, body, headers: { 'Content-Type': 'application/json', 'User-Agent': 'test' } });

  test('uniqueItems over two arrays nested 20000 deep → 400, and the gateway keeps serving (it used to die)', async () => {
    const d = 20_000;
    const x = '['.repeat(d) + ']'.repeat(d);
    const before = hits;
    const r = await send(gw.port, '/tags', `{"tags":[${x},${x}]}`);
    assert.equal(r.status, 400, r.text.slice(0, 200));
    assert.equal(hits, before, 'the refused body reached the backend');
    const next = await send(gw.port, '/tags', '{"tags":[1,2]}');
    assert.equal(next.status, 200, next.text);
    assert.equal((await send(gw.port, '/tags', '{"tags":[1,1]}')).status, 400, 'uniqueItems still applies');
    assert.equal((await req(gw.port, '/__health')).status, 200);
  });

  test('a bot pattern with nested quantifiers runs in linear time (RE2): no User-Agent stalls the worker', async () => {
    const evil = 'a'.repeat(30) + '!';
    const [slow, other] = await Promise.all([
      req(gw.port, '/redos', { headers: { 'User-Agent': evil }, timeoutMs: 2000 }),
      sleep(20).then(() => req(gw.port, '/open', { headers: { 'User-Agent': 'Mozilla/5.0' }, timeoutMs: 2000 })),
    ]);
    assert.equal(slow.status, 200, 'not a bot');
    assert.ok(slow.ms < 500, `the pattern took ${slow.ms} ms`);
    assert.equal(other.status, 200);
    assert.ok(other.ms < 500, `another request waited ${other.ms} ms`);
    assert.equal((await req(gw.port, '/redos', { headers: { 'User-Agent': 'good bot' } })).status, 403, 'the pattern still matches');
  });

  test('Go regexp syntax in bot patterns: "(?i)crawler" starts and matches "CRAWLER"', async () => {
    const { port } = started();
    assert.equal((await req(port, '/crawl', { headers: { 'User-Agent': 'Mozilla CRAWLER/1.0' } })).status, 403);
    assert.equal((await req(port, '/crawl', { headers: { 'User-Agent': 'crawler' } })).status, 403);
    assert.equal((await req(port, '/crawl', { headers: { 'User-Agent': 'Mozilla/5.0' } })).status, 200);
  });

  test('a draft-04 schema: boolean exclusiveMaximum with maximum 10 refuses 10 and accepts 9', async () => {
    const { port } = started();
    const ten = await send(port, '/draft4', '{"n":10}');
    assert.equal(ten.status, 400, ten.text);
    const nine = await send(port, '/draft4', '{"n":9}');
    assert.equal(nine.status, 200, nine.text);
  });

  test('two endpoints whose schemas share one $id: gw check is OK and both validate', async () => {
    const r = await check;
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /Syntax OK!/);
    const { port } = started();
    for (const method of ['POST', 'PUT']) {
      assert.equal((await send(port, '/same-id', '{}', method)).status, 400, method);
      assert.equal((await send(port, '/same-id', '{"name":"x"}', method)).status, 200, method);
    }
  });
});
