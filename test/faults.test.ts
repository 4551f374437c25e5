// Backend faults (issue 6): connection refused, reset mid-response, closed without an answer,
// slow headers, slow body, invalid HTTP. Each ends in a defined status (500; on a no-op endpoint
// whose headers were already sent, a closed client connection, never a short body presented as
// complete), an ERROR log line naming the endpoint, no hang and no leaked sockets. A client that
// disconnects aborts the backend request.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  type Backend,
  type Gateway,
  HOST,
  fdCount,
  freePort,
  req,
  sendJSON,
  sleep,
  startBackend,
  startGateway,
  jsonLogLines,
  type JsonLogLine,
} from './helpers/gw.ts';

const TIMEOUT_MS = 300;

interface Watch {
  /** the backend's response was closed before the handler finished answering */
  closedEarly: boolean;
  closedAt: number;
  receivedAt: number;
}

let backend: Backend;
let raw: net.Server;
let gw: Gateway;
const watches = new Map<string, Watch[]>();

function watch(key: string, req: http.IncomingMessage, res: http.ServerResponse): Watch {
  const w: Watch = { closedEarly: false, closedAt: 0, receivedAt: Date.now() };
  const list = watches.get(key) ?? [];
  list.push(w);
  watches.set(key, list);
  res.on('close', () => {
    w.closedAt = Date.now();
    if (!res.writableEnded) w.closedEarly = true;
  });
  req.socket.on('close', () => {
    if (!w.closedAt) w.closedAt = Date.now();
  });
  return w;
}

before(async () => {
  backend = await startBackend(async (req, res, rec) => {
    const path = new URL(rec.url, 'http://x').pathname.replace(/^\/(json|noop)/, '');
    switch (path) {
      case '/ok':
        return sendJSON(res, 200, { ok: true });
      case '/reset-mid': {
        // Headers and a tenth of the announced body, then a TCP reset.
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 1000 });
        res.write(Buffer.alloc(100, 0x61));
        await sleep(50);
        req.socket.resetAndDestroy();
        return;
      }
      case '/reset-chunked': {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"a":"' + 'b'.repeat(100));
        await sleep(50);
        req.socket.resetAndDestroy();
        return;
      }
      case '/close-no-answer':
        req.socket.destroy();
        return;
      case '/slow-headers': {
        const w = watch('slow-headers', req, res);
        for (let i = 0; i < 60 && !w.closedAt; i++) await sleep(50);
        if (!res.destroyed) sendJSON(res, 200, { late: true });
        return;
      }
      case '/slow-body': {
        const w = watch('slow-body', req, res);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': 20 });
        res.write('{"late":');
        for (let i = 0; i < 60 && !w.closedAt; i++) await sleep(50);
        if (!res.destroyed) res.end('"yes"}      ');
        return;
      }
      case '/hold': {
        const w = watch(`hold${rec.url.startsWith('/noop') ? '-noop' : ''}`, req, res);
        for (let i = 0; i < 100 && !w.closedAt; i++) await sleep(50);
        if (!res.destroyed) sendJSON(res, 200, { held: true });
        return;
      }
      default:
        res.writeHead(404);
        res.end();
    }
  });
  // A TCP server that does not speak HTTP.
  raw = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.end('HELLO\r\n\r\n'));
  });
  await new Promise<void>((r) => raw.listen(0, HOST, () => r()));
  const rawUrl = `http://${HOST}:${(raw.address() as net.AddressInfo).port}`;
  const refused = `http://${HOST}:${await freePort()}`;
  const host = [backend.url];
  const endpoints: object[] = [];
  for (const enc of ['json', 'noop'] as const) {
    const e = (endpoint: string, hosts: string[], url: string) => ({
      endpoint: `/${enc}${endpoint}`,
      timeout: `${TIMEOUT_MS}ms`,
      ...(enc === 'noop' ? { output_encoding: 'no-op' } : {}),
      backend: [{ host: hosts, url_pattern: `/${enc}${url}` }],
    });
    endpoints.push(
      e('/ok', host, '/ok'),
      e('/refused', [refused], '/x'),
      e('/reset-mid', host, '/reset-mid'),
      e('/reset-chunked', host, '/reset-chunked'),
      e('/close-no-answer', host, '/close-no-answer'),
      e('/slow-headers', host, '/slow-headers'),
      e('/slow-body', host, '/slow-body'),
      e('/invalid-http', [rawUrl], '/x'),
      { ...e('/hold', host, '/hold'), timeout: '10s' },
    );
  }
  gw = await startGateway({ version: 3, endpoints }, { args: ['--workers', '1', '--log-format', 'json'] });
});

after(async () => {
  await gw?.stop('SIGKILL');
  await backend?.close();
  await new Promise<void>((r) => raw?.close(() => r()));
});

type LogLine = JsonLogLine;

function logLines(): LogLine[] {
  return jsonLogLines(gw.stdout());
}

/** Waits (bounded) for an ERROR (or worse) line tagged with the endpoint. */
async function errorLogFor(endpoint: string): Promise<string> {
  const tag = `[ENDPOINT: ${endpoint}]`;
  for (let i = 0; i < 40; i++) {
    const hit = logLines().find((l) => l.level >= 50 && l.msg.includes(tag));
    if (hit) return hit.msg;
    await sleep(25);
  }
  assert.fail(`no ERROR log line for ${tag}\n--- stdout\n${gw.stdout().slice(-3000)}`);
}

/** Sends one request over a raw socket and collects everything until the peer closes. */
function rawExchange(port: number, data: string, waitMs = 5000): Promise<{ raw: Buffer; closed: boolean; error: string | null; ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const sock = net.connect({ host: HOST, port });
    const chunks: Buffer[] = [];
    let error: string | null = null;
    let settled = false;
    const done = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ raw: Buffer.concat(chunks), closed, error, ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => done(false), waitMs);
    sock.on('connect', () => sock.write(data));
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('close', () => done(true));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
      done(true);
    });
  });
}

describe('backend faults end in a defined status with an ERROR log line', () => {
  const cases: [string, string][] = [
    ['connection refused', '/refused'],
    ['reset mid-response', '/reset-mid'],
    ['reset mid-response (chunked)', '/reset-chunked'],
    ['closed without an answer', '/close-no-answer'],
    ['slow headers (beyond the endpoint timeout)', '/slow-headers'],
    ['slow body (beyond the endpoint timeout)', '/slow-body'],
    ['invalid HTTP', '/invalid-http'],
  ];
  for (const [name, path] of cases) {
    test(`json: ${name} → 500`, async (t) => {
      const r = await req(gw.port, `/json${path}`, { timeoutMs: 5000 });
      assert.equal(r.status, 500, `${path}: ${r.status} ${r.text}`);
      assert.equal(r.headers['x-krakend-completed'], 'false');
      assert.ok(r.ms < 2000, `${path}: answered after ${r.ms} ms`);
      const msg = await errorLogFor(`/json${path}`);
      assert.ok(msg.length > `[ENDPOINT: /json${path}] `.length, msg);
      t.diagnostic(msg);
    });
  }

  for (const [name, path] of cases.filter(([, p]) => !['/reset-mid', '/reset-chunked', '/slow-body'].includes(p))) {
    test(`no-op: ${name} (before headers) → 500`, async (t) => {
      const r = await req(gw.port, `/noop${path}`, { timeoutMs: 5000 });
      assert.equal(r.status, 500, `${path}: ${r.status} ${r.text}`);
      assert.ok(r.ms < 2000, `${path}: answered after ${r.ms} ms`);
      t.diagnostic(await errorLogFor(`/noop${path}`));
    });
  }

  test('every fault ERROR line also names the backend (host:port or URL), as issue 6 asks', () => {
    const missing: string[] = [];
    for (const enc of ['json', 'noop']) {
      for (const [, path] of cases) {
        const tag = `[ENDPOINT: /${enc}${path}]`;
        const lines = logLines().filter((l) => l.level >= 50 && l.msg.includes(tag));
        if (lines.length === 0) continue; // covered by the tests above
        if (!lines.some((l) => /127\.0\.0\.1:\d+|\/(json|noop)\/[a-z-]+/.test(l.msg.slice(tag.length)))) missing.push(lines[0]!.msg);
      }
    }
    assert.deepEqual(missing, [], 'ERROR lines that do not say which backend failed');
  });

  test('the slow backends were timed out at the endpoint timeout and their sockets closed', async () => {
    for (const key of ['slow-headers', 'slow-body']) {
      const list = watches.get(key) ?? [];
      assert.ok(list.length >= 1, `${key}: backend never called`);
      for (const w of list) {
        assert.ok(w.closedEarly, `${key}: the backend answered in full; gw should have closed the connection`);
        const after = w.closedAt - w.receivedAt;
        assert.ok(after >= TIMEOUT_MS - 50 && after < TIMEOUT_MS + 1500, `${key}: backend socket closed ${after} ms after the request`);
      }
    }
  });
});

describe('no-op: a backend failure after the headers were sent', () => {
  test('Content-Length announced: the client connection is closed before the body is complete', async () => {
    const x = await rawExchange(gw.port, 'GET /noop/reset-mid HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.ok(x.closed, `connection still open after ${x.ms} ms`);
    const text = x.raw.toString('latin1');
    const headEnd = text.indexOf('\r\n\r\n');
    assert.ok(headEnd > 0, `no response head: ${JSON.stringify(text.slice(0, 200))}`);
    assert.match(text, /^HTTP\/1\.1 200/);
    const m = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, headEnd));
    const body = x.raw.subarray(headEnd + 4);
    if (m) {
      assert.equal(Number(m[1]), 1000, 'the backend length is announced');
      assert.ok(body.length < 1000, `a complete ${body.length}-byte body was presented`);
    } else {
      assert.match(text.slice(0, headEnd), /transfer-encoding: *chunked/i);
      assert.ok(!/\r\n0\r\n\r\n$/.test(body.toString('latin1')), 'the chunked body was terminated as if complete');
    }
    await errorLogFor('/noop/reset-mid');
  });

  test('chunked: the chunked body is never terminated (no last-chunk), the connection is closed', async () => {
    const x = await rawExchange(gw.port, 'GET /noop/reset-chunked HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.ok(x.closed, `connection still open after ${x.ms} ms`);
    const text = x.raw.toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.ok(!/\r\n0\r\n\r\n$/.test(text), `the body was terminated as complete: ${JSON.stringify(text.slice(-80))}`);
    await errorLogFor('/noop/reset-chunked');
  });

  test('an HTTP client sees an error, never a complete response', async () => {
    await assert.rejects(req(gw.port, '/noop/reset-mid', { timeoutMs: 5000 }));
    await assert.rejects(req(gw.port, '/noop/reset-chunked', { timeoutMs: 5000 }));
  });
});

describe('client disconnects abort the backend request', () => {
  for (const [enc, key] of [['json', 'hold'], ['noop', 'hold-noop']] as const) {
    test(`${enc}: the backend sees its request closed before it answered`, async () => {
      const before = watches.get(key)?.length ?? 0;
      const sock = net.connect({ host: HOST, port: gw.port });
      sock.on('error', () => {});
      await new Promise<void>((r) => sock.once('connect', () => r()));
      sock.write(`GET /${enc}/hold HTTP/1.1\r\nHost: x\r\n\r\n`);
      for (let i = 0; i < 100 && (watches.get(key)?.length ?? 0) === before; i++) await sleep(10);
      const w = watches.get(key)?.[before];
      assert.ok(w, 'the backend never got the request');
      const t0 = Date.now();
      sock.destroy();
      for (let i = 0; i < 100 && !w.closedAt; i++) await sleep(10);
      assert.ok(w.closedAt > 0, 'the backend request was not aborted within 1 s of the client leaving');
      assert.ok(w.closedEarly, 'the backend had answered already');
      assert.ok(w.closedAt - t0 < 1000, `aborted after ${w.closedAt - t0} ms`);
    });
  }
});

describe('no leaked sockets or timers', () => {
  test('20 rounds of every fault leave the open fd count where it was', async () => {
    const pids = gw.workerPids();
    const paths = ['/refused', '/reset-mid', '/close-no-answer', '/slow-headers', '/invalid-http'];
    const round = () =>
      Promise.all([
        ...paths.map((p) => req(gw.port, `/json${p}`, { timeoutMs: 5000 }).catch(() => null)),
        ...['/refused', '/close-no-answer', '/slow-headers'].map((p) => req(gw.port, `/noop${p}`, { timeoutMs: 5000 }).catch(() => null)),
        rawExchange(gw.port, 'GET /noop/reset-mid HTTP/1.1\r\nHost: x\r\n\r\n'),
      ]);
    await round();
    await sleep(300);
    const base = fdCount(pids);
    for (let i = 0; i < 20; i++) await round();
    // let the keep-alive connections of the test client go
    await sleep(500);
    const end = fdCount(pids);
    assert.ok(end <= base + 5, `open fds grew from ${base} to ${end}`);
    // and the gateway still answers normally
    assert.equal((await req(gw.port, '/json/ok')).status, 200);
    assert.equal((await req(gw.port, '/noop/ok')).status, 200);
  });
});
