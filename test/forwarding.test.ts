// What reaches the backend: headers, query strings, url_pattern params, method, body,
// load balancing and redirects (spec §1.3–§1.6).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  type Backend,
  type Gateway,
  type RecordedRequest,
  rawRequest,
  req,
  sendJSON,
  startBackend,
  startGateway,
} from './helpers/gw.ts';

let backend: Backend; // echo
let b1: Backend;
let b2: Backend;
let redirector: Backend;
let gw: Gateway;

before(async () => {
  backend = await startBackend();
  b1 = await startBackend();
  b2 = await startBackend();
  redirector = await startBackend((req, res, rec) => {
    if (rec.url === '/r') {
      res.writeHead(302, { location: '/final' });
      res.end();
    } else if (rec.url === '/final') {
      sendJSON(res, 200, { final: true });
    } else sendJSON(res, 404, {});
  });
  const host = [backend.url];
  gw = await startGateway({
    version: 3,
    endpoints: [
      { endpoint: '/fwd/default', backend: [{ host, url_pattern: '/d' }] },
      { endpoint: '/fwd/default', method: 'POST', backend: [{ host, url_pattern: '/dp' }] },
      { endpoint: '/fwd/list', input_headers: ['X-Foo'], backend: [{ host, url_pattern: '/l' }] },
      { endpoint: '/fwd/all', input_headers: ['*'], backend: [{ host, url_pattern: '/a' }] },
      { endpoint: '/q/default', backend: [{ host, url_pattern: '/qd' }] },
      { endpoint: '/q/a', input_query_strings: ['a'], backend: [{ host, url_pattern: '/qa' }] },
      { endpoint: '/q/all', input_query_strings: ['*'], backend: [{ host, url_pattern: '/qall' }] },
      { endpoint: '/q/fixed', input_query_strings: ['a'], backend: [{ host, url_pattern: '/p?fixed=1' }] },
      { endpoint: '/users/{id}', backend: [{ host, url_pattern: '/u/{id}' }] },
      { endpoint: '/two/{a}/{b}', backend: [{ host, url_pattern: '/x/{b}/y/{a}' }] },
      { endpoint: '/mo', backend: [{ host, url_pattern: '/mo', method: 'POST' }] },
      { endpoint: '/upload', method: 'POST', backend: [{ host, url_pattern: '/up' }] },
      { endpoint: '/rr', backend: [{ host: [b1.url, b2.url], url_pattern: '/rr' }] },
      { endpoint: '/redir', backend: [{ host: [redirector.url], url_pattern: '/r' }] },
    ],
  });
});
after(async () => {
  await gw?.stop();
  await Promise.all([backend, b1, b2, redirector].map((b) => b?.close()));
});

/** Calls the gateway and returns the single request the echo backend got for it. */
async function through(path: string, opts: Parameters<typeof req>[2] = {}, be = backend): Promise<RecordedRequest> {
  const n = be.requests.length;
  const r = await req(gw.port, path, opts);
  assert.equal(r.status, 200, `${path} → ${r.status} ${r.text}`);
  assert.equal(be.requests.length, n + 1, 'backend should be called exactly once');
  return be.requests[n];
}

const KRAKEND_UA = /^KrakenD Version \S+/;
// Everything a backend may see on a default (no input_headers) request.
const DEFAULT_ALLOWED = new Set([
  'host', 'content-type', 'content-length', 'transfer-encoding', 'connection', 'accept-encoding',
  'user-agent', 'x-forwarded-for', 'x-forwarded-host',
]);

describe('headers', () => {
  const clientHeaders = {
    'content-type': 'application/json',
    'x-foo': 'foo1',
    'x-bar': 'bar1',
    authorization: 'Bearer secret',
    cookie: 'session=abc',
    'user-agent': 'test-client/1.0',
    'accept-language': 'en',
  };

  test('default: only Content-Type is copied; X-Forwarded-For/Host and KrakenD User-Agent are set', async () => {
    const rec = await through('/fwd/default', { headers: clientHeaders });
    const hd = rec.headers;
    assert.equal(hd['content-type'], 'application/json');
    for (const k of ['x-foo', 'x-bar', 'authorization', 'cookie', 'accept-language', 'x-forwarded-via']) {
      assert.equal(hd[k], undefined, `${k} must not be forwarded`);
    }
    for (const k of Object.keys(hd)) assert.ok(DEFAULT_ALLOWED.has(k), `unexpected header reached the backend: ${k}: ${hd[k]}`);
    assert.match(String(hd['user-agent']), KRAKEND_UA);
    assert.equal(hd['x-forwarded-for'], '127.0.0.1');
    assert.equal(hd['x-forwarded-host'], `127.0.0.1:${gw.port}`);
    assert.equal(hd.host, `127.0.0.1:${backend.port}`, 'backend sees its own Host');
  });

  test('default: Accept-Encoding from the client is not forwarded; the gateway asks for gzip', async () => {
    const rec = await through('/fwd/default', { headers: { 'accept-encoding': 'br' } });
    assert.equal(rec.headers['accept-encoding'], 'gzip');
  });

  test('default POST: Content-Type and body reach the backend', async () => {
    const rec = await through('/fwd/default', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-foo': '1' },
      body: '{"hello":"world"}',
    });
    assert.equal(rec.method, 'POST');
    assert.equal(rec.url, '/dp');
    assert.equal(rec.headers['content-type'], 'application/json');
    assert.equal(rec.headers['x-foo'], undefined);
    assert.equal(rec.body.toString(), '{"hello":"world"}');
  });

  test('input_headers ["X-Foo"]: X-Foo only (Content-Type not implicitly added)', async () => {
    const rec = await through('/fwd/list', { headers: clientHeaders });
    const hd = rec.headers;
    assert.equal(hd['x-foo'], 'foo1');
    for (const k of ['x-bar', 'authorization', 'cookie', 'accept-language', 'content-type']) {
      assert.equal(hd[k], undefined, `${k} must not be forwarded`);
    }
    assert.match(String(hd['user-agent']), KRAKEND_UA);
    assert.equal(hd['x-forwarded-for'], '127.0.0.1');
    assert.equal(hd['x-forwarded-host'], `127.0.0.1:${gw.port}`);
  });

  test('input_headers ["X-Foo"] matches the client header case-insensitively', async () => {
    const rec = await through('/fwd/list', { headers: { 'X-FOO': 'upper' } });
    assert.equal(rec.headers['x-foo'], 'upper');
  });

  test('input_headers ["*"]: all client headers; client User-Agent kept, X-Forwarded-Via added', async () => {
    const rec = await through('/fwd/all', { headers: { ...clientHeaders, 'x-forwarded-for': '10.9.9.9' } });
    const hd = rec.headers;
    for (const k of ['content-type', 'x-foo', 'x-bar', 'authorization', 'cookie', 'accept-language']) {
      assert.equal(hd[k], (clientHeaders as Record<string, string>)[k], `${k} should be forwarded`);
    }
    assert.equal(hd['user-agent'], 'test-client/1.0');
    assert.match(String(hd['x-forwarded-via']), KRAKEND_UA);
    assert.equal(hd['x-forwarded-for'], '127.0.0.1', 'X-Forwarded-For is set by the gateway, not taken from the client');
    assert.equal(hd.host, `127.0.0.1:${backend.port}`);
  });

  test('hop-by-hop headers are never forwarded, even with ["*"]; the client Host is not passed as Host', async () => {
    const n = backend.requests.length;
    const raw =
      'GET /fwd/all HTTP/1.1\r\n' +
      'Host: client.example:1234\r\n' +
      'Connection: close, X-Secret\r\n' +
      'X-Secret: s3cret\r\n' +
      'Keep-Alive: timeout=5\r\n' +
      'TE: trailers\r\n' +
      'Upgrade: h2c\r\n' +
      'Proxy-Connection: keep-alive\r\n' +
      'X-Visible: yes\r\n' +
      '\r\n';
    const r = await rawRequest(gw.port, raw);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(backend.requests.length, n + 1);
    const hd = backend.requests[n].headers;
    assert.equal(hd['x-visible'], 'yes', 'ordinary headers are forwarded with ["*"]');
    for (const k of ['x-secret', 'keep-alive', 'te', 'upgrade', 'proxy-connection']) {
      assert.equal(hd[k], undefined, `hop-by-hop header ${k} must not be forwarded`);
    }
    assert.doesNotMatch(String(hd.connection ?? ''), /x-secret/i);
    assert.equal(hd.host, `127.0.0.1:${backend.port}`);
    assert.equal(hd['x-forwarded-host'], 'client.example:1234');
  });
});

describe('query strings', () => {
  test('dropped by default', async () => {
    const rec = await through('/q/default?a=1&b=2');
    assert.equal(rec.url, '/qd');
  });

  test('input_query_strings ["a"]: only a (all its values), case-sensitive', async () => {
    const rec = await through('/q/a?a=1&b=2&a=3&A=4');
    const u = new URL(rec.url, 'http://x');
    assert.equal(u.pathname, '/qa');
    assert.deepEqual(u.searchParams.getAll('a'), ['1', '3']);
    assert.equal(u.searchParams.has('b'), false);
    assert.equal(u.searchParams.has('A'), false);
  });

  test('input_query_strings ["a"] with no query → no "?"', async () => {
    const rec = await through('/q/a');
    assert.equal(rec.url, '/qa');
  });

  test('input_query_strings ["*"]: everything', async () => {
    const rec = await through('/q/all?a=1&b=2&b=3&c=x%20y');
    const u = new URL(rec.url, 'http://x');
    assert.equal(u.pathname, '/qall');
    assert.deepEqual(u.searchParams.getAll('a'), ['1']);
    assert.deepEqual(u.searchParams.getAll('b'), ['2', '3']);
    assert.equal(u.searchParams.get('c'), 'x y');
  });

  test('url_pattern query is kept and forwarded ones are appended with &', async () => {
    const rec = await through('/q/fixed?a=1&b=2');
    assert.match(rec.url, /^\/p\?fixed=1&/);
    const u = new URL(rec.url, 'http://x');
    assert.equal(u.searchParams.get('fixed'), '1');
    assert.equal(u.searchParams.get('a'), '1');
    assert.equal(u.searchParams.has('b'), false);
  });

  test('url_pattern query alone when nothing is forwarded', async () => {
    const rec = await through('/q/fixed?b=2');
    assert.equal(rec.url, '/p?fixed=1');
  });
});

describe('url_pattern params', () => {
  test('/users/{id} → /u/{id}', async () => {
    const rec = await through('/users/42');
    assert.equal(rec.url, '/u/42');
  });

  test('several params are placed by name', async () => {
    const rec = await through('/two/AAA/BBB');
    assert.equal(rec.url, '/x/BBB/y/AAA');
  });

  test('a param value "a b" (sent as a%20b) reaches the backend escaped: /u/a%20b', async () => {
    const rec = await through('/users/a%20b');
    assert.equal(rec.url, '/u/a%20b');
  });

  test('a param value containing "?" (sent as %3F) → 400, backend never called', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/users/x%3Fy=1');
    assert.equal(r.status, 400);
    assert.equal(backend.requests.length, n);
  });

  test('an encoded "/" in a param never reaches the backend as a path separator', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/users/a%2Fb');
    assert.ok(r.status === 400 || r.status === 404, `status ${r.status}`);
    assert.equal(backend.requests.length, n, 'backend must not be called');
  });

  test('CR/LF in a param value cannot inject a header into the backend request', async () => {
    const n = backend.requests.length;
    const r = await req(gw.port, '/users/a%0D%0AX-Injected:%20yes');
    if (r.status === 200) {
      const rec = backend.requests[n];
      assert.equal(rec.headers['x-injected'], undefined);
      assert.doesNotMatch(rec.url, /[\r\n]/);
      assert.match(rec.url, /^\/u\//);
    } else {
      assert.equal(r.status, 400);
      assert.equal(backend.requests.length, n);
    }
  });
});

describe('method, body, balancing, redirects', () => {
  test('backend method override: GET endpoint, backend "method": "POST"', async () => {
    const rec = await through('/mo');
    assert.equal(rec.method, 'POST');
    assert.equal(rec.url, '/mo');
  });

  test('a 1 MB POST body reaches the backend byte-for-byte', async () => {
    const body = crypto.randomBytes(1024 * 1024);
    const rec = await through('/upload', { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(rec.method, 'POST');
    assert.equal(rec.headers['content-type'], 'application/octet-stream');
    assert.equal(rec.body.length, body.length);
    assert.ok(rec.body.equals(body), 'body differs');
  });

  test('round-robin over two hosts: 4 requests → 2 each', async () => {
    const n1 = b1.requests.length;
    const n2 = b2.requests.length;
    for (let i = 0; i < 4; i++) {
      const r = await req(gw.port, '/rr');
      assert.equal(r.status, 200);
    }
    assert.equal(b1.requests.length - n1, 2, 'first host');
    assert.equal(b2.requests.length - n2, 2, 'second host');
  });

  test('backend 302 is followed; the final request carries Referer', async () => {
    const n = redirector.requests.length;
    const r = await req(gw.port, '/redir');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { final: true });
    const recs = redirector.requests.slice(n);
    assert.deepEqual(
      recs.map((x) => x.url),
      ['/r', '/final'],
    );
    assert.match(String(recs[1].headers.referer ?? ''), /\/r$/, 'Referer should point at the redirecting URL');
    assert.match(String(recs[1].headers['user-agent']), KRAKEND_UA);
  });
});
