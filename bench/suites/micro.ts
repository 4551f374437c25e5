/**
 * Micro suites: the real hot-path modules of gw (TypeScript sources, run through tsx), one
 * tinybench task each. Fast operations are batched: each sample times `batch` calls and records
 * their mean, so the timer's own cost (~50-100 ns) does not swamp a 30 ns function; p50/p99 are
 * then percentiles of those per-batch means (see docs/bench.md).
 */
import { Bench } from 'tinybench';
import { normaliseConfig } from '../../core/config/load.js';
import type { BackendConfig, EndpointConfig } from '../../core/config/types.js';
import type { Logger } from '../../core/log.js';
import { pluginClient } from '../../core/plugin/client.js';
import type { BackendResponse, ClientHandler } from '../../core/plugin/types.js';
import { compileBackendLua } from '../../core/lua/modifier.js';
import { loadLua } from '../../core/lua/vm.js';
import { buildBackendPipe } from '../../core/proxy/backend.js';
import { compileFormatter } from '../../core/proxy/formatter.js';
import { composeMerge } from '../../core/proxy/merge.js';
import { compileHeaderBuilder, compileQueryFilter, compileUrlPattern, type ClientInfo } from '../../core/proxy/request.js';
import { OutboundRequest, ProxyRequest, Scope, type Proxy, type ProxyResponse } from '../../core/proxy/types.js';
import { FallbackRouter } from '../../core/router/fallback.js';
import { goJson } from '../../core/router/json.js';
import { decodeParam } from '../../core/router/params.js';
import { sig } from '../lib/stats.js';

export interface MicroResult {
  suite: string;
  name: string;
  /** Calls per sample. */
  batch: number;
  samples: number;
  mean_ns: number;
  p50_ns: number;
  p99_ns: number;
  ops_per_s: number;
}

export interface MicroOptions {
  /** Measuring time per task, ms. */
  timeMs: number;
  warmupMs: number;
  log: (line: string) => void;
}

interface MicroTask {
  suite: string;
  name: string;
  fn: () => unknown;
  async?: boolean;
}

/** Results land here so no call can be optimised away. */
let sink: unknown;

// ---------------------------------------------------------------------------- fixtures

const silentLogger = {
  error() {}, warn() {}, info() {}, debug() {}, critical() {}, fatal() {}, trace() {},
  isLevelEnabled: () => false,
} as unknown as Logger;

/** A typical ~1 KB backend object, keys in the order a JS backend writes them (not sorted). */
export function typicalObject(): Record<string, unknown> {
  return {
    id: 1234567,
    username: 'ada.lovelace',
    email: 'ada@example.com',
    profile: {
      firstName: 'Ada',
      lastName: 'Lovelace',
      bio: 'Mathematician & writer, known for work on the <Analytical Engine>.',
      avatar: 'https://cdn.example.com/avatars/1234567.png',
      location: { city: 'London', country: 'GB', lat: 51.5072, lon: -0.1276 },
    },
    roles: ['admin', 'author', 'reviewer'],
    settings: { theme: 'dark', language: 'en-GB', notifications: { email: true, sms: false, push: true } },
    stats: { posts: 342, followers: 10452, following: 87, likes: 99120 },
    recent: [
      { id: 'p-1', title: 'Notes on the engine', created: '2024-05-01T10:00:00Z', tags: ['math', 'history'] },
      { id: 'p-2', title: 'On Bernoulli numbers', created: '2024-05-03T09:30:00Z', tags: ['math'] },
      { id: 'p-3', title: 'Poetical science', created: '2024-05-07T18:45:00Z', tags: ['essay'] },
    ],
    active: true,
    createdAt: '2015-12-10T08:00:00Z',
    updatedAt: '2024-05-07T18:45:00Z',
  };
}

/** A 50-endpoint KrakenD config mixing the usual features. */
export function fiftyEndpointConfig(backendOrigin = 'http://127.0.0.1:8000'): Record<string, unknown> {
  const endpoints = [];
  for (let i = 0; i < 50; i++) {
    const kind = i % 5;
    endpoints.push({
      endpoint: kind === 0 ? `/api/v1/res${i}` : `/api/v1/res${i}/{id}` + (kind === 4 ? '/items/{item}' : ''),
      method: i % 7 === 3 ? 'POST' : 'GET',
      input_headers: kind === 1 ? ['Authorization', 'X-Request-Id'] : undefined,
      input_query_strings: kind === 2 ? ['q', 'page', 'limit'] : undefined,
      output_encoding: kind === 3 ? 'no-op' : undefined,
      backend: [
        {
          url_pattern: kind === 0 ? `/res${i}` : `/res${i}/{id}` + (kind === 4 ? '/items/{item}' : ''),
          encoding: kind === 3 ? 'no-op' : undefined,
          allow: kind === 1 ? ['id', 'name', 'address.city'] : undefined,
          mapping: kind === 2 ? { name: 'fullName' } : undefined,
          group: kind === 4 ? 'item' : undefined,
        },
        ...(kind === 4 ? [{ url_pattern: `/owners/{id}`, group: 'owner' }] : []),
      ],
    });
  }
  return { version: 3, name: 'bench-50', port: 8080, timeout: '3s', host: [backendOrigin], endpoints };
}

function backendConfig(over: Partial<BackendConfig>): BackendConfig {
  return {
    index: 0, hosts: ['http://127.0.0.1:8000'], urlPattern: '/x', method: 'GET', encoding: 'json', isCollection: false,
    target: '', allow: [], deny: [], mapping: {}, group: '', inputHeaders: null, inputQueryStrings: null, extraConfig: {},
    ...over,
  };
}

function clientInfo(): ClientInfo {
  const headers = new Map<string, string[]>([
    ['Accept', ['application/json']],
    ['Accept-Language', ['en-GB,en;q=0.9']],
    ['Authorization', ['Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig']],
    ['Content-Type', ['application/json']],
    ['Cookie', ['session=abc123; theme=dark']],
    ['User-Agent', ['bench-client/1.0']],
    ['X-Request-Id', ['0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0']],
    ['X-Trace', ['1', '2']],
  ]);
  return { headers, host: 'api.example.com', path: '/users/42', ip: '203.0.113.7' };
}

function tasks(): MicroTask[] {
  const list: MicroTask[] = [];

  // core/proxy/request.ts
  const tpl = compileUrlPattern('/users/{id}/orders/{order}?fields={fields}', ['id', 'order', 'fields']);
  const plainParams = ['42', 'A-1001', 'name,total'];
  const escParams = ['ada lovelace', 'café #1', 'a&b=c'];
  list.push({ suite: 'request', name: 'urlPattern.render (plain)', fn: () => tpl.render(plainParams) });
  list.push({ suite: 'request', name: 'urlPattern.render (escaping)', fn: () => tpl.render(escParams) });
  const qf = compileQueryFilter(['q', 'page', 'limit'], null);
  const rawQuery = 'q=shoes&page=2&limit=20&utm_source=news&utm_medium=email&debug=1';
  list.push({ suite: 'request', name: 'queryFilter (3 of 6 kept)', fn: () => qf(rawQuery) });
  const hb = compileHeaderBuilder(['Authorization', 'Content-Type', 'X-Request-Id', 'User-Agent'], false);
  const ci = clientInfo();
  list.push({ suite: 'request', name: 'headerBuilder (4 of 8 kept)', fn: () => hb(ci) });

  // Full request building for one backend (render + filters + OutboundRequest).
  const cfg50 = normaliseConfig(fiftyEndpointConfig());
  const ep = cfg50.endpoints.find((e) => e.params.length === 2 && e.backends.length === 2) as EndpointConfig;
  const fakeClient = () => Promise.reject(new Error('unused'));
  const pipe = buildBackendPipe(ep, ep.backends[0]!, fakeClient, false, { error: (m) => console.error(m) });
  const abort = new Scope();
  const preq = new ProxyRequest(['42', 'item-7'], ep.params, 'q=x&page=2', ci, null, abort, 'GET');
  list.push({ suite: 'request', name: 'buildOutbound (2 params)', fn: () => pipe.buildOutbound(preq) });

  // core/lua: a lua-backend pre script (KrakenD's url rewrite) on the same backend request.
  const lua = compileBackendLua(
    { 'modifier/lua-backend': { pre: 'local r = request.load(); r:url(r:url() .. r:params("Id")); r:headers("X-Lua", "1")' } },
    'bench', '/x', 2000, { error: (m) => console.error(m) },
  )!;
  list.push({ suite: 'lua', name: 'lua-backend pre (url + header)', fn: () => lua.pre!(pipe.buildOutbound(preq)) });

  // core/router/params.ts
  list.push({ suite: 'router', name: 'decodeParam (plain)', fn: () => decodeParam('abc-123_def') });
  list.push({ suite: 'router', name: 'decodeParam (%-encoded)', fn: () => decodeParam('caf%C3%A9%20au%20lait') });

  // core/router/json.ts
  const obj = typicalObject();
  const size = Buffer.byteLength(JSON.stringify(obj));
  list.push({ suite: 'json', name: `goJson (${(size / 1024).toFixed(1)} KB, unsorted keys)`, fn: () => goJson(obj) });
  const sortedObj = JSON.parse(goJson(obj)) as unknown;
  list.push({ suite: 'json', name: 'goJson (same, keys sorted)', fn: () => goJson(sortedObj) });
  list.push({ suite: 'json', name: 'JSON.stringify (reference)', fn: () => JSON.stringify(obj) });

  // core/router/fallback.ts: a 50-route table, the four kinds of decision in turn.
  const fb = new FallbackRouter({ redirectTrailingSlash: true, redirectFixedPath: true, handleMethodNotAllowed: true });
  for (const e of cfg50.endpoints) fb.add(e.method, e.route);
  const probes: [string, string][] = [
    ['GET', '/api/v1/res21/7/'], // trailing-slash redirect
    ['GET', '/API/v1/Res21/7'], // fixed-path redirect
    ['DELETE', '/api/v1/res21/7'], // 405
    ['GET', '/nothing/here'], // 404
  ];
  let pi = 0;
  list.push({
    suite: 'router',
    name: 'FallbackRouter.decide (50 routes)',
    fn: () => {
      const p = probes[pi++ & 3]!;
      return fb.decide(p[0], p[1], 'a=1');
    },
  });

  // core/config/load.ts: route table build.
  const raw50 = fiftyEndpointConfig();
  list.push({ suite: 'config', name: 'normaliseConfig (50 endpoints)', fn: () => normaliseConfig(raw50) });

  // core/proxy/merge.ts: three backends that answer at once.
  const fake = (k: string): Proxy => {
    const resp: ProxyResponse = { data: { [k]: { id: 1, name: k } }, isComplete: true, errors: null };
    return () => Promise.resolve(resp);
  };
  const merge = composeMerge([fake('a'), fake('b'), fake('c')], 3000);
  list.push({ suite: 'proxy', name: 'composeMerge (3 immediate backends)', fn: () => merge(preq), async: true });

  // core/proxy/formatter.ts
  const fmt = compileFormatter(
    backendConfig({ allow: ['id', 'username', 'profile.location.city', 'roles', 'stats'], mapping: { username: 'login' }, group: 'user' }),
  )!;
  list.push({ suite: 'proxy', name: 'formatter (allow 5 + mapping + group)', fn: () => fmt(obj) });

  // core/plugin/client.ts: dispatch through a delegating plugin vs calling next directly.
  const response: BackendResponse = { status: 200, headers: { 'content-type': 'text/plain' }, body: 'ok' };
  const next = (_r: OutboundRequest): Promise<BackendResponse> => Promise.resolve(response);
  const delegate: ClientHandler = (_req, n) => n();
  const wrapped = pluginClient('bench-delegate', delegate, next, silentLogger, '[BACKEND: bench]');
  const out = pipe.buildOutbound(preq);
  list.push({ suite: 'plugin', name: 'next() called directly', fn: () => next(out), async: true });
  list.push({ suite: 'plugin', name: 'pluginClient → handler → next()', fn: () => wrapped(out), async: true });
  return list;
}

/** Calls per sample so that one sample lasts about `targetMs`. */
async function calibrate(t: MicroTask, targetMs: number): Promise<number> {
  // 20 ms to warm up (first calls, JIT), then 20 ms to time.
  for (const stop = performance.now() + 20; performance.now() < stop; ) sink = t.async ? await t.fn() : t.fn();
  const until = performance.now() + 20;
  let n = 0;
  const t0 = performance.now();
  if (t.async) {
    while (performance.now() < until) {
      sink = await t.fn();
      n++;
    }
  } else {
    while (performance.now() < until) {
      sink = t.fn();
      n++;
    }
  }
  const per = (performance.now() - t0) / n;
  return Math.max(1, Math.min(100_000, Math.round(targetMs / per)));
}

function batched(t: MicroTask, batch: number): () => unknown {
  const fn = t.fn;
  if (t.async) {
    return async () => {
      const t0 = performance.now();
      for (let i = 0; i < batch; i++) sink = await fn();
      const d = performance.now() - t0;
      return { overriddenDuration: d / batch, overriddenIterationCost: d };
    };
  }
  return () => {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) sink = fn();
    const d = performance.now() - t0;
    return { overriddenDuration: d / batch, overriddenIterationCost: d };
  };
}

export async function runMicro(opts: MicroOptions): Promise<MicroResult[]> {
  await loadLua();
  const list = tasks();
  const bench = new Bench({
    name: 'micro',
    time: opts.timeMs,
    warmupTime: opts.warmupMs,
    warmupIterations: 8,
    iterations: 32,
    throws: true,
  });
  const meta = new Map<string, { suite: string; batch: number }>();
  for (const t of list) {
    const batch = await calibrate(t, 0.05);
    const key = `${t.suite}: ${t.name}`;
    meta.set(key, { suite: t.suite, batch });
    bench.add(key, batched(t, batch), { async: !!t.async });
  }
  let i = 0;
  bench.addEventListener('cycle', (e) => {
    const task = e.task!;
    const r = task.result;
    const mean = 'latency' in r ? r.latency.mean * 1e6 : NaN;
    opts.log(`  micro ${++i}/${list.length} ${task.name}: ${fmtNs(mean)}/op`);
  });
  await bench.run();
  void sink;
  const results: MicroResult[] = [];
  for (const task of bench.tasks) {
    const r = task.result;
    if (!('latency' in r)) throw new Error(`micro task ${task.name}: ${r.state}${'error' in r ? `: ${r.error.message}` : ''}`);
    const m = meta.get(task.name)!;
    results.push({
      suite: m.suite,
      name: task.name.slice(m.suite.length + 2),
      batch: m.batch,
      samples: r.latency.samplesCount,
      mean_ns: sig(r.latency.mean * 1e6),
      p50_ns: sig(r.latency.p50 * 1e6),
      p99_ns: sig(r.latency.p99 * 1e6),
      ops_per_s: Math.round(1e3 / r.latency.mean),
    });
  }
  return results;
}

export function fmtNs(ns: number): string {
  if (!Number.isFinite(ns)) return '-';
  if (ns < 1000) return `${ns.toFixed(ns < 10 ? 1 : 0)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(ns < 1e4 ? 2 : 1)} µs`;
  return `${(ns / 1e6).toFixed(2)} ms`;
}
