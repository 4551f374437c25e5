// All cores (issue 6): `gw run` starts one worker thread per core by default, `--workers N` and
// extra_config["gw/server"].workers override it, `--workers 1` runs in-process; start-up config
// errors keep KrakenD's message and exit code with workers too. Graceful shutdown with one and
// with two workers: in-flight requests finish, new connections are refused, a second signal
// exits at once.
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import { after, before, describe, test } from 'node:test';
import { Client } from 'undici';
import {
  type Backend,
  type Gateway,
  HOST,
  freePort,
  req,
  runCli,
  sendJSON,
  sleep,
  startBackend,
  startGateway,
  writeConfig,
} from './helpers/gw.ts';

let backend: Backend;

before(async () => {
  backend = await startBackend(async (_req, res, rec) => {
    const u = new URL(rec.url, 'http://x');
    const wait = Number(u.searchParams.get('ms') ?? 0);
    if (wait > 0) await sleep(wait);
    sendJSON(res, 200, { path: u.pathname, waited: wait });
  });
});

after(async () => {
  await backend?.close();
});

const config = (extra: Record<string, unknown> = {}) => ({
  version: 3,
  ...extra,
  endpoints: [
    { endpoint: '/x', backend: [{ host: [backend.url], url_pattern: '/x' }] },
    { endpoint: '/slow/{ms}', input_query_strings: ['ms'], timeout: '10s', backend: [{ host: [backend.url], url_pattern: '/slow?ms={ms}' }] },
  ],
});

const WORKERS_LINE = /(\d+) workers listening on port (\d+)/;

/** The `N workers listening on port P` line, waited for (bounded): it follows the last worker's start. */
async function workersLine(gw: Gateway, waitMs = 3000): Promise<RegExpExecArray | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const m = WORKERS_LINE.exec(gw.output());
    if (m || Date.now() > deadline) return m;
    await sleep(25);
  }
}

/** Fresh TCP connection attempt: 'refused', 'connected' or another error code. */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    const t = setTimeout(() => {
      s.destroy();
      resolve('timeout');
    }, 2000);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      resolve(e.code === 'ECONNREFUSED' ? 'refused' : (e.code ?? e.message));
    });
  });
}

describe('worker count', () => {
  test('default: one worker per core (os.availableParallelism())', async () => {
    const n = os.availableParallelism();
    const gw = await startGateway(config());
    try {
      const m = await workersLine(gw, n > 1 ? 5000 : 500);
      if (n > 1) {
        assert.ok(m, `no "workers listening" line:\n${gw.output()}`);
        assert.equal(Number(m[1]), n);
        assert.equal(Number(m[2]), gw.port);
      } else {
        assert.equal(m, null, 'one core: runs in-process');
      }
      assert.equal((await req(gw.port, '/x')).status, 200);
    } finally {
      await gw.stop('SIGKILL');
    }
  });

  test('--workers 2: "2 workers listening on port"; 200 requests over 20 fresh connections all succeed', async () => {
    const gw = await startGateway(config(), { args: ['--workers', '2'] });
    const clients: Client[] = [];
    try {
      const m = await workersLine(gw);
      assert.ok(m, gw.output());
      assert.equal(m[1], '2');
      assert.equal(Number(m[2]), gw.port);
      const statuses: number[] = [];
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          const c = new Client(`http://${HOST}:${gw.port}`, { pipelining: 1, keepAliveTimeout: 2000 });
          clients.push(c);
          for (let i = 0; i < 10; i++) {
            const r = await c.request({ path: '/x', method: 'GET', headersTimeout: 5000, bodyTimeout: 5000 });
            const body = await r.body.json();
            statuses.push(r.statusCode === 200 && (body as { path: string }).path === '/x' ? 200 : r.statusCode);
          }
        }),
      );
      assert.equal(statuses.length, 200);
      assert.deepEqual([...new Set(statuses)], [200]);
    } finally {
      await Promise.all(clients.map((c) => c.destroy().catch(() => {})));
      await gw.stop('SIGKILL');
    }
  });

  test('extra_config["gw/server"].workers: 2 starts two workers; --workers 1 overrides it (in-process)', async () => {
    const cfg = config({ extra_config: { 'gw/server': { workers: 2 } } });
    const a = await startGateway(cfg);
    try {
      const m = await workersLine(a);
      assert.ok(m, a.output());
      assert.equal(m[1], '2');
    } finally {
      await a.stop('SIGKILL');
    }
    const b = await startGateway(cfg, { args: ['--workers', '1'] });
    try {
      assert.equal((await req(b.port, '/x')).status, 200);
      assert.equal(await workersLine(b, 300), null, `in-process run printed a workers line:\n${b.output()}`);
      assert.match(b.output(), /Listening on port/);
    } finally {
      await b.stop('SIGKILL');
    }
  });

  test('--workers 1: runs in-process (no "workers listening" line)', async () => {
    const gw = await startGateway(config(), { args: ['--workers', '1'] });
    try {
      assert.equal((await req(gw.port, '/x')).status, 200);
      assert.equal(await workersLine(gw, 300), null);
    } finally {
      await gw.stop('SIGKILL');
    }
  });

  test('config errors with workers: "ERROR parsing the configuration file", exit 255', async () => {
    // found by the main thread (schema)
    const schema = writeConfig({ version: 3, port: await freePort(), endpoints: [{ endpoint: '/x', backend: [{ host: [backend.url], url_pattern: 5 }] }] });
    const r1 = await runCli(['run', '-c', schema, '--workers', '2']);
    assert.equal(r1.timedOut, false);
    assert.equal(r1.code, 255, r1.output);
    assert.match(r1.output, /ERROR parsing the configuration file/);
    // found while the workers build the gateway (a client plugin without a name)
    const inWorker = writeConfig({
      version: 3,
      port: await freePort(),
      endpoints: [{ endpoint: '/x', backend: [{ host: [backend.url], url_pattern: '/x', extra_config: { 'plugin/http-client': {} } }] }],
    });
    const r2 = await runCli(['run', '-c', inWorker, '--workers', '2']);
    assert.equal(r2.timedOut, false);
    assert.equal(r2.code, 255, r2.output);
    assert.match(r2.output, /ERROR parsing the configuration file/);
    assert.match(r2.output, /has no "name"/);
  });
});

describe('graceful shutdown', () => {
  for (const workers of ['1', '2']) {
    test(`--workers ${workers}: SIGTERM lets the in-flight request finish (200), refuses new connections, exits 0`, async () => {
      const gw = await startGateway(config(), { args: ['--workers', workers] });
      try {
        if (workers === '2') assert.ok(await workersLine(gw), gw.output());
        const before = backend.requests.length;
        const pending = req(gw.port, '/slow/500', { timeoutMs: 5000 });
        for (let i = 0; i < 100 && backend.requests.length === before; i++) await sleep(5);
        assert.equal(backend.requests.length, before + 1, 'request in flight at the backend');
        const t0 = Date.now();
        gw.proc.kill('SIGTERM');
        await sleep(150);
        const fresh = await tryConnect(gw.port);
        const r = await pending;
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.json(), { path: '/slow', waited: 500 });
        const { code, signal } = await gw.exited;
        assert.equal(signal, null, gw.output());
        assert.equal(code, 0, gw.output());
        assert.ok(Date.now() - t0 < 4000, `shutdown took ${Date.now() - t0} ms`);
        assert.equal(fresh, 'refused', 'a new connection after SIGTERM should be refused');
      } finally {
        await gw.stop('SIGKILL');
      }
    });

    test(`--workers ${workers}: a second SIGTERM while draining exits at once, non-zero`, async () => {
      const gw = await startGateway(config(), { args: ['--workers', workers] });
      try {
        if (workers === '2') assert.ok(await workersLine(gw), gw.output());
        const before = backend.requests.length;
        const pending = req(gw.port, '/slow/5000', { timeoutMs: 8000 }).catch((e: Error) => e);
        for (let i = 0; i < 100 && backend.requests.length === before; i++) await sleep(5);
        assert.equal(backend.requests.length, before + 1, 'request in flight at the backend');
        const t0 = Date.now();
        gw.proc.kill('SIGTERM');
        await sleep(200);
        assert.equal(gw.proc.exitCode, null, 'still draining after the first signal');
        gw.proc.kill('SIGTERM');
        const { code, signal } = await gw.exited;
        const ms = Date.now() - t0;
        assert.ok(ms < 2000, `exited ${ms} ms after the first signal (the backend answers after 5000)`);
        assert.ok(signal !== null || (code !== null && code !== 0), `exit code ${code}, signal ${signal}`);
        const r = await pending;
        assert.ok(r instanceof Error || r.status !== 200, 'the in-flight request cannot have completed');
      } finally {
        await gw.stop('SIGKILL');
      }
    });
  }
});
