// Backend/transport faults of issue 10: 1xx answers before the final one, `Expect: 100-continue`
// from the client, gzip/deflate/br bombs, discarded bodies that trickle, one pool per redirect
// origin, and queued requests that time out. Each case runs a real gw process against loopback
// backends that misbehave at that very moment.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import {
  type Backend,
  type Gateway,
  HOST,
  rawRequest,
  req,
  rssBytes,
  sendJSON,
  sleep,
  startBackend,
  startGateway,
  withPeakRss,
  jsonLogLines,
  type JsonLogLine,
} from './helpers/gw.ts';
import { EPHEMERAL_CAP, Pools } from '../core/transport/pools.js';
import { send } from '../core/transport/client.js';
import { gunzipLimited } from '../core/transport/inflate.js';

const GW_ARGS = ['--workers', '1', '--log-format', 'json'];

type LogLine = JsonLogLine;

function logLines(gw: Gateway): LogLine[] {
  return jsonLogLines(gw.stdout());
}

/** Waits (bounded) for a log line at `level` or worse whose message matches. */
async function logLine(gw: Gateway, level: number, re: RegExp): Promise<string> {
  for (let i = 0; i < 80; i++) {
    const hit = logLines(gw).find((l) => l.level >= level && re.test(l.msg));
    if (hit) return hit.msg;
    await sleep(25);
  }
  assert.fail(`no log line matching ${re}\n--- stdout\n${gw.stdout().slice(-3000)}`);
}

/** Open sockets of a process (Linux /proc). */
function socketCount(pid: number): number {
  let n = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

interface RawBackend {
  url: string;
  port: number;
  /** request heads seen, in order */
  heads: string[];
  close(): Promise<void>;
}

/**
 * A backend speaking raw HTTP/1.1 over `net`: `answer(head, socket)` writes whatever bytes it
 * likes for each request head (bodyless requests only).
 */
async function startRawBackend(answer: (head: string, sock: net.Socket) => void): Promise<RawBackend> {
  const heads: string[] = [];
  const socks = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    socks.add(sock);
    sock.on('close', () => socks.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        heads.push(head);
        answer(head, sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, HOST, () => r()));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://${HOST}:${port}`,
    port,
    heads,
    close: () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        server.close(() => r());
      }),
  };
}

// ---------------------------------------------------------------------------

describe('1xx answers before the final one (defect 5)', () => {
  let raw: RawBackend;
  let gw: Gateway;
  const FINAL = '{"ok":true}';
  const final = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${FINAL.length}\r\n\r\n${FINAL}`;

  before(async () => {
    raw = await startRawBackend((head, sock) => {
      const path = head.split(' ')[1] ?? '';
      if (path.startsWith('/hints')) {
        sock.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n');
        setTimeout(() => sock.write(final), 30);
      } else if (path.startsWith('/several')) {
        sock.write('HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n');
        setTimeout(() => sock.write('HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n' + final), 30);
      } else if (path.startsWith('/switch')) {
        sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
        setTimeout(() => sock.write(final), 30);
      } else if (path.startsWith('/continue')) {
        sock.write('HTTP/1.1 100 Continue\r\n\r\n');
        setTimeout(() => sock.write(final), 30);
      } else {
        sock.write(final);
      }
    });
    const ep = (path: string, upstream: string, noop: boolean) => ({
      endpoint: path,
      ...(noop ? { output_encoding: 'no-op' } : {}),
      backend: [{ host: [raw.url], url_pattern: upstream, ...(noop ? { encoding: 'no-op' } : {}) }],
    });
    gw = await startGateway(
      {
        version: 3,
        timeout: '3s',
        endpoints: [
          ep('/noop/hints', '/hints', true),
          ep('/json/hints', '/hints', false),
          ep('/noop/several', '/several', true),
          ep('/json/several', '/several', false),
          ep('/noop/continue', '/continue', true),
          ep('/json/continue', '/continue', false),
          ep('/noop/switch', '/switch', true),
          ep('/json/switch', '/switch', false),
          ep('/json/plain', '/plain', false),
        ],
      },
      { args: GW_ARGS },
    );
  });

  after(async () => {
    await gw?.stop('SIGKILL');
    await raw?.close();
  });

  for (const kind of ['hints', 'several']) {
    test(`no-op: ${kind} — the 1xx is skipped, the client gets the final 200 and its body`, async () => {
      // rawRequest takes any 1xx as a complete answer: a forwarded 103 shows up as status 103.
      const r = await rawRequest(gw.port, `GET /noop/${kind} HTTP/1.1\r\nHost: x\r\n\r\n`, 4000);
      assert.equal(r.status, 200, r.raw.toString('latin1').slice(0, 300));
      assert.equal(r.body.toString(), FINAL);
      assert.equal(r.headers['link'], undefined, 'headers of the 1xx are not part of the final answer');
      // and twice in a row on the same pooled connection
      const again = await req(gw.port, `/noop/${kind}`, { timeoutMs: 4000 });
      assert.equal(again.status, 200);
      assert.equal(again.text, FINAL);
    });

    test(`json: ${kind} — the 1xx is skipped, the final body is decoded`, async () => {
      const r = await req(gw.port, `/json/${kind}`, { timeoutMs: 4000 });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json(), { ok: true });
      assert.equal(r.headers['x-krakend-completed'], 'true');
    });
  }

  // undici 7 refuses an unsolicited `100 Continue` (client-h1.js onHeadersComplete destroys the
  // socket: "bad response"); gw never sends `Expect`, so such a backend is answered as a failed
  // backend: a prompt 500, never a 1xx or a hang on the client side.
  for (const enc of ['noop', 'json']) {
    test(`${enc}: an unsolicited 100 Continue → a prompt 500 naming the backend, gw keeps serving`, async () => {
      const r = await rawRequest(gw.port, `GET /${enc}/continue HTTP/1.1\r\nHost: x\r\n\r\n`, 4000);
      assert.equal(r.status, 500, r.raw.toString('latin1').slice(0, 300));
      const msg = await logLine(gw, 50, new RegExp(`\\[ENDPOINT: /${enc}/continue\\].*127\\.0\\.0\\.1:${raw.port}/continue`));
      assert.match(msg, /100 Continue/);
      assert.equal((await req(gw.port, '/json/plain')).status, 200);
    });

    test(`${enc}: a 101 nobody asked for is final: 500 naming the backend, never relayed`, async () => {
      const r = await rawRequest(gw.port, `GET /${enc}/switch HTTP/1.1\r\nHost: x\r\n\r\n`, 4000);
      assert.equal(r.status, 500, r.raw.toString('latin1').slice(0, 300));
      const msg = await logLine(gw, 50, new RegExp(`\\[ENDPOINT: /${enc}/switch\\].*127\\.0\\.0\\.1:${raw.port}/switch`));
      assert.match(msg, /101 Switching Protocols/);
    });
  }
});

// ---------------------------------------------------------------------------

describe('Expect: 100-continue from the client (defect 6)', () => {
  let backend: Backend;
  let gw: Gateway;

  before(async () => {
    backend = await startBackend();
    const ep = (path: string, inputHeaders: string[], noop: boolean) => ({
      endpoint: path,
      method: 'POST',
      input_headers: inputHeaders,
      ...(noop ? { output_encoding: 'no-op' } : {}),
      backend: [{ host: [backend.url], url_pattern: '/echo', method: 'POST', ...(noop ? { encoding: 'no-op' } : {}) }],
    });
    gw = await startGateway(
      {
        version: 3,
        endpoints: [
          ep('/star', ['*'], false),
          ep('/list', ['Expect', 'Content-Type'], false),
          ep('/noop/star', ['*'], true),
          ep('/noop/list', ['Expect', 'Content-Type'], true),
        ],
      },
      { args: GW_ARGS },
    );
  });

  after(async () => {
    await gw?.stop('SIGKILL');
    await backend?.close();
  });

  /**
   * A client that sends its head with `Expect: 100-continue`, waits (up to 2 s) for the interim
   * `100 Continue`, then sends the body and reads the final answer.
   */
  const INTERIM = /^HTTP\/1\.1 100 [^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n/;

  function expectContinue(path: string, body: string): Promise<{ interim: boolean; final: string }> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: HOST, port: gw.port });
      let buf = '';
      let interim = false;
      let sentBody = false;
      const sendBody = () => {
        if (sentBody) return;
        sentBody = true;
        sock.write(body);
      };
      const fallback = setTimeout(sendBody, 2000);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`no final answer: ${JSON.stringify(buf)}`));
      }, 6000);
      sock.on('error', reject);
      sock.on('connect', () =>
        sock.write(
          `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
        ),
      );
      sock.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        if (!sentBody && INTERIM.test(buf)) {
          interim = true;
          buf = buf.replace(INTERIM, '');
          clearTimeout(fallback);
          sendBody();
        }
        const end = buf.indexOf('\r\n\r\n');
        if (sentBody && end >= 0) {
          const m = /\r\ncontent-length: *(\d+)/i.exec(buf.slice(0, end));
          if (m ? buf.length >= end + 4 + Number(m[1]) : buf.endsWith('\r\n0\r\n\r\n')) {
            clearTimeout(timer);
            clearTimeout(fallback);
            sock.destroy();
            resolve({ interim, final: buf });
          }
        }
      });
    });
  }

  for (const path of ['/star', '/list', '/noop/star', '/noop/list']) {
    test(`${path}: the client gets 100 Continue from gw, the body reaches the backend, 200; Expect is not forwarded`, async () => {
      const before = backend.requests.length;
      const r = await expectContinue(path, 'hello');
      assert.ok(r.interim, 'gw (uWS) did not answer 100 Continue');
      assert.match(r.final, /^HTTP\/1\.1 200 /, r.final.slice(0, 300));
      assert.equal(backend.requests.length, before + 1);
      const rec = backend.requests[before]!;
      assert.equal(rec.body.toString(), 'hello');
      assert.equal(rec.headers['expect'], undefined, 'Expect was forwarded');
    });
  }
});

// ---------------------------------------------------------------------------

describe('decompression bombs (defect 10)', () => {
  let backend: Backend;
  let gw: Gateway;
  const BOMB_BYTES = 256 * 1024 * 1024;
  const LIMIT = 64 * 1024 * 1024;
  let gz: Buffer;
  let df: Buffer;
  let br: Buffer;

  /** Compresses `n` zero bytes without ever holding them. */
  async function compressZeros(n: number, stream: zlib.Gzip | zlib.Deflate | zlib.BrotliCompress): Promise<Buffer> {
    const chunk = Buffer.alloc(1024 * 1024);
    const out: Buffer[] = [];
    stream.on('data', (c: Buffer) => out.push(c));
    const done = new Promise<void>((r, j) => {
      stream.on('end', r);
      stream.on('error', j);
    });
    for (let sent = 0; sent < n; sent += chunk.length) {
      if (!stream.write(chunk)) await new Promise((r) => stream.once('drain', r));
    }
    stream.end();
    await done;
    return Buffer.concat(out);
  }

  before(async () => {
    gz = await compressZeros(BOMB_BYTES, zlib.createGzip({ level: 1 }));
    df = await compressZeros(BOMB_BYTES, zlib.createDeflate({ level: 1 }));
    br = await compressZeros(BOMB_BYTES, zlib.createBrotliCompress({ params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 1 } }));
    const small = zlib.gzipSync(JSON.stringify({ small: true }));
    backend = await startBackend((_req, res, rec) => {
      const send = (body: Buffer, enc: string) => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': enc, 'content-length': body.length });
        res.end(body);
      };
      switch (rec.url) {
        case '/gzip':
          return send(gz, 'gzip');
        case '/deflate':
          return send(df, 'deflate');
        case '/br':
          return send(br, 'br');
        case '/small':
          return send(small, 'gzip');
        default:
          return sendJSON(res, 200, { other: true });
      }
    });
    const ep = (path: string, upstream: string) => ({ endpoint: path, backend: [{ host: [backend.url], url_pattern: upstream }] });
    gw = await startGateway(
      {
        version: 3,
        timeout: '10s',
        endpoints: [
          ep('/gzip', '/gzip'),
          ep('/deflate', '/deflate'),
          ep('/br', '/br'),
          ep('/small', '/small'),
          {
            endpoint: '/merge',
            backend: [
              { host: [backend.url], url_pattern: '/gzip', group: 'bomb' },
              { host: [backend.url], url_pattern: '/other', group: 'fine' },
            ],
          },
        ],
      },
      { args: GW_ARGS },
    );
  });

  after(async () => {
    await gw?.stop('SIGKILL');
    await backend?.close();
  });

  test(`a gzip body inflating to 256 MiB → 500, RSS of the worker stays bounded, a log line names the backend and the limit`, async (t) => {
    const pid = gw.proc.pid!;
    const { result, base, peak } = await withPeakRss(pid, 20, async () => {
      const out = [];
      for (let i = 0; i < 4; i++) out.push(await req(gw.port, '/gzip', { timeoutMs: 15_000 }));
      return out;
    });
    for (const r of result) {
      assert.equal(r.status, 500, r.text);
      assert.ok(r.ms < 10_000, `answered after ${r.ms} ms`);
    }
    const grown = (peak - base) / 1024 / 1024;
    t.diagnostic(`RSS ${(base / 1048576).toFixed(0)} → peak ${(peak / 1048576).toFixed(0)} MiB`);
    assert.ok(grown < 320, `RSS grew by ${grown.toFixed(0)} MiB (base ${(base / 1048576).toFixed(0)} MiB) for 4 bombs of 256 MiB`);
    const msg = await logLine(gw, 50, /\[ENDPOINT: \/gzip\]/);
    assert.match(msg, new RegExp(`127\\.0\\.0\\.1:${backend.port}/gzip`));
    assert.match(msg, new RegExp(String(LIMIT)));
  });

  for (const enc of ['deflate', 'br']) {
    test(`${enc}: the same bound applies → 500 with a log line naming the limit`, async () => {
      const r = await req(gw.port, `/${enc}`, { timeoutMs: 15_000 });
      assert.equal(r.status, 500, r.text);
      const msg = await logLine(gw, 50, new RegExp(`\\[ENDPOINT: /${enc}\\]`));
      assert.match(msg, new RegExp(`127\\.0\\.0\\.1:${backend.port}/${enc}.*${LIMIT}`));
    });
  }

  test('a merge: the bomb fails its backend only — a partial 200 with the other backend', async () => {
    const r = await req(gw.port, '/merge', { timeoutMs: 15_000 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-krakend-completed'], 'false');
    assert.deepEqual(r.json(), { fine: { other: true } });
  });

  test('an honest gzip body is still decoded', async () => {
    const r = await req(gw.port, '/small');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), { small: true });
    assert.ok(rssBytes(gw.proc.pid!) > 0);
  });
});

// ---------------------------------------------------------------------------

describe('gunzipLimited (core/transport/inflate.ts) over a real backend socket', () => {
  let backend: Backend;
  let pools: Pools;
  let gz: Buffer;

  before(async () => {
    gz = zlib.gzipSync(Buffer.alloc(8 * 1024 * 1024));
    const text = zlib.gzipSync(Buffer.from('hello '.repeat(1000)));
    backend = await startBackend(async (req, res, rec) => {
      if (rec.url === '/bomb') {
        res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': gz.length });
        res.end(gz);
      } else if (rec.url === '/reset') {
        // A tenth of a gzip stream, then a TCP reset.
        res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': gz.length });
        res.write(gz.subarray(0, gz.length >> 4));
        await sleep(50);
        req.socket.resetAndDestroy();
      } else {
        res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': text.length });
        res.end(text);
      }
    });
    pools = new Pools({ maxConnectionsPerHost: 4, idleConnectionTimeoutMs: 1000, disableKeepAlives: false, responseHeaderTimeoutMs: 0, dialerTimeoutMs: 0 } as never, 8);
  });

  after(async () => {
    await pools?.destroy();
    await backend?.close();
  });

  async function drain(path: string, limit: number): Promise<{ bytes: number; error: Error | null }> {
    const res = await send(pools, backend.url, path, 'GET', {}, null, null);
    let bytes = 0;
    try {
      for await (const c of gunzipLimited(res.body.stream(), limit)) bytes += (c as Buffer).length;
      return { bytes, error: null };
    } catch (err) {
      return { bytes, error: err as Error };
    }
  }

  test('within the limit: the whole decoded body', async () => {
    const r = await drain('/text', 1 << 20);
    assert.equal(r.error, null);
    assert.equal(r.bytes, 6000);
  });

  test('past the limit: an error naming the limit, the backend transfer is aborted', async () => {
    const r = await drain('/bomb', 1 << 20);
    assert.ok(r.error, 'no error past the limit');
    assert.match(r.error.message, /1048576/);
    assert.ok(r.bytes <= 1 << 20);
  });

  test('a backend reset mid-body reaches the consumer as an error (no unhandled error event)', async () => {
    const r = await drain('/reset', Infinity);
    assert.ok(r.error, 'a truncated gzip stream was presented as complete');
    // still usable
    assert.equal((await drain('/text', Infinity)).bytes, 6000);
  });

  test('a consumer that stops early releases the backend transfer', async () => {
    const res = await send(pools, backend.url, '/bomb', 'GET', {}, null, null);
    const src = res.body.stream();
    const out = gunzipLimited(src, Infinity);
    assert.ok(out instanceof Readable);
    for await (const _ of out) break;
    await sleep(10);
    assert.ok(out.destroyed);
    assert.ok(src.destroyed, 'the backend body stream was left open');
    assert.equal((await drain('/text', Infinity)).bytes, 6000);
  });
});

// ---------------------------------------------------------------------------

describe('a discarded body that trickles does not pin a pooled connection (defect 11)', () => {
  let backend: Backend;
  let gw: Gateway;
  let trickling = 0;

  before(async () => {
    backend = await startBackend((req, res, rec) => {
      const trickle = (status: number, headers: http.OutgoingHttpHeaders) => {
        res.writeHead(status, { 'content-type': 'text/plain', ...headers });
        res.write('x');
        trickling++;
        const t = setInterval(() => res.write('x'), 200);
        res.on('close', () => {
          trickling--;
          clearInterval(t);
        });
        req.socket.on('error', () => {});
      };
      if (rec.url === '/trickle500') return trickle(500, {});
      if (rec.url === '/trickle302') return trickle(302, { location: '/ok' });
      return sendJSON(res, 200, { ok: true });
    });
    gw = await startGateway(
      {
        version: 3,
        timeout: '5s',
        max_idle_connections_per_host: 1,
        extra_config: { 'gw/server': { backend_max_queue: 1 } },
        endpoints: [
          { endpoint: '/t500', backend: [{ host: [backend.url], url_pattern: '/trickle500' }] },
          { endpoint: '/t302', backend: [{ host: [backend.url], url_pattern: '/trickle302' }] },
          { endpoint: '/ok', backend: [{ host: [backend.url], url_pattern: '/ok' }] },
        ],
      },
      { args: GW_ARGS },
    );
  });

  after(async () => {
    await gw?.stop('SIGKILL');
    await backend?.close();
  });

  test('500 + trickle, more times than connections + queue: the origin still serves', async () => {
    for (let i = 0; i < 4; i++) {
      const r = await req(gw.port, '/t500', { timeoutMs: 8000 });
      assert.ok(r.status === 500 || r.status === 503, `${r.status} ${r.text}`);
    }
    const ok = await req(gw.port, '/ok', { timeoutMs: 8000 });
    assert.equal(ok.status, 200, `the origin is unusable: ${ok.status} ${ok.text} after ${ok.ms} ms`);
    assert.ok(ok.ms < 4000, `answered after ${ok.ms} ms`);
    // the trickling connections were closed by gw
    for (let i = 0; i < 100 && trickling > 0; i++) await sleep(50);
    assert.equal(trickling, 0, 'trickling backend responses still open');
  });

  test('302 + trickle (the redirect is followed on the same 1-connection pool): 200, repeatedly', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await req(gw.port, '/t302', { timeoutMs: 8000 });
      assert.equal(r.status, 200, `${r.status} ${r.text} after ${r.ms} ms`);
      assert.deepEqual(r.json(), { ok: true });
    }
    assert.equal((await req(gw.port, '/ok', { timeoutMs: 8000 })).status, 200);
    for (let i = 0; i < 100 && trickling > 0; i++) await sleep(50);
    assert.equal(trickling, 0, 'trickling backend responses still open');
  });
});

// ---------------------------------------------------------------------------

describe('pools of redirect origins no backend declared are bounded (defect 12)', () => {
  const N_TARGETS = 120;
  let targets: Backend[] = [];
  let redirector: Backend;
  let declared: Backend;
  let gw: Gateway;
  const declaredPorts: number[] = [];

  before(async () => {
    targets = await Promise.all(Array.from({ length: N_TARGETS }, () => startBackend((_q, res) => sendJSON(res, 200, { ok: true }))));
    redirector = await startBackend((_q, res, rec) => {
      const i = Number(rec.url.split('/')[2]);
      res.writeHead(302, { location: `${targets[i]!.url}/ok`, 'content-length': 0 });
      res.end();
    });
    declared = await startBackend((q, res) => {
      declaredPorts.push(q.socket.remotePort!);
      sendJSON(res, 200, { declared: true });
    });
    gw = await startGateway(
      {
        version: 3,
        endpoints: [
          { endpoint: '/r/{i}', backend: [{ host: [redirector.url], url_pattern: '/r/{i}' }] },
          { endpoint: '/d', backend: [{ host: [declared.url], url_pattern: '/d' }] },
        ],
      },
      { args: GW_ARGS },
    );
  });

  after(async () => {
    await gw?.stop('SIGKILL');
    await Promise.all([...targets, redirector, declared].map((b) => b?.close()));
  });

  async function openTargetConnections(): Promise<number> {
    const counts = await Promise.all(targets.map((t) => new Promise<number>((r) => t.server.getConnections((_e, n) => r(n)))));
    return counts.reduce((a, b) => a + b, 0);
  }

  test(`${N_TARGETS} distinct redirect origins, twice: gw's open sockets stay bounded, the declared origin keeps its connection`, async () => {
    const pid = gw.proc.pid!;
    assert.equal((await req(gw.port, '/d')).status, 200);
    await sleep(200);
    const base = socketCount(pid);
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < N_TARGETS; i += 8) {
        const rs = await Promise.all(Array.from({ length: 8 }, (_, k) => req(gw.port, `/r/${i + k}`)));
        for (const r of rs) assert.equal(r.status, 200, r.text);
      }
      // the test client's keep-alive connections (1 s) go; gw's to the redirector (8) stay
      await sleep(1500);
      const socks = socketCount(pid);
      const upstream = await openTargetConnections();
      assert.ok(upstream <= EPHEMERAL_CAP, `round ${round}: ${upstream} connections to redirect targets still open`);
      assert.ok(socks - base <= EPHEMERAL_CAP + 8 + 2, `round ${round}: gw holds ${socks - base} more sockets than before (${upstream} to redirect targets)`);
    }
    assert.equal((await req(gw.port, '/d')).status, 200);
    assert.equal(new Set(declaredPorts).size, 1, `the declared origin's connection was not kept: ${declaredPorts}`);
  });
});

// ---------------------------------------------------------------------------

describe('backend_max_queue holds while queued requests time out (defect 15)', () => {
  let backend: Backend;
  let gw: Gateway;
  let release!: () => void;
  let gate: Promise<void>;

  before(async () => {
    gate = new Promise<void>((r) => (release = r));
    backend = await startBackend(async (_q, res) => {
      await gate;
      if (!res.destroyed) sendJSON(res, 200, { ok: true });
    });
    gw = await startGateway(
      {
        version: 3,
        max_idle_connections_per_host: 1,
        extra_config: { 'gw/server': { backend_max_queue: 2 } },
        endpoints: [
          { endpoint: '/hold', timeout: '20s', backend: [{ host: [backend.url], url_pattern: '/x' }] },
          { endpoint: '/short', timeout: '300ms', backend: [{ host: [backend.url], url_pattern: '/x' }] },
        ],
      },
      { args: GW_ARGS },
    );
  });

  after(async () => {
    release?.();
    await gw?.stop('SIGKILL');
    await backend?.close();
  });

  test('requests that timed out while queued keep their slot until undici drops them: the next ones get 503 at once', async () => {
    const held = req(gw.port, '/hold', { timeoutMs: 25_000 });
    held.catch(() => {}); // awaited below; a failed assertion before must not leave it unhandled
    for (let i = 0; i < 200 && backend.requests.length === 0; i++) await sleep(10);
    assert.equal(backend.requests.length, 1, 'the backend never got the held request');
    // Two requests fill the queue and time out there (500, answered at once).
    const queued = await Promise.all([req(gw.port, '/short'), req(gw.port, '/short')]);
    assert.deepEqual(queued.map((r) => r.status), [500, 500]);
    // connections (1) + queue (2) are still taken by undici: further ones are refused at once.
    for (let wave = 0; wave < 3; wave++) {
      const rs = await Promise.all([req(gw.port, '/short'), req(gw.port, '/short')]);
      assert.deepEqual(rs.map((r) => r.status), [503, 503], `wave ${wave}: ${rs.map((r) => `${r.status} ${r.text}`)}`);
    }
    assert.equal(backend.requests.length, 1);

    // The backend recovers: the held request is answered, undici drops the timed-out entries,
    // the slots come back.
    release();
    assert.equal((await held).status, 200);
    let last = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 5000) {
      last = (await req(gw.port, '/short')).status;
      if (last === 200) break;
      await sleep(50);
    }
    assert.equal(last, 200, 'the origin does not serve again');
    const rs = await Promise.all([req(gw.port, '/short'), req(gw.port, '/short'), req(gw.port, '/short')]);
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 200]);
  });
});

describe("a backend's Keep-Alive hint cannot outlive idle_connection_timeout", () => {
  let gw: Gateway;
  let server: http.Server;
  const closed: number[] = [];
  let opened = 0;
  before(async () => {
    // Asks clients to keep its connections for 600 s; Go's IdleConnTimeout ignores that, so must gw.
    server = http.createServer((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Keep-Alive': 'timeout=600' });
      res.end('{"ok":true}');
    });
    server.keepAliveTimeout = 700_000;
    server.on('connection', (s) => {
      opened++;
      s.on('close', () => closed.push(Date.now()));
    });
    await new Promise<void>((r) => server.listen(0, HOST, () => r()));
    const url = `http://${HOST}:${(server.address() as net.AddressInfo).port}`;
    gw = await startGateway(
      { version: 3, idle_connection_timeout: '1s', endpoints: [{ endpoint: '/ka', backend: [{ host: [url], url_pattern: '/' }] }] },
      { args: GW_ARGS },
    );
  });
  after(async () => {
    await gw?.stop('SIGKILL');
    server?.closeAllConnections();
    server?.close();
  });

  test('the pooled connection is closed about 1 s after its last use', async () => {
    assert.equal((await req(gw.port, '/ka')).status, 200);
    assert.equal(opened, 1);
    const t0 = Date.now();
    while (closed.length === 0 && Date.now() - t0 < 6000) await sleep(50);
    assert.equal(closed.length, 1, 'the idle backend connection is still open 6 s later');
  });
});
