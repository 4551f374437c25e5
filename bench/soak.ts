/**
 * Soak test (issue 6; not part of CI): gw (`--workers 2`) under bounded mixed traffic for N
 * minutes, watching the gateway process for growth in resident memory and open descriptors.
 *
 *   npm run build && node --import tsx bench/soak.ts [--minutes 10] [--rate 250] [--workers 2]
 *
 * Traffic (at most --rate requests per second, each kind capped in flight):
 *   json      GET /json          json endpoint, small JSON backend
 *   noop64k   GET /noop/64k      no-op, 64 KiB body
 *   slowread  GET /noop/1m       raw socket reading a 1 MiB no-op body slowly (paused reads)
 *   abort     GET /noop/trickle  raw socket that hangs up mid-response (backend trickles 512 KiB)
 *             GET /json/slow     raw socket that hangs up before the 200 ms backend answers
 *   flap      GET /flap          json endpoint on a backend that refuses / accepts connections
 *             GET /noop/flap     no-op on the same flapping backend (alternating every 3 s)
 *
 * Samples gw's VmRSS and open fds (/proc/<pid>: the supervisor and its worker processes) at start,
 * every 30 s and at the end (after the traffic stopped and settled), prints a table and a verdict:
 * growth beyond noise is RSS +20% or fds +50 against the first sample after the warm-up (min(60 s, 25% of the run)).
 * Exits 0 when there is no growth and gw shut down cleanly (SIGTERM → exit 0), 1 otherwise.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent } from 'undici';
import { HOST, processTree, rssKiB, sleep, startChild, stopAll, type Child } from './lib/procs.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const GW_BIN = path.join(ROOT, 'dist', 'cli', 'gw.js');

function flag(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i === -1) return def;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} needs a positive number`);
  return v;
}

const MINUTES = flag('minutes', 10);
const RATE = Math.min(flag('rate', 250), 300);
const WORKERS = flag('workers', 2);
const DURATION_MS = Math.round(MINUTES * 60_000);
const WARMUP_MS = Math.min(60_000, DURATION_MS * 0.25);
const SAMPLE_EVERY_MS = 30_000;
const FLAP_MS = 3000;

// ---------------------------------------------------------------------------
// Backends (in this process; the load is small)

const BODY_JSON = Buffer.from(JSON.stringify({ id: 42, name: 'Ada', roles: ['admin', 'author'], score: 98.5 }));
const BODY_64K = Buffer.alloc(64 * 1024, 'b');
const CHUNK_16K = Buffer.alloc(16 * 1024, 'c');

async function stableHandler(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  req.resume();
  switch (req.url) {
    case '/json':
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY_JSON.length });
      return void res.end(BODY_JSON);
    case '/64k':
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY_64K.length });
      return void res.end(BODY_64K);
    case '/1m': {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 16 * BODY_64K.length });
      for (let i = 0; i < 16 && !res.destroyed; i++) {
        if (!res.write(BODY_64K)) await drained(res);
      }
      return void res.end();
    }
    case '/trickle': {
      // 512 KiB in 16 KiB pieces every 20 ms (~650 ms), chunked
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      for (let i = 0; i < 32 && !res.destroyed; i++) {
        res.write(CHUNK_16K);
        await sleep(20);
      }
      return void res.end();
    }
    case '/slow':
      await sleep(200);
      if (res.destroyed) return;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY_JSON.length });
      return void res.end(BODY_JSON);
    default:
      res.writeHead(404, { 'content-length': 0 });
      res.end();
  }
}

/** Waits for 'drain' or 'close', removing both listeners afterwards. */
function drained(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function listen(server: http.Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/** A backend on a fixed port that alternates between serving and refusing connections. */
class Flapper {
  private server: http.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  private timer: NodeJS.Timeout | null = null;
  flips = 0;
  port = 0;

  async start(): Promise<void> {
    this.port = await this.up(0);
    this.timer = setInterval(() => void this.flip(), FLAP_MS);
  }

  private async up(port: number): Promise<number> {
    const s = http.createServer({ keepAliveTimeout: 5000 }, (req, res) => void stableHandler(req, res));
    s.on('connection', (c) => {
      this.sockets.add(c);
      c.once('close', () => this.sockets.delete(c));
    });
    this.server = s;
    return listen(s, port);
  }

  private async down(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    await new Promise<void>((r) => {
      s.close(() => r());
      for (const c of this.sockets) c.destroy();
    });
  }

  private async flip(): Promise<void> {
    this.flips++;
    try {
      if (this.server) await this.down();
      else await this.up(this.port);
    } catch (err) {
      console.error(`flapper: ${(err as Error).message}`);
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.down();
  }
}

// ---------------------------------------------------------------------------
// Traffic

type Kind = 'json' | 'noop64k' | 'slowread' | 'abort' | 'flap';
const WEIGHTS: [Kind, number][] = [
  ['json', 40],
  ['noop64k', 20],
  ['slowread', 5],
  ['abort', 15],
  ['flap', 20],
];
const MAX_INFLIGHT: Record<Kind, number> = { json: 64, noop64k: 32, slowread: 8, abort: 24, flap: 32 };
const WEIGHT_SUM = WEIGHTS.reduce((a, [, w]) => a + w, 0);

interface Counter {
  sent: number;
  ok: number;
  statuses: Map<number, number>;
  clientErrors: number;
  skipped: number;
}
const counters = new Map<Kind, Counter>(WEIGHTS.map(([k]) => [k, { sent: 0, ok: 0, statuses: new Map(), clientErrors: 0, skipped: 0 }]));
const inflight: Record<Kind, number> = { json: 0, noop64k: 0, slowread: 0, abort: 0, flap: 0 };

const agent = new Agent({ connections: 64, keepAliveTimeout: 4000, headersTimeout: 10_000, bodyTimeout: 10_000 });

function pick(): Kind {
  let r = Math.random() * WEIGHT_SUM;
  for (const [k, w] of WEIGHTS) {
    r -= w;
    if (r < 0) return k;
  }
  return 'json';
}

function status(kind: Kind, code: number, okWhen: (c: number) => boolean): void {
  const c = counters.get(kind)!;
  c.statuses.set(code, (c.statuses.get(code) ?? 0) + 1);
  if (okWhen(code)) c.ok++;
}

async function httpGet(kind: Kind, port: number, p: string, expectLen: number | null, okWhen: (c: number) => boolean): Promise<void> {
  try {
    const res = await agent.request({ origin: `http://${HOST}:${port}`, path: p, method: 'GET' });
    let n = 0;
    for await (const chunk of res.body) n += (chunk as Buffer).length;
    const good = expectLen === null || res.statusCode !== 200 || n === expectLen;
    status(kind, good ? res.statusCode : -1, okWhen);
  } catch {
    counters.get(kind)!.clientErrors++;
  }
}

/** Raw socket: reads a 1 MiB no-op body in paused steps (~320 KiB/s). */
function slowRead(port: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    let bytes = 0;
    let settled = false;
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      s.destroy();
      if (ok) status('slowread', 200, () => true);
      else counters.get('slowread')!.clientErrors++;
      resolve();
    };
    const deadline = setTimeout(() => done(false), 30_000);
    const want = 1024 * 1024;
    let headLen = -1;
    let head = '';
    s.on('connect', () => s.write(`GET /noop/1m HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n`));
    s.on('data', (d: Buffer) => {
      if (headLen < 0) {
        head += d.toString('latin1');
        const i = head.indexOf('\r\n\r\n');
        if (i >= 0) {
          headLen = i + 4;
          bytes = head.length - headLen;
        }
      } else bytes += d.length;
      if (bytes >= want) return done(true);
      s.pause();
      setTimeout(() => s.resume(), 200);
    });
    s.on('error', () => done(false));
    s.on('close', () => done(bytes >= want));
  });
}

/** Raw socket that hangs up mid-response (no-op trickle) or before the answer (json slow). */
function abortMid(port: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    const noop = Math.random() < 0.6;
    const after = noop ? 50 + Math.random() * 300 : Math.random() * 150;
    let t: NodeJS.Timeout | null = null;
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      if (t) clearTimeout(t);
      s.destroy();
      status('abort', 0, () => true);
      resolve();
    };
    s.on('connect', () => {
      s.write(`GET ${noop ? '/noop/trickle' : '/json/slow'} HTTP/1.1\r\nHost: soak\r\n\r\n`);
      t = setTimeout(done, after);
    });
    s.on('data', () => {});
    s.on('error', done);
    s.on('close', done);
  });
}

function fire(kind: Kind, port: number): void {
  const c = counters.get(kind)!;
  if (inflight[kind] >= MAX_INFLIGHT[kind]) {
    c.skipped++;
    return;
  }
  c.sent++;
  inflight[kind]++;
  let p: Promise<void>;
  switch (kind) {
    case 'json':
      p = httpGet(kind, port, '/json', null, (s) => s === 200);
      break;
    case 'noop64k':
      p = httpGet(kind, port, '/noop/64k', 64 * 1024, (s) => s === 200);
      break;
    case 'slowread':
      p = slowRead(port);
      break;
    case 'abort':
      p = abortMid(port);
      break;
    case 'flap':
      // down → 500 (json) / 500 (no-op, refused before headers); up → 200
      p = httpGet(kind, port, Math.random() < 0.5 ? '/flap' : '/noop/flap', null, (s) => s === 200 || s === 500);
      break;
  }
  void p.finally(() => inflight[kind]--);
}

// ---------------------------------------------------------------------------
// Sampling

interface Sample {
  label: string;
  tMs: number;
  rssKiB: number;
  fds: number;
  requests: number;
}

/** Open fds of gw: the supervisor and its worker processes. */
function fdCount(pid: number): number {
  let n = 0;
  for (const p of processTree(pid)) {
    try {
      n += fs.readdirSync(`/proc/${p}/fd`).length;
    } catch {
      return -1;
    }
  }
  return n;
}

function totalSent(): number {
  let n = 0;
  for (const c of counters.values()) n += c.sent;
  return n;
}

function sample(pid: number, label: string, t0: number): Sample {
  return { label, tMs: Date.now() - t0, rssKiB: rssKiB(pid) ?? -1, fds: fdCount(pid), requests: totalSent() };
}

function printSample(s: Sample): void {
  console.log(
    `${s.label.padEnd(10)} ${(s.tMs / 1000).toFixed(0).padStart(6)} s ${(s.rssKiB / 1024).toFixed(1).padStart(9)} MiB ${String(s.fds).padStart(6)} ${String(s.requests).padStart(10)}`,
  );
}

// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  if (!fs.existsSync(GW_BIN)) throw new Error(`${GW_BIN} not found: run \`npm run build\` first`);
  const stable = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => void stableHandler(req, res));
  const stablePort = await listen(stable);
  const flapper = new Flapper();
  await flapper.start();
  const stableUrl = `http://${HOST}:${stablePort}`;
  const flapUrl = `http://${HOST}:${flapper.port}`;

  const gwPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, HOST, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const ep = (endpoint: string, host: string, url: string, noop = false) => ({
    endpoint,
    timeout: '3s',
    ...(noop ? { output_encoding: 'no-op' } : {}),
    backend: [{ host: [host], url_pattern: url }],
  });
  const cfg = {
    version: 3,
    port: gwPort,
    timeout: '3s',
    endpoints: [
      ep('/json', stableUrl, '/json'),
      ep('/json/slow', stableUrl, '/slow'),
      ep('/noop/64k', stableUrl, '/64k', true),
      ep('/noop/1m', stableUrl, '/1m', true),
      ep('/noop/trickle', stableUrl, '/trickle', true),
      ep('/flap', flapUrl, '/json'),
      ep('/noop/flap', flapUrl, '/64k', true),
    ],
  };
  const cfgFile = path.join(fs.mkdtempSync(path.join((await import('node:os')).tmpdir(), 'gw-soak-')), 'soak.json');
  fs.writeFileSync(cfgFile, JSON.stringify(cfg, null, 2));

  console.log(`soak: ${MINUTES} min, <= ${RATE} req/s, gw --workers ${WORKERS}, flapping backend every ${FLAP_MS / 1000} s`);
  const { child: gw } = await startChild('gw', {
    args: [GW_BIN, 'run', '-c', cfgFile, '--workers', String(WORKERS), '--log-level', 'ERROR'],
    cwd: ROOT,
    readyHttp: { port: gwPort, path: '/__health' },
  });
  let errorLines = 0;
  gw.proc.stdout!.on('data', (d: string) => {
    for (let i = d.indexOf('"level":50'); i !== -1; i = d.indexOf('"level":50', i + 1)) errorLines++;
  });
  // every worker process started (the log level hides the workers line)
  for (let i = 0; i < 100 && processTree(gw.pid).length < WORKERS + 1; i++) await sleep(50);

  const pid = gw.pid;
  const samples: Sample[] = [];
  const t0 = Date.now();
  console.log(`${'sample'.padEnd(10)} ${'time'.padStart(8)} ${'RSS'.padStart(13)} ${'fds'.padStart(6)} ${'requests'.padStart(10)}`);
  const take = (label: string) => {
    const s = sample(pid, label, t0);
    samples.push(s);
    printSample(s);
    return s;
  };
  take('start');

  let stop = false;
  const onSignal = () => (stop = true);
  process.once('SIGINT', onSignal);

  // Driver: every 20 ms, send what the rate allows.
  let sent = 0;
  let nextSample = SAMPLE_EVERY_MS;
  let warmSampled = false;
  while (!stop && Date.now() - t0 < DURATION_MS) {
    const elapsed = Date.now() - t0;
    const due = Math.floor((elapsed * RATE) / 1000) - sent;
    for (let i = 0; i < Math.min(due, RATE); i++) {
      fire(pick(), gwPort);
      sent++;
    }
    if (!warmSampled && elapsed >= WARMUP_MS) {
      warmSampled = true;
      take('warm');
    }
    if (elapsed >= nextSample) {
      nextSample += SAMPLE_EVERY_MS;
      take(`${Math.round(elapsed / 1000)}s`);
    }
    if (gw.hasExited()) throw new Error(`gw exited during the soak\n${gw.output()}`);
    await sleep(20);
  }
  take('load-end');

  // Let in-flight work drain (bounded), the client pool go idle, and gw release what it holds.
  for (let i = 0; i < 200 && Object.values(inflight).some((n) => n > 0); i++) await sleep(50);
  await agent.close();
  await sleep(3000);
  const end = take('end');

  // Health after the run, then a clean shutdown.
  const health = await new Promise<number>((resolve) => {
    http.get({ host: HOST, port: gwPort, path: '/__health', agent: false, timeout: 2000 }, (r) => {
      r.resume();
      resolve(r.statusCode ?? 0);
    }).on('error', () => resolve(0));
  });
  const ts = Date.now();
  gw.proc.kill('SIGTERM');
  const killer = setTimeout(() => gw.proc.kill('SIGKILL'), 15_000);
  const exit = await gw.exited;
  clearTimeout(killer);
  const shutdownMs = Date.now() - ts;
  await flapper.stop();
  await new Promise<void>((r) => {
    stable.close(() => r());
    stable.closeAllConnections();
  });

  // Report
  console.log('\ntraffic:');
  console.log(`${'kind'.padEnd(9)} ${'sent'.padStart(7)} ${'ok'.padStart(7)} ${'client-err'.padStart(10)} ${'capped'.padStart(7)}  statuses`);
  for (const [k, c] of counters) {
    const st = [...c.statuses].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s === 0 ? 'aborted' : s === -1 ? 'SHORT' : s}:${n}`).join(' ');
    console.log(`${k.padEnd(9)} ${String(c.sent).padStart(7)} ${String(c.ok).padStart(7)} ${String(c.clientErrors).padStart(10)} ${String(c.skipped).padStart(7)}  ${st}`);
  }
  const elapsedS = (end.tMs - 3000) / 1000;
  console.log(`rate: ${(totalSent() / Math.max(1, elapsedS)).toFixed(0)} req/s; backend flips: ${flapper.flips}; gw ERROR lines: ${errorLines}`);

  const base = samples.find((s) => s.label === 'warm') ?? samples[0]!;
  const maxRss = Math.max(...samples.map((s) => s.rssKiB));
  const rssGrowth = (end.rssKiB - base.rssKiB) / base.rssKiB;
  const fdGrowth = end.fds - base.fds;
  // The steady endpoints must never fail; the flapping ones answer 200 or 500, nothing else.
  const unexpected = (['json', 'noop64k', 'slowread', 'flap'] as const).some((k) => counters.get(k)!.ok !== counters.get(k)!.sent);
  console.log(
    `\nbaseline (${base.label}, ${(base.tMs / 1000).toFixed(0)} s): RSS ${(base.rssKiB / 1024).toFixed(1)} MiB, fds ${base.fds}; ` +
      `end: RSS ${(end.rssKiB / 1024).toFixed(1)} MiB (${rssGrowth >= 0 ? '+' : ''}${(rssGrowth * 100).toFixed(1)}%), fds ${end.fds} (${fdGrowth >= 0 ? '+' : ''}${fdGrowth}); max RSS ${(maxRss / 1024).toFixed(1)} MiB`,
  );
  console.log(`health after the run: ${health}; SIGTERM → exit code ${exit.code}${exit.signal ? ` (signal ${exit.signal})` : ''} in ${shutdownMs} ms`);
  const growth = rssGrowth > 0.2 || fdGrowth > 50;
  const clean = health === 200 && exit.code === 0;
  const verdict = growth ? 'GROWTH beyond noise (RSS +20% or fds +50)' : 'no growth beyond noise';
  console.log(`verdict: ${verdict}${clean ? '' : '; gw did not end cleanly'}${unexpected ? '; unexpected failures on the steady endpoints' : ''}`);
  process.exitCode = growth || !clean || unexpected ? 1 : 0;
}

main()
  .catch((err: Error) => {
    console.error(err.stack ?? err.message);
    process.exitCode = 1;
  })
  .finally(() => stopAll());
