// Request/response modifier plugins end to end (issue #12, spec §5.4):
// `extra_config["plugin/req-resp-modifier"]` at endpoint and backend level, decoding and no-op.
// A real gw process loads modifier modules from a temp folder, in front of real loopback backends.
// Run: npm run build && node --import tsx --test test/modifiers.test.ts
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, h, req, runCli, sendJSON, startBackend, startGateway, tempDir, writeConfig } from './helpers/gw.ts';


/** The gateway's output matches `re` within 3 s (worker lines reach the supervisor's stdout asynchronously). */
async function logged(gw: Gateway, re: RegExp): Promise<void> {
  const until = Date.now() + 3000;
  while (!re.test(gw.output())) {
    if (Date.now() > until) assert.match(gw.output(), re);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const NS = 'plugin/req-resp-modifier';

const PLUGINS: Record<string, string> = {
  'mods.mjs': `
    export const ModifierRegisterer = {
      registerModifiers(register) {
        // Appends its configured tag to X-Trace: shows the order.
        const tagger = (key) => (extra) => (req) => {
          const t = extra[key]?.tag ?? key;
          const prev = req.headers['X-Trace']?.[0];
          req.headers['X-Trace'] = [prev ? prev + ',' + t : t];
        };
        register('tag1', tagger('tag1'), true, false);
        register('tag2', tagger('tag2'), true, false);
        // Changes params, query and method-independent parts of the endpoint request.
        register('rewrite-req', () => (req) => {
          req.params.id = 'p-' + req.params.id;
          req.query.extra = ['yes'];
          delete req.query.drop;
        }, true, false);
        // Backend level: sends the call to another path (the URL is already built there).
        register('reroute', (extra) => (req) => {
          const u = new URL(req.url);
          u.pathname = extra.reroute.to;
          req.url = u.toString();
        }, true, false);
        // Async, and returns a replacement wrapper.
        register('resp-data', () => async (res) => {
          await new Promise((r) => setTimeout(r, 5));
          return { ...res, data: { ...res.data, modified: true }, headers: { ...res.headers, 'X-Modified': ['1'] } };
        }, false, true);
        register('incomplete', () => (res) => { res.isComplete = false; }, false, true);
        // No-op: status, headers and a wrapped body.
        register('noop-resp', () => (res) => {
          res.statusCode = 203;
          res.headers['x-noop-mod'] = ['on'];
          delete res.headers['x-drop-me'];
          const src = res.io;
          res.io = (async function* () { for await (const c of src) yield Buffer.from(String(c).toUpperCase()); })();
        }, false, true);
        // Errors.
        register('deny', () => (req) => {
          if (req.params.id === 'forbidden') {
            const e = new Error('{"error":"forbidden id"}');
            e.statusCode = 403;
            e.encoding = 'application/json';
            e.headers = { 'X-Reason': ['id'] };
            throw e;
          }
          if (req.params.id === 'plain') throw new Error('plain failure');
          if (req.params.id === 'gostyle') throw Object.assign(new Error('teapot'), { StatusCode: () => 418 });
        }, true, false);
        register('reject-resp', () => async () => { throw new Error('async response failure'); }, false, true);
        // Registered for both: KrakenD applies it to requests only.
        register('both', () => (w) => { if (w.headers) w.headers['X-Both'] = ['seen']; if (w.data) w.data.both = true; }, true, true);
        register('nothing', () => null, true, false);
        // Shows the query it was given (as a header) and adds a parameter.
        register('query-probe', () => (req) => {
          req.headers['X-Seen-Query'] = [Object.keys(req.query).sort().join(',')];
          req.query.y = ['3'];
        }, true, false);
        // One name registered once per direction (KrakenD keeps the two apart): a request modifier.
        register('twice', () => (req) => { req.headers['X-Twice'] = ['req']; }, true, false);
        register('twice', () => (res) => { res.data.twice = 'resp'; }, false, true);
        // Headers by any spelling, hop-by-hop ones, and the method.
        register('reheader', () => (req) => {
          req.headers['x-client'] = ['by-modifier'];
          req.headers['x-added'] = ['1'];
          req.headers['Connection'] = ['close'];
          req.headers['transfer-encoding'] = ['chunked'];
          req.headers['host'] = ['elsewhere.example'];
          req.headers['keep-alive'] = ['timeout=5'];
          if (req.params.how === 'post') req.method = 'post';
          if (req.params.how === 'bad') req.method = 'GE T';
        }, true, false);
      },
    };`,
};

let dir: string;
before(() => {
  dir = path.join(tempDir(), `modifiers-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  for (const [f, src] of Object.entries(PLUGINS)) fs.writeFileSync(path.join(dir, f), src);
});

const mods = (names: string[], more: Record<string, unknown> = {}) => ({ [NS]: { name: names, ...more } });

describe('modifier plugins', () => {
  let backend: Backend;
  let gw: Gateway;
  before(async () => {
    backend = await startBackend((_rq, res, rec) => {
      if (rec.url.startsWith('/fail')) return sendJSON(res, 500, { error: true });
      if (rec.url.startsWith('/hdrs')) {
        const pick = (n: string) => rec.headers[n] ?? null;
        return sendJSON(res, 200, {
          method: rec.method, client: pick('x-client'), other: pick('x-other'), added: pick('x-added'), host: pick('host'),
          te: pick('transfer-encoding'), keepAlive: pick('keep-alive'), connection: pick('connection'),
        });
      }
      if (rec.url.startsWith('/raw')) {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-drop-me': '1', 'x-keep': '1' });
        return res.end('streamed body');
      }
      return sendJSON(res, 200, {
        url: rec.url, trace: rec.headers['x-trace'] ?? null, both: rec.headers['x-both'] ?? null,
        seen: rec.headers['x-seen-query'] ?? null, twice: rec.headers['x-twice'] ?? null,
      });
    });
    gw = await startGateway(
      {
        version: 3,
        timeout: '3s',
        plugin: { folder: dir, pattern: '.mjs' },
        endpoints: [
          {
            endpoint: '/ep/{id}',
            input_query_strings: ['keep', 'drop', 'extra'],
            extra_config: mods(['deny', 'tag1', 'rewrite-req', 'tag2', 'nothing', 'resp-data'], { tag1: { tag: 'first' } }),
            backend: [{ host: [backend.url], url_pattern: '/echo/{id}', extra_config: mods(['tag1'], { tag1: { tag: 'backend' } }) }],
          },
          {
            endpoint: '/reroute',
            backend: [{ host: [backend.url], url_pattern: '/original', extra_config: mods(['reroute'], { reroute: { to: '/rerouted' } }) }],
          },
          {
            endpoint: '/merge',
            extra_config: mods(['resp-data']),
            backend: [
              { host: [backend.url], url_pattern: '/a', group: 'a', extra_config: mods(['incomplete']) },
              { host: [backend.url], url_pattern: '/b', group: 'b' },
            ],
          },
          {
            endpoint: '/partial',
            extra_config: mods(['resp-data']),
            backend: [
              { host: [backend.url], url_pattern: '/ok', group: 'ok' },
              { host: [backend.url], url_pattern: '/fail', group: 'bad' },
            ],
          },
          {
            endpoint: '/noop/{id}',
            output_encoding: 'no-op',
            extra_config: mods(['deny', 'noop-resp']),
            backend: [{ host: [backend.url], url_pattern: '/raw/{id}', encoding: 'no-op', extra_config: mods(['tag2']) }],
          },
          { endpoint: '/resp-error', extra_config: mods(['reject-resp']), backend: [{ host: [backend.url], url_pattern: '/x' }] },
          { endpoint: '/both', extra_config: mods(['both']), backend: [{ host: [backend.url], url_pattern: '/both' }] },
          { endpoint: '/twice', extra_config: mods(['twice']), backend: [{ host: [backend.url], url_pattern: '/twice' }] },
          ...['/reheader/{how}', '/reheader-noop/{how}'].map((endpoint) => ({
            endpoint,
            input_headers: ['X-Client', 'X-Other'],
            ...(endpoint.includes('noop') ? { output_encoding: 'no-op' } : {}),
            extra_config: mods(['reheader']),
            backend: [{ host: [backend.url], url_pattern: '/hdrs', ...(endpoint.includes('noop') ? { encoding: 'no-op' } : {}) }],
          })),
          {
            endpoint: '/probe',
            input_query_strings: ['q'],
            input_headers: [],
            extra_config: mods(['query-probe']),
            backend: [{ host: [backend.url], url_pattern: '/probe' }],
          },
          {
            endpoint: '/probe-noop',
            output_encoding: 'no-op',
            input_query_strings: ['q'],
            extra_config: mods(['query-probe']),
            backend: [{ host: [backend.url], url_pattern: '/probe', encoding: 'no-op' }],
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

  test('endpoint request modifiers run in list order, then backend ones; params and query changes reach the backend', async () => {
    const r = await req(gw.port, '/ep/7?keep=1&drop=2');
    assert.equal(r.status, 200);
    const d = r.json();
    assert.equal(d.trace, 'first,tag2,backend');
    const u = new URL(d.url, 'http://x');
    assert.equal(u.pathname, '/echo/p-7');
    assert.equal(u.searchParams.get('keep'), '1');
    assert.equal(u.searchParams.get('extra'), 'yes');
    assert.equal(u.searchParams.get('drop'), null);
    await logged(gw, /\[ENDPOINT: \/ep\/\{id\}\]\[Modifier Plugins\] Adding 4 request and 1 response modifiers/);
  });

  test('a response modifier (async, returning a replacement) changes the data and adds headers', async () => {
    const r = await req(gw.port, '/ep/1');
    assert.equal(r.json().modified, true);
    assert.equal(h(r.headers, 'x-modified'), '1');
    assert.equal(h(r.headers, 'x-krakend-completed'), 'true');
  });

  test('a backend request modifier changes the built URL', async () => {
    const r = await req(gw.port, '/reroute');
    assert.equal(r.json().url, '/rerouted');
  });

  test('a backend response modifier marks its part incomplete; the endpoint one still runs', async () => {
    const r = await req(gw.port, '/merge');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.equal(r.json().modified, true);
  });

  test('a partial answer skips the endpoint response modifiers, as in KrakenD', async () => {
    const r = await req(gw.port, '/partial');
    assert.equal(r.status, 200);
    assert.equal(h(r.headers, 'x-krakend-completed'), 'false');
    assert.equal(r.json().modified, undefined);
    assert.equal(h(r.headers, 'x-modified'), undefined);
  });

  test('no-op: the response modifier sets the status and headers and wraps the streamed body', async () => {
    const r = await req(gw.port, '/noop/1');
    assert.equal(r.status, 203);
    assert.equal(r.text, 'STREAMED BODY');
    assert.equal(h(r.headers, 'x-noop-mod'), 'on');
    assert.equal(h(r.headers, 'x-drop-me'), undefined);
    assert.equal(h(r.headers, 'x-keep'), '1');
  });

  test('an HTTPResponseError-style error: its status, Content-Type, headers and body (even without return_error_msg)', async () => {
    for (const p of ['/ep/forbidden', '/noop/forbidden']) {
      const r = await req(gw.port, p);
      assert.equal(r.status, 403, p);
      assert.equal(r.text, '{"error":"forbidden id"}', p);
      assert.equal(h(r.headers, 'content-type'), 'application/json', p);
      assert.equal(h(r.headers, 'x-reason'), 'id', p);
    }
    const go = await req(gw.port, '/ep/gostyle');
    assert.equal(go.status, 418, 'a Go-style StatusCode() method is read too');
  });

  test('a plain error is a 500 without its message; an async response failure too', async () => {
    const r = await req(gw.port, '/ep/plain');
    assert.equal(r.status, 500);
    assert.equal(r.text, '');
    await logged(gw, /modifier deny: plain failure/);
    const e = await req(gw.port, '/resp-error');
    assert.equal(e.status, 500);
    await logged(gw, /modifier reject-resp: async response failure/);
  });

  test('an endpoint modifier sees the query input_query_strings lets through; what it adds is forwarded', async () => {
    for (const p of ['/probe', '/probe-noop']) {
      const r = await req(gw.port, `${p}?q=1&x=2`);
      const d = r.json();
      assert.equal(d.seen, 'q', `${p}: the modifier saw only the allowed parameter`);
      const u = new URL(d.url, 'http://x');
      assert.deepEqual([u.searchParams.get('q'), u.searchParams.get('x'), u.searchParams.get('y')], ['1', null, '3'], p);
    }
  });

  test('endpoint request modifier: any spelling of a client header replaces it; hop-by-hop ones never go; the backend keeps its method (as lura); a broken method is a 500', async () => {
    for (const base of ['/reheader', '/reheader-noop']) {
      const r = await req(gw.port, `${base}/get`, { headers: { 'x-client': 'from-client', 'x-other': 'kept' } });
      assert.equal(r.status, 200, base);
      const d = r.json();
      assert.equal(d.method, 'GET', base);
      assert.equal(d.client, 'by-modifier', `${base}: one X-Client, the modifier's`);
      assert.equal(d.other, 'kept', base);
      assert.equal(d.added, '1', base);
      assert.notEqual(d.host, 'elsewhere.example', base);
      assert.equal(d.te, null, base);
      assert.equal(d.keepAlive, null, base);
      assert.notEqual(d.connection, 'close', `${base}: the modifier's Connection is not forwarded`);
      const post = await req(gw.port, `${base}/post`);
      assert.equal(post.status, 200, base);
      assert.equal(post.json().method, 'GET', `${base}: lura's request builder sets the backend's method`);
      const before = backend.requests.length;
      const bad = await req(gw.port, `${base}/bad`);
      assert.equal(bad.status, 500, base);
      assert.equal(backend.requests.length, before, `${base}: nothing sent with a broken method`);
    }
    await logged(gw, /modifier set the method to "GE T", not an HTTP token/);
  });

  test('one name registered once per direction by the same plugin: a request modifier, no warning', async () => {
    const r = await req(gw.port, '/twice');
    assert.equal(r.json().twice, 'req');
    assert.doesNotMatch(gw.output(), /"twice" .*already registered/);
  });

  test('a name registered for requests and responses applies to requests only', async () => {
    const r = await req(gw.port, '/both');
    assert.equal(r.json().both, 'seen', 'the request header was added');
    assert.equal(r.json().modified, undefined);
    assert.ok(!('both' in r.json() && r.json().both === true), 'the response data was not touched');
  });
});

describe('modifier plugins: start-up errors', () => {
  const base = (extra: Record<string, unknown>) => ({
    version: 3,
    plugin: { folder: dir, pattern: '.mjs' },
    endpoints: [{ endpoint: '/x', extra_config: extra, backend: [{ host: ['http://127.0.0.1:8999'], url_pattern: '/x' }] }],
  });

  test('an unregistered name stops gw check, naming it and the registered ones', async () => {
    const r = await runCli(['check', '-c', writeConfig(base(mods(['tag1', 'typo'])))]);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /endpoint 'GET \/x': extra_config\["plugin\/req-resp-modifier"\]: modifier plugin 'typo' is not registered \(registered: .*tag1/);
  });

  test('"name" must be a list, as KrakenD reads it', async () => {
    const r = await runCli(['check', '-c', writeConfig(base({ [NS]: { name: 'tag1' } }))]);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /name must be a list of modifier names .*write \["tag1"\]/);
  });

  test('the namespace is no longer refused: gw check passes a valid config without a warning for it', async () => {
    const r = await runCli(['check', '-c', writeConfig(base(mods(['tag1'])))]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /req-resp-modifier" .*not implemented/);
  });
});
