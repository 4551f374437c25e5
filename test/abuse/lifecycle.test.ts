// Issue 10, request lifecycle defects: a client or backend that misbehaves at the wrong moment
// must cost that request only. Each case is one the old endpoint code crashed or mis-answered on:
//  1. the client body destroyed (timeout, client gone) before any reader attached → unhandled
//     'error' event: bad chunk sizes with the backend down or up, a POST queued behind a busy
//     connection past the timeout, a POST to a backend whose TCP connect hangs, a client leaving
//     while a JWT key set is fetched;
//  2. a no-op gzip body gw gunzips for the client, cut by the backend or the client;
//  4. HEAD answers with a body (404/405, /__debug, /__echo) corrupting the next response;
// 13. a body read whole (merge endpoint, /__echo) with no cap when max_payload is unset;
// 20. bad framing answered by a silent close instead of 400 + Connection: close.
// After each case: the gateway is alive, /__health answers, its worker processes are the same,
// and nothing was logged as uncaught.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, HOST, freePort, rawRequest, req, sendJSON, sleep, startBackend, startGateway } from '../helpers/gw.ts';
import { assertSurvived, rawExchange, workerPids } from './harness.ts';

let backend: Backend;
let downPort: number;
let hang: { port: number; stop(): void };

/** A listener whose accept queue is full: a TCP connect to it hangs (SYNs are dropped). */
async function hangingListener(): Promise<{ port: number; stop(): void }> {
  const py = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(600)'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    py.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    py.once('exit', (c) => reject(new Error(`python3 exited ${c}`)));
  });
  // Fill the accept queue (backlog 0 holds one or two); later connects get no SYN-ACK.
  const fillers: net.Socket[] = [];
  for (let i = 0; i < 4; i++) {
    const s = net.connect({ host: HOST, port });
    s.on('error', () => {});
    fillers.push(s);
  }
  await sleep(200);
  return {
    port,
    stop() {
      for (const s of fillers) s.destroy();
      py.kill('SIGKILL');
    },
  };
}

before(async () => {
  backend = await startBackend(async (rq, res, rec) => {
    const u = new URL(rec.url, 'http://x');
    if (u.pathname === '/hold') {
      await sleep(3000);
      return sendJSON(res, 200, { held: true });
    }
    if (u.pathname === '/jwks-slow') {
      await sleep(3000);
      return sendJSON(res, 200, { keys: [] });
    }
    if (u.pathname === '/gzip-cut') {
      // A gzip body announced and cut halfway by the backend.
      const gz = zlib.gzipSync(Buffer.alloc(256 * 1024, 'a'));
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Encoding': 'gzip', 'Content-Length': String(gz.length) });
      res.write(gz.subarray(0, gz.length >> 1));
      await sleep(100);
      rq.socket.destroy();
      return;
    }
    if (u.pathname === '/gzip-trickle') {
      // gzip of a large body, trickled, so a client can leave in the middle.
      const gz = zlib.gzipSync(Buffer.alloc(4 * 1024 * 1024, 'b'), { level: 1 });
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Encoding': 'gzip' });
      for (let i = 0; i < gz.length && !res.destroyed; i += 512) {
        res.write(gz.subarray(i, i + 512));
        await sleep(20);
      }
      res.end();
      return;
    }
    sendJSON(res, 200, { path: u.pathname, bytes: rec.body.length });
  });
  downPort = await freePort();
  hang = await hangingListener();
});

after(async () => {
  hang?.stop();
  await backend?.close();
});

describe('defect 1: a client body destroyed before anything reads it', () => {
  let gw: Gateway;
  let pids: number[];
  before(async () => {
    const down = `http://${HOST}:${downPort}`;
    const hanging = `http://${HOST}:${hang.port}`;
    gw = await startGateway({
      version: 3,
      max_idle_connections_per_host: 1,
      extra_config: { 'gw/server': { backend_max_queue: 8 } },
      endpoints: [
        { endpoint: '/noop-down', method: 'POST', output_encoding: 'no-op', backend: [{ host: [down], url_pattern: '/x', encoding: 'no-op' }] },
        { endpoint: '/json-down', method: 'POST', backend: [{ host: [down], url_pattern: '/x' }] },
        { endpoint: '/noop-up', method: 'POST', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/x', encoding: 'no-op' }] },
        { endpoint: '/json-up', method: 'POST', backend: [{ host: [backend.url], url_pattern: '/x' }] },
        { endpoint: '/hold', timeout: '5s', backend: [{ host: [backend.url], url_pattern: '/hold' }] },
        { endpoint: '/queued', method: 'POST', timeout: '300ms', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/x', encoding: 'no-op' }] },
        { endpoint: '/connect-hangs', method: 'POST', timeout: '300ms', output_encoding: 'no-op', backend: [{ host: [hanging], url_pattern: '/x', encoding: 'no-op' }] },
        { endpoint: '/connect-hangs-json', method: 'POST', timeout: '300ms', backend: [{ host: [hanging], url_pattern: '/x' }] },
        {
          endpoint: '/jwt',
          method: 'POST',
          extra_config: { 'auth/validator': { alg: 'HS256', jwk_url: `${backend.url}/jwks-slow`, disable_jwk_security: true } },
          backend: [{ host: [backend.url], url_pattern: '/x' }],
        },
      ],
      // One worker: the queued request must meet the held one in the same pool.
    }, { args: ['--workers', '1'] });
    pids = workerPids(gw);
  });
  after(async () => {
    await gw?.stop('SIGKILL');
  });

  for (const path of ['/noop-down', '/json-down', '/noop-up', '/json-up']) {
    for (const size of ['fffffffffffffffffffffff1', '-5', 'zz']) {
      test(`${path}: chunked body with chunk size ${size}`, async () => {
        await rawExchange(gw.port, `POST ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n${size}\r\nabc`, 1500);
        await assertSurvived(gw, pids);
      });
    }
  }

  test('a POST queued behind a busy pooled connection past the timeout gets 500 and the worker lives', async () => {
    const held = req(gw.port, '/hold', { timeoutMs: 8000 }); // takes the origin's only connection
    await sleep(150);
    const r = await req(gw.port, '/queued', { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' }, timeoutMs: 5000 });
    assert.equal(r.status, 500);
    assert.equal((await held).status, 200);
    await assertSurvived(gw, pids);
  });

  test('a POST to a backend whose TCP connect hangs times out with 500 (no-op and json)', async () => {
    for (const path of ['/connect-hangs', '/connect-hangs-json']) {
      const r = await req(gw.port, path, { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' }, timeoutMs: 5000 });
      assert.equal(r.status, 500, path);
      assert.ok(r.ms < 3000, `${path} answered after ${r.ms} ms`);
    }
    await assertSurvived(gw, pids);
  });

  test('a client that leaves while the JWT key set is being fetched', async () => {
    const token = `${Buffer.from('{"alg":"HS256","kid":"k1","typ":"JWT"}').toString('base64url')}.${Buffer.from('{"sub":"a"}').toString('base64url')}.c2ln`;
    const s = net.connect({ host: HOST, port: gw.port });
    s.on('error', () => {});
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(`POST /jwt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Length: 10\r\n\r\nhello`);
    await sleep(300);
    s.destroy();
    await sleep(3200); // the key set answers (empty) after the client left
    await assertSurvived(gw, pids);
  });
});

describe('defect 2: a no-op gzip body gw gunzips for the client, cut mid-body', () => {
  let gw: Gateway;
  let pids: number[];
  before(async () => {
    gw = await startGateway({
      version: 3,
      endpoints: [
        { endpoint: '/cut', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/gzip-cut', encoding: 'no-op' }] },
        { endpoint: '/trickle', timeout: '10s', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/gzip-trickle', encoding: 'no-op' }] },
      ],
    });
    pids = workerPids(gw);
  });
  after(async () => {
    await gw?.stop('SIGKILL');
  });

  test('the backend resets mid-body: the client connection is cut (never a short body taken as complete)', async () => {
    const r = await rawExchange(gw.port, 'GET /cut HTTP/1.1\r\nHost: x\r\n\r\n', 3000);
    assert.match(r.text, /^HTTP\/1\.1 200/);
    assert.ok(r.closed, 'connection closed');
    assert.doesNotMatch(r.text, /\r\n0\r\n\r\n$/, 'no final chunk');
    await assertSurvived(gw, pids);
  });

  test('the client leaves mid-body', async () => {
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve) => {
        const r = http.get({ host: HOST, port: gw.port, path: '/trickle', agent: false }, (res) => {
          res.once('data', () => {
            r.destroy();
            resolve();
          });
        });
        r.on('error', () => resolve());
      });
    }
    await sleep(300);
    await assertSurvived(gw, pids);
  });
});

describe('defect 4: HEAD answers carry no body', () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway(
      {
        version: 3,
        echo_endpoint: true,
        endpoints: [{ endpoint: '/only-post', method: 'POST', backend: [{ host: [backend.url], url_pattern: '/x' }] }],
      },
      { args: ['-d'] },
    );
  });
  after(async () => {
    await gw?.stop('SIGKILL');
  });

  for (const path of ['/nope', '/only-post', '/__health', '/__debug/x', '/__echo/x']) {
    test(`HEAD ${path}, then GET on the same connection: the second answer is read intact`, async () => {
      const r = await rawExchange(gw.port, `HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\nGET /__health HTTP/1.1\r\nHost: x\r\n\r\n`, 1000);
      const first = r.text.indexOf('\r\n\r\n');
      assert.ok(first > 0, r.text);
      const rest = r.text.slice(first + 4);
      assert.match(rest, /^HTTP\/1\.1 200 OK\r\n/, `bytes after the HEAD answer's headers: ${JSON.stringify(rest.slice(0, 60))}`);
      assert.match(rest, /"status":"ok"/);
    });
  }
});

describe('defect 13: a body read whole is capped when max_payload is unset', () => {
  let gw: Gateway;
  let pids: number[];
  before(async () => {
    gw = await startGateway(
      {
        version: 3,
        echo_endpoint: true,
        extra_config: { 'gw/server': { max_buffered_payload: 1048576 } },
        endpoints: [
          { endpoint: '/merge', method: 'POST', backend: [{ host: [backend.url], url_pattern: '/a', group: 'a' }, { host: [backend.url], url_pattern: '/b', group: 'b' }] },
          { endpoint: '/stream', method: 'POST', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/s', encoding: 'no-op' }] },
        ],
      },
      { args: ['-d'] },
    );
    pids = workerPids(gw);
  });
  after(async () => {
    await gw?.stop('SIGKILL');
  });

  test('merge endpoint: a declared 2 MiB body → 413 at once, nothing forwarded', async () => {
    const before = backend.requests.length;
    // The answer comes before the body is read (and the connection is closed): send a part only.
    const r = await rawRequest(gw.port, `POST /merge HTTP/1.1\r\nHost: x\r\nContent-Length: ${2 * 1048576}\r\n\r\n${'x'.repeat(1000)}`);
    assert.equal(r.status, 413);
    assert.match(r.body.toString(), /request body larger than 1048576 bytes/);
    assert.equal(backend.requests.length, before);
  });

  test('merge endpoint: a chunked 64 MiB upload → 413 after the cap, nothing forwarded', async () => {
    const before = backend.requests.length;
    // A raw client that keeps reading while it writes: gw answers 413 and closes mid-upload, and
    // a client that only reads after writing (node:http) meets EPIPE first.
    const status = await new Promise<number>((resolve) => {
      const s = net.connect({ host: HOST, port: gw.port });
      let got = '';
      let sent = 0;
      const chunk = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(0x10000, 'y'), Buffer.from('\r\n')]);
      const pump = () => {
        while (sent < 1024 && !s.destroyed) {
          sent++;
          if (!s.write(chunk)) return void s.once('drain', pump);
        }
      };
      s.on('connect', () => {
        s.write('POST /merge HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
        pump();
      });
      s.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        const m = /^HTTP\/1\.1 (\d{3})/.exec(got);
        if (m) {
          s.destroy();
          resolve(Number(m[1]));
        }
      });
      s.on('error', () => {});
      s.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? -1)));
    });
    assert.equal(status, 413);
    assert.equal(backend.requests.length, before);
    await assertSurvived(gw, pids);
  });

  /**
   * A client that keeps writing after the cap, 64 KiB every 5 ms, reading as it goes, for `ms`,
   * then (if `finish`) ends its chunked body. Returns what it read, when the 413's status line
   * arrived and when the connection closed (ms from the first byte sent), and whether it was
   * still writing when the status came.
   */
  function steadyUploader(ms: number, finish: boolean): Promise<{ text: string; statusAt: number; closedAt: number; writingAtStatus: boolean }> {
    return new Promise((resolve) => {
      const s = net.connect({ host: HOST, port: gw.port });
      const chunk = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(0x10000, 'w'), Buffer.from('\r\n')]);
      let text = '';
      let t0 = 0;
      let statusAt = -1;
      let writing = true;
      let writingAtStatus = false;
      let timer: NodeJS.Timeout | undefined;
      s.on('connect', () => {
        t0 = Date.now();
        s.write('POST /merge HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
        timer = setInterval(() => {
          if (s.destroyed) return clearInterval(timer);
          if (Date.now() - t0 < ms) return void s.write(chunk);
          clearInterval(timer);
          writing = false;
          if (finish) s.write('0\r\n\r\n');
        }, 5);
      });
      s.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        if (statusAt < 0 && /^HTTP\/1\.1 \d{3}/.test(text)) {
          statusAt = Date.now() - t0;
          writingAtStatus = writing;
        }
      });
      s.on('error', () => {});
      s.on('close', () => {
        clearInterval(timer);
        resolve({ text, statusAt, closedAt: Date.now() - t0, writingAtStatus });
      });
    });
  }

  test('a client still writing after the cap reads the 413 while it writes; the connection is cut about 0.5 s later', async () => {
    const before = backend.requests.length;
    const r = await steadyUploader(5000, false);
    assert.match(r.text, /^HTTP\/1\.1 413 Payload Too Large\r\n/, r.text.slice(0, 200));
    assert.match(r.text, /\r\nConnection: close\r\n/i);
    assert.match(r.text, /request body larger than 1048576 bytes/);
    assert.ok(r.writingAtStatus, 'the 413 arrived while the client was still writing');
    // Cut LINGER_MS (0.5 s) after the answer went out, long before the client would stop (5 s).
    assert.ok(r.closedAt - r.statusAt >= 300 && r.closedAt < 3000, `status at ${r.statusAt} ms, closed at ${r.closedAt} ms`);
    assert.equal(backend.requests.length, before);
    await assertSurvived(gw, pids);
  });

  test('an upload that ends while the 413 is out gets the whole (chunked) answer', async () => {
    const r = await steadyUploader(250, true);
    assert.match(r.text, /^HTTP\/1\.1 413 Payload Too Large\r\n/, r.text.slice(0, 200));
    assert.ok(r.writingAtStatus, 'the 413 arrived while the client was still writing');
    assert.match(r.text, /\r\n\r\n26\r\nrequest body larger than 1048576 bytes\r\n0\r\n\r\n$/, JSON.stringify(r.text.slice(-120)));
    await assertSurvived(gw, pids);
  });

  test('/__echo reads its body whole: capped the same way', async () => {
    const declared = await rawRequest(gw.port, `POST /__echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: ${2 * 1048576}\r\n\r\nabc`);
    assert.equal(declared.status, 413);
    const chunked = await rawRequest(gw.port, `POST /__echo/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n${'e'.repeat(0x100000)}\r\n100000\r\n${'e'.repeat(0x100000)}\r\n`);
    assert.equal(chunked.status, 413);
    await assertSurvived(gw, pids);
  });

  test('a no-op endpoint streams: no cap applies', async () => {
    const r = await req(gw.port, '/stream', { method: 'POST', body: Buffer.alloc(3 * 1048576, 'z'), timeoutMs: 10000 });
    assert.equal(r.status, 200);
    assert.equal(r.json().bytes, 3 * 1048576);
  });
});

describe('defect 20: bad framing gets 400 + Connection: close', () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway({
      version: 3,
      endpoints: [{ endpoint: '/p', method: 'POST', backend: [{ host: [backend.url], url_pattern: '/framing' }] }],
    });
  });
  after(async () => {
    await gw?.stop('SIGKILL');
  });

  const cases: [string, string][] = [
    ['Transfer-Encoding not ending in chunked', 'Transfer-Encoding: gzip\r\n'],
    ['conflicting Content-Length values', 'Content-Length: 3\r\nContent-Length: 4\r\n'],
  ];
  for (const [name, headers] of cases) {
    test(`${name}: 400, Connection: close, nothing forwarded`, async () => {
      const r = await rawRequest(gw.port, `POST /p HTTP/1.1\r\nHost: x\r\n${headers}\r\nabc`);
      assert.equal(r.status, 400);
      assert.equal(r.headers['connection'], 'close');
      await sleep(100);
      assert.equal(backend.requests.filter((x) => x.url === '/framing').length, 0);
    });
  }

  test('a request pipelined behind bad framing is never handled (connection dropped)', async () => {
    const r = await rawExchange(gw.port, 'POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nPOST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi', 1000);
    assert.ok(r.closed);
    assert.doesNotMatch(r.text, /200 OK/);
    assert.equal(backend.requests.filter((x) => x.url === '/framing').length, 0);
  });
});
