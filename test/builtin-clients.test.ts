// The built-in client plugins (issue #12): `no-redirect` and `static-filesystem`, available without
// a plugin folder. A real gw child process in front of real loopback backends and real temp folders;
// the static-filesystem path rules are also driven directly through the factory.
// Run: npm run build && node --import tsx --test test/builtin-clients.test.ts
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  type Backend,
  type Gateway,
  STACK_FRAME,
  agent,
  fdCount,
  freePort,
  h,
  req,
  runCli,
  sleep,
  startBackend,
  startGateway,
  withPeakRss,
  writeConfig,
} from './helpers/gw.ts';
import { staticFilesystemFactory } from '../core/plugin/builtin/static-filesystem.js';
import type { BackendRequest, BackendResponse, ClientContext, ClientHandler, PluginLogger, ResponseBody } from '../core/plugin/types.js';

const MB = 1024 * 1024;
const NS = 'plugin/http-client';
const SECRET = 'TOP SECRET: outside the served folder';

/** Waits (bounded) for a line in the gateway's stdout. */
async function logLine(g: Gateway, re: RegExp, ms = 2000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (re.test(g.stdout())) return true;
    await sleep(20);
  }
  return re.test(g.stdout());
}

// ---------------------------------------------------------------------------
// no-redirect

describe('no-redirect', () => {
  let backend: Backend;
  let gw: Gateway;
  const REDIRECT_CODES = [301, 302, 303, 307, 308];
  // Odd on purpose: an untouched Location keeps its escapes, its query and its case.
  const location = (code: number) => `/Target/${code}?from=${code}&x=%2Fy%20z`;

  before(async () => {
    backend = await startBackend((_req, res, rec) => {
      const m = /^\/r\/(\d{3})$/.exec(rec.url);
      if (m) {
        const body = `moved ${m[1]}`;
        res.writeHead(Number(m[1]), { location: location(Number(m[1])), 'content-type': 'text/plain', 'x-from': 'backend' });
        res.end(body);
        return;
      }
      if (rec.url.startsWith('/Target/')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ reached: rec.url, method: rec.method }));
        return;
      }
      res.writeHead(404);
      res.end();
    });
    const noRedirect = { [NS]: { name: 'no-redirect' } };
    gw = await startGateway({
      version: 3,
      // No "plugin" section: built-ins need no plugin folder.
      endpoints: [
        { endpoint: '/nr/{code}', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/r/{code}', encoding: 'no-op', extra_config: noRedirect }] },
        { endpoint: '/follow/{code}', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/r/{code}', encoding: 'no-op' }] },
        { endpoint: '/nr-json/{code}', backend: [{ host: [backend.url], url_pattern: '/r/{code}', extra_config: noRedirect }] },
        { endpoint: '/nr-ok', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/Target/direct', encoding: 'no-op', extra_config: noRedirect }] },
      ],
    });
  });

  after(async () => {
    await gw?.stop();
    await backend?.close();
  });

  for (const code of REDIRECT_CODES) {
    test(`${code} on a no-op endpoint: the client gets the ${code}, its Location and body untouched; nothing follows it`, async () => {
      const before = backend.requests.length;
      const r = await req(gw.port, `/nr/${code}`);
      assert.equal(r.status, code, r.text);
      assert.equal(h(r.headers, 'location'), location(code));
      assert.equal(h(r.headers, 'x-from'), 'backend');
      assert.equal(r.text, `moved ${code}`);
      assert.deepEqual(backend.requests.slice(before).map((x) => x.url), [`/r/${code}`], 'only the redirecting call reached the backend');
    });
  }

  for (const code of [301, 302, 307]) {
    test(`${code} on the same backend without the plugin is followed`, async () => {
      const before = backend.requests.length;
      const r = await req(gw.port, `/follow/${code}`);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json(), { reached: location(code), method: 'GET' });
      assert.deepEqual(backend.requests.slice(before).map((x) => x.url), [`/r/${code}`, location(code)]);
    });
  }

  test('a decoding endpoint applies the normal status check to the 3xx (500), without following it', async () => {
    const before = backend.requests.length;
    const r = await req(gw.port, '/nr-json/302');
    assert.equal(r.status, 500, r.text);
    assert.deepEqual(backend.requests.slice(before).map((x) => x.url), ['/r/302']);
  });

  test('a non-redirect answer passes as usual', async () => {
    const r = await req(gw.port, '/nr-ok');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { reached: '/Target/direct', method: 'GET' });
  });

  test('start-up logs KrakenD\'s injection line', async () => {
    assert.ok(await logLine(gw, /\[BACKEND: GET \/nr\/:code -> \/r\/\{code\}\] Injecting plugin no-redirect/), gw.stdout());
  });
});

// ---------------------------------------------------------------------------
// static-filesystem: the folder used by both the gateway and the direct tests.

let tmp: string;
let site: string;
let bigSize = 0;
let bigSha = '';
let fifo = false;
const FILES: Record<string, string | Buffer> = {
  'index.html': '<!doctype html><title>root</title>\n',
  'data.json': '{"from":"disk","n":1}',
  'style.css': 'body { color: #333 }\n',
  'app.js': 'console.log(1)\n',
  'logo.PNG': Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0]),
  'noext': 'raw bytes',
  'notes.unknownext': 'what is this',
  'empty.txt': '',
  'with space.txt': 'spaced',
  '.hidden': 'a dotfile',
  'docs/index.html': '<p>docs</p>',
  'docs/page.txt': 'a page',
  'sub/leaf.txt': 'leaf',
};

function setUpFolder() {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-static-'));
  site = path.join(tmp, 'site');
  for (const [name, content] of Object.entries(FILES)) {
    const p = path.join(site, name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
  }
  fs.writeFileSync(path.join(tmp, 'secret.txt'), SECRET);
  fs.mkdirSync(path.join(tmp, 'outside'));
  fs.writeFileSync(path.join(tmp, 'outside', 'secret2.txt'), SECRET);
  fs.writeFileSync(path.join(tmp, 'outside', 'index.html'), SECRET);
  // Symlinks: out of the folder (file, directory, absolute), and one inside it (allowed).
  fs.symlinkSync('../secret.txt', path.join(site, 'link-out'));
  fs.symlinkSync(path.join(tmp, 'outside'), path.join(site, 'dirlink-out'));
  fs.symlinkSync('/etc/passwd', path.join(site, 'abs-link'));
  fs.symlinkSync('data.json', path.join(site, 'link-in.json'));
  fs.symlinkSync('loop-b', path.join(site, 'loop-a'));
  fs.symlinkSync('loop-a', path.join(site, 'loop-b'));
  // docs-index points its index.html outside: a directory whose index escapes is 404 too.
  fs.mkdirSync(path.join(site, 'docs-escape'));
  fs.symlinkSync(path.join(tmp, 'outside', 'index.html'), path.join(site, 'docs-escape', 'index.html'));
  try {
    execFileSync('mkfifo', [path.join(site, 'a-fifo')]);
    fifo = true;
  } catch {
    fifo = false;
  }
  // The large file: 64 MiB of a pattern, written in chunks.
  const big = path.join(site, 'big.bin');
  const fd = fs.openSync(big, 'w');
  const chunk = Buffer.alloc(MB);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7 + 3) % 251;
  const hash = crypto.createHash('sha256');
  for (let i = 0; i < 64; i++) {
    chunk[0] = i; // every MiB a little different
    fs.writeSync(fd, chunk);
    hash.update(chunk);
  }
  fs.closeSync(fd);
  bigSize = 64 * MB;
  bigSha = hash.digest('hex');
}

before(setUpFolder);
after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const staticCfg = (extra: Record<string, unknown> = {}) => ({ [NS]: { name: 'static-filesystem', 'static-filesystem': { path: site, ...extra } } });
/** A host is required by the config; the static backend never contacts it. */
const NOWHERE = 'http://127.0.0.1:19';

describe('static-filesystem through gw', () => {
  let gw: Gateway;

  before(async () => {
    const be = (url_pattern: string, extra: Record<string, unknown> = {}, more: Record<string, unknown> = {}) => ({
      host: [NOWHERE], url_pattern, encoding: 'no-op', extra_config: staticCfg(extra), ...more,
    });
    gw = await startGateway({
      version: 3,
      timeout: '10s',
      extra_config: { 'gw/server': { workers: 1 } },
      endpoints: [
        { endpoint: '/static', output_encoding: 'no-op', backend: [be('/')] },
        { endpoint: '/static/{file}', output_encoding: 'no-op', backend: [be('/{file}')] },
        { endpoint: '/static/{dir}/{file}', output_encoding: 'no-op', backend: [be('/{dir}/{file}')] },
        { endpoint: '/prefixed/{file}', output_encoding: 'no-op', backend: [be('/assets/{file}', { prefix: '/assets' })] },
        { endpoint: '/wrong-prefix/{file}', output_encoding: 'no-op', backend: [be('/other/{file}', { prefix: '/assets' })] },
        { endpoint: '/json', backend: [{ host: [NOWHERE], url_pattern: '/data.json', extra_config: staticCfg() }] },
        { endpoint: '/json-missing', backend: [{ host: [NOWHERE], url_pattern: '/nope.json', extra_config: staticCfg() }] },
        { endpoint: '/head/{file}', output_encoding: 'no-op', backend: [be('/{file}', {}, { method: 'HEAD' })] },
        { endpoint: '/post/{file}', method: 'POST', output_encoding: 'no-op', backend: [be('/{file}')] },
        // Literal url_patterns that climb: the plugin itself refuses them (gw sends them as written).
        { endpoint: '/literal/dotdot', output_encoding: 'no-op', backend: [be('/../secret.txt')] },
        { endpoint: '/literal/encoded', output_encoding: 'no-op', backend: [be('/%2e%2e/secret.txt')] },
        { endpoint: '/literal/slash', output_encoding: 'no-op', backend: [be('/..%2fsecret.txt')] },
        { endpoint: '/literal/nul', output_encoding: 'no-op', backend: [be('/data.json%00.txt')] },
      ],
    });
  });

  after(async () => {
    await gw?.stop();
  });

  const TYPES: [string, string][] = [
    ['index.html', 'text/html; charset=utf-8'],
    ['data.json', 'application/json'],
    ['style.css', 'text/css; charset=utf-8'],
    ['app.js', 'text/javascript; charset=utf-8'],
    ['logo.PNG', 'image/png'],
    ['noext', 'application/octet-stream'],
    ['notes.unknownext', 'application/octet-stream'],
    ['link-in.json', 'application/json'],
  ];

  for (const [name, type] of TYPES) {
    test(`${name}: 200, ${type}, exact Content-Length and bytes`, async () => {
      const r = await req(gw.port, `/static/${name}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(h(r.headers, 'content-type'), type);
      const want = fs.readFileSync(path.join(site, name));
      assert.equal(h(r.headers, 'content-length'), String(want.length));
      assert.deepEqual(r.body, want);
      assert.match(h(r.headers, 'last-modified') ?? '', /^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
    });
  }

  test('an escaped name (%20) is decoded once; a dotfile is served as KrakenD does', async () => {
    const r = await req(gw.port, '/static/with%20space.txt');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, 'spaced');
    const d = await req(gw.port, '/static/.hidden');
    assert.equal(d.status, 200, d.text);
    assert.equal(d.text, 'a dotfile');
  });

  test('an empty file: 200 with Content-Length 0', async () => {
    const r = await req(gw.port, '/static/empty.txt');
    assert.equal(r.status, 200, r.text);
    assert.equal(h(r.headers, 'content-length'), '0');
    assert.equal(r.body.length, 0);
  });

  test('a directory answers its index.html (the root too); without one it is 404', async () => {
    const root = await req(gw.port, '/static');
    assert.equal(root.status, 200, root.text);
    assert.equal(root.text, FILES['index.html']);
    assert.equal(h(root.headers, 'content-type'), 'text/html; charset=utf-8');
    const docs = await req(gw.port, '/static/docs');
    assert.equal(docs.status, 200, docs.text);
    assert.equal(docs.text, '<p>docs</p>');
    const page = await req(gw.port, '/static/docs/page.txt');
    assert.equal(page.status, 200, page.text);
    assert.equal(page.text, 'a page');
    const sub = await req(gw.port, '/static/sub');
    assert.equal(sub.status, 404, sub.text);
    assert.equal(sub.text, '404 page not found\n');
  });

  test('missing files are 404 with Go\'s text', async () => {
    for (const p of ['/static/nope.txt', '/static/docs/nope', '/static/data.json/x', '/static/sub/nope']) {
      const r = await req(gw.port, p);
      assert.equal(r.status, 404, `${p}: ${r.text}`);
      assert.equal(r.text, '404 page not found\n', p);
      assert.equal(h(r.headers, 'content-type'), 'text/plain; charset=utf-8', p);
    }
  });

  test('prefix: removed before the lookup; a path without it is 404', async () => {
    const r = await req(gw.port, '/prefixed/data.json');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.text, FILES['data.json']);
    const w = await req(gw.port, '/wrong-prefix/data.json');
    assert.equal(w.status, 404, w.text);
  });

  test('a decoding endpoint decodes the file like any backend answer; a missing file fails it', async () => {
    const r = await req(gw.port, '/json');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { from: 'disk', n: 1 });
    const m = await req(gw.port, '/json-missing');
    assert.equal(m.status, 500, m.text);
  });

  test('HEAD: the headers of a GET, no body', async () => {
    const r = await req(gw.port, '/head/style.css');
    assert.equal(r.status, 200, r.text);
    assert.equal(h(r.headers, 'content-type'), 'text/css; charset=utf-8');
    assert.equal(r.body.length, 0);
  });

  test('other methods: 405 with Allow: GET, HEAD', async () => {
    const r = await req(gw.port, '/post/data.json', { method: 'POST', body: '{}' , headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 405, r.text);
    assert.equal(h(r.headers, 'allow'), 'GET, HEAD');
  });

  test('traversal attempts never return a file outside the folder', async () => {
    const attempts = [
      '/static/../secret.txt',
      '/static/%2e%2e/secret.txt',
      '/static/%2E%2E/secret.txt',
      '/static/..%2fsecret.txt',
      '/static/%2e%2e%2fsecret.txt',
      '/static/%2e%2e%2f%2e%2e%2fsecret.txt',
      '/static/..%5csecret.txt',
      '/static/sub/..%2f..%2fsecret.txt',
      '/static/%252e%252e%252fsecret.txt',
      '/static/%c0%ae%c0%ae/secret.txt',
      '/static/%2fetc%2fpasswd',
      '/static//etc/passwd',
      '/static/data.json%00',
      '/static/data.json%00.txt',
      '/static/link-out',
      '/static/abs-link',
      '/static/dirlink-out/secret2.txt',
      '/static/dirlink-out',
      '/static/docs-escape',
      '/static/loop-a',
      '/literal/dotdot',
      '/literal/encoded',
      '/literal/slash',
      '/literal/nul',
    ];
    if (fifo) attempts.push('/static/a-fifo');
    const etcPasswd = fs.existsSync('/etc/passwd') ? fs.readFileSync('/etc/passwd', 'utf8').slice(0, 16) : null;
    for (const p of attempts) {
      const r = await req(gw.port, p, { timeoutMs: 5000 });
      // Refused by the router (400/404, or its clean-path redirect) or by the plugin (400/404).
      assert.ok(r.status >= 300 && r.status < 500, `${p}: status ${r.status} ${r.text}`);
      assert.ok(!r.text.includes(SECRET), `${p} leaked the secret`);
      if (etcPasswd) assert.ok(!r.text.includes(etcPasswd), `${p} leaked /etc/passwd`);
    }
    // What the plugin itself answered, for the paths the router lets through to it.
    assert.equal((await req(gw.port, '/static/link-out')).status, 404);
    assert.equal((await req(gw.port, '/static/dirlink-out/secret2.txt')).status, 404);
    assert.equal((await req(gw.port, '/literal/dotdot')).status, 400);
    assert.equal((await req(gw.port, '/literal/encoded')).status, 400);
    assert.equal((await req(gw.port, '/literal/slash')).status, 400);
    assert.equal((await req(gw.port, '/literal/nul')).status, 400);
  });

  /** GET through undici: hashes the body as it arrives (never holding it), pausing now and then. */
  async function download(p: string, slow: boolean) {
    const res = await agent.request({ origin: gw.url, path: p, method: 'GET', bodyTimeout: 30_000, headersTimeout: 30_000 });
    const hash = crypto.createHash('sha256');
    let total = 0;
    let sinceNap = 0;
    for await (const c of res.body) {
      const b = c as Buffer;
      hash.update(b);
      total += b.length;
      sinceNap += b.length;
      if (slow && sinceNap >= 4 * MB) {
        sinceNap = 0;
        await sleep(20); // the client stalls: backpressure reaches the file read
      }
    }
    return { status: res.statusCode, length: res.headers['content-length'], total, sha: hash.digest('hex') };
  }

  test('a 64 MiB file streams with its Content-Length, exact bytes, bounded memory', async (t) => {
    const pids = gw.workerPids();
    // Warm up the pipe first (the first large transfer grows gw's buffers once; see noop.test.ts).
    const warm = await download('/static/big.bin', false);
    assert.equal(warm.total, bigSize);
    await sleep(200);
    const { result: r, base, peak } = await withPeakRss(pids, 25, () => download('/static/big.bin', true));
    assert.equal(r.status, 200);
    assert.equal(r.length, String(bigSize));
    assert.equal(r.total, bigSize, 'byte count');
    assert.equal(r.sha, bigSha, 'body bytes differ from the file');
    const growth = peak - base;
    t.diagnostic(`RSS base ${(base / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB`);
    assert.ok(growth < 24 * MB, `gateway RSS grew by ${(growth / MB).toFixed(1)} MB for a ${bigSize / MB} MB file`);
  });

  test('abandoned downloads and refused paths leave no file descriptor open', async () => {
    const pids = gw.workerPids();
    const fds0 = fdCount(pids);
    for (let i = 0; i < 10; i++) {
      const res = await agent.request({ origin: gw.url, path: '/static/big.bin', method: 'GET' });
      let got = 0;
      for await (const c of res.body) {
        got += (c as Buffer).length;
        if (got > 256 * 1024) break; // leaves the loop: undici destroys the response
      }
      await req(gw.port, '/static/link-out');
      await req(gw.port, '/static/nope');
    }
    await sleep(300);
    // Head-only answers (HEAD) and answers dropped unread never open the file at all.
    for (let i = 0; i < 10; i++) await req(gw.port, '/head/big.bin');
    await sleep(300);
    const fds1 = fdCount(pids);
    assert.ok(fds1 - fds0 <= 3, `worker fds went from ${fds0} to ${fds1}`);
  });
});

// ---------------------------------------------------------------------------
// static-filesystem driven directly (the path rules, without the router in front).

describe('static-filesystem handler', () => {
  const logged: string[] = [];
  const logger: PluginLogger = {
    debug: (...v) => logged.push(v.join(' ')),
    info: (...v) => logged.push(v.join(' ')),
    warning: (...v) => logged.push(v.join(' ')),
    error: (...v) => logged.push(v.join(' ')),
    critical: (...v) => logged.push(v.join(' ')),
    fatal: (...v) => logged.push(v.join(' ')),
  };
  const ctx: ClientContext = {
    endpoint: '/x',
    method: 'GET',
    backend: { index: 0, urlPattern: '/{p}', hosts: [NOWHERE] },
    signal: new AbortController().signal,
    logger,
  };
  let handler: ClientHandler;
  const next = () => Promise.reject(new Error('next() must not be called by static-filesystem'));
  const call = async (url: string, method = 'GET'): Promise<BackendResponse> => {
    const r: BackendRequest = { method, url, headers: {}, body: null, signal: ctx.signal, params: {} };
    return handler(r, next);
  };
  const text = async (res: BackendResponse) => {
    const b = res.body;
    if (b === null) return '';
    if (typeof b === 'string') return b;
    return (await (b as ResponseBody).bytes()).toString('utf8');
  };

  before(async () => {
    handler = await staticFilesystemFactory(ctx, staticCfg()[NS]);
  });

  test('plain files, index, query ignored', async () => {
    let r = await call(`${NOWHERE}/data.json?x=1#frag`);
    assert.equal(r.status, 200);
    assert.equal(await text(r), FILES['data.json']);
    r = await call(`${NOWHERE}/`);
    assert.equal(await text(r), FILES['index.html']);
    r = await call(`${NOWHERE}/./docs/./page.txt`);
    assert.equal(await text(r), 'a page');
    r = await call(`${NOWHERE}//docs//page.txt`);
    assert.equal(await text(r), 'a page');
  });

  test('climbing, encoded separators and control characters: 400 before the disk is read', async () => {
    for (const p of [
      '/../secret.txt', '/a/../../secret.txt', '/docs/..', '/%2e%2e/secret.txt', '/%2E%2e/secret.txt',
      '/..%2fsecret.txt', '/docs%2f..%2f..%2fsecret.txt', '/%2fetc%2fpasswd', '/..%5csecret.txt', '/data.json%00',
      '/%00', '/a%0d%0ab', '/%7f', '/%zz', '/%e0%80', '/%c0%ae%c0%ae/secret.txt',
    ]) {
      const r = await call(NOWHERE + p);
      assert.equal(r.status, 400, p);
      assert.equal(await text(r), 'invalid URL path\n', p);
    }
  });

  test('absolute-looking paths stay inside the folder', async () => {
    const r = await call(`${NOWHERE}//etc/passwd`);
    assert.equal(r.status, 404);
    const r2 = await call(`${NOWHERE}/${encodeURIComponent(path.join(tmp, 'secret.txt')).replace(/%2F/g, '/')}`);
    assert.equal(r2.status, 404);
  });

  test('symlinks: out of the folder 404 (file, directory, absolute, index), inside it served, loops 404', async () => {
    for (const p of ['/link-out', '/dirlink-out/secret2.txt', '/dirlink-out', '/abs-link', '/docs-escape', '/docs-escape/index.html', '/loop-a']) {
      const r = await call(NOWHERE + p);
      assert.equal(r.status, 404, p);
      assert.ok(!(await text(r)).includes(SECRET), p);
    }
    const ok = await call(`${NOWHERE}/link-in.json`);
    assert.equal(ok.status, 200);
    assert.equal(await text(ok), FILES['data.json']);
    assert.ok(logged.some((l) => l.includes('resolves outside the folder')), logged.join('\n'));
  });

  test('a FIFO is not served (and does not block)', { skip: !fifo && 'mkfifo unavailable' }, async () => {
    const r = await call(`${NOWHERE}/a-fifo`);
    assert.equal(r.status, 404);
  });

  test('HEAD: Content-Type and Content-Length, no body; other methods 405', async () => {
    const r = await call(`${NOWHERE}/big.bin`, 'HEAD');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], String(bigSize));
    assert.equal(r.headers['content-type'], 'application/octet-stream');
    assert.equal(r.body, null);
    for (const m of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const x = await call(`${NOWHERE}/data.json`, m);
      assert.equal(x.status, 405, m);
      assert.equal(x.headers['allow'], 'GET, HEAD');
    }
  });

  test('a file swapped for a symlink out of the folder after the lookup is not read', async () => {
    const victim = path.join(site, 'swap.txt');
    fs.writeFileSync(victim, 'inside');
    const r = await call(`${NOWHERE}/swap.txt`);
    assert.equal(r.status, 200);
    // Between the answer's head and the read of its body, the file becomes a symlink leading out.
    fs.rmSync(victim);
    fs.symlinkSync('../secret.txt', victim);
    await assert.rejects((r.body as ResponseBody).bytes(), /ELOOP|changed|outside|ENOENT/);
    fs.rmSync(victim);
  });
});

// ---------------------------------------------------------------------------
// Start-up: configuration errors stop `gw check` and `gw run`, naming the backend and the key.

describe('start-up', () => {
  async function configWith(pluginCfg: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    return writeConfig({
      version: 3,
      port: await freePort(),
      ...extra,
      endpoints: [
        { endpoint: '/fine', backend: [{ host: [NOWHERE], url_pattern: '/data.json', extra_config: staticCfg() }] },
        { endpoint: '/broken/{x}', backend: [{ host: [NOWHERE], url_pattern: '/files/{x}', extra_config: { [NS]: pluginCfg } }] },
      ],
    });
  }

  async function expectRefused(file: string, texts: (string | RegExp)[]) {
    const run = await runCli(['run', '-c', file], { timeoutMs: 8000 });
    assert.equal(run.timedOut, false, `gw run did not exit (it should refuse to start)\n${run.output}`);
    assert.notEqual(run.code, 0, `gw run exit code must be non-zero\n${run.output}`);
    assert.doesNotMatch(run.output, STACK_FRAME, 'a start-up error must not print a stack trace');
    const check = await runCli(['check', '-c', file], { timeoutMs: 8000 });
    assert.equal(check.timedOut, false, `gw check did not finish\n${check.output}`);
    assert.equal(check.code, 1, `gw check exit code\n${check.output}`);
    for (const [what, r] of [['run', run], ['check', check]] as const) {
      for (const t of ['/broken/{x}', '/files/{x}', ...texts]) {
        if (typeof t === 'string') assert.ok(r.output.includes(t), `gw ${what}: expected ${JSON.stringify(t)} in:\n${r.output}`);
        else assert.match(r.output, t, `gw ${what}`);
      }
    }
  }

  test('a valid config passes gw check', async () => {
    const file = writeConfig({
      version: 3,
      port: await freePort(),
      endpoints: [
        { endpoint: '/a', backend: [{ host: [NOWHERE], url_pattern: '/data.json', extra_config: staticCfg({ prefix: '/', directory_listing: false, '@comment': 'ok' }) }] },
        { endpoint: '/b', backend: [{ host: [NOWHERE], url_pattern: '/', extra_config: { [NS]: { name: 'no-redirect' } } }] },
      ],
    });
    const r = await runCli(['check', '-c', file]);
    assert.equal(r.code, 0, r.output);
  });

  test('static-filesystem without its settings', async () => {
    await expectRefused(await configWith({ name: 'static-filesystem' }), ['static-filesystem', '"path"']);
  });

  test('static-filesystem: path missing, not a string, not there, not a directory', async () => {
    await expectRefused(await configWith({ name: 'static-filesystem', 'static-filesystem': {} }), ['"static-filesystem"."path" is required']);
    await expectRefused(await configWith({ name: 'static-filesystem', 'static-filesystem': { path: 42 } }), ['"static-filesystem"."path" must be a non-empty string']);
    const missing = path.join(tmp, 'no-such-folder');
    await expectRefused(await configWith({ name: 'static-filesystem', 'static-filesystem': { path: missing } }), ['"static-filesystem"."path"', missing, 'no such file or directory']);
    const file = path.join(site, 'data.json');
    await expectRefused(await configWith({ name: 'static-filesystem', 'static-filesystem': { path: file } }), ['"static-filesystem"."path"', 'is not a directory']);
  });

  test('static-filesystem: unknown keys, directory_listing, a bad prefix', async () => {
    await expectRefused(await configWith({ name: 'static-filesystem', 'static-filesystem': { path: site, skip: ['/x'] } }), ['"static-filesystem"."skip"']);
    await expectRefused(await configWith({ name: 'static-filesystem', 'static-filesystem': { path: site, directory_listing: true } }), ['"static-filesystem"."directory_listing"', 'not supported']);
    await expectRefused(await configWith({ name: 'static-filesystem', 'static-filesystem': { path: site, prefix: 'assets' } }), ['"static-filesystem"."prefix"', 'must start with "/"']);
    await expectRefused(await configWith({ name: 'static-filesystem', 'static-filesystem': { path: site, prefix: '/a/../b' } }), ['"static-filesystem"."prefix"']);
  });

  test('an unknown name lists the built-ins', async () => {
    await expectRefused(await configWith({ name: 'no-such-client' }), ["client plugin 'no-such-client' is not registered", 'built-in: no-redirect, static-filesystem']);
  });

  test('a plugin-folder plugin with a built-in name replaces the built-in (DEBUG line)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-builtin-override-'));
    try {
      fs.writeFileSync(
        path.join(dir, 'override.mjs'),
        `export const ClientRegisterer = { registerClients(register) {
           register('no-redirect', () => () => ({ status: 200, headers: {}, body: { overridden: true } }));
         } };`,
      );
      const g = await startGateway({
        version: 3,
        plugin: { folder: dir + path.sep, pattern: '.mjs' },
        extra_config: { 'gw/server': { workers: 1 } },
        endpoints: [{ endpoint: '/o', backend: [{ host: [NOWHERE], url_pattern: '/x', extra_config: { [NS]: { name: 'no-redirect' } } }] }],
      });
      try {
        const r = await req(g.port, '/o');
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.json(), { overridden: true });
        assert.ok(await logLine(g, /Client plugin no-redirect from .*override\.mjs replaces the built-in one/), g.stdout());
        assert.ok(g.stdout().includes('Injecting plugin no-redirect'), g.stdout());
      } finally {
        await g.stop();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
