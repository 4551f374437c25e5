// Rate limits (issue 13): qos/ratelimit/router (503 global, 429 per client by ip/header/param),
// qos/ratelimit/service, qos/ratelimit/proxy, one limit per instance whatever the worker count,
// and the Redis variants shared by two instances, failing open or closed when Redis goes away.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { type Backend, freePort, type Gateway, runCli, sleep, startBackend, startGateway, writeConfig } from './helpers/gw.ts';

let backend: Backend;
before(async () => {
  backend = await startBackend((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
});
after(async () => {
  await backend?.close();
});

interface Hit {
  status: number;
  body: string;
}

/** One request on a fresh connection (so that, with several workers, requests spread over them). */
function hit(port: number, path: string, headers: Record<string, string> = {}): Promise<Hit> {
  return new Promise((resolve, reject) => {
    const r = http.get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close', ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    r.setTimeout(5000, () => r.destroy(new Error(`GET ${path}: no answer in 5 s`)));
    r.on('error', reject);
  });
}

/** Sends `n` requests, `conc` at a time; returns the statuses in order of completion. */
async function burst(port: number, path: string, n: number, conc = 4, headers: Record<string, string> = {}): Promise<number[]> {
  const out: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (next < n) {
        next++;
        out.push((await hit(port, path, headers)).status);
      }
    }),
  );
  return out;
}

/** Keeps `conc` requests going for `ms`; returns how many got 200 and the elapsed time. */
async function load(port: number, path: string, ms: number, conc: number, headers: Record<string, string> = {}): Promise<{ ok: number; other: Map<number, number>; elapsed: number }> {
  const t0 = Date.now();
  let ok = 0;
  const other = new Map<number, number>();
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (Date.now() - t0 < ms) {
        const s = (await hit(port, path, headers)).status;
        if (s === 200) ok++;
        else other.set(s, (other.get(s) ?? 0) + 1);
      }
    }),
  );
  return { ok, other, elapsed: Date.now() - t0 };
}

const count = (xs: number[], s: number) => xs.filter((x) => x === s).length;

describe('qos/ratelimit/router', () => {
  let gw: Gateway;
  before(async () => {
    const host = [backend.url];
    gw = await startGateway(
      {
        version: 3,
        endpoints: [
          // every 1m: no refill during the test, so counts are exact.
          { endpoint: '/global', extra_config: { 'qos/ratelimit/router': { max_rate: 3, every: '1m' } }, backend: [{ host, url_pattern: '/x' }] },
          {
            endpoint: '/by-header',
            extra_config: { 'qos/ratelimit/router': { client_max_rate: 2, every: '1m', strategy: 'header', key: 'X-Client' } },
            backend: [{ host, url_pattern: '/x' }],
          },
          {
            endpoint: '/by-ip',
            extra_config: { 'qos/ratelimit/router': { client_max_rate: 2, every: '1m', strategy: 'ip', key: 'X-Real-Ip' } },
            backend: [{ host, url_pattern: '/x' }],
          },
          {
            endpoint: '/by-param/{user}',
            extra_config: { 'qos/ratelimit/router': { client_max_rate: 1, every: '1m', strategy: 'param', key: 'user' } },
            backend: [{ host, url_pattern: '/x' }],
          },
          {
            endpoint: '/both',
            extra_config: { 'qos/ratelimit/router': { max_rate: 3, client_max_rate: 2, every: '1m', strategy: 'header', key: 'X-Client' } },
            backend: [{ host, url_pattern: '/x' }],
          },
          {
            endpoint: '/refill',
            extra_config: { 'qos/ratelimit/router': { max_rate: 5, capacity: 1 } },
            backend: [{ host, url_pattern: '/x' }],
          },
          {
            endpoint: '/noop-limited',
            output_encoding: 'no-op',
            extra_config: { 'qos/ratelimit/router': { max_rate: 1, every: '1m' } },
            backend: [{ host, url_pattern: '/x', encoding: 'no-op' }],
          },
        ],
      },
      { args: ['--workers', '1'] },
    );
  });
  after(async () => {
    await gw?.stop();
  });

  test('max_rate: the bucket (capacity = max_rate) lets 3 through, then 503 with an empty body', async () => {
    const before = backend.requests.length;
    const statuses = await burst(gw.port, '/global', 12);
    assert.equal(count(statuses, 200), 3, statuses.join(' '));
    assert.equal(count(statuses, 503), 9, statuses.join(' '));
    assert.equal(backend.requests.length - before, 3, 'refused requests never reach the backend');
    const r = await hit(gw.port, '/global');
    assert.equal(r.status, 503);
    assert.equal(r.body, '');
  });

  test('client_max_rate by header: each client has its own bucket; a request without the header gets 429', async () => {
    const a = await burst(gw.port, '/by-header', 5, 2, { 'X-Client': 'alice' });
    const b = await burst(gw.port, '/by-header', 5, 2, { 'X-Client': 'bob' });
    assert.deepEqual([count(a, 200), count(a, 429)], [2, 3], a.join(' '));
    assert.deepEqual([count(b, 200), count(b, 429)], [2, 3], b.join(' '));
    const none = await hit(gw.port, '/by-header');
    assert.equal(none.status, 429);
    assert.equal(none.body, '');
  });

  test('client_max_rate by ip: the first address of the key header when it is an IP (port stripped), else the connection address', async () => {
    const one = await burst(gw.port, '/by-ip', 4, 2, { 'X-Real-Ip': '203.0.113.7, 10.0.0.1' });
    assert.equal(count(one, 200), 2, one.join(' '));
    const samePort = await hit(gw.port, '/by-ip', { 'X-Real-Ip': '203.0.113.7:5555' });
    assert.equal(samePort.status, 429, 'same client with a port');
    const other = await burst(gw.port, '/by-ip', 3, 1, { 'X-Real-Ip': '2001:db8::1' });
    assert.equal(count(other, 200), 2, other.join(' '));
    // Not an IP: the connection's address (127.0.0.1), a bucket of its own.
    const junk = await burst(gw.port, '/by-ip', 3, 1, { 'X-Real-Ip': 'not-an-ip' });
    assert.equal(count(junk, 200), 2, junk.join(' '));
    const plain = await hit(gw.port, '/by-ip');
    assert.equal(plain.status, 429, 'no header: the connection address, whose bucket the junk header already used');
  });

  test('client_max_rate by path param', async () => {
    assert.equal((await hit(gw.port, '/by-param/ann')).status, 200);
    assert.equal((await hit(gw.port, '/by-param/ann')).status, 429);
    assert.equal((await hit(gw.port, '/by-param/ben')).status, 200);
  });

  test('client bucket first (429), then the shared one (503)', async () => {
    const a = await burst(gw.port, '/both', 3, 1, { 'X-Client': 'a' });
    assert.deepEqual(a, [200, 200, 429]);
    const b = await burst(gw.port, '/both', 2, 1, { 'X-Client': 'b' });
    assert.deepEqual(b, [200, 503], 'b has client tokens, the endpoint has none left');
  });

  test('tokens come back at max_rate per every (token bucket, not a fixed window)', async () => {
    assert.equal((await hit(gw.port, '/refill')).status, 200);
    assert.equal((await hit(gw.port, '/refill')).status, 503);
    await sleep(260); // 5/s: one token every 200 ms
    assert.equal((await hit(gw.port, '/refill')).status, 200);
    assert.equal((await hit(gw.port, '/refill')).status, 503);
  });

  test('a no-op endpoint is limited too', async () => {
    assert.equal((await hit(gw.port, '/noop-limited')).status, 200);
    assert.equal((await hit(gw.port, '/noop-limited')).status, 503);
  });
});

describe('one instance, one limit, whatever the worker count', () => {
  const config = () => ({
    version: 3,
    endpoints: [
      { endpoint: '/g', extra_config: { 'qos/ratelimit/router': { max_rate: 20, capacity: 10 } }, backend: [{ host: [backend.url], url_pattern: '/x' }] },
      {
        endpoint: '/c',
        extra_config: { 'qos/ratelimit/router': { client_max_rate: 10, client_capacity: 5, strategy: 'header', key: 'X-Client' } },
        backend: [{ host: [backend.url], url_pattern: '/x' }],
      },
    ],
  });

  /** 200s expected over `elapsed` ms: the full bucket, then the refill. */
  const expected = (capacity: number, perSec: number, elapsed: number) => capacity + (perSec * elapsed) / 1000;

  for (const workers of [1, 2]) {
    test(`--workers ${workers}: max_rate 20/s holds within ±10 % over 2.5 s of load on fresh connections`, async () => {
      const gw = await startGateway(config(), { args: ['--workers', String(workers)] });
      try {
        if (workers > 1) await gw.waitWorkers(workers);
        const r = await load(gw.port, '/g', 2500, 8);
        const want = expected(10, 20, r.elapsed);
        assert.ok(Math.abs(r.ok - want) <= want * 0.1, `${r.ok} requests passed, ${want.toFixed(1)} expected (±10 %); others ${[...r.other].join(' ')}`);
        assert.deepEqual([...r.other.keys()], [503]);
      } finally {
        await gw.stop();
      }
    });
  }

  test('--workers 2: one client over many connections (both workers) gets its rate once, not twice', async () => {
    const gw = await startGateway(config(), { args: ['--workers', '2'] });
    try {
      await gw.waitWorkers(2);
      const [a, b] = await Promise.all([
        load(gw.port, '/c', 2500, 4, { 'X-Client': 'a' }),
        load(gw.port, '/c', 2500, 4, { 'X-Client': 'b' }),
      ]);
      for (const r of [a, b]) {
        const want = expected(5, 10, r.elapsed);
        assert.ok(Math.abs(r.ok - want) <= Math.max(want * 0.1, 2), `${r.ok} passed, ${want.toFixed(1)} expected; others ${[...r.other].join(' ')}`);
        assert.deepEqual([...r.other.keys()], [429]);
      }
    } finally {
      await gw.stop();
    }
  });
});

describe('qos/ratelimit/service and qos/ratelimit/proxy', () => {
  let gw: Gateway;
  before(async () => {
    const host = [backend.url];
    gw = await startGateway(
      {
        version: 3,
        extra_config: { 'qos/ratelimit/service': { max_rate: 4, every: '1m' } },
        endpoints: [
          { endpoint: '/s1', backend: [{ host, url_pattern: '/x' }] },
          { endpoint: '/s2', backend: [{ host, url_pattern: '/x' }] },
        ],
      },
      { args: ['--workers', '1'] },
    );
  });
  after(async () => {
    await gw?.stop();
  });

  test('the service bucket is shared by every endpoint', async () => {
    const a = await burst(gw.port, '/s1', 3, 1);
    const b = await burst(gw.port, '/s2', 3, 1);
    assert.deepEqual([...a, ...b], [200, 200, 200, 200, 503, 503]);
    assert.equal((await hit(gw.port, '/__health')).status, 200, 'not the health endpoint');
  });

  test('qos/ratelimit/proxy: over the limit that backend fails: 500 alone, partial data in a merge', async () => {
    const host = [backend.url];
    const p = await startGateway(
      {
        version: 3,
        endpoints: [
          { endpoint: '/one', backend: [{ host, url_pattern: '/x', extra_config: { 'qos/ratelimit/proxy': { max_rate: 2, every: '1m' } } }] },
          {
            endpoint: '/merged',
            backend: [
              { host, url_pattern: '/x', group: 'limited', extra_config: { 'qos/ratelimit/proxy': { max_rate: 1, every: '1m' } } },
              { host, url_pattern: '/x', group: 'free' },
            ],
          },
        ],
      },
      { args: ['--workers', '1'] },
    );
    try {
      assert.deepEqual(await burst(p.port, '/one', 4, 1), [200, 200, 500, 500]);
      const first = await fetch(`${p.url}/merged`);
      assert.equal(first.headers.get('x-krakend-completed'), 'true');
      assert.deepEqual(await first.json(), { free: { ok: true }, limited: { ok: true } });
      const second = await fetch(`${p.url}/merged`);
      assert.equal(second.status, 200);
      assert.equal(second.headers.get('x-krakend-completed'), 'false');
      assert.deepEqual(await second.json(), { free: { ok: true } });
    } finally {
      await p.stop();
    }
  });
});

describe('gw check validates the rate-limit keys', () => {
  const check = async (extra: Record<string, unknown>, where: 'endpoint' | 'backend' = 'endpoint') => {
    const be: Record<string, unknown> = { host: ['http://127.0.0.1:8080'], url_pattern: '/x' };
    const ep: Record<string, unknown> = { endpoint: '/e/{id}', backend: [be] };
    if (where === 'endpoint') ep.extra_config = extra;
    else be.extra_config = extra;
    return runCli(['check', '-c', writeConfig({ version: 3, endpoints: [ep] })]);
  };

  test('a wrong type names the namespace, the key and the value', async () => {
    const r = await check({ 'qos/ratelimit/router': { max_rate: 'ten' } });
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /endpoints GET \/e\/\{id\}: "qos\/ratelimit\/router" max_rate must be a non-negative number, got "ten"/);
  });

  test('param strategy naming no parameter of the endpoint', async () => {
    const r = await check({ 'qos/ratelimit/router': { client_max_rate: 1, strategy: 'param', key: 'user' } });
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /strategy "param" names "user", which is not a parameter of this endpoint \(id\)/);
  });

  test('a Redis limit naming no pool', async () => {
    const r = await check({ 'qos/ratelimit/router/redis': { connection_name: 'nope', max_rate: 1 } });
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /connection_name "nope" is not a pool of the service's "redis" connection_pools \(none is defined\)/);
  });

  test('proxy limit with a bad capacity', async () => {
    const r = await check({ 'qos/ratelimit/proxy': { max_rate: 1, capacity: 1.5 } }, 'backend');
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /"qos\/ratelimit\/proxy" capacity must be a non-negative integer, got 1.5/);
  });

  test('an unknown strategy is KrakenD\'s warning, not an error; the namespace is no longer "not implemented"', async () => {
    const r = await check({ 'qos/ratelimit/router': { client_max_rate: 1, strategy: 'cookie', max_rate: 5 } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /Unknown strategy "cookie"/);
    assert.doesNotMatch(r.stdout + r.stderr, /not implemented/);
  });
});

// ---- Redis ----

const haveRedis = spawnSync('redis-server', ['--version']).status === 0;

async function startRedis(): Promise<{ port: number; proc: ChildProcess; stop(): Promise<void> }> {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) break;
    await sleep(50);
  }
  return {
    port,
    proc,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGKILL');
      }),
  };
}

describe('Redis-backed limits (a real redis-server on a loopback port)', { skip: haveRedis ? false : 'redis-server is not installed (apt-get install redis-server; .ci/run does)' }, () => {
  test('two gw instances share one bucket through Redis', async () => {
    const redis = await startRedis();
    const config = {
      version: 3,
      extra_config: { redis: { connection_pools: [{ name: 'shared', address: `127.0.0.1:${redis.port}` }] } },
      endpoints: [
        {
          endpoint: '/shared',
          extra_config: { 'qos/ratelimit/router/redis': { connection_name: 'shared', max_rate: 6, every: '1m' } },
          backend: [{ host: [backend.url], url_pattern: '/x' }],
        },
      ],
    };
    const a = await startGateway(config, { args: ['--workers', '1'] });
    const b = await startGateway(config, { args: ['--workers', '2'] });
    try {
      await sleep(300); // connections up
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) {
        statuses.push((await hit(a.port, '/shared')).status);
        statuses.push((await hit(b.port, '/shared')).status);
      }
      assert.equal(count(statuses, 200), 6, statuses.join(' '));
      assert.equal(count(statuses, 503), 10, statuses.join(' '));
      assert.match(a.output(), /\[SERVICE: Redis\]\[shared\] connected to 127\.0\.0\.1:\d+/);
    } finally {
      await a.stop();
      await b.stop();
      await redis.stop();
    }
  });

  for (const failOpen of [true, false]) {
    test(`Redis gone: on_failure_allow ${failOpen} ${failOpen ? 'lets requests through' : 'refuses them'}, logged once per change of state`, async () => {
      const redis = await startRedis();
      const gw = await startGateway(
        {
          version: 3,
          extra_config: { redis: { connection_pools: [{ name: 'rl', address: `127.0.0.1:${redis.port}` }] } },
          endpoints: [
            {
              endpoint: '/r',
              extra_config: { 'qos/ratelimit/router/redis': { connection_name: 'rl', client_max_rate: 100, strategy: 'header', key: 'X-Client', on_failure_allow: failOpen } },
              backend: [{ host: [backend.url], url_pattern: '/x' }],
            },
          ],
        },
        { args: ['--workers', '1'] },
      );
      try {
        await sleep(300);
        assert.equal((await hit(gw.port, '/r', { 'X-Client': 'c' })).status, 200, 'Redis up');
        await redis.stop();
        await sleep(200);
        const statuses = await burst(gw.port, '/r', 30, 3, { 'X-Client': 'c' });
        assert.deepEqual([...new Set(statuses)], [failOpen ? 200 : 429], statuses.join(' '));
        const down = gw.output().match(/unreachable/g) ?? [];
        assert.equal(down.length, 1, `one line for the outage, not one per request:\n${gw.output()}`);
      } finally {
        await gw.stop();
        await redis.stop();
      }
    });
  }
});
