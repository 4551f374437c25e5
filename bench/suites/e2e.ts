/**
 * End-to-end suite: a loopback backend, gw (the real CLI, `node dist/cli/gw.js run`) and the
 * reference proxy, each in its own child process on 127.0.0.1.
 *
 *  1. Latency: tinybench tasks, one request at a time over a keep-alive undici Client per target,
 *     the full body read every time. The same payloads are requested directly from the backend in
 *     the same run, so every gw figure is reported as overhead vs direct (µs and ×). Tasks run in
 *     `rounds` interleaved passes and their samples are pooled, so a slow moment of a shared
 *     machine hits gw and its direct baseline alike.
 *  2. Throughput: a fixed duration per target with `concurrency` requests in flight; requests/s
 *     and the target's CPU time per request (utime+stime from /proc/<pid>/stat; for gw, the
 *     supervisor and its worker processes). On ≥ 4 cores, also gw with one worker per core
 *     (worker scaling); below that the extra workers would only compete with the load generator
 *     and the backend for the same cores, so the row is reported as not measurable.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Bench } from 'tinybench';
import { Client, Pool, type Dispatcher } from 'undici';
import { BODY_1K, BODY_64K, JSON_OBJECT } from '../lib/payloads.js';
import { clockTicks, cpuTicks, HOST, rssKiB, sleep, startChild, type Child } from '../lib/procs.js';
import { sig, summarise } from '../lib/stats.js';

export interface E2EOptions {
  root: string;
  /** Total measuring time per latency task (split over the rounds), ms. */
  latencyMs: number;
  rounds: number;
  /** Requests issued per task before the first round (JIT, pools, connections), as a duration in ms. */
  warmupMs: number;
  /** Measured seconds per throughput target (after `throughputWarmMs`). */
  throughputMs: number;
  throughputWarmMs: number;
  concurrency: number;
  /** Throughput targets; the quick run keeps the three the CPU ratio needs. */
  throughputTargets: readonly string[];
  /** `gw run --workers <n>`; 1 keeps gw single-threaded like the reference proxy. 0 = gw's default (one per core). */
  gwWorkers: number;
  log: (line: string) => void;
  signal: AbortSignal;
}

export interface LatencyRow {
  name: string;
  target: 'direct' | 'gw' | 'ref';
  path: string;
  samples: number;
  mean_us: number;
  p50_us: number;
  p99_us: number;
  ops_per_s: number;
}

export interface OverheadRow {
  name: string;
  vs: string;
  p50_us: number;
  p50_x: number;
  p99_us: number;
  p99_x: number;
  mean_us: number;
  mean_x: number;
}

export interface ThroughputRow {
  name: string;
  target: 'direct' | 'gw' | 'ref';
  concurrency: number;
  seconds: number;
  requests: number;
  errors: number;
  rps: number;
  /** CPU of the process under test (the backend for direct), µs per request. */
  cpu_us_per_req: number | null;
  backend_cpu_us_per_req: number | null;
  loadgen_cpu_us_per_req: number;
  rss_kib: number | null;
}

export interface DelegationRow {
  name: string;
  vs: string;
  /** Extra p50 latency of the plugin endpoint over the same endpoint without plugin, µs. */
  extra_p50_us: number;
  /** That extra as a share of gw's own overhead (gw p50 − direct p50) on the plugin-less endpoint. */
  pct_of_gw_overhead: number;
}

export interface E2EResult {
  latency: LatencyRow[];
  overhead: OverheadRow[];
  delegation: DelegationRow[];
  throughput: ThroughputRow[];
  /** gw CPU µs/req ÷ reference CPU µs/req on the no-op 1 KB passthrough (target ≤ 0.5). */
  cpu_ratio_gw_ref: number | null;
  /** gw no-op req/s with one worker per core ÷ one worker (null when not measured). */
  worker_scaling: { workers: number; rps_ratio: number } | null;
  /** Why worker scaling was not measured on this machine (fewer than 4 cores), else null. */
  worker_scaling_note?: string | null;
  processes: { gw: string; reference: string; backend: string };
  gw_workers: number | 'default';
}

interface LatencyTask {
  name: string;
  target: 'direct' | 'gw' | 'ref';
  path: string;
  /** Direct task this one is compared with. */
  vs?: string;
  check: (status: number, body: Buffer) => string | null;
  /** Issues the request(s) once and reads the body(ies). */
  run?: () => Promise<void>;
}

/** Worker scaling is measured only with at least this many cores (see run()). */
const WORKER_SCALING_MIN_CORES = 4;

const ok = (status: number): string | null => (status === 200 ? null : `status ${status}`);
const bytes = (n: number, fill: number) => (status: number, body: Buffer) =>
  ok(status) ?? (body.length !== n ? `${body.length} bytes, want ${n}` : body[0] !== fill ? 'unexpected body' : null);
const jsonHas = (...keys: string[]) => (status: number, body: Buffer) => {
  const s = ok(status);
  if (s) return s;
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    return `not JSON: ${body.toString('utf8').slice(0, 80)}`;
  }
  const missing = keys.filter((k) => !(k in v));
  return missing.length ? `missing keys ${missing.join(', ')} in ${JSON.stringify(v).slice(0, 120)}` : null;
};

/** Also used by the peers phase (bench/suites/peers.ts): `bench-delegate`, registered from a `.mjs` file. */
export const DELEGATE_PLUGIN = `// Written by bench/suites/e2e.ts: a client plugin that only delegates.
export const ClientRegisterer = {
  name: 'bench-delegate',
  registerClients(register) {
    register('bench-delegate', () => (req, next) => next());
  },
};
`;

const HIJACK_PLUGIN = `// Written by bench/suites/e2e.ts: a client plugin that answers itself (no backend call).
const body = JSON.stringify({ hijacked: true, id: 42, name: 'answered by the plugin' });
export const ClientRegisterer = {
  name: 'bench-hijack',
  registerClients(register) {
    register('bench-hijack', () => () => ({ status: 200, headers: { 'content-type': 'application/json' }, body }));
  },
};
`;

function gwConfig(port: number, backend: string, pluginDir: string): Record<string, unknown> {
  const plugin = (name: string) => ({ 'plugin/http-client': { name } });
  return {
    version: 3,
    name: 'gw bench',
    port,
    listen_ip: HOST,
    timeout: '5s',
    max_shutdown_wait_time: '1s',
    host: [backend],
    plugin: { folder: pluginDir, pattern: '.mjs' },
    // The access log's cost is the peers phase's gw-log row; here gw is compared with proxies that do not log.
    extra_config: { 'telemetry/logging': { level: 'ERROR' }, router: { disable_access_log: true } },
    endpoints: [
      { endpoint: '/noop/1k', output_encoding: 'no-op', backend: [{ url_pattern: '/1k', encoding: 'no-op' }] },
      { endpoint: '/noop/64k', output_encoding: 'no-op', backend: [{ url_pattern: '/64k', encoding: 'no-op' }] },
      { endpoint: '/json', backend: [{ url_pattern: '/json' }] },
      {
        endpoint: '/plugin/delegate/noop',
        output_encoding: 'no-op',
        backend: [{ url_pattern: '/1k', encoding: 'no-op', extra_config: plugin('bench-delegate') }],
      },
      { endpoint: '/plugin/delegate/json', backend: [{ url_pattern: '/json', extra_config: plugin('bench-delegate') }] },
      { endpoint: '/plugin/hijack', backend: [{ url_pattern: '/json', extra_config: plugin('bench-hijack') }] },
      {
        endpoint: '/merge',
        backend: [
          { url_pattern: '/json', group: 'a' },
          { url_pattern: '/json', group: 'b' },
          { url_pattern: '/json', group: 'c' },
        ],
      },
    ],
  };
}

/** A free TCP port on 127.0.0.1 (closed again before it is returned: the caller binds it next). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function get(d: Dispatcher, p: string): Promise<{ status: number; body: Buffer }> {
  const r = await d.request({ path: p, method: 'GET' });
  return { status: r.statusCode, body: Buffer.from(await r.body.arrayBuffer()) };
}

export class E2E {
  private tmp: string | null = null;
  private children: Child[] = [];
  private dispatchers: Dispatcher[] = [];

  constructor(private readonly opts: E2EOptions) {}

  /** Stops everything this suite started; safe to call twice. */
  async close(): Promise<void> {
    const ds = this.dispatchers;
    this.dispatchers = [];
    await Promise.allSettled(ds.map((d) => d.destroy()));
    const cs = this.children;
    this.children = [];
    await Promise.allSettled(cs.map((c) => c.stop()));
    if (this.tmp !== null) {
      fs.rmSync(this.tmp, { recursive: true, force: true });
      this.tmp = null;
    }
  }

  private checkAbort(): void {
    if (this.opts.signal.aborted) throw new Error('interrupted');
  }

  async run(): Promise<E2EResult> {
    const { root, log } = this.opts;
    const gwBin = path.join(root, 'dist', 'cli', 'gw.js');
    if (!fs.existsSync(gwBin)) throw new Error(`${gwBin} not found: run \`npm run build\` first`);

    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-bench-'));
    this.tmp = tmp;
    process.once('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
    const pluginDir = path.join(this.tmp, 'plugins');
    fs.mkdirSync(pluginDir);
    fs.writeFileSync(path.join(pluginDir, 'bench-delegate.mjs'), DELEGATE_PLUGIN);
    fs.writeFileSync(path.join(pluginDir, 'bench-hijack.mjs'), HIJACK_PLUGIN);

    log('  starting the loopback backend');
    const be = await startChild('backend', {
      args: ['--import', 'tsx', path.join(root, 'bench', 'backend.ts')],
      cwd: root,
      readyLine: /^LISTENING (\d+)/,
    });
    this.children.push(be.child);
    const backend = `http://${HOST}:${be.match![1]}`;

    log('  starting gw (node dist/cli/gw.js run)');
    const gwPort = await freePort();
    const cfgFile = path.join(this.tmp, 'gw-bench.json');
    fs.writeFileSync(cfgFile, JSON.stringify(gwConfig(gwPort, backend, pluginDir), null, 2));
    const gw = await startChild('gw', {
      args: [gwBin, 'run', '-c', cfgFile, '--log-level', 'ERROR', ...(this.opts.gwWorkers > 0 ? ['--workers', String(this.opts.gwWorkers)] : [])],
      cwd: root,
      readyHttp: { port: gwPort, path: '/__health' },
    });
    this.children.push(gw.child);

    log('  starting the reference proxy (bench/reference-proxy.ts)');
    const ref = await startChild('reference proxy', {
      args: ['--import', 'tsx', path.join(root, 'bench', 'reference-proxy.ts'), '--target', backend],
      cwd: root,
      readyLine: /^LISTENING (\d+)/,
    });
    this.children.push(ref.child);
    this.checkAbort();

    const clientOpts = { pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000 };
    const origins = { direct: backend, gw: `http://${HOST}:${gwPort}`, ref: `http://${HOST}:${ref.match![1]}` };
    const clients = {
      direct: new Client(origins.direct, clientOpts),
      gw: new Client(origins.gw, clientOpts),
      ref: new Client(origins.ref, clientOpts),
    };
    const direct3 = new Pool(origins.direct, { ...clientOpts, connections: 3 });
    this.dispatchers.push(clients.direct, clients.gw, clients.ref, direct3);

    const tasks: LatencyTask[] = [
      { name: 'direct 1 KB', target: 'direct', path: '/1k', check: bytes(1024, BODY_1K[0]!) },
      { name: 'direct 64 KB', target: 'direct', path: '/64k', check: bytes(65536, BODY_64K[0]!) },
      { name: 'direct json', target: 'direct', path: '/json', check: jsonHas(...Object.keys(JSON_OBJECT)) },
      {
        name: 'direct json ×3 parallel',
        target: 'direct',
        path: '/json',
        check: jsonHas('id'),
        run: async () => {
          await Promise.all([0, 1, 2].map(() => readOnce(direct3, '/json')));
        },
      },
      { name: 'gw no-op 1 KB', target: 'gw', path: '/noop/1k', vs: 'direct 1 KB', check: bytes(1024, BODY_1K[0]!) },
      { name: 'gw no-op 64 KB', target: 'gw', path: '/noop/64k', vs: 'direct 64 KB', check: bytes(65536, BODY_64K[0]!) },
      { name: 'gw json', target: 'gw', path: '/json', vs: 'direct json', check: jsonHas(...Object.keys(JSON_OBJECT)) },
      {
        name: 'gw plugin delegate no-op 1 KB',
        target: 'gw',
        path: '/plugin/delegate/noop',
        vs: 'direct 1 KB',
        check: bytes(1024, BODY_1K[0]!),
      },
      { name: 'gw plugin delegate json', target: 'gw', path: '/plugin/delegate/json', vs: 'direct json', check: jsonHas('id', 'name') },
      { name: 'gw plugin hijack json', target: 'gw', path: '/plugin/hijack', vs: 'direct json', check: jsonHas('hijacked') },
      { name: 'gw merge 3 backends', target: 'gw', path: '/merge', vs: 'direct json ×3 parallel', check: jsonHas('a', 'b', 'c') },
      { name: 'ref no-op 1 KB', target: 'ref', path: '/1k', vs: 'direct 1 KB', check: bytes(1024, BODY_1K[0]!) },
    ];

    // Pre-flight: every route answers what it should (a broken config must not be benchmarked).
    for (const t of tasks) {
      const r = await get(clients[t.target], t.path);
      const problem = t.check(r.status, r.body);
      if (problem !== null) {
        const extra = t.target === 'gw' ? `\n--- gw output\n${gw.child.output()}` : '';
        throw new Error(`pre-flight ${t.name} (GET ${origins[t.target]}${t.path}): ${problem}${extra}`);
      }
    }

    // ---------------------------------------------------------------- latency
    const runOnce = (t: LatencyTask) => t.run ?? (() => readOnce(clients[t.target], t.path));
    for (const t of tasks) {
      // Bounded warm-up: a fixed duration per task.
      const fn = runOnce(t);
      const until = performance.now() + this.opts.warmupMs;
      while (performance.now() < until) await fn();
      this.checkAbort();
    }
    log(`  e2e warm-up done (${this.opts.warmupMs} ms per task)`);
    const samples = new Map<string, number[]>(tasks.map((t) => [t.name, []]));
    const { rounds } = this.opts;
    const perRound = Math.max(50, Math.round(this.opts.latencyMs / rounds));
    for (let round = 1; round <= rounds; round++) {
      this.checkAbort();
      const bench = new Bench({
        name: `e2e round ${round}`,
        time: perRound,
        warmupTime: Math.min(100, perRound / 4),
        warmupIterations: 16,
        iterations: 32,
        retainSamples: true,
        throws: true,
        signal: this.opts.signal,
      });
      for (const t of tasks) bench.add(t.name, runOnce(t), { async: true });
      let i = 0;
      bench.addEventListener('cycle', (e) => {
        const r = e.task!.result;
        const p50 = 'latency' in r ? r.latency.p50 * 1e3 : NaN;
        log(`  e2e latency round ${round}/${rounds} ${++i}/${tasks.length} ${e.task!.name}: p50 ${p50.toFixed(1)} µs`);
      });
      await bench.run();
      for (const task of bench.tasks) {
        const r = task.result;
        if (!('latency' in r) || r.latency.samples === undefined) {
          throw new Error(`e2e task ${task.name}: ${r.state}${'error' in r ? `: ${r.error.message}` : ''}`);
        }
        const into = samples.get(task.name)!;
        for (const v of r.latency.samples) into.push(v * 1e3); // ms → µs
      }
    }
    this.checkAbort();

    const latency: LatencyRow[] = tasks.map((t) => {
      const s = summarise(samples.get(t.name)!);
      return {
        name: t.name,
        target: t.target,
        path: t.path,
        samples: s.samples,
        mean_us: sig(s.mean),
        p50_us: sig(s.p50),
        p99_us: sig(s.p99),
        ops_per_s: Math.round(1e6 / s.mean),
      };
    });
    const byName = new Map(latency.map((l) => [l.name, l]));
    const overhead: OverheadRow[] = tasks
      .filter((t) => t.vs !== undefined)
      .map((t) => {
        const a = byName.get(t.name)!;
        const b = byName.get(t.vs!)!;
        return {
          name: t.name,
          vs: t.vs!,
          p50_us: sig(a.p50_us - b.p50_us),
          p50_x: sig(a.p50_us / b.p50_us, 3),
          p99_us: sig(a.p99_us - b.p99_us),
          p99_x: sig(a.p99_us / b.p99_us, 3),
          mean_us: sig(a.mean_us - b.mean_us),
          mean_x: sig(a.mean_us / b.mean_us, 3),
        };
      });
    const ov = new Map(overhead.map((o) => [o.name, o]));
    const delegation: DelegationRow[] = [
      ['gw plugin delegate no-op 1 KB', 'gw no-op 1 KB'],
      ['gw plugin delegate json', 'gw json'],
      ['gw plugin hijack json', 'gw json'],
    ].map(([name, vs]) => {
      const extra = byName.get(name!)!.p50_us - byName.get(vs!)!.p50_us;
      return { name: name!, vs: vs!, extra_p50_us: sig(extra), pct_of_gw_overhead: sig((100 * extra) / ov.get(vs!)!.p50_us, 3) };
    });

    // ---------------------------------------------------------------- throughput
    const all: Record<string, { target: 'direct' | 'gw' | 'ref'; path: string; child: Child }> = {
      'direct 1 KB': { target: 'direct', path: '/1k', child: be.child },
      'gw no-op 1 KB': { target: 'gw', path: '/noop/1k', child: gw.child },
      'ref no-op 1 KB': { target: 'ref', path: '/1k', child: ref.child },
      'gw json': { target: 'gw', path: '/json', child: gw.child },
      'gw plugin delegate no-op 1 KB': { target: 'gw', path: '/plugin/delegate/noop', child: gw.child },
    };
    const throughput: ThroughputRow[] = [];
    for (const name of this.opts.throughputTargets) {
      this.checkAbort();
      const spec = all[name];
      if (!spec) throw new Error(`unknown throughput target ${name}`);
      const pool = new Pool(origins[spec.target], { ...clientOpts, connections: this.opts.concurrency });
      this.dispatchers.push(pool);
      const row = await this.load(name, spec.target, pool, spec.path, spec.child, be.child);
      throughput.push(row);
      this.dispatchers.splice(this.dispatchers.indexOf(pool), 1);
      await pool.destroy();
      log(
        `  e2e throughput ${name}: ${row.rps.toFixed(0)} req/s, ` +
          `${spec.target === 'direct' ? 'backend' : spec.target} CPU ${row.cpu_us_per_req?.toFixed(1) ?? '?'} µs/req`,
      );
    }
    // Worker scaling: the same no-op load against a second gw started with one worker per core.
    // Only with ≥ 4 cores: below that, the load generator and the backend need the cores the
    // extra workers would use, and the ratio says more about the scheduler than about gw.
    let workerScaling: { workers: number; rps_ratio: number } | null = null;
    let workerScalingNote: string | null = null;
    const cores = os.availableParallelism();
    const one = throughput.find((r) => r.name === 'gw no-op 1 KB');
    if (one && this.opts.gwWorkers === 1 && cores < WORKER_SCALING_MIN_CORES) {
      workerScalingNote =
        `worker scaling: not measurable here (${cores} core${cores === 1 ? '' : 's'}: the load generator and the backend need ` +
        `the cores the extra workers would use; needs ≥ ${WORKER_SCALING_MIN_CORES} cores)`;
      log(`  ${workerScalingNote}`);
    } else if (one && this.opts.gwWorkers === 1) {
      this.checkAbort();
      log(`  starting gw with --workers ${cores} for the scaling row`);
      const port2 = await freePort();
      const cfg2 = path.join(this.tmp!, 'gw-bench-workers.json');
      fs.writeFileSync(cfg2, JSON.stringify(gwConfig(port2, backend, pluginDir), null, 2));
      const gwN = await startChild(`gw --workers ${cores}`, {
        args: [gwBin, 'run', '-c', cfg2, '--log-level', 'ERROR', '--workers', String(cores)],
        cwd: root,
        readyHttp: { port: port2, path: '/__health' },
      });
      this.children.push(gwN.child);
      const pool = new Pool(`http://${HOST}:${port2}`, { ...clientOpts, connections: this.opts.concurrency });
      this.dispatchers.push(pool);
      const row = await this.load(`gw no-op 1 KB, ${cores} workers`, 'gw', pool, '/noop/1k', gwN.child, be.child);
      throughput.push(row);
      this.dispatchers.splice(this.dispatchers.indexOf(pool), 1);
      await pool.destroy();
      await gwN.child.stop();
      workerScaling = { workers: cores, rps_ratio: sig(row.rps / one.rps, 3) };
      log(`  e2e throughput ${row.name}: ${row.rps.toFixed(0)} req/s (${workerScaling.rps_ratio}× one worker)`);
    }
    const tg = throughput.find((r) => r.name === 'gw no-op 1 KB')?.cpu_us_per_req;
    const tr = throughput.find((r) => r.name === 'ref no-op 1 KB')?.cpu_us_per_req;
    const cpuRatio = tg != null && tr != null && tr > 0 ? sig(tg / tr, 3) : null;

    return {
      latency,
      overhead,
      delegation,
      throughput,
      cpu_ratio_gw_ref: cpuRatio,
      worker_scaling: workerScaling,
      worker_scaling_note: workerScalingNote,
      processes: { gw: `node ${path.relative(root, gwBin)} run`, reference: 'bench/reference-proxy.ts', backend: 'bench/backend.ts' },
      gw_workers: this.opts.gwWorkers > 0 ? this.opts.gwWorkers : 'default',
    };
  }

  /** `concurrency` workers loop for warm + measured time; CPU and counts are read at the edges of the measured window. */
  private async load(
    name: string,
    target: 'direct' | 'gw' | 'ref',
    pool: Pool,
    p: string,
    child: Child,
    backend: Child,
  ): Promise<ThroughputRow> {
    const { concurrency, throughputWarmMs, throughputMs } = this.opts;
    let stop = false;
    let done = 0;
    let errors = 0;
    let firstError: Error | null = null;
    const worker = async () => {
      while (!stop) {
        try {
          const r = await pool.request({ path: p, method: 'GET' });
          await r.body.arrayBuffer();
          if (r.statusCode === 200) done++;
          else errors++;
        } catch (err) {
          errors++;
          firstError ??= err as Error;
          if (errors > 100) stop = true;
        }
      }
    };
    const workers = Array.from({ length: concurrency }, worker);
    const hz = clockTicks();
    try {
      await sleep(throughputWarmMs);
      const c0 = done;
      const e0 = errors;
      const k0 = cpuTicks(child.pid);
      const b0 = cpuTicks(backend.pid);
      const own0 = process.cpuUsage();
      const t0 = performance.now();
      await sleep(throughputMs);
      const c1 = done;
      const e1 = errors;
      const k1 = cpuTicks(child.pid);
      const b1 = cpuTicks(backend.pid);
      const own = process.cpuUsage(own0);
      const t1 = performance.now();
      const rss = rssKiB(child.pid);
      stop = true;
      await Promise.all(workers);
      if (firstError !== null && errors > 100) throw new Error(`throughput ${name}: ${errors} errors, first: ${(firstError as Error).message}`);
      const n = c1 - c0;
      const perReq = (t: number | null, u: number | null) => (t === null || u === null || n === 0 ? null : sig(((u - t) * 1e6) / hz / n, 4));
      return {
        name,
        target,
        concurrency,
        seconds: sig((t1 - t0) / 1e3, 4),
        requests: n,
        errors: e1 - e0,
        rps: sig((n * 1e3) / (t1 - t0), 5),
        cpu_us_per_req: perReq(k0, k1),
        backend_cpu_us_per_req: target === 'direct' ? null : perReq(b0, b1),
        loadgen_cpu_us_per_req: n ? sig((own.user + own.system) / n, 4) : 0,
        rss_kib: rss,
      };
    } finally {
      stop = true;
      await Promise.allSettled(workers);
    }
  }
}

async function readOnce(d: Dispatcher, p: string): Promise<void> {
  const r = await d.request({ path: p, method: 'GET' });
  await r.body.arrayBuffer();
  if (r.statusCode !== 200) throw new Error(`GET ${p}: status ${r.statusCode}`);
}
