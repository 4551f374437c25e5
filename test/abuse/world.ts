// The abuse matrix's world, shared by test/abuse/matrix.test.ts and bench/fuzz.ts: loopback
// backends that misbehave on purpose (one per fault), the gateway config that puts every endpoint
// kind in front of every fault, the answer KrakenD gives a well-behaved client for each pair, and
// how to tell a gateway that lost a worker or grew without a bound.
//
// Endpoint kinds × backend faults: `/m/<kind>/<fault>` (GET and POST). Faults are served by one
// node:http server on path `/f/<fault>`, except `down` (a port nobody listens on) and `hang` (a
// listener whose accept queue is full: the TCP connect never completes).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { type Gateway, HOST, freePort, sleep, tempDir } from '../helpers/gw.ts';

export const FAULTS = ['healthy', 'down', 'hang', 'reset', 'trickle', 'gzip', 'gzip-cut', 'early-hints', 'redirect'] as const;
export type Fault = (typeof FAULTS)[number];

export const KINDS = ['noop', 'json', 'merge', 'sequential', 'delegate', 'hijack', 'hijack-stream', 'lua', 'jwt'] as const;
export type Kind = (typeof KINDS)[number];

/** Endpoint timeout of every matrix endpoint: short, so a case that waits for it stays short. */
export const TIMEOUT_MS = 800;
/** How long the trickling backend (and the streaming plugin) takes for its whole body. */
export const TRICKLE_MS = 1200;
/** A connection not answered nor closed this long after it opened is hung. */
export const BOUND_MS = TIMEOUT_MS + 3000;

/** Faults a kind is run against: a hijacking plugin never calls its backend, so one is enough. */
export function faultsFor(kind: Kind): readonly Fault[] {
  return kind === 'hijack' || kind === 'hijack-stream' ? ['healthy'] : FAULTS;
}

/** Every (kind, fault) pair of the matrix. */
export function pairs(): { kind: Kind; fault: Fault }[] {
  return KINDS.flatMap((kind) => faultsFor(kind).map((fault) => ({ kind, fault })));
}

export const endpointPath = (kind: Kind, fault: Fault) => `/m/${kind}/${fault}`;

/** Backend faults a decoding endpoint takes as a success (after gunzip, 1xx skipped, redirect followed). */
const GOOD: ReadonlySet<Fault> = new Set(['healthy', 'gzip', 'early-hints', 'redirect']);

/**
 * What a well-behaved client gets (KrakenD semantics, ../shared/spec/krakend-behaviour.md §2):
 *  - no-op (also through a delegating plugin): the backend's answer streamed; a backend that fails
 *    before answering → 500; one that resets mid-body → the 200 already sent is cut (the connection
 *    is closed, never a short body taken as complete), or 500 when nothing had gone out yet;
 *  - json / sequential / Lua / JWT: 200 when the backend succeeds, else 500 (timeout, refused,
 *    cut body, a trickle slower than the endpoint timeout); sequential fails when backend 0 does;
 *  - merge (the fault on one backend, the other healthy): always 200, X-Krakend-Completed false
 *    when the faulty part is missing;
 *  - hijack: the plugin's own 200.
 */
export interface Expectation {
  status: number;
  /** The response must end complete (true) or be cut by a closed connection (false). */
  complete: boolean;
  /** X-Krakend-Completed, when KrakenD defines it for this answer. */
  completed?: 'true' | 'false';
}

export function expected(kind: Kind, fault: Fault): Expectation[] {
  switch (kind) {
    case 'noop':
    case 'delegate':
      if (fault === 'down' || fault === 'hang') return [{ status: 500, complete: true }];
      if (fault === 'reset' || fault === 'gzip-cut') return [{ status: 200, complete: false }, { status: 500, complete: true }];
      return [{ status: 200, complete: true }];
    case 'merge':
      return [{ status: 200, complete: true, completed: GOOD.has(fault) ? 'true' : 'false' }];
    case 'hijack':
    case 'hijack-stream':
      return [{ status: 200, complete: true }];
    default:
      return GOOD.has(fault) ? [{ status: 200, complete: true, completed: 'true' }] : [{ status: 500, complete: true }];
  }
}

// ---------------------------------------------------------------------------
// Backends

export interface World {
  /** The fault server (`/f/<fault>`). */
  faultUrl: string;
  /** Where `redirect` sends gw: another loopback origin. */
  targetUrl: string;
  downUrl: string;
  hangUrl: string;
  pluginDir: string;
  jwkFile: string;
  /** A valid HS256 token for the JWT endpoints (one hour). */
  token: string;
  /** Requests the fault server saw, by fault. */
  hits: Record<string, number>;
  close(): Promise<void>;
}

const JSON_BODY = Buffer.from(JSON.stringify({ ok: true, items: Array.from({ length: 64 }, (_, i) => ({ i, name: `item-${i}` })) }));
const GZ_BODY = zlib.gzipSync(Buffer.from(JSON.stringify({ ok: true, pad: 'z'.repeat(256 * 1024) })));

function faultHandler(fault: string, req: http.IncomingMessage, res: http.ServerResponse, targetUrl: string): void {
  const cut = (delay: number) => setTimeout(() => req.socket.destroy(), delay);
  switch (fault) {
    case 'healthy': {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => {
        const body = Buffer.from(JSON.stringify({ ok: true, received: n }));
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length });
        res.end(body);
      });
      return;
    }
    case 'reset':
      // 200 and the head of a body, then the connection is reset mid-body.
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': JSON_BODY.length });
      res.write(JSON_BODY.subarray(0, JSON_BODY.length >> 1));
      cut(80);
      return;
    case 'trickle': {
      // Ten small chunks over TRICKLE_MS, then a valid end: slower than the endpoint timeout.
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write('{"trickle":"');
      let i = 0;
      const t = setInterval(() => {
        if (res.destroyed) return clearInterval(t);
        if (++i > 10) {
          clearInterval(t);
          res.end('"}');
          return;
        }
        res.write('x'.repeat(64));
      }, TRICKLE_MS / 10);
      res.on('close', () => clearInterval(t));
      return;
    }
    case 'gzip':
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip', 'Content-Length': GZ_BODY.length });
      res.end(GZ_BODY);
      return;
    case 'gzip-cut':
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip', 'Content-Length': GZ_BODY.length });
      res.write(GZ_BODY.subarray(0, GZ_BODY.length >> 1));
      cut(80);
      return;
    case 'early-hints':
      res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
      setTimeout(() => {
        if (res.destroyed) return;
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': JSON_BODY.length });
        res.end(JSON_BODY);
      }, 30);
      return;
    case 'redirect':
      res.writeHead(302, { Location: `${targetUrl}/f/healthy`, 'Content-Length': 0 });
      res.end();
      return;
    default:
      res.writeHead(404, { 'Content-Length': 0 });
      res.end();
  }
}

function listen(server: http.Server): Promise<string> {
  // undici keeps an idle pooled connection as long as the server's Keep-Alive hint says (minus 1 s),
  // whatever gw's idle_connection_timeout: a short hint lets gw's open fds settle after a burst.
  server.keepAliveTimeout = 2000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve(`http://${HOST}:${(server.address() as net.AddressInfo).port}`));
  });
}

/** A listener whose accept queue is full: a TCP connect to it hangs (SYNs are dropped). */
async function hangingListener(): Promise<{ port: number; stop(): void }> {
  const py: ChildProcess = spawn(
    'python3',
    ['-c', 'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(3600)'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
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

/** Client plugins of the matrix, written as plain ESM into a temp folder. */
const PLUGIN = `
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const ClientRegisterer = {
  registerClients(register) {
    register('abuse-delegate', () => (req, next) => next());
    register('abuse-hijack', () => (req) => ({ status: 200, headers: { 'content-type': 'application/json' }, body: { hijacked: true, method: req.method } }));
    // Reads the request body (bounded), then streams its own answer slowly.
    register('abuse-hijack-stream', () => async (req) => {
      let n = 0;
      const b = req.body;
      if (b !== null && typeof b === 'object' && typeof b[Symbol.asyncIterator] === 'function') {
        for await (const c of b) {
          n += c.length;
          if (n > 1048576) break;
        }
      } else if (b !== null) n = b.length;
      async function* chunks() {
        for (let i = 0; i < 10; i++) {
          if (req.signal.aborted) return;
          yield Buffer.from('chunk ' + i + ' of a body read ' + n + ' bytes\\n');
          await sleep(${TRICKLE_MS / 10});
        }
      }
      return { status: 200, headers: { 'content-type': 'text/plain' }, body: chunks() };
    });
  },
};
`;

export async function startWorld(): Promise<World> {
  const hits: Record<string, number> = {};
  const target = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': JSON_BODY.length });
      res.end(JSON_BODY);
    });
  });
  const targetUrl = await listen(target);
  const faults = http.createServer((req, res) => {
    req.on('error', () => {});
    res.on('error', () => {});
    const fault = (req.url ?? '').split('?')[0]!.replace(/^\/f\//, '');
    hits[fault] = (hits[fault] ?? 0) + 1;
    if (fault !== 'healthy') req.resume();
    faultHandler(fault, req, res, targetUrl);
  });
  const faultUrl = await listen(faults);
  const downPort = await freePort();
  const hang = await hangingListener();

  const dir = fs.mkdtempSync(path.join(tempDir(), 'abuse-'));
  const pluginDir = path.join(dir, 'plugins');
  fs.mkdirSync(pluginDir);
  fs.writeFileSync(path.join(pluginDir, 'abuse.mjs'), PLUGIN);
  const secret = new Uint8Array(randomBytes(32));
  const jwkFile = path.join(dir, 'jwks.json');
  fs.writeFileSync(jwkFile, JSON.stringify({ keys: [{ kty: 'oct', k: Buffer.from(secret).toString('base64url'), kid: 'hs1', alg: 'HS256' }] }));
  const token = await new SignJWT({ sub: 'abuse', roles: ['user'] })
    .setProtectedHeader({ alg: 'HS256', kid: 'hs1', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
    .sign(secret);

  return {
    faultUrl,
    targetUrl,
    downUrl: `http://${HOST}:${downPort}`,
    hangUrl: `http://${HOST}:${hang.port}`,
    pluginDir,
    jwkFile,
    token,
    hits,
    async close() {
      hang.stop();
      for (const s of [faults, target]) {
        s.closeAllConnections();
        await new Promise<void>((r) => s.close(() => r()));
      }
    },
  };
}

// ---------------------------------------------------------------------------
// The gateway config

export interface ConfigOptions {
  /** Service-level `security/cors` (preflights answered on every path). */
  cors?: boolean;
  /** `/__echo/*` on (use `-d` for `/__debug/*`). */
  echo?: boolean;
}

export function matrixConfig(w: World, opts: ConfigOptions = {}): Record<string, unknown> {
  const hostOf = (f: Fault) => (f === 'down' ? w.downUrl : f === 'hang' ? w.hangUrl : w.faultUrl);
  const faulty = (f: Fault, extra: Record<string, unknown> = {}) => ({ host: [hostOf(f)], url_pattern: `/f/${f}`, ...extra });
  const healthy = (extra: Record<string, unknown> = {}) => ({ host: [w.faultUrl], url_pattern: '/f/healthy', ...extra });
  const plugin = (name: string) => ({ 'plugin/http-client': { name } });
  const endpoints: Record<string, unknown>[] = [];
  for (const { kind, fault } of pairs()) {
    let ep: Record<string, unknown>;
    switch (kind) {
      case 'noop':
        ep = { output_encoding: 'no-op', backend: [faulty(fault, { encoding: 'no-op' })] };
        break;
      case 'json':
        ep = { backend: [faulty(fault)] };
        break;
      case 'merge':
        ep = { backend: [faulty(fault, { group: 'a' }), healthy({ group: 'b' })] };
        break;
      case 'sequential':
        ep = { extra_config: { proxy: { sequential: true } }, backend: [faulty(fault, { group: 'a' }), healthy({ group: 'b' })] };
        break;
      case 'delegate':
        ep = { output_encoding: 'no-op', backend: [faulty(fault, { encoding: 'no-op', extra_config: plugin('abuse-delegate') })] };
        break;
      case 'hijack':
        ep = { backend: [faulty(fault, { extra_config: plugin('abuse-hijack') })] };
        break;
      case 'hijack-stream':
        ep = { output_encoding: 'no-op', backend: [faulty(fault, { encoding: 'no-op', extra_config: plugin('abuse-hijack-stream') })] };
        break;
      case 'lua':
        ep = {
          extra_config: { 'modifier/lua-proxy': { post: 'local r = response.load(); r:data():set("lua", true)' } },
          backend: [faulty(fault, { extra_config: { 'modifier/lua-backend': { pre: 'local r = request.load(); r:headers("X-Lua", "pre")' } } })],
        };
        break;
      case 'jwt':
        ep = {
          extra_config: { 'auth/validator': { alg: 'HS256', jwk_local_path: w.jwkFile, disable_jwk_security: false } },
          backend: [faulty(fault)],
        };
        break;
    }
    for (const method of ['GET', 'POST']) endpoints.push({ endpoint: endpointPath(kind, fault), method, timeout: `${TIMEOUT_MS}ms`, ...ep });
  }
  const cfg: Record<string, unknown> = {
    version: 3,
    // Idle pooled connections and connects to the hanging listener end soon, so the open fds
    // settle back after a burst (undici otherwise keeps trying a connect for 10 s).
    idle_connection_timeout: '1s',
    dialer_timeout: '1s',
    plugin: { folder: w.pluginDir, pattern: '.mjs' },
    endpoints,
  };
  if (opts.echo) cfg.echo_endpoint = true;
  if (opts.cors) {
    cfg.extra_config = {
      'security/cors': {
        allow_origins: ['https://app.example'],
        allow_methods: ['GET', 'POST', 'PUT'],
        allow_headers: ['Authorization', 'Content-Type'],
        expose_headers: ['X-Krakend'],
        max_age: '1h',
      },
    };
  }
  return cfg;
}

// ---------------------------------------------------------------------------
// Is the gateway still whole?

/**
 * Lines a gateway writes only when something went wrong beyond one request: a worker that died or
 * was replaced, a throw that escaped a handler (routes.ts `guarded`), an unhandled error, a native
 * abort (uWS: "Returning from a request handler without responding or attaching an abort handler
 * is forbidden!", "terminate called…", Node's "Assertion failed").
 */
export const CRASH_LINE =
  /uncaught|unhandled|exited with code|worker #\d+ failed|died|internal error|is forbidden!|terminate called|Assertion failed|FATAL ERROR|Segmentation fault|core dumped/i;

/** The crash lines in `text` (each trimmed to 300 characters). */
export function crashLines(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => CRASH_LINE.test(l))
    .map((l) => l.slice(0, 300));
}

/** The processes that serve requests: the worker processes when gw has them, else gw itself. */
export function servingPids(gw: Gateway, workers: readonly number[]): number[] {
  return workers.length > 0 ? [...workers] : [gw.proc.pid!];
}

export interface Usage {
  rss: number;
  fds: number;
}

/** Summed VmRSS and open fds of `pids` (Linux /proc); a pid that is gone counts 0. */
export function usage(pids: readonly number[]): Usage {
  let rss = 0;
  let fds = 0;
  for (const pid of pids) {
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      rss += m ? Number(m[1]) * 1024 : 0;
      fds += fs.readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      /* gone: the caller's liveness checks report it */
    }
  }
  return { rss, fds };
}

/**
 * Waits (bounded) until the fds of `pids` come back to `base + slack`, and returns the usage then:
 * pooled backend connections and closing client sockets are released on timers after a burst.
 */
export async function settledUsage(pids: readonly number[], base: Usage, slack: number, maxMs = 8000): Promise<Usage> {
  const deadline = Date.now() + maxMs;
  let u = usage(pids);
  while (u.fds > base.fds + slack && Date.now() < deadline) {
    await sleep(250);
    u = usage(pids);
  }
  return u;
}

export const MB = 1024 * 1024;
