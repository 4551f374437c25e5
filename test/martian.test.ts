// modifier/martian over real sockets: one gw process, loopback backends that record what they
// receive. Request-scope changes are read from the backend's side; response-scope ones from the
// client's (no-op endpoints, where KrakenD lets them through) and from decoded data (body.Modifier).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, HOST, req, runCli, sendJSON, sleep, startBackend, startGateway, writeConfig } from './helpers/gw.ts';

const ONE_WORKER = { 'gw/server': { workers: 1 } };
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** What the backend saw for the last request to `path` (no query). */
function last(b: Backend, path: string) {
  const r = [...b.requests].reverse().find((x) => new URL(x.url, 'http://x').pathname === path);
  assert.ok(r, `the backend saw no request to ${path}`);
  return r;
}

describe('modifier/martian', () => {
  let backend: Backend;
  let gw: Gateway;
  /** A port nothing listens on: a backend host that only a url/port modifier makes reachable. */
  let deadPort: number;
  /** The /reset backend connection was closed by gw before the backend reset it. */
  let resetDroppedByGw = false;

  before(async () => {
    backend = await startBackend((r, res, rec) => {
      const u = new URL(rec.url, 'http://x');
      if (u.pathname === '/reset') {
        // Headers, a few body bytes, then (1 s later) a reset: the body martian replaces is never
        // read, and gw lets the connection go at once instead of waiting for the rest.
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
        res.write('{"partial":');
        let reset = false;
        r.socket.once('close', () => {
          if (!reset) resetDroppedByGw = true;
        });
        setTimeout(() => {
          reset = true;
          r.socket.resetAndDestroy();
        }, 1000);
        return;
      }
      if (u.pathname === '/hop' || u.pathname === '/hop-rel') {
        res.writeHead(302, { location: u.pathname === '/hop' ? `${backend.url}/landed` : '/landed-rel' });
        res.end();
        return;
      }
      sendJSON(res, 200, { path: u.pathname, query: u.search, seen: rec.headers['x-seen'] ?? null }, {
        'x-backend': 'yes',
        'set-cookie': 'session=abc; Path=/',
      });
    });
    deadPort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, HOST, () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const be = (url: string, martian: unknown, extra: Record<string, unknown> = {}) => ({
      host: [backend.url],
      url_pattern: url,
      extra_config: { 'modifier/martian': martian },
      ...extra,
    });
    const cfg = {
      version: 3,
      extra_config: ONE_WORKER,
      endpoints: [
        {
          endpoint: '/req',
          input_headers: ['X-Drop', 'X-Src', 'Cookie', 'User-Agent'],
          input_query_strings: ['currency', 'amount'],
          backend: [
            be('/req', {
              'fifo.Group': {
                scope: ['request', 'response'],
                aggregateErrors: true,
                '@comment': 'every request modifier at once',
                modifiers: [
                  { 'header.Modifier': { scope: ['request'], name: 'x-set', value: 'one' } },
                  { 'header.Modifier': { scope: ['request'], name: 'Authorization', value: 'Basic dXNlcjpwYTU1dzByZA==' } },
                  { 'header.Append': { scope: ['request'], name: 'X-Src', value: 'appended' } },
                  { 'header.Blacklist': { scope: ['request'], names: ['X-Drop', 'User-Agent'] } },
                  { 'header.Copy': { scope: ['request'], from: 'X-Src', to: 'X-Copied' } },
                  { 'header.Copy': { scope: ['request'], from: 'X-Absent', to: 'X-Empty' } },
                  { 'header.Id': { scope: ['request'] } },
                  { 'querystring.Modifier': { scope: ['request'], name: 'amount', value: '1000' } },
                  { 'querystring.Modifier': { scope: ['request'], name: 'a b', value: 'x&y' } },
                  { 'cookie.Modifier': { scope: ['request'], name: 'AcceptCookies', value: 'yes', path: '/ignored' } },
                ],
              },
            }),
          ],
        },
        {
          endpoint: '/body',
          method: 'POST',
          backend: [
            be('/body', {
              'fifo.Group': {
                modifiers: [
                  { 'body.Modifier': { scope: ['request'], body: b64('{"msg":"you rock!"}'), contentType: 'application/json' } },
                  { 'body.Modifier': { scope: ['response'], body: b64('{"replaced":true}'), contentType: 'application/json' } },
                ],
              },
            }),
          ],
        },
        {
          endpoint: '/reset',
          backend: [be('/reset', { 'body.Modifier': { scope: ['response'], body: b64('{"replaced":"after a reset"}') } })],
        },
        {
          endpoint: '/noop',
          output_encoding: 'no-op',
          input_query_strings: ['amount'],
          backend: [
            be('/noop', {
              'fifo.Group': {
                modifiers: [
                  { 'header.Modifier': { scope: ['request', 'response'], name: 'X-Martian', value: 'true' } },
                  { 'header.Blacklist': { scope: ['response'], names: ['x-backend'] } },
                  {
                    'cookie.Modifier': {
                      scope: ['response'], name: 'AcceptCookies', value: 'yes', path: '/some/path', domain: '.example.com',
                      expires: '2025-04-12T23:20:50.52Z', secure: true, httpOnly: false, maxAge: 86400,
                    },
                  },
                  { 'stash.Modifier': { scope: ['request', 'response'], headerName: 'X-Stash' } },
                  { 'status.Modifier': { scope: ['response'], statusCode: 203 } },
                ],
              },
            }, { encoding: 'no-op' }),
          ],
        },
        {
          // Request-only martian on a no-op endpoint: gw's receiver-mode client keeps streaming.
          endpoint: '/noop-req',
          output_encoding: 'no-op',
          // (under the namespace's v2 name, which KrakenD still reads)
          backend: [
            {
              host: [backend.url],
              url_pattern: '/noop-req',
              encoding: 'no-op',
              extra_config: { 'github.com/devopsfaith/krakend-martian': { 'header.Modifier': { scope: ['request'], name: 'X-Seen', value: 'streamed' } } },
            },
          ],
        },
        {
          endpoint: '/filters',
          input_headers: ['X-Tenant', 'X-App-Version', 'Cookie', 'X-Flag'],
          input_query_strings: ['legacy', 'param'],
          backend: [
            be('/filters', {
              'fifo.Group': {
                modifiers: [
                  {
                    'header.Filter': {
                      scope: ['request'], name: 'X-Tenant', value: 'v1',
                      modifier: { 'header.Modifier': { scope: ['request'], name: 'X-Tenant-Is', value: 'v1' } },
                      else: { 'header.Modifier': { scope: ['request'], name: 'X-Tenant-Is', value: 'other' } },
                    },
                  },
                  {
                    'header.Filter': {
                      scope: ['request'], name: 'X-Flag',
                      modifier: { 'header.Modifier': { scope: ['request'], name: 'X-Flag-Present', value: 'yes' } },
                    },
                  },
                  {
                    'header.RegexFilter': {
                      scope: ['request'], header: 'X-App-Version', regex: '(?i).*-(ALPHA|beta|preview)$',
                      modifier: { 'querystring.Modifier': { scope: ['request'], name: 'testing', value: '1' } },
                    },
                  },
                  {
                    'querystring.Filter': {
                      scope: ['request'], name: 'param', value: 'true',
                      modifier: { 'header.Modifier': { scope: ['request'], name: 'X-Passed-Param', value: 'true' } },
                      else: { 'header.Modifier': { scope: ['request'], name: 'X-Passed-Param', value: 'false' } },
                    },
                  },
                  {
                    'url.Filter': {
                      scope: ['request'], query: 'legacy=1',
                      modifier: { 'header.Modifier': { scope: ['request'], name: 'X-Legacy', value: 'true' } },
                      else: { 'header.Modifier': { scope: ['request'], name: 'X-Legacy', value: 'false' } },
                    },
                  },
                  {
                    'url.RegexFilter': {
                      scope: ['request'], regex: '^http://127\\.0\\.0\\.1:\\d+/filters',
                      modifier: { 'header.Modifier': { scope: ['request'], name: 'Is-Local', value: 'true' } },
                      else: { 'header.Modifier': { scope: ['request'], name: 'Is-Local', value: 'false' } },
                    },
                  },
                  {
                    'cookie.Filter': {
                      scope: ['request'], name: 'marketingCookies', value: 'yes',
                      modifier: { 'header.Modifier': { scope: ['request'], name: 'Accepts-Marketing-Cookies', value: 'true' } },
                      else: { 'header.Modifier': { scope: ['request'], name: 'Accepts-Marketing-Cookies', value: 'false' } },
                    },
                  },
                  {
                    'priority.Group': {
                      scope: ['request'],
                      modifiers: [
                        { priority: 0, modifier: { 'header.Modifier': { scope: ['request'], name: 'X-Order', value: 'priority 0 ran last' } } },
                        { priority: 100, modifier: { 'header.Modifier': { scope: ['request'], name: 'X-Order', value: 'priority 100 ran last' } } },
                      ],
                    },
                  },
                ],
              },
            }),
          ],
        },
        {
          // The declared host answers nothing: url.Modifier sends the call to the real backend, and
          // the Host line keeps the declared host, as in KrakenD.
          endpoint: '/moved',
          input_query_strings: ['dropped'],
          backend: [
            {
              host: [`http://127.0.0.1:${deadPort}`],
              url_pattern: '/neither',
              extra_config: {
                'modifier/martian': { 'url.Modifier': { scope: ['request'], host: `127.0.0.1:${backend.port}`, path: '/moved here', query: 'flag=true' } },
              },
            },
          ],
        },
        ...['/hop', '/hop-rel'].map((p) => ({
          endpoint: p,
          backend: [
            {
              host: [`http://127.0.0.1:${deadPort}`],
              url_pattern: p,
              extra_config: { 'modifier/martian': { 'port.Modifier': { scope: ['request'], port: backend.port } } },
            },
          ],
        })),
        {
          endpoint: '/ported',
          backend: [
            {
              host: [`http://127.0.0.1:${deadPort}`],
              url_pattern: '/ported',
              extra_config: {
                'modifier/martian': {
                  'port.Filter': {
                    scope: ['request'], port: deadPort,
                    modifier: { 'port.Modifier': { scope: ['request'], port: backend.port } },
                  },
                },
              },
            },
          ],
        },
        {
          // Response-phase filters: header.Filter reads the response, header.RegexFilter the request.
          endpoint: '/resp-filters',
          output_encoding: 'no-op',
          input_headers: ['X-App-Version'],
          backend: [
            be('/resp-filters', {
              'fifo.Group': {
                modifiers: [
                  {
                    'header.Filter': {
                      scope: ['response'], name: 'X-Backend', value: 'yes',
                      modifier: { 'header.Modifier': { scope: ['response'], name: 'X-Backend-Was', value: 'yes' } },
                    },
                  },
                  {
                    'header.RegexFilter': {
                      scope: ['response'], header: 'X-App-Version', regex: 'beta',
                      modifier: { 'header.Modifier': { scope: ['response'], name: 'X-Beta-Client', value: 'true' } },
                    },
                  },
                  {
                    'cookie.Filter': {
                      scope: ['response'], name: 'session', value: 'abc',
                      modifier: { 'header.Modifier': { scope: ['response'], name: 'X-Had-Session', value: 'true' } },
                    },
                  },
                ],
              },
            }, { encoding: 'no-op' }),
          ],
        },
      ],
    };
    gw = await startGateway(cfg);
  });

  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  test('request modifiers: headers set, appended, removed, copied, an id; query set (Go-encoded, sorted); a cookie added', async () => {
    const r = await req(gw.port, '/req?currency=EUR&amount=55', {
      headers: { 'X-Drop': 'gone', 'X-Src': 'client', Cookie: 'a=1', 'User-Agent': 'curl/8' },
    });
    assert.equal(r.status, 200, r.text);
    const seen = last(backend, '/req');
    assert.equal(seen.headers['x-set'], 'one');
    assert.equal(seen.headers['authorization'], 'Basic dXNlcjpwYTU1dzByZA==');
    assert.equal(seen.headers['x-src'], 'client, appended');
    assert.equal(seen.headers['x-drop'], undefined);
    assert.equal(seen.headers['user-agent'], undefined);
    assert.equal(seen.headers['x-copied'], 'client');
    assert.equal(seen.headers['x-empty'], '');
    assert.match(String(seen.headers['x-krakend-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(new URL(seen.url, 'http://x').search, '?a+b=x%26y&amount=1000&currency=EUR');
    assert.equal(seen.headers['cookie'], 'a=1; AcceptCookies=yes');
    assert.deepEqual(r.json().query, '?a+b=x%26y&amount=1000&currency=EUR');
    const again = await req(gw.port, '/req');
    assert.equal(again.status, 200);
    assert.notEqual(last(backend, '/req').headers['x-krakend-id'], seen.headers['x-krakend-id'], 'a new id per request');
  });

  test('body.Modifier: the backend receives the configured body; the response body is replaced before decoding', async () => {
    const r = await req(gw.port, '/body', { method: 'POST', body: '{"from":"client"}', headers: { 'content-type': 'text/plain' } });
    assert.equal(r.status, 200, r.text);
    const seen = last(backend, '/body');
    assert.equal(seen.body.toString(), '{"msg":"you rock!"}');
    assert.equal(seen.headers['content-type'], 'application/json');
    assert.equal(seen.headers['content-length'], String('{"msg":"you rock!"}'.length));
    assert.deepEqual(r.json(), { replaced: true });
  });

  test('a backend body nobody reads (replaced by body.Modifier) is let go at once; a reset later costs nothing', async () => {
    const r = await req(gw.port, '/reset');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { replaced: 'after a reset' });
    assert.ok(r.ms < 900, `answered after ${r.ms} ms: gw waited for the replaced body`);
    for (let i = 0; i < 50 && !resetDroppedByGw; i++) await sleep(10);
    assert.ok(resetDroppedByGw, 'gw kept the backend connection of a body it replaced');
    assert.equal((await req(gw.port, '/req')).status, 200);
  });

  test('redirects: a Host line set by martian follows a relative Location only (as Go)', async () => {
    const r = await req(gw.port, '/hop');
    assert.equal(r.status, 200, r.text);
    assert.equal(last(backend, '/hop').headers['host'], `127.0.0.1:${deadPort}`);
    assert.equal(last(backend, '/landed').headers['host'], `127.0.0.1:${backend.port}`);
    const rel = await req(gw.port, '/hop-rel');
    assert.equal(rel.status, 200, rel.text);
    assert.equal(last(backend, '/landed-rel').headers['host'], `127.0.0.1:${deadPort}`);
  });

  test('no-op: response headers, a Set-Cookie, the stash and the status reach the client', async () => {
    const r = await req(gw.port, '/noop?amount=1');
    assert.equal(r.status, 203);
    assert.equal(r.headers['x-martian'], 'true');
    assert.equal(r.headers['x-backend'], undefined);
    const cookies = ([] as string[]).concat(r.headers['set-cookie'] ?? []);
    assert.deepEqual(cookies, [
      'session=abc; Path=/',
      'AcceptCookies=yes; Path=/some/path; Domain=example.com; Expires=Sat, 12 Apr 2025 23:20:50 GMT; Max-Age=86400; Secure',
    ]);
    const seen = last(backend, '/noop');
    assert.equal(seen.headers['x-martian'], 'true');
    assert.equal(seen.headers['x-stash'], `${backend.url}/noop?amount=1`);
    assert.equal(r.headers['x-stash'], `${backend.url}/noop?amount=1`);
    assert.deepEqual(r.json(), { path: '/noop', query: '?amount=1', seen: null }, 'the body streams through untouched');
  });

  test('no-op with request-only modifiers streams through gw’s own client and the backend sees the change', async () => {
    const r = await req(gw.port, '/noop-req');
    assert.equal(r.status, 200);
    assert.equal(r.json().seen, 'streamed');
    assert.equal(r.headers['x-backend'], 'yes');
  });

  test('filters: header, header regex, query, URL, URL regex and cookie conditions pick modifier or else; priority order', async () => {
    await req(gw.port, '/filters?legacy=1&param=true', {
      headers: { 'X-Tenant': 'v1', 'X-App-Version': 'v1.2.3-alpha', Cookie: 'marketingCookies=yes', 'X-Flag': 'on' },
    });
    let seen = last(backend, '/filters');
    assert.equal(seen.headers['x-tenant-is'], 'v1');
    assert.equal(seen.headers['x-flag-present'], 'yes');
    assert.equal(new URL(seen.url, 'http://x').searchParams.get('testing'), '1');
    assert.equal(seen.headers['x-passed-param'], 'true');
    // url.Filter compares the raw query as a whole (martian): here it also holds param and testing.
    assert.equal(seen.headers['x-legacy'], 'false');
    assert.equal(seen.headers['is-local'], 'true');
    assert.equal(seen.headers['accepts-marketing-cookies'], 'true');
    assert.equal(seen.headers['x-order'], 'priority 0 ran last');

    await req(gw.port, '/filters?param=false', { headers: { 'X-Tenant': 'v2', 'X-App-Version': 'v1.2.3', Cookie: 'marketingCookies=no' } });
    seen = last(backend, '/filters');
    assert.equal(seen.headers['x-tenant-is'], 'other');
    assert.equal(seen.headers['x-flag-present'], undefined);
    assert.equal(new URL(seen.url, 'http://x').searchParams.get('testing'), null);
    assert.equal(seen.headers['x-passed-param'], 'false');
    assert.equal(seen.headers['x-legacy'], 'false');
    assert.equal(seen.headers['accepts-marketing-cookies'], 'false');

    await req(gw.port, '/filters?legacy=1');
    assert.equal(last(backend, '/filters').headers['x-legacy'], 'true');
  });

  test('url.Modifier sends the call elsewhere (path escaped, query replaced) and keeps the declared Host line', async () => {
    const r = await req(gw.port, '/moved?dropped=1');
    assert.equal(r.status, 200, r.text);
    const seen = last(backend, '/moved%20here');
    assert.equal(seen.url, '/moved%20here?flag=true');
    assert.equal(seen.headers['host'], `127.0.0.1:${deadPort}`);
  });

  test('port.Filter + port.Modifier move the call to another port', async () => {
    const r = await req(gw.port, '/ported');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json().path, '/ported');
    assert.equal(last(backend, '/ported').headers['host'], `127.0.0.1:${deadPort}`);
  });

  test('response-phase filters: header.Filter and cookie.Filter read the response, header.RegexFilter the request', async () => {
    const r = await req(gw.port, '/resp-filters', { headers: { 'X-App-Version': '2.0-beta' } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-backend-was'], 'yes');
    assert.equal(r.headers['x-beta-client'], 'true');
    assert.equal(r.headers['x-had-session'], 'true');
    const plain = await req(gw.port, '/resp-filters', { headers: { 'X-App-Version': '2.0' } });
    assert.equal(plain.headers['x-beta-client'], undefined);
  });
});

describe('modifier/martian: bad blocks stop gw check and gw run, naming the place', () => {
  const cases: [string, unknown, RegExp][] = [
    ['an unknown type', { 'static.Modifier': { scope: ['request'] } }, /endpoint \/x, backend 0 \(\/x\): "modifier\/martian"\["static\.Modifier"\]: unknown or unsupported martian type/],
    ['two types in one object', { 'header.Modifier': { name: 'a', value: 'b' }, 'header.Append': { name: 'a', value: 'b' } }, /must hold exactly one modifier, filter or group, but holds 2: header\.Modifier, header\.Append/],
    ['a scope the type lacks', { 'querystring.Modifier': { scope: ['response'], name: 'a', value: 'b' } }, /\["querystring\.Modifier"\]: querystring\.Modifier does not apply to the response/],
    ['bad base64', { 'body.Modifier': { scope: ['request'], body: 'not base64!' } }, /\["body\.Modifier"\]: "body" must be standard base64/],
    ['a hop-by-hop header', { 'fifo.Group': { modifiers: [{ 'header.Modifier': { name: 'Connection', value: 'close' } }] } }, /\["fifo\.Group"\]\.modifiers\[0\]\["header\.Modifier"\]: "name" "Connection" is a hop-by-hop header/],
    ['Content-Length', { 'header.Modifier': { name: 'Content-Length', value: '5' } }, /"Content-Length" cannot be set/],
    ['a filter without modifier', { 'header.Filter': { name: 'X', value: 'y' } }, /\["header\.Filter"\]: "modifier" is required/],
    ['a CRLF in a value', { 'header.Modifier': { name: 'X', value: 'a\r\nInjected: 1' } }, /"value" holds a character a header value cannot/],
    ['a bad regex', { 'url.RegexFilter': { regex: '(', modifier: { 'header.Modifier': { name: 'X', value: 'y' } } } }, /"regex" is not a valid regular expression/],
    ['a bad expires', { 'cookie.Modifier': { name: 'c', value: 'v', expires: 'tomorrow' } }, /"expires" "tomorrow" is not an RFC 3339 time/],
    ['a url.Modifier host no URL can hold', { 'url.Modifier': { host: 'x:99999' } }, /\["url\.Modifier"\]: "host" "x:99999" is not a host\[:port\]/],
    ['an RE2 escape JavaScript lacks', { 'url.RegexFilter': { regex: 'h\\z', modifier: { 'header.Modifier': { name: 'X', value: 'y' } } } }, /"regex" is not a valid regular expression/],
    ['header.Copy into Host', { 'header.Copy': { from: 'X-Client', to: 'Host' } }, /"to" "Host": gw does not let a copied header/],
    ['header.Append of Host', { 'header.Append': { name: 'Host', value: 'a' } }, /header\.Append cannot add a second Host/],
    ['a Host that is not one', { 'header.Modifier': { name: 'Host', value: 'bad host/x' } }, /"value" "bad host\/x" is not a host\[:port\]/],
    ['port.Modifier with two choices', { 'port.Modifier': { port: 80, remove: true } }, /give exactly one of "port", "defaultForScheme": true or "remove": true/],
  ];
  for (const [what, martian, re] of cases) {
    test(what, async () => {
      const cfg = {
        version: 3,
        endpoints: [{ endpoint: '/x', backend: [{ host: ['http://127.0.0.1:19'], url_pattern: '/x', extra_config: { 'modifier/martian': martian } }] }],
      };
      const r = await runCli(['check', '-c', writeConfig(cfg)]);
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, re);
    });
  }

  test('gw run refuses it too, and a valid block is not reported as unimplemented', async () => {
    const bad = {
      version: 3,
      endpoints: [{ endpoint: '/x', backend: [{ host: ['http://127.0.0.1:19'], url_pattern: '/x', extra_config: { 'modifier/martian': { 'nope.Modifier': {} } } }] }],
    };
    const r = await runCli(['run', '-c', writeConfig(bad)], { timeoutMs: 10_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.output, /"modifier\/martian"\["nope\.Modifier"\]: unknown or unsupported martian type/);
    const good = {
      version: 3,
      endpoints: [{ endpoint: '/x', backend: [{ host: ['http://127.0.0.1:19'], url_pattern: '/x', extra_config: { 'modifier/martian': { 'header.Modifier': { scope: ['request'], name: 'X', value: '1' } } } }] }],
    };
    const ok = await runCli(['check', '-c', writeConfig(good)]);
    assert.equal(ok.code, 0, ok.output);
    assert.doesNotMatch(ok.output, /martian/);
  });
});
