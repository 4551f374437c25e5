/**
 * `telemetry/metrics` (krakend-metrics, KrakenD's legacy stats): `GET /__stats` on its own
 * `listen_address`, served by the supervisor from every worker's series (telemetry/otel.ts), in
 * krakend-metrics' expvar shape — one flat JSON object, keys sorted:
 *
 *   krakend.router.response.<route>.status.<code>.count
 *   krakend.router.response.<route>.size.{count,min,max,mean,std-dev,50-percentile,…}   (bytes)
 *   krakend.router.response.<route>.time.{…}                                             (ns)
 *   krakend.proxy.requests.layer.pipe.name.<route>.complete.<b>.error.<b>
 *   krakend.proxy.latency.layer.pipe.name.<route>.complete.<b>.error.<b>.{…}            (ns)
 *   krakend.proxy.requests.layer.backend.name.<url_pattern>.complete.<b>.error.<b>   (and .latency.)
 *   cmdline, memstats (the workers' memory, summed: Node's figures under Go's names)
 *
 * Percentiles come from the histogram buckets (interpolated, clamped to the min and max seen);
 * go-metrics keeps a reservoir of samples instead.
 */
import http from 'node:http';
import { ConfigError } from '../config/load.js';
import type { ServiceConfig } from '../config/types.js';
import { parseDuration } from '../config/duration.js';
import type { Logger } from '../log.js';
import type { StatEntry } from './otel.js';
import { SupervisorServer } from './export.js';

export const STATS_NS = 'telemetry/metrics';

export interface StatsConfig {
  readonly host: string;
  readonly port: number;
  readonly router: boolean;
  readonly proxy: boolean;
  readonly backend: boolean;
}

/** One worker's answer: its series and its memory. */
export interface WorkerStats {
  entries: StatEntry[];
  memory: { rss: number; heapTotal: number; heapUsed: number; external: number };
}

export function parseStats(cfg: ServiceConfig): StatsConfig | null {
  const raw = cfg.extraConfig[STATS_NS];
  if (raw === undefined) return null;
  const where = `extra_config["${STATS_NS}"]`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${where}: must be an object`);
  const o = raw as Record<string, unknown>;
  const addr = o.listen_address ?? ':8090';
  const m = typeof addr === 'string' ? /^(.*):(\d{1,5})$/.exec(addr) : null;
  if (m === null || Number(m[2]) > 65535) throw new ConfigError(`${where}.listen_address: ${JSON.stringify(addr)} is not ":port" or "host:port"`);
  const port = Number(m[2]);
  if (port === cfg.port) throw new ConfigError(`${where}.listen_address: port ${port} is the gateway's own port`);
  const flag = (k: string): boolean => {
    const v = o[k];
    if (v === undefined || v === null) return false;
    if (typeof v !== 'boolean') throw new ConfigError(`${where}.${k}: ${JSON.stringify(v)} is not true or false`);
    return v;
  };
  if (o.collection_time !== undefined) parseDuration(o.collection_time as string);
  return {
    host: m[1] === '' ? '0.0.0.0' : m[1]!.replace(/^\[(.*)\]$/, '$1'),
    port,
    router: !flag('router_disabled') && !flag('endpoint_disabled'),
    proxy: !flag('proxy_disabled'),
    backend: !flag('backend_disabled'),
  };
}

/** Quantile `q` of a bucketed histogram, interpolated inside its bucket and clamped to [min, max]. */
function quantile(e: StatEntry, q: number): number {
  const rank = q * e.count;
  let seen = 0;
  for (let i = 0; i < e.counts.length; i++) {
    const c = e.counts[i]!;
    if (c === 0) continue;
    if (seen + c >= rank) {
      const lo = i === 0 ? e.min : Math.max(e.bounds[i - 1]!, e.min);
      const hi = i < e.bounds.length ? Math.min(e.bounds[i]!, e.max) : e.max;
      return lo + (hi - lo) * Math.min(1, Math.max(0, (rank - seen) / c));
    }
    seen += c;
  }
  return e.max;
}

const PERCENTILES: [string, number][] = [['50', 0.5], ['75', 0.75], ['95', 0.95], ['99', 0.99], ['999', 0.999]];

/** Adds `e`'s observations to `into`. */
function add(into: StatEntry, e: StatEntry): void {
  into.count += e.count;
  into.sum += e.sum;
  into.sumSq += e.sumSq;
  into.min = Math.min(into.min, e.min);
  into.max = Math.max(into.max, e.max);
  for (let i = 0; i < into.counts.length; i++) into.counts[i]! += e.counts[i] ?? 0;
}

const copy = (e: StatEntry): StatEntry => ({ ...e, counts: [...e.counts] });

/** Sums the workers' series that share a family and labels. */
function merge(all: StatEntry[]): Map<string, StatEntry> {
  const out = new Map<string, StatEntry>();
  for (const e of all) {
    const k = e.family + JSON.stringify(e.labels);
    const m = out.get(k);
    if (m === undefined) out.set(k, copy(e));
    else add(m, e);
  }
  return out;
}

/** Several series folded into one (the size and time of a route, whatever the status). */
function fold(entries: StatEntry[]): StatEntry {
  const f = copy(entries[0]!);
  for (let i = 1; i < entries.length; i++) add(f, entries[i]!);
  return f;
}

/** go-metrics' histogram keys under `prefix`, values multiplied by `scale` (seconds → ns). */
function histogram(out: Record<string, unknown>, prefix: string, e: StatEntry, scale: number): void {
  const mean = e.sum / e.count;
  const variance = Math.max(0, e.sumSq / e.count - mean * mean);
  out[`${prefix}.count`] = e.count;
  out[`${prefix}.min`] = Math.round(e.min * scale);
  out[`${prefix}.max`] = Math.round(e.max * scale);
  out[`${prefix}.mean`] = mean * scale;
  out[`${prefix}.std-dev`] = Math.sqrt(variance) * scale;
  for (const [name, q] of PERCENTILES) out[`${prefix}.${name}-percentile`] = quantile(e, q) * scale;
}

const NS = 1e9;

/** The `/__stats` object from the workers' answers. */
export function renderStats(cfg: StatsConfig, workers: WorkerStats[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  out.cmdline = process.argv;
  const mem = { rss: 0, heapTotal: 0, heapUsed: 0, external: 0 };
  for (const w of workers) for (const k of Object.keys(mem) as (keyof typeof mem)[]) mem[k] += w.memory[k];
  out.memstats = { Alloc: mem.heapUsed, HeapAlloc: mem.heapUsed, HeapSys: mem.heapTotal, Sys: mem.rss, External: mem.external };
  out['krakend.router.connected'] = 0;
  out['krakend.router.disconnected'] = 0;
  const merged = merge(workers.flatMap((w) => w.entries));
  const byRoute = new Map<string, { time: StatEntry[]; size: StatEntry[] }>();
  for (const e of merged.values()) {
    const l = e.labels;
    if (e.family === 'http_server_duration' || e.family === 'http_server_response_size') {
      if (!cfg.router) continue;
      const route = l.http_route ?? '';
      let r = byRoute.get(route);
      if (r === undefined) byRoute.set(route, (r = { time: [], size: [] }));
      if (e.family === 'http_server_duration') {
        r.time.push(e);
        out[`krakend.router.response.${route}.status.${l.http_response_status_code}.count`] = e.count;
      } else r.size.push(e);
    } else if (e.family === 'krakend_proxy_duration' || e.family === 'krakend_backend_duration') {
      const pipe = e.family === 'krakend_proxy_duration';
      if (pipe ? !cfg.proxy : !cfg.backend) continue;
      // The endpoint's route for the pipe, the backend's url_pattern (`:param` form) for a backend.
      const name = l.http_route;
      // krakend-metrics has complete/error only: a cancellation is an error there.
      const tail = `layer.${pipe ? 'pipe' : 'backend'}.name.${name}.complete.${l.complete}.error.${l.error === 'true' || l.canceled === 'true'}`;
      const key = `krakend.proxy.requests.${tail}`;
      out[key] = ((out[key] as number | undefined) ?? 0) + e.count;
      histogram(out, `krakend.proxy.latency.${tail}`, e, NS);
    }
  }
  for (const [route, r] of byRoute) {
    if (r.time.length > 0) histogram(out, `krakend.router.response.${route}.time`, fold(r.time), NS);
    if (r.size.length > 0) histogram(out, `krakend.router.response.${route}.size`, fold(r.size), 1);
  }
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(out).sort()) sorted[k] = out[k];
  return sorted;
}

/** `GET /__stats` on the `listen_address`, in the supervisor. */
export class StatsServer extends SupervisorServer {
  constructor(
    private readonly cfg: StatsConfig,
    private readonly collect: () => Promise<WorkerStats[]>,
    logger: Logger,
  ) {
    super(STATS_NS, cfg.host, cfg.port, logger);
  }

  override listen(): Promise<number> {
    return super.listen('/__stats');
  }

  protected async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/__stats/') {
      // gin's trailing-slash redirect, as krakend-metrics' own engine answers.
      res.writeHead(req.method === 'GET' ? 301 : 307, { location: '/__stats' }).end();
      return;
    }
    if (path !== '/__stats' || req.method !== 'GET') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('404 page not found');
      return;
    }
    try {
      const body = JSON.stringify(renderStats(this.cfg, await this.collect()), null, 0);
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' }).end(body);
    } catch (err) {
      this.logger.error(`[SERVICE: Telemetry] /__stats: ${(err as Error).message}`);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('stats unavailable');
    }
  }
}
