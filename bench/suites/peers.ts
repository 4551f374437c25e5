/**
 * Peers phase: gw next to nginx and the uWS+undici prototype, modelled on the perf lab
 * (shared/perf-lab: run.sh, backend.js, peers/). Runs when `nginx` and `wrk` are on PATH.
 *
 *  - origin: bench/peers/origin.cjs (uWS, /json and /json2 1 KiB JSON, /big 64 KiB);
 *  - nginx: one worker, upstream keep-alive, proxy_http_version 1.1, access_log off (the lab's
 *    nginx.conf, generated into a temporary folder with the pid and temp paths);
 *  - proto: bench/peers/uws-undici-proto.cjs, the lab's ~100-line prototype on gw's own stack (a
 *    reference floor, not product code);
 *  - gw: `node dist/cli/gw.js run --workers 1`: /json and /big no-op, /agg (/json + /json2, group
 *    a/b), /json-plugin (/json no-op through the delegating client plugin `bench-delegate`),
 *    /dec (/json through a decoding endpoint) and /dec-mod (the same with one request and one
 *    response modifier at endpoint level that only set a header);
 *  - gw-srv: a second gw, the same config plus one service-level server plugin that only
 *    delegates (`return next(req)`), so every request goes through the plugin chain;
 *  - gw-log: a third gw, the same config with KrakenD's access log on (its default; the other gw
 *    peers turn it off with `router.disable_access_log`, as nginx runs with `access_log off`):
 *    one gin line per request to a stdout pipe read by the bench;
 *  - gw-otel: a fourth gw with telemetry/opentelemetry metrics on (a Prometheus exporter; every
 *    layer: global, proxy, backend stage and round trip; not scraped during the window);
 *  - gw-trace: a fifth gw with traces on (every request sampled: global, proxy and backend spans
 *    exported over OTLP/HTTP to a collector in this process that reads and drops them).
 *
 * Each row: wrk -t1 -c<connections> for a warm-up, then for the measured window with --latency.
 * wrk and the origin are pinned to one CPU and the proxy (its whole process tree) to another with
 * taskset when there are ≥ 2 cores. The figure that holds on a noisy machine is the proxy's CPU
 * per request: utime+stime of its process tree over the window ÷ the requests wrk counted. Repeats
 * run every row in turn (rotated), and the summary gives medians over repeats; ratios are the
 * median of the per-repeat ratios.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { clockTicks, cpuTicks, HOST, runTool, startChild, type Child } from '../lib/procs.js';
import { sig } from '../lib/stats.js';
import { DELEGATE_PLUGIN, freePort } from './e2e.js';

export interface PeersOptions {
  root: string;
  repeats: number;
  /** Measured seconds per row and repeat. */
  durationS: number;
  /** wrk warm-up seconds before every measured window. */
  warmupS: number;
  /** wrk -c. */
  connections: number;
  log: (line: string) => void;
  signal: AbortSignal;
}

export type PeerName = 'nginx' | 'proto' | 'gw' | 'gw-srv' | 'gw-log' | 'gw-otel' | 'gw-trace';

/** The gw peers: the same config, plus a delegating server plugin (srv) or the access log (log). */
type GwVariant = 'plain' | 'srv' | 'log' | 'otel' | 'trace';

export interface PeerRun {
  repeat: number;
  requests: number;
  /** Non-2xx answers and socket errors wrk reported. */
  errors: number;
  seconds: number;
  rps: number;
  p50_us: number;
  p99_us: number;
  /** CPU of the proxy's process tree over the window ÷ requests, µs. */
  cpu_us_per_req: number | null;
  /** The origin's, for scale. */
  origin_cpu_us_per_req: number | null;
}

export interface PeerRow {
  name: string;
  peer: PeerName;
  path: string;
  /** Medians over repeats. */
  cpu_us_per_req: number | null;
  rps: number;
  p99_us: number;
  errors: number;
  /** Median over repeats of (this row's CPU/req ÷ the named row's), or null. */
  x_nginx: { vs: string; value: number } | null;
  x_proto: { vs: string; value: number } | null;
  runs: PeerRun[];
}

export interface PeerTarget {
  row: string;
  vs: string;
  limit: number;
  /** Median over repeats of the per-repeat CPU/req ratio. */
  ratio: number | null;
  pass: boolean | null;
  label: string;
}

export interface PeersResult {
  skipped: null;
  repeats: number;
  duration_s: number;
  warmup_s: number;
  connections: number;
  /** e.g. "wrk + origin on cpu0, proxy on cpu1 (taskset)" or why it is unpinned. */
  pinning: string;
  pinned: boolean;
  tools: { nginx: string; wrk: string };
  rows: PeerRow[];
  targets: PeerTarget[];
  /** Min–max CPU µs/req over repeats, for the rows whose stability matters most. */
  spread: { row: string; min: number | null; max: number | null }[];
}

export interface PeersSkipped {
  skipped: string;
}

export type PeersOutcome = PeersResult | PeersSkipped;

/** How to get the tools, for the skip line. */
export const PEERS_INSTALL_HINT = 'apt-get install nginx wrk, or ../shared/perf-lab/setup.sh';

/** The first executable `cmd` on PATH, or null. */
export function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const f = path.join(dir, cmd);
    try {
      fs.accessSync(f, fs.constants.X_OK);
      if (fs.statSync(f).isFile()) return f;
    } catch {
      /* not here */
    }
  }
  return null;
}

/** Null when the phase can run, else the skip line. */
export function peersSkipReason(): string | null {
  const missing = ['nginx', 'wrk'].filter((c) => which(c) === null);
  if (!missing.length) return null;
  return `peers phase skipped: ${missing.join(' and ')} not found on PATH (to get ${missing.length > 1 ? 'them' : 'it'}: ${PEERS_INSTALL_HINT})`;
}

interface RowSpec {
  peer: PeerName;
  /** The request path on the peer. */
  path: string;
  /** The row's name: `<peer> <path>`. */
  name: string;
  nginxVs: string | null;
  protoVs: string | null;
  check: (status: number, body: Buffer, headers: http.IncomingHttpHeaders) => string | null;
}

const size = (n: number) => (status: number, body: Buffer) =>
  status !== 200 ? `status ${status}` : body.length !== n ? `${body.length} bytes, want ${n}` : null;
const merged = (status: number, body: Buffer) => {
  if (status !== 200) return `status ${status}`;
  try {
    const v = JSON.parse(body.toString('utf8')) as Record<string, { service?: string }>;
    return v.a?.service === 'catalog-1' && v.b?.service === 'catalog-2' ? null : `not /json + /json2 as a/b: ${body.toString('utf8').slice(0, 120)}`;
  } catch {
    return `not JSON: ${body.toString('utf8').slice(0, 80)}`;
  }
};

/** /json decoded and re-encoded by gw (Go key order); `mod` also wants the modifiers' header. */
const decoded = (mod: boolean) => (status: number, body: Buffer, headers: http.IncomingHttpHeaders) => {
  if (status !== 200) return `status ${status}`;
  try {
    const v = JSON.parse(body.toString('utf8')) as { service?: string; count?: number };
    if (v.service !== 'catalog-1' || v.count !== 9) return `not /json decoded: ${body.toString('utf8').slice(0, 120)}`;
  } catch {
    return `not JSON: ${body.toString('utf8').slice(0, 80)}`;
  }
  // The response modifier copies the header the request modifier set: both ran.
  const seen = headers['x-bench-seen'];
  if (mod && seen !== '1') return `X-Bench-Seen ${JSON.stringify(seen)}, want "1" (the request and response modifiers did not both run)`;
  if (!mod && seen !== undefined) return 'X-Bench-Seen on the endpoint without modifiers';
  return null;
};

const ALL_ROWS: RowSpec[] = [
  { peer: 'nginx', path: '/json', name: 'nginx /json', nginxVs: null, protoVs: null, check: size(1024) },
  { peer: 'nginx', path: '/big', name: 'nginx /big', nginxVs: null, protoVs: null, check: size(65536) },
  { peer: 'proto', path: '/json', name: 'proto /json', nginxVs: 'nginx /json', protoVs: null, check: size(1024) },
  { peer: 'proto', path: '/big', name: 'proto /big', nginxVs: 'nginx /big', protoVs: null, check: size(65536) },
  { peer: 'proto', path: '/agg', name: 'proto /agg', nginxVs: 'nginx /json', protoVs: null, check: merged },
  { peer: 'gw', path: '/json', name: 'gw /json', nginxVs: 'nginx /json', protoVs: 'proto /json', check: size(1024) },
  { peer: 'gw', path: '/big', name: 'gw /big', nginxVs: 'nginx /big', protoVs: 'proto /big', check: size(65536) },
  { peer: 'gw', path: '/agg', name: 'gw /agg', nginxVs: 'nginx /json', protoVs: 'proto /agg', check: merged },
  { peer: 'gw', path: '/json-plugin', name: 'gw /json-plugin', nginxVs: 'nginx /json', protoVs: 'proto /json', check: size(1024) },
  { peer: 'gw-srv', path: '/json', name: 'gw-srv /json', nginxVs: 'nginx /json', protoVs: 'proto /json', check: size(1024) },
  { peer: 'gw-log', path: '/json', name: 'gw-log /json', nginxVs: 'nginx /json', protoVs: 'proto /json', check: size(1024) },
  { peer: 'gw-otel', path: '/json', name: 'gw-otel /json', nginxVs: 'nginx /json', protoVs: 'proto /json', check: size(1024) },
  { peer: 'gw-trace', path: '/json', name: 'gw-trace /json', nginxVs: 'nginx /json', protoVs: 'proto /json', check: size(1024) },
  { peer: 'gw', path: '/dec', name: 'gw /dec', nginxVs: 'nginx /json', protoVs: null, check: decoded(false) },
  { peer: 'gw', path: '/dec-mod', name: 'gw /dec-mod', nginxVs: 'nginx /json', protoVs: null, check: decoded(true) },
  { peer: 'gw', path: '/json-limited', name: 'gw /json-limited', nginxVs: 'nginx /json', protoVs: 'proto /json', check: size(1024) },
  { peer: 'gw', path: '/json-redis', name: 'gw /json-redis', nginxVs: 'nginx /json', protoVs: 'proto /json', check: size(1024) },
];
/** The Redis row needs a redis-server (started by the phase when it is on PATH). */
const REDIS_ROWS = new Set(['gw /json-redis']);

const ALL_TARGETS: { row: string; vs: string; limit: number; label: string }[] = [
  { row: 'gw /json', vs: 'proto /json', limit: 1.25, label: 'gw /json ≤ 1.25× proto /json' },
  { row: 'gw /big', vs: 'proto /big', limit: 1.15, label: 'gw /big ≤ 1.15× proto /big' },
  { row: 'gw /agg', vs: 'proto /agg', limit: 1.3, label: 'gw /agg ≤ 1.30× proto /agg' },
  { row: 'gw /json-plugin', vs: 'gw /json', limit: 1.05, label: 'gw /json-plugin ≤ 1.05× gw /json (a delegating plugin adds ≤ 5 % CPU per request)' },
  {
    row: 'gw-srv /json',
    vs: 'gw /json',
    limit: 1.05,
    label: 'gw-srv /json ≤ 1.05× gw /json (one delegating server plugin adds ≤ 5 % CPU per request)',
  },
  {
    row: 'gw-log /json',
    vs: 'gw /json',
    limit: 1.05,
    label: 'gw-log /json ≤ 1.05× gw /json (the gin access log, one line per request to a pipe, adds ≤ 5 % CPU per request)',
  },
  {
    row: 'gw-otel /json',
    vs: 'gw /json',
    limit: 1.1,
    label: 'gw-otel /json ≤ 1.10× gw /json (OpenTelemetry metrics on every layer add ≤ 10 % CPU per request)',
  },
  {
    row: 'gw /dec-mod',
    vs: 'gw /dec',
    limit: 1.05,
    label: 'gw /dec-mod ≤ 1.05× gw /dec (a request + a response modifier add ≤ 5 % CPU per request)',
  },
  {
    row: 'gw /json-limited',
    vs: 'gw /json',
    limit: 1.03,
    label: 'gw /json-limited ≤ 1.03× gw /json (a router rate limit, shared + per client IP, adds ≤ 3 % CPU per request)',
  },
  {
    row: 'gw /json-redis',
    vs: 'gw /json',
    limit: 1.1,
    label: 'gw /json-redis ≤ 1.10× gw /json (the same limit in Redis: one Lua call per lease of tokens)',
  },
];

/** Written into the plugin folder: a server plugin whose handler only delegates. */
const SERVER_DELEGATE_PLUGIN = `// Written by bench/suites/peers.ts: a server plugin that only delegates.
export const HandlerRegisterer = {
  name: 'bench-server-delegate',
  registerHandlers(register) {
    register('bench-server-delegate', (ctx, extra, next) => (req) => next(req));
  },
};
`;

/**
 * Written into the plugin folder: a request modifier that sets one header and a response modifier
 * that copies it onto the answer (so the pre-flight can tell both ran). Nothing else changes.
 */
const MODIFIERS_PLUGIN = `// Written by bench/suites/peers.ts: modifiers that only set a header.
export const ModifierRegisterer = {
  name: 'bench-modifiers',
  registerModifiers(register) {
    register('bench-request-header', () => (req) => {
      req.headers['X-Bench'] = ['1'];
    }, true, false);
    register('bench-response-header', () => (resp) => {
      resp.headers['X-Bench-Seen'] = resp.request?.headers['X-Bench'] ?? ['0'];
    }, false, true);
  },
};
`;

const SPREAD_ROWS = ['gw /big', 'proto /big'];

function nginxConf(port: number, originPort: number): string {
  // The perf lab's peers/nginx.conf with the ports filled in; relative paths are under `-p <dir>/`.
  return `# Written by bench/suites/peers.ts (the perf lab's peers/nginx.conf). One worker = one core.
worker_processes 1;
daemon off;
master_process on;
pid nginx.pid;
error_log stderr warn;

events {
  worker_connections 4096;
  multi_accept on;
}

http {
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  client_body_temp_path tmp/body;
  proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi;
  scgi_temp_path tmp/scgi;

  upstream origin {
    server ${HOST}:${originPort};
    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }

  server {
    listen ${HOST}:${port} backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # keep a 64 KiB body in memory (no temp files)
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      proxy_busy_buffers_size 32k;
    }
  }
}
`;
}

/** gw's config for one variant (see GwVariant). */
function gwConfig(port: number, origin: string, pluginDir: string, variant: GwVariant, redisPort = 0, promPort = 0, otlpPort = 0): Record<string, unknown> {
  // Never reached under the bench's load (~20 k req/s): the rows measure the check, not refusals.
  const limit = { max_rate: 1_000_000, client_max_rate: 50_000, strategy: 'ip' };
  return {
    version: 3,
    name: 'gw bench peers',
    port,
    listen_ip: HOST,
    timeout: '3s',
    max_shutdown_wait_time: '1s',
    host: [origin],
    plugin: { folder: pluginDir, pattern: '.mjs' },
    extra_config: {
      'telemetry/logging': { level: 'ERROR' },
      router: { disable_access_log: variant !== 'log' },
      ...(variant === 'otel' ? { 'telemetry/opentelemetry': { exporters: { prometheus: [{ name: 'bench', port: promPort, listen_ip: HOST }] } } } : {}),
      ...(variant === 'trace'
        ? { 'telemetry/opentelemetry': { exporters: { otlp: [{ name: 'bench', use_http: true, host: HOST, port: otlpPort, disable_metrics: true }] } } }
        : {}),
      ...(variant === 'srv' ? { 'plugin/http-server': { name: ['bench-server-delegate'] } } : {}),
      ...(redisPort > 0 ? { redis: { connection_pools: [{ name: 'bench', address: `${HOST}:${redisPort}` }] } } : {}),
    },
    endpoints: [
      { endpoint: '/json', output_encoding: 'no-op', backend: [{ url_pattern: '/json', encoding: 'no-op' }] },
      { endpoint: '/big', output_encoding: 'no-op', backend: [{ url_pattern: '/big', encoding: 'no-op' }] },
      {
        endpoint: '/agg',
        backend: [
          { url_pattern: '/json', group: 'a' },
          { url_pattern: '/json2', group: 'b' },
        ],
      },
      {
        endpoint: '/json-plugin',
        output_encoding: 'no-op',
        backend: [{ url_pattern: '/json', encoding: 'no-op', extra_config: { 'plugin/http-client': { name: 'bench-delegate' } } }],
      },
      // The modifier rows: one decoding backend (the modifiers work on the decoded data), with and
      // without an endpoint-level request + response modifier.
      { endpoint: '/dec', backend: [{ url_pattern: '/json' }] },
      // The rate-limit rows: /json with a router limit (local buckets), and the same limit in Redis.
      { endpoint: '/json-limited', output_encoding: 'no-op', extra_config: { 'qos/ratelimit/router': limit }, backend: [{ url_pattern: '/json', encoding: 'no-op' }] },
      ...(redisPort > 0
        ? [{
            endpoint: '/json-redis',
            output_encoding: 'no-op',
            extra_config: { 'qos/ratelimit/router/redis': { ...limit, connection_name: 'bench' } },
            backend: [{ url_pattern: '/json', encoding: 'no-op' }],
          }]
        : []),
      {
        endpoint: '/dec-mod',
        extra_config: { 'plugin/req-resp-modifier': { name: ['bench-request-header', 'bench-response-header'] } },
        backend: [{ url_pattern: '/json' }],
      },
    ],
  };
}

/** The CPUs to pin to: the first two this process may run on, when taskset exists and there are ≥ 2. */
function cpuLayout(): { load: string; proxy: string; taskset: string } | { reason: string } {
  const taskset = which('taskset');
  if (taskset === null) return { reason: 'taskset not found' };
  let allowed: number[] = [];
  try {
    const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    for (const part of m?.[1]?.split(',') ?? []) {
      const [a, b] = part.split('-').map(Number);
      for (let c = a!; c <= (b ?? a!); c++) allowed.push(c);
    }
  } catch {
    allowed = [];
  }
  if (allowed.length === 0) allowed = Array.from({ length: os.availableParallelism() }, (_, i) => i);
  if (allowed.length < 2) return { reason: `${allowed.length} core` };
  return { load: String(allowed[0]), proxy: String(allowed[1]), taskset };
}

function toolVersion(cmd: string, args: string[], re: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  const m = re.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`);
  return m?.[1] ?? '?';
}

/** A wrk duration ("812.00us", "1.23ms", "2.00s", "1.00m") in µs. */
function wrkTime(v: string, unit: string): number {
  const n = Number(v);
  return unit === 'us' ? n : unit === 'ms' ? n * 1e3 : unit === 's' ? n * 1e6 : unit === 'm' ? n * 6e7 : unit === 'h' ? n * 3.6e9 : NaN;
}

export function parseWrk(out: string): { requests: number; seconds: number; rps: number; p50_us: number; p99_us: number; errors: number } {
  const req = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /^\s*50(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\b/m.exec(out);
  const p99 = /^\s*99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\b/m.exec(out);
  if (!req || !rps || !p50 || !p99) throw new Error(`unexpected wrk output:\n${out.slice(-2000)}`);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = (non2xx ? Number(non2xx[1]) : 0) + (sock ? sock.slice(1).reduce((s, v) => s + Number(v), 0) : 0);
  return {
    requests: Number(req[1]),
    seconds: wrkTime(req[2]!, req[3]!) / 1e6,
    rps: Number(rps[1]),
    p50_us: wrkTime(p50[1]!, p50[2]!),
    p99_us: wrkTime(p99[1]!, p99[2]!),
    errors,
  };
}

function median(v: readonly number[]): number | null {
  if (!v.length) return null;
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** One GET over a fresh connection (Connection: close), the whole body read. */
function httpGet(port: number, p: string): Promise<{ status: number; body: Buffer; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const r = http.get({ host: HOST, port, path: p, agent: false, timeout: 5000 }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts), headers: res.headers }));
      res.on('error', reject);
    });
    r.on('error', reject);
    r.on('timeout', () => r.destroy(new Error('timeout')));
  });
}

export class Peers {
  private tmp: string | null = null;
  private children: Child[] = [];
  private collector: http.Server | null = null;

  constructor(private readonly opts: PeersOptions) {}

  /** Stops everything this phase started (proxies first, then the origin); safe to call twice. */
  async close(): Promise<void> {
    const cs = this.children.reverse();
    this.children = [];
    for (const c of cs) await c.stop();
    if (this.collector !== null) {
      this.collector.closeAllConnections();
      this.collector.close();
      this.collector = null;
    }
    if (this.tmp !== null) {
      fs.rmSync(this.tmp, { recursive: true, force: true });
      this.tmp = null;
    }
  }

  private checkAbort(): void {
    if (this.opts.signal.aborted) throw new Error('interrupted');
  }

  async run(): Promise<PeersResult> {
    const { root, log, repeats, durationS, warmupS, connections } = this.opts;
    const gwBin = path.join(root, 'dist', 'cli', 'gw.js');
    if (!fs.existsSync(gwBin)) throw new Error(`${gwBin} not found: run \`npm run build\` first`);
    const nginx = which('nginx');
    const wrk = which('wrk');
    if (nginx === null || wrk === null) throw new Error(peersSkipReason() ?? 'nginx or wrk not found');

    const layout = cpuLayout();
    const pinned = 'load' in layout;
    const pinning = pinned
      ? `wrk + origin pinned to cpu${layout.load}, the proxy to cpu${layout.proxy} (taskset)`
      : `unpinned (${layout.reason}): the proxy shares the CPU with wrk and the origin, so CPU per request is noisier`;
    const pin = (where: 'load' | 'proxy', command: string, args: string[]) =>
      pinned ? { command: layout.taskset, args: ['-c', layout[where], command, ...args] } : { command, args };
    log(`  ${pinning}`);

    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-bench-peers-'));
    this.tmp = tmp;
    process.once('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
    // nginx's worker runs as nobody when the bench runs as root: it must be able to reach its prefix.
    fs.chmodSync(tmp, 0o755);

    const peersDir = path.join(root, 'bench', 'peers');
    log('  starting the uWS origin (bench/peers/origin.cjs)');
    const origin = await startChild('peers origin', {
      ...pin('load', process.execPath, [path.join(peersDir, 'origin.cjs'), '0']),
      cwd: root,
      readyLine: /^LISTENING (\d+)/,
    });
    this.children.push(origin.child);
    const originPort = Number(origin.match![1]);
    const originUrl = `http://${HOST}:${originPort}`;
    this.checkAbort();

    log('  starting nginx (1 worker, upstream keep-alive)');
    const nginxDir = path.join(tmp, 'nginx');
    fs.mkdirSync(path.join(nginxDir, 'tmp'), { recursive: true });
    const nginxPort = await freePort();
    const nginxConfFile = path.join(nginxDir, 'nginx.conf');
    fs.writeFileSync(nginxConfFile, nginxConf(nginxPort, originPort));
    const ng = await startChild('nginx', {
      ...pin('proxy', nginx, ['-p', `${nginxDir}/`, '-e', 'stderr', '-c', nginxConfFile]),
      cwd: nginxDir,
      readyHttp: { port: nginxPort, path: '/json' },
      killTree: true,
    });
    this.children.push(ng.child);
    this.checkAbort();

    log('  starting the uWS+undici prototype (bench/peers/uws-undici-proto.cjs)');
    const protoPort = await freePort();
    const proto = await startChild('uws-undici-proto', {
      ...pin('proxy', process.execPath, [path.join(peersDir, 'uws-undici-proto.cjs'), String(protoPort)]),
      cwd: root,
      env: { ORIGIN: originUrl },
      readyHttp: { port: protoPort, path: '/json' },
    });
    this.children.push(proto.child);
    this.checkAbort();

    const redisServer = which('redis-server');
    let redisPort = 0;
    if (redisServer !== null) {
      redisPort = await freePort();
      log(`  starting redis-server on port ${redisPort} (the Redis rate-limit row)`);
      const rs = await startChild('redis-server', {
        ...pin('load', redisServer, ['--port', String(redisPort), '--bind', HOST, '--save', '', '--appendonly', 'no']),
        cwd: tmp,
        readyLine: /Ready to accept connections/,
      });
      this.children.push(rs.child);
    } else {
      log('  no redis-server on PATH: the Redis rate-limit row is skipped (apt-get install redis-server)');
    }
    const ROWS = ALL_ROWS.filter((r) => redisPort > 0 || !REDIS_ROWS.has(r.name));
    const TARGETS = ALL_TARGETS.filter((t) => redisPort > 0 || !REDIS_ROWS.has(t.row));

    log('  starting gw (node dist/cli/gw.js run --workers 1)');
    const pluginDir = path.join(tmp, 'plugins');
    fs.mkdirSync(pluginDir);
    fs.writeFileSync(path.join(pluginDir, 'bench-delegate.mjs'), DELEGATE_PLUGIN);
    fs.writeFileSync(path.join(pluginDir, 'bench-server-delegate.mjs'), SERVER_DELEGATE_PLUGIN);
    fs.writeFileSync(path.join(pluginDir, 'bench-modifiers.mjs'), MODIFIERS_PLUGIN);
    // The OTLP collector of gw-trace: reads each export and drops it.
    const collector = http.createServer((rq, res) => {
      rq.resume();
      rq.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    });
    await new Promise<void>((r) => collector.listen(0, HOST, r));
    this.collector = collector;
    const otlpPort = (collector.address() as { port: number }).port;
    const startGw = async (name: string, variant: GwVariant) => {
      const port = await freePort();
      const cfgFile = path.join(tmp, `${name}-peers.json`);
      const promPort = variant === 'otel' ? await freePort() : 0;
      fs.writeFileSync(cfgFile, JSON.stringify(gwConfig(port, originUrl, pluginDir, variant, redisPort, promPort, otlpPort), null, 2));
      const started = await startChild(name, {
        ...pin('proxy', process.execPath, [gwBin, 'run', '-c', cfgFile, '--workers', '1', '--log-level', 'ERROR']),
        cwd: root,
        readyHttp: { port, path: '/__health' },
      });
      this.children.push(started.child);
      this.checkAbort();
      return { child: started.child, port };
    };
    const gw = await startGw('gw', 'plain');
    log('  starting gw-srv (the same config with one delegating server plugin)');
    const gwSrv = await startGw('gw-srv', 'srv');
    log('  starting gw-log (the same config with the access log on)');
    const gwLog = await startGw('gw-log', 'log');
    log('  starting gw-otel (the same config with OpenTelemetry metrics and a Prometheus exporter)');
    const gwOtel = await startGw('gw-otel', 'otel');
    log('  starting gw-trace (the same config with OTLP traces, every request sampled)');
    const gwTrace = await startGw('gw-trace', 'trace');

    const peers: Record<PeerName, { child: Child; port: number }> = {
      nginx: { child: ng.child, port: nginxPort },
      proto: { child: proto.child, port: protoPort },
      gw,
      'gw-srv': gwSrv,
      'gw-log': gwLog,
      'gw-otel': gwOtel,
      'gw-trace': gwTrace,
    };

    // Pre-flight: every row answers what it should.
    for (const r of ROWS) {
      const p = peers[r.peer];
      let problem: string | null;
      try {
        const a = await httpGet(p.port, r.path);
        problem = r.check(a.status, a.body, a.headers);
      } catch (err) {
        problem = (err as Error).message;
      }
      if (problem !== null) throw new Error(`pre-flight ${r.name} (GET http://${HOST}:${p.port}${r.path}): ${problem}\n--- ${r.peer} output\n${p.child.output()}`);
    }

    const tools = {
      nginx: toolVersion(nginx, ['-v'], /nginx\/(\S+)/),
      wrk: toolVersion(wrk, ['-v'], /wrk (\S+)/),
    };
    const hz = clockTicks();
    const runs = new Map<string, PeerRun[]>(ROWS.map((r) => [r.name, []]));
    const wrkArgs = (url: string, seconds: number, latency: boolean) => [
      '-t1',
      `-c${connections}`,
      `-d${seconds}s`,
      ...(latency ? ['--latency'] : []),
      url,
    ];
    for (let rep = 1; rep <= repeats; rep++) {
      log(`  peers repeat ${rep}/${repeats}`);
      for (let i = 0; i < ROWS.length; i++) {
        // Rotated each repeat, as in the lab, so a slow moment does not always hit the same rows.
        const row = ROWS[(i + (rep - 1) * 3) % ROWS.length]!;
        this.checkAbort();
        const p = peers[row.peer];
        for (const c of [p.child, origin.child]) {
          if (c.hasExited()) throw new Error(`${c.name} exited during the peers phase\n${c.output()}`);
        }
        const url = `http://${HOST}:${p.port}${row.path}`;
        const w = pin('load', wrk, wrkArgs(url, warmupS, false));
        await runTool('wrk (warm-up)', w.command, w.args, { cwd: root, timeoutMs: (warmupS + 10) * 1000 });
        this.checkAbort();
        const m = pin('load', wrk, wrkArgs(url, durationS, true));
        const c0 = cpuTicks(p.child.pid);
        const o0 = cpuTicks(origin.child.pid);
        const out = await runTool('wrk', m.command, m.args, { cwd: root, timeoutMs: (durationS + 15) * 1000 });
        const c1 = cpuTicks(p.child.pid);
        const o1 = cpuTicks(origin.child.pid);
        this.checkAbort();
        if (out.code !== 0) throw new Error(`wrk ${url}: exit ${out.code ?? out.signal}\n${out.output.slice(-2000)}`);
        const w8 = parseWrk(out.output);
        const perReq = (a: number | null, b: number | null) =>
          a === null || b === null || w8.requests === 0 ? null : sig(((b - a) * 1e6) / hz / w8.requests, 4);
        const run: PeerRun = {
          repeat: rep,
          requests: w8.requests,
          errors: w8.errors,
          seconds: sig(w8.seconds, 4),
          rps: sig(w8.rps, 5),
          p50_us: sig(w8.p50_us, 4),
          p99_us: sig(w8.p99_us, 4),
          cpu_us_per_req: perReq(c0, c1),
          origin_cpu_us_per_req: perReq(o0, o1),
        };
        runs.get(row.name)!.push(run);
        log(
          `  ${row.name.padEnd(16)} ${run.rps.toFixed(0).padStart(7)} req/s  p99 ${(run.p99_us / 1000).toFixed(2).padStart(6)} ms  ` +
            `proxy CPU ${run.cpu_us_per_req?.toFixed(1) ?? '?'} µs/req${run.errors ? `  errors ${run.errors}` : ''}`,
        );
      }
    }

    // Per-repeat ratio of two rows' CPU per request, then the median over repeats.
    const ratio = (a: string, b: string): number | null => {
      const ra = runs.get(a)!;
      const rb = new Map(runs.get(b)!.map((r) => [r.repeat, r.cpu_us_per_req]));
      const per: number[] = [];
      for (const r of ra) {
        const vb = rb.get(r.repeat);
        if (r.cpu_us_per_req !== null && vb != null && vb > 0) per.push(r.cpu_us_per_req / vb);
      }
      const m = median(per);
      return m === null ? null : sig(m, 3);
    };
    const rows: PeerRow[] = ROWS.map((r) => {
      const rr = runs.get(r.name)!;
      const cpu = median(rr.flatMap((x) => (x.cpu_us_per_req === null ? [] : [x.cpu_us_per_req])));
      const xn = r.nginxVs ? ratio(r.name, r.nginxVs) : null;
      const xp = r.protoVs ? ratio(r.name, r.protoVs) : null;
      return {
        name: r.name,
        peer: r.peer,
        path: r.path,
        cpu_us_per_req: cpu === null ? null : sig(cpu, 4),
        rps: sig(median(rr.map((x) => x.rps))!, 5),
        p99_us: sig(median(rr.map((x) => x.p99_us))!, 4),
        errors: rr.reduce((s, x) => s + x.errors, 0),
        x_nginx: r.nginxVs && xn !== null ? { vs: r.nginxVs, value: xn } : null,
        x_proto: r.protoVs && xp !== null ? { vs: r.protoVs, value: xp } : null,
        runs: rr,
      };
    });
    const targets: PeerTarget[] = TARGETS.map((t) => {
      const v = ratio(t.row, t.vs);
      return { ...t, ratio: v, pass: v === null ? null : v <= t.limit };
    });
    const spread = SPREAD_ROWS.map((name) => {
      const v = runs.get(name)!.flatMap((x) => (x.cpu_us_per_req === null ? [] : [x.cpu_us_per_req]));
      return { row: name, min: v.length ? Math.min(...v) : null, max: v.length ? Math.max(...v) : null };
    });
    return {
      skipped: null,
      repeats,
      duration_s: durationS,
      warmup_s: warmupS,
      connections,
      pinning,
      pinned,
      tools,
      rows,
      targets,
      spread,
    };
  }
}
