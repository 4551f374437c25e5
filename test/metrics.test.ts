// telemetry/opentelemetry with a Prometheus exporter (issue 14): one scrape sees the whole
// instance (two workers summed by the supervisor), under krakend-otel's names and labels; the
// exposition is read with a real Prometheus text-format parser. Real gw processes, real loopback
// backends, a real scrape over HTTP.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';
import { type Backend, freePort, type Gateway, runCli, sleep, startBackend, startGateway, writeConfig } from './helpers/gw.ts';

interface Family {
  name: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string; sum?: string }[];
}
const parseText = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];

/**
 * The exposition read by a Prometheus text-format parser (a port of the Prometheus client's).
 * That package folds every series of a histogram into one and drops their labels, so histogram
 * families are read as their plain `_bucket` / `_sum` / `_count` series (their TYPE lines are
 * checked here, then left out).
 */
function parse(text: string): Family[] {
  const histograms = [...text.matchAll(/^# TYPE (\S+) histogram$/gm)].map((m) => m[1]!);
  let plain = text;
  for (const h of histograms) plain = plain.replace(new RegExp(`^# (HELP|TYPE) ${h} .*\n`, 'gm'), '');
  // Interleaved _bucket/_sum/_count lines come back as one family per run: merged by name.
  const byName = new Map<string, Family>();
  for (const f of parseText(plain)) {
    const prev = byName.get(f.name);
    if (prev === undefined) byName.set(f.name, f);
    else prev.metrics.push(...f.metrics);
  }
  for (const h of histograms) byName.set(h, { name: h, type: 'HISTOGRAM', metrics: [] });
  return [...byName.values()];
}

let backend: Backend;
let downPort: number;
before(async () => {
  backend = await startBackend((rq, res) => {
    if (rq.url === '/slow') {
      setTimeout(() => {
        if (!res.destroyed) res.end('{}');
      }, 1500);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true,"pad":"' + 'x'.repeat(200) + '"}');
  });
  downPort = await freePort();
});
after(async () => {
  await backend?.close();
});

/** GET on a fresh connection, so that with two workers requests spread over both. */
function hit(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const r = http.get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    r.setTimeout(5000, () => r.destroy(new Error(`GET ${path}: no answer`)));
    r.on('error', reject);
  });
}

function scrape(port: number): Promise<{ status: number; type: string; text: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), text }));
      })
      .on('error', reject);
  });
}

const family = (fams: Family[], name: string): Family => {
  const f = fams.find((x) => x.name === name);
  assert.ok(f, `no family ${name}; have ${fams.map((x) => x.name).join(', ')}`);
  return f;
};
const match = (labels: Record<string, string> | undefined, want: Record<string, string>) => Object.entries(want).every(([k, v]) => labels?.[k] === v);
/** A counter's value, or a histogram's count, for the series with these labels (summed over matches). */
function count(f: Family, want: Record<string, string>): number {
  let n = 0;
  for (const m of f.metrics) if (match(m.labels, want)) n += Number(m.count ?? m.value ?? 0);
  return n;
}

describe('Prometheus exporter, two workers', () => {
  let gw: Gateway;
  let promPort: number;
  before(async () => {
    promPort = await freePort();
    gw = await startGateway(
      {
        version: 3,
        name: 'metrics-test',
        timeout: '500ms',
        extra_config: {
          router: { disable_access_log: true },
          'telemetry/opentelemetry': {
            exporters: { prometheus: [{ name: 'local', port: promPort, listen_ip: '127.0.0.1', process_metrics: true }] },
          },
        },
        endpoints: [
          { endpoint: '/dec/{id}', backend: [{ host: [backend.url], url_pattern: '/item/{id}' }] },
          { endpoint: '/noop', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/noop', encoding: 'no-op' }] },
          { endpoint: '/down', backend: [{ host: [`http://127.0.0.1:${downPort}`], url_pattern: '/gone' }] },
          { endpoint: '/slow', backend: [{ host: [backend.url], url_pattern: '/slow' }] },
        ],
      },
      { args: ['--workers', '2'] },
    );
    await gw.waitWorkers(2);
  });
  after(async () => {
    await gw?.stop();
  });

  test('counts across both workers match the requests sent, by route, method and status', async () => {
    const pids = new Set<number>();
    for (let i = 0; i < 20; i++) assert.equal(await hit(gw.port, `/dec/${i}`), 200);
    for (let i = 0; i < 15; i++) assert.equal(await hit(gw.port, '/noop'), 200);
    for (let i = 0; i < 4; i++) assert.equal(await hit(gw.port, '/down'), 500);
    for (let i = 0; i < 3; i++) assert.equal(await hit(gw.port, '/nowhere'), 404);
    assert.equal(await hit(gw.port, '/slow'), 500);
    for (const p of gw.workerPids()) pids.add(p);
    assert.equal(pids.size, 2);
    const s = await scrape(promPort);
    assert.equal(s.status, 200);
    assert.match(s.type, /^text\/plain; version=0\.0\.4/);
    const fams = parse(s.text);
    assert.equal(family(fams, 'http_server_duration').type, 'HISTOGRAM');
    const dur = family(fams, 'http_server_duration_count');
    const scope = { otel_scope_name: 'io.krakend.krakend-otel' };
    assert.equal(count(dur, { ...scope, http_route: '/dec/{id}', http_request_method: 'GET', http_response_status_code: '200', url_scheme: 'http' }), 20);
    assert.equal(count(dur, { http_route: '/noop', http_response_status_code: '200' }), 15);
    assert.equal(count(dur, { http_route: '/down', http_response_status_code: '500' }), 4);
    assert.equal(count(dur, { http_route: '404 Not Found', http_response_status_code: '404' }), 3);
    assert.equal(count(dur, { http_route: '/slow', http_response_status_code: '500' }), 1);
    // The slow request took the endpoint timeout (500 ms): not in the 0.35 s bucket, in the 0.5 s one… or 0.75.
    assert.equal(count(family(fams, 'http_server_duration_bucket'), { http_route: '/slow', le: '0.35' }), 0);
    assert.equal(count(family(fams, 'http_server_duration_bucket'), { http_route: '/slow', le: '+Inf' }), 1);
    const slowSum = count(family(fams, 'http_server_duration_sum'), { http_route: '/slow' });
    assert.ok(slowSum >= 0.45 && slowSum < 1.5, `slow sum ${slowSum}`);

    assert.equal(count(family(fams, 'http_server_response_size_sum'), { http_route: '/noop' }), 15 * 220, 'the no-op bodies, byte for byte');

    const proxy = family(fams, 'krakend_proxy_duration_count');
    assert.equal(count(proxy, { http_route: '/dec/:id', complete: 'true', error: 'false' }), 20);
    assert.equal(count(proxy, { http_route: '/down', complete: 'false', error: 'true' }), 4);

    const be = family(fams, 'krakend_backend_duration_count');
    assert.equal(count(be, { http_route: '/item/:id', krakend_endpoint_route: '/dec/{id}', complete: 'true' }), 20);
    assert.equal(count(be, { http_route: '/noop', krakend_endpoint_route: '/noop', complete: 'true' }), 15);
    assert.equal(count(be, { http_route: '/gone', error: 'true' }), 4);

    const started = family(fams, 'http_client_request_started_count_total');
    assert.equal(started.type, 'COUNTER');
    assert.equal(count(started, { http_route: '/item/:id', http_response_status_code: '200', server_address: '127.0.0.1' }), 20);
    assert.equal(count(started, { http_route: '/gone', http_response_status_code: '0' }), 4);
    const failed = family(fams, 'http_client_request_failed_count_total');
    assert.equal(count(failed, { http_route: '/gone' }), 4);
    const timedout = family(fams, 'http_client_request_timedout_count_total');
    assert.equal(count(timedout, { http_route: '/slow' }), 1);

    // One instance: its metadata once, both workers counted, process metrics summed over them.
    assert.equal(count(family(fams, 'target_info'), { service_name: 'metrics-test' }), 1);
    assert.equal(count(family(fams, 'gw_workers'), {}), 2);
    const rss = family(fams, 'process_resident_memory_bytes');
    assert.ok(Number(rss.metrics[0]!.value) > 40 * 1024 * 1024, 'two workers of resident memory');
    assert.equal(count(family(fams, 'http_server_active_requests'), {}), 0);
  });

  test('a request in flight is seen by the active-requests gauge', async () => {
    const pending = hit(gw.port, '/slow');
    await sleep(150);
    const fams = parse((await scrape(promPort)).text);
    assert.equal(count(family(fams, 'http_server_active_requests'), {}), 1);
    assert.equal(await pending, 500);
  });

  test('default skip_paths: /__health is not measured', async () => {
    assert.equal(await hit(gw.port, '/__health'), 200);
    const fams = parse((await scrape(promPort)).text);
    assert.equal(count(family(fams, 'http_server_duration_count'), { http_route: '/__health' }), 0);
  });

  test('methods a client makes up do not grow the series: they are counted as _OTHER', async () => {
    for (let i = 0; i < 40; i++) {
      await new Promise<void>((resolve) => {
        const sock = net.connect(gw.port, '127.0.0.1', () => sock.end(`MADEUP${i} /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
        sock.on('data', () => {});
        sock.on('close', () => resolve());
        sock.on('error', () => resolve());
      });
    }
    const fams = parse((await scrape(promPort)).text);
    const methods = new Set(family(fams, 'http_server_duration_count').metrics.filter((m) => /^\d{3} /.test(m.labels?.http_route ?? '')).map((m) => m.labels!.http_request_method));
    assert.ok(!([...methods].some((m) => m?.startsWith('MADEUP'))), `methods: ${[...methods].join(', ')}`);
    assert.ok(methods.size <= 3, `methods: ${[...methods].join(', ')}`);
  });

  test('only GET /metrics: other paths 404, other methods 405', async () => {
    const r = await new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: promPort, path: '/other', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject);
    });
    assert.equal(r, 404);
  });

  test('a worker killed: the next scrape still answers, from the worker left and its replacement', async () => {
    const [victim] = gw.workerPids();
    process.kill(victim!, 'SIGKILL');
    const s = await scrape(promPort);
    assert.equal(s.status, 200);
    assert.ok(parse(s.text).some((f) => f.name === 'http_server_duration'));
    await gw.waitWorkers(2);
  });
});

describe('telemetry/opentelemetry: configuration mistakes are named', () => {
  test('gw check: a bad port, a prometheus port equal to the gateway port, bad static attributes', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ exporters: { prometheus: [{ port: 'x' }] } }, /telemetry\/opentelemetry.*exporters\.prometheus\[0\]\.port: "x" is not an integer/],
      [{ exporters: { prometheus: [{ port: 18080 }] } }, /port 18080 is the gateway's own port/],
      [{ exporters: { prometheus: [{ port: 9091 }] }, layers: { global: { metrics_static_attributes: [{ key: 1 }] } } }, /layers\.global\.metrics_static_attributes\[0\]: must be/],
    ];
    for (const [otel, re] of cases) {
      const file = writeConfig({ version: 3, port: 18080, extra_config: { 'telemetry/opentelemetry': otel }, endpoints: [] });
      const r = await runCli(['check', '-c', file]);
      assert.notEqual(r.code, 0, r.output);
      assert.match(r.output, re);
    }
  });
});

describe('telemetry/metrics: /__stats summed over two workers', () => {
  let gw: Gateway;
  let statsPort: number;
  before(async () => {
    statsPort = await freePort();
    gw = await startGateway(
      {
        version: 3,
        timeout: '500ms',
        extra_config: {
          router: { disable_access_log: true },
          'telemetry/metrics': { collection_time: '60s', listen_address: `127.0.0.1:${statsPort}`, backend_disabled: false },
        },
        endpoints: [
          { endpoint: '/dec/{id}', backend: [{ host: [backend.url], url_pattern: '/item/{id}' }] },
          { endpoint: '/down', backend: [{ host: [`http://127.0.0.1:${downPort}`], url_pattern: '/gone' }] },
        ],
      },
      { args: ['--workers', '2'] },
    );
    await gw.waitWorkers(2);
  });
  after(async () => {
    await gw?.stop();
  });

  function getStats(path = '/__stats'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
    return new Promise((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: statsPort, path, agent: false }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        })
        .on('error', reject);
    });
  }

  test("krakend-metrics' keys: per-status counts, time (ns) and size histograms, pipe and backend layers; sorted", async () => {
    for (let i = 0; i < 12; i++) assert.equal(await hit(gw.port, `/dec/${i}`), 200);
    for (let i = 0; i < 3; i++) assert.equal(await hit(gw.port, '/down'), 500);
    const r = await getStats();
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /application\/json/);
    const o = JSON.parse(r.body) as Record<string, number>;
    const keys = Object.keys(o);
    assert.deepEqual(keys, [...keys].sort(), 'keys sorted, as expvar');
    assert.equal(o['krakend.router.response./dec/{id}.status.200.count'], 12);
    assert.equal(o['krakend.router.response./down.status.500.count'], 3);
    assert.equal(o['krakend.router.response./dec/{id}.time.count'], 12);
    const t = o['krakend.router.response./dec/{id}.time.min']!;
    assert.ok(t > 10_000 && t < 500_000_000, `a time in ns: ${t}`);
    assert.ok(o['krakend.router.response./dec/{id}.time.50-percentile']! >= t);
    assert.ok(o['krakend.router.response./dec/{id}.time.99-percentile']! <= o['krakend.router.response./dec/{id}.time.max']!);
    assert.equal(o['krakend.router.response./dec/{id}.size.min'], o['krakend.router.response./dec/{id}.size.max'], 'every answer the same size');
    assert.equal(o['krakend.proxy.requests.layer.pipe.name./dec/:id.complete.true.error.false'], 12);
    assert.equal(o['krakend.proxy.requests.layer.pipe.name./down.complete.false.error.true'], 3);
    assert.equal(o['krakend.proxy.requests.layer.backend.name./item/:id.complete.true.error.false'], 12);
    assert.equal(o['krakend.proxy.latency.layer.backend.name./gone.complete.false.error.true.count'], 3);
    assert.ok(Array.isArray(o.cmdline));
    assert.ok((o.memstats as unknown as { Sys: number }).Sys > 40 * 1024 * 1024, 'two workers of memory');
  });

  test('/__stats/ redirects to /__stats; other paths 404', async () => {
    const r = await getStats('/__stats/');
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, '/__stats');
    assert.equal((await getStats('/other')).status, 404);
  });

  test('gw check names a bad listen_address', async () => {
    const file = writeConfig({ version: 3, extra_config: { 'telemetry/metrics': { listen_address: 'nope' } }, endpoints: [] });
    const r = await runCli(['check', '-c', file]);
    assert.notEqual(r.code, 0);
    assert.match(r.output, /telemetry\/metrics.*listen_address: "nope" is not ":port" or "host:port"/);
  });
});

describe('metrics over OTLP/HTTP (summed over two workers)', () => {
  let gw: Gateway;
  const posts: { url: string; body: Record<string, unknown> }[] = [];
  let collector: http.Server;
  before(async () => {
    collector = http.createServer((rq, res) => {
      let body = '';
      rq.setEncoding('utf8');
      rq.on('data', (c: string) => (body += c));
      rq.on('end', () => {
        try {
          posts.push({ url: rq.url ?? '', body: JSON.parse(body) as Record<string, unknown> });
        } catch {
          posts.push({ url: rq.url ?? '', body: {} });
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    const port = (collector.address() as { port: number }).port;
    gw = await startGateway(
      {
        version: 3,
        extra_config: {
          router: { disable_access_log: true },
          'telemetry/opentelemetry': {
            service_name: 'otlp-metrics-test',
            metric_reporting_period: 1,
            exporters: { otlp: [{ name: 'col', use_http: true, host: `http://127.0.0.1`, port, disable_traces: true }] },
          },
        },
        endpoints: [{ endpoint: '/dec/{id}', backend: [{ host: [backend.url], url_pattern: '/item/{id}' }] }],
      },
      { args: ['--workers', '2'] },
    );
    await gw.waitWorkers(2);
  });
  after(async () => {
    await gw?.stop();
    await new Promise<void>((r) => collector.close(() => r()));
  });

  test("http.server.duration arrives at /v1/metrics with krakend-otel's names, attributes and the instance's count", async () => {
    for (let i = 0; i < 7; i++) assert.equal(await hit(gw.port, `/dec/${i}`), 200);
    type Attr = { key: string; value: Record<string, unknown> };
    type Point = { attributes: Attr[]; count?: number | string; sum?: number; bucketCounts?: (number | string)[]; explicitBounds?: number[] };
    const findCount = (): number => {
      let best = 0;
      for (const p of posts.filter((x) => x.url === '/v1/metrics')) {
        const rms = (p.body.resourceMetrics ?? []) as { scopeMetrics: { metrics: { name: string; histogram?: { dataPoints: Point[] } }[] }[] }[];
        for (const rm of rms)
          for (const sm of rm.scopeMetrics)
            for (const m of sm.metrics) {
              if (m.name !== 'http.server.duration') continue;
              for (const dp of m.histogram?.dataPoints ?? []) {
                const route = dp.attributes.find((a) => a.key === 'http.route')?.value.stringValue;
                if (route === '/dec/{id}') best = Math.max(best, Number(dp.count));
              }
            }
      }
      return best;
    };
    const until = Date.now() + 6000;
    while (findCount() < 7 && Date.now() < until) await sleep(200);
    assert.equal(findCount(), 7, `posts: ${posts.map((p) => p.url).join(', ')}`);
    const last = posts.filter((x) => x.url === '/v1/metrics').at(-1)!;
    assert.match(JSON.stringify(last.body), /"service.name"/);
    assert.match(JSON.stringify(last.body), /"io.krakend.krakend-otel"/);
    assert.match(JSON.stringify(last.body), /"krakend.backend.duration"/);
  });
});
