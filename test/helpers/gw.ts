// Black-box helpers for the gw integration tests: loopback backends, a real
// gateway child process (`node dist/cli/gw.js run -c <tmp config>`), one-shot
// CLI runs, and a small HTTP client that never normalises the request path.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent } from 'undici';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The gateway entry point; GW_BIN in the environment overrides it. */
export const GW_BIN = process.env.GW_BIN ? path.resolve(process.env.GW_BIN) : path.join(ROOT, 'dist', 'cli', 'gw.js');
export const HOST = '127.0.0.1';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------
// Backends

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
  at: number;
}

export type BackendHandler = (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  rec: RecordedRequest,
) => unknown;

export interface Backend {
  url: string;
  port: number;
  requests: RecordedRequest[];
  server: http.Server;
  close(): Promise<void>;
}

/** Default handler: 200 application/json echo of what was received. */
export const echoHandler: BackendHandler = (_req, res, rec) => {
  const body = JSON.stringify({
    method: rec.method,
    url: rec.url,
    headers: rec.headers,
    body: rec.body.toString('utf8'),
  });
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(body);
};

/** Start a node:http backend on 127.0.0.1:0. The handler runs once the request body has been read completely. */
export async function startBackend(handler: BackendHandler = echoHandler): Promise<Backend> {
  const requests: RecordedRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks),
        at: Date.now(),
      };
      requests.push(rec);
      Promise.resolve()
        .then(() => handler(req, res, rec))
        .catch((err) => {
          if (!res.headersSent) res.writeHead(599);
          res.end(String(err));
        });
    });
    req.on('error', () => {});
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://${HOST}:${port}`,
    port,
    requests,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Writes a JSON backend response. */
export function sendJSON(res: http.ServerResponse, status: number, data: unknown, headers: http.OutgoingHttpHeaders = {}) {
  const body = Buffer.from(JSON.stringify(data));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length, ...headers });
  res.end(body);
}

/**
 * Streams `total` bytes (64 KiB chunks of a repeating pattern, honouring
 * backpressure, never allocating the whole body). Resolves when done or when
 * the connection closes.
 */
export function streamBytes(res: http.ServerResponse, total: number): Promise<void> {
  const chunk = Buffer.alloc(64 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = i % 251;
  let sent = 0;
  return new Promise((resolve) => {
    res.on('close', () => resolve());
    const write = () => {
      while (sent < total) {
        if (res.destroyed) return resolve();
        const n = Math.min(chunk.length, total - sent);
        sent += n;
        const ok = res.write(n === chunk.length ? chunk : chunk.subarray(0, n));
        if (!ok) {
          res.once('drain', write);
          return;
        }
      }
      res.end(() => resolve());
    };
    write();
  });
}

// ---------------------------------------------------------------------------
// Gateway process

export interface Gateway {
  port: number;
  url: string;
  configPath: string;
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** stdout + stderr */
  output(): string;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Pids of the worker processes now (the supervisor's children), whatever their state. */
  workerPids(): number[];
  /**
   * Waits (bounded) until `count` worker processes listen on the gateway's port; resolves with
   * their pids, rejects with the gateway output when that does not happen within `timeoutMs`.
   */
  waitWorkers(count: number, timeoutMs?: number): Promise<number[]>;
}

let tmpDir: string | undefined;
export function tempDir(): string {
  if (!tmpDir) {
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-test-'));
    process.on('exit', () => {
      try {
        fs.rmSync(tmpDir!, { recursive: true, force: true });
      } catch {
        /* ignore */
      }
    });
  }
  return tmpDir;
}

let cfgSeq = 0;
/** Writes a config (object, or raw text) to a temp file and returns its path. */
export function writeConfig(config: object | string): string {
  const file = path.join(tempDir(), `config-${process.pid}-${++cfgSeq}.json`);
  fs.writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config, null, 2));
  return file;
}

function assertBuilt() {
  if (!fs.existsSync(GW_BIN)) throw new Error(`${GW_BIN} not found: run \`npm run build\` first`);
}

const liveProcs = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of liveProcs) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* ignore */
    }
  }
});

export interface StartOptions {
  /** extra CLI args after `run -c FILE` (e.g. ['-d']) */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** ms to wait for GET /__health == 200 (default 10000) */
  readyTimeout?: number;
  /** How to decide readiness: health (default) polls /__health, tcp waits for a TCP connect. */
  readyCheck?: 'health' | 'tcp';
  /** The port the gateway will really listen on, when it differs from config.port (e.g. with `-p`). */
  listenPort?: number;
  /** Own process group (`detached`), so that a test can signal the group as Ctrl-C does. */
  detached?: boolean;
  /** node's own flags, before gw's script (e.g. a V8 flag). */
  nodeArgs?: string[];
}

/**
 * Writes `config` to a temp file (setting `port` to a free port when absent)
 * and starts `node dist/cli/gw.js run -c FILE [...args]`. Resolves once the
 * gateway answers GET /__health with 200; rejects (with its output) when it
 * exits or does not become ready in time.
 */
export async function startGateway(config: Record<string, unknown>, opts: StartOptions = {}): Promise<Gateway> {
  assertBuilt();
  const cfg = { ...config };
  if (cfg.port === undefined) cfg.port = await freePort();
  const port = opts.listenPort ?? (cfg.port as number);
  const configPath = writeConfig(cfg);
  const proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), GW_BIN, 'run', '-c', configPath, ...(opts.args ?? [])], {
    cwd: ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.detached ?? false,
  });
  liveProcs.add(proc);
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => {
      liveProcs.delete(proc);
      resolve({ code, signal });
    });
  });
  let hasExited = false;
  void exited.then(() => (hasExited = true));

  const gw: Gateway = {
    port,
    url: `http://${HOST}:${port}`,
    configPath,
    proc,
    stdout: () => out,
    stderr: () => err,
    output: () => out + err,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (!hasExited) {
        const workers = proc.pid === undefined ? [] : childPids(proc.pid);
        proc.kill(signal);
        const t = setTimeout(() => proc.kill('SIGKILL'), 4000);
        const r = await exited;
        clearTimeout(t);
        // A worker a test wedged (a script in a loop) cannot see its supervisor go: never leave
        // one behind to eat the CPU of the tests that follow.
        for (const pid of workers) {
          try {
            // (only if that pid is still a gw worker, not a reused pid)
            if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('worker.js')) process.kill(pid, 'SIGKILL');
          } catch {
            /* already gone */
          }
        }
        return r;
      }
      return exited;
    },
    workerPids: () => (proc.pid === undefined ? [] : childPids(proc.pid)),
    async waitWorkers(count: number, timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const pids = listeningChildren(proc.pid!, port);
        if (pids.length === count) return pids;
        if (Date.now() > until || hasExited) {
          throw new Error(`${pids.length} of ${count} workers listen on port ${port} (children: ${gw.workerPids().join(' ')})\n${out}${err}`);
        }
        await sleep(25);
      }
    },
  };

  const deadline = Date.now() + (opts.readyTimeout ?? 10_000);
  while (Date.now() < deadline) {
    if (hasExited) {
      const r = await exited;
      throw new Error(`gateway exited before becoming ready (code ${r.code}, signal ${r.signal})\n--- stdout\n${out}\n--- stderr\n${err}`);
    }
    const ok = opts.readyCheck === 'tcp' ? await tcpReady(port) : await healthReady(port);
    if (ok) {
      // One worker answers first; a test measuring or killing workers wants them all up. Bounded
      // and not fatal: a test about worker counts asserts them itself.
      if (!process.env.GW_BIN) await gw.waitWorkers(expectedWorkers(cfg, opts.args ?? []), Math.max(0, deadline - Date.now())).catch(() => {});
      return gw;
    }
    await sleep(50);
  }
  await gw.stop('SIGKILL');
  throw new Error(`gateway not ready on port ${port} within ${opts.readyTimeout ?? 10_000} ms\n--- stdout\n${out}\n--- stderr\n${err}`);
}

function tcpReady(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.setTimeout(500, () => {
      s.destroy();
      resolve(false);
    });
  });
}

function healthReady(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const r = http.get({ host: HOST, port, path: '/__health', agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
      res.on('error', () => resolve(false));
    });
    r.on('error', () => resolve(false));
    r.on('timeout', () => {
      r.destroy();
      resolve(false);
    });
  });
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout + stderr */
  output: string;
  timedOut: boolean;
}

/** Runs `node dist/cli/gw.js ...args` to completion (killed after timeoutMs). */
export function runCli(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  assertBuilt();
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [GW_BIN, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    liveProcs.add(proc);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const t = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
    }, opts.timeoutMs ?? 10_000);
    proc.once('close', (code, signal) => {
      clearTimeout(t);
      liveProcs.delete(proc);
      resolve({ code, signal, stdout, stderr, output: stdout + stderr, timedOut });
    });
  });
}

/** The worker count `gw run` picks: `--workers`, else extra_config["gw/server"].workers, else one per core. */
function expectedWorkers(cfg: Record<string, unknown>, args: string[]): number {
  const i = args.findIndex((a) => a === '--workers' || a === '-w');
  if (i >= 0) return Number(args[i + 1]);
  const eq = args.find((a) => a.startsWith('--workers='));
  if (eq) return Number(eq.slice('--workers='.length));
  const server = (cfg.extra_config as Record<string, { workers?: number }> | undefined)?.['gw/server'];
  return server?.workers ?? os.availableParallelism();
}

/** Direct children of a process (Linux: /proc/<pid>/task/<tid>/children of every thread). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out; // gone
  }
  for (const t of tasks) {
    try {
      for (const c of fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ')) if (c.trim()) out.push(Number(c));
    } catch {
      /* thread gone */
    }
  }
  return [...new Set(out)].sort((a, b) => a - b);
}

/** Inodes of the sockets listening on `port` (any address, IPv4 and IPv6). */
function listeningInodes(port: number): Set<string> {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // cols: sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      if (cols.length > 9 && cols[3] === '0A' && cols[1]!.endsWith(`:${hexPort}`)) inodes.add(cols[9]!);
    }
  }
  return inodes;
}

/** Pids of `pid`'s children that hold a listening socket on `port`. */
export function listeningChildren(pid: number, port: number): number[] {
  const inodes = listeningInodes(port);
  return childPids(pid).filter((c) => {
    try {
      return fs.readdirSync(`/proc/${c}/fd`).some((fd) => {
        try {
          const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${c}/fd/${fd}`));
          return m !== null && inodes.has(m[1]!);
        } catch {
          return false;
        }
      });
    } catch {
      return false;
    }
  });
}

/** Is a process still there (and not a zombie)? */
export function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * VmRSS in bytes (Linux /proc) of a process, or the sum over several — a gateway's memory is its
 * workers' (`gw.workerPids()`); the supervisor serves no traffic.
 */
export function rssBytes(pids: number | readonly number[]): number {
  let sum = 0;
  for (const pid of typeof pids === 'number' ? [pids] : pids) {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    if (!m) throw new Error(`no VmRSS for pid ${pid}`);
    sum += Number(m[1]) * 1024;
  }
  return sum;
}

/** Open file descriptors of a process, or the sum over several (e.g. `gw.workerPids()`). */
export function fdCount(pids: number | readonly number[]): number {
  let sum = 0;
  for (const pid of typeof pids === 'number' ? [pids] : pids) sum += fs.readdirSync(`/proc/${pid}/fd`).length;
  return sum;
}

// ---------------------------------------------------------------------------
// Client

/** One shared undici Agent; the request path is sent exactly as given (no URL normalisation). */
export const agent = new Agent({ keepAliveTimeout: 1000, keepAliveMaxTimeout: 2000 });

export interface ClientResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json<T = any>(): T;
  ms: number;
}

export interface ClientOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
  timeoutMs?: number;
}

/** Request `path` (sent verbatim) to 127.0.0.1:port and read the whole body. */
export async function req(port: number, pathAndQuery: string, opts: ClientOptions = {}): Promise<ClientResponse> {
  const t0 = Date.now();
  const res = await agent.request({
    origin: `http://${HOST}:${port}`,
    path: pathAndQuery,
    method: (opts.method ?? 'GET') as any,
    headers: opts.headers,
    body: opts.body,
    headersTimeout: opts.timeoutMs ?? 10_000,
    bodyTimeout: opts.timeoutMs ?? 10_000,
  });
  const chunks: Buffer[] = [];
  for await (const c of res.body) chunks.push(c as Buffer);
  const body = Buffer.concat(chunks);
  return {
    status: res.statusCode,
    headers: res.headers as Record<string, string | string[] | undefined>,
    body,
    text: body.toString('utf8'),
    json: () => JSON.parse(body.toString('utf8')),
    ms: Date.now() - t0,
  };
}

export interface RawResponse {
  status: number;
  statusLine: string;
  /** lower-cased names; repeated headers joined into arrays */
  headers: Record<string, string | string[]>;
  body: Buffer;
  raw: Buffer;
}

/**
 * Sends exact bytes over a fresh TCP connection and parses one HTTP/1.1
 * response (Content-Length, chunked, or until close). Use it for headers
 * undici refuses to send (Connection, Keep-Alive, Upgrade, TE, Host...).
 */
export function rawRequest(port: number, data: string | Buffer, timeoutMs = 5000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: HOST, port });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      const parsed = tryParse(buf, !!err || sock.readableEnded);
      if (!parsed && !err && !sock.destroyed) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (parsed) resolve(parsed);
      else reject(err ?? new Error(`incomplete response: ${JSON.stringify(buf.toString('latin1'))}`));
    };
    const timer = setTimeout(() => finish(new Error('raw request timed out')), timeoutMs);
    sock.on('connect', () => sock.write(data));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const parsed = tryParse(buf, false);
      if (parsed) {
        done = true;
        clearTimeout(timer);
        sock.destroy();
        resolve(parsed);
      }
    });
    sock.on('end', () => {
      const parsed = tryParse(buf, true);
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (parsed) resolve(parsed);
      else reject(new Error(`connection closed, incomplete response: ${JSON.stringify(buf.toString('latin1'))}`));
    });
    sock.on('error', (e) => finish(e));
  });
}

function tryParse(buf: Buffer, eof: boolean): RawResponse | null {
  const idx = buf.indexOf('\r\n\r\n');
  if (idx < 0) return null;
  const head = buf.subarray(0, idx).toString('latin1').split('\r\n');
  const statusLine = head[0];
  const status = Number(statusLine.split(' ')[1]);
  const headers: Record<string, string | string[]> = {};
  for (const line of head.slice(1)) {
    const c = line.indexOf(':');
    if (c < 0) continue;
    const k = line.slice(0, c).trim().toLowerCase();
    const v = line.slice(c + 1).trim();
    const prev = headers[k];
    headers[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  const rest = buf.subarray(idx + 4);
  const mk = (body: Buffer): RawResponse => ({ status, statusLine, headers, body, raw: buf });
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) return mk(Buffer.alloc(0));
  const te = String(headers['transfer-encoding'] ?? '').toLowerCase();
  if (te.includes('chunked')) {
    const parts: Buffer[] = [];
    let p = 0;
    for (;;) {
      const e = rest.indexOf('\r\n', p);
      if (e < 0) return null;
      const size = parseInt(rest.subarray(p, e).toString('latin1'), 16);
      if (Number.isNaN(size)) return mk(Buffer.concat(parts));
      if (size === 0) {
        return rest.indexOf('\r\n\r\n', e) >= 0 || rest.length >= e + 4 ? mk(Buffer.concat(parts)) : null;
      }
      if (rest.length < e + 2 + size + 2) return null;
      parts.push(rest.subarray(e + 2, e + 2 + size));
      p = e + 2 + size + 2;
    }
  }
  if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    return rest.length >= n ? mk(rest.subarray(0, n)) : null;
  }
  return eof ? mk(rest) : null;
}

/** Header value as a single string (first of several). */
export function h(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Regex that matches any stack-trace frame line, e.g. "    at foo (file.js:1:2)". */
export const STACK_FRAME = /^\s+at .+(\(.*:\d+:\d+\)|:\d+:\d+)$/m;

/**
 * Runs `work` while sampling the RSS of `pids` (summed: a gateway's workers) every `everyMs`;
 * returns its result with the RSS before (`base`) and the highest seen (`peak`), for memory-bound
 * assertions.
 */
export async function withPeakRss<T>(pids: number | readonly number[], everyMs: number, work: () => Promise<T>): Promise<{ result: T; base: number; peak: number }> {
  const base = rssBytes(pids);
  let peak = base;
  const sample = () => {
    try {
      peak = Math.max(peak, rssBytes(pids));
    } catch {
      /* process gone: the caller's own checks fail */
    }
  };
  const timer = setInterval(sample, everyMs);
  try {
    const result = await work();
    sample();
    return { result, base, peak };
  } finally {
    clearInterval(timer);
  }
}

/** A line of `--log-format json` output: pino's numeric level, from gw's level name. */
export interface JsonLogLine {
  level: number;
  msg: string;
}

const LEVEL_NUMBERS: Record<string, number> = { DEBUG: 20, INFO: 30, WARNING: 40, ERROR: 50, CRITICAL: 55 };

/** The application log lines of `--log-format json` output (access-log lines and partial lines skipped). */
export function jsonLogLines(text: string): JsonLogLine[] {
  const out: JsonLogLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as { level?: unknown; msg?: unknown };
      if (typeof o.msg !== 'string') continue;
      out.push({ level: typeof o.level === 'number' ? o.level : (LEVEL_NUMBERS[String(o.level)] ?? 0), msg: o.msg });
    } catch {
      /* partial line */
    }
  }
  return out;
}

/**
 * Uploads `total` bytes with Content-Length over a raw socket, keeps writing after the response
 * arrived (as a real client does while its upload is in flight), and reports what happened.
 */
export async function uploadWhileAnswered(port: number, p: string, total: number): Promise<{ resp: string; sent: number }> {
  const sock = net.connect({ host: HOST, port });
  sock.on('error', () => {});
  let resp = '';
  sock.on('data', (d) => (resp += d.toString('latin1')));
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(`POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${total}\r\n\r\n`);
  const chunk = Buffer.alloc(64 * 1024, 97);
  let sent = 0;
  const t0 = Date.now();
  while (sent < total && !sock.destroyed && Date.now() - t0 < 5000) {
    const ok = sock.write(chunk);
    sent += chunk.length;
    if (!ok) {
      const r = await Promise.race([new Promise((res) => sock.once('drain', () => res('drain'))), sleep(1000).then(() => 'stall')]);
      if (r === 'stall') break;
    }
  }
  // Like a real client, read the answer once the request is sent: gw may relay it after the whole
  // upload went out (32 MB cross loopback in ~20 ms while gw drops it).
  for (let i = 0; i < 100 && resp === '' && !sock.destroyed; i++) await sleep(20);
  sock.destroy();
  return { resp, sent };
}
