/**
 * `telemetry/opentelemetry` (krakend-otel): the configuration, and the request metrics of one
 * worker under krakend-otel's names, after OpenTelemetry's Prometheus translation:
 *
 *  - global:  http_server_duration, http_server_response_size (method, route, status, scheme),
 *             http_server_active_requests (gw: requests in flight);
 *  - proxy:   krakend_proxy_duration (endpoint method and route; complete / error / canceled);
 *  - backend: krakend_backend_duration (backend method and url_pattern, the endpoint's route and
 *             method; complete / error / canceled) and the round trip's
 *             http_client_request_{started,failed,canceled,timedout}_count_total,
 *             http_client_duration, http_client_response_size (+ status, server address and port).
 *
 * Series are bound at start-up (per endpoint and backend) or on the first request with a new status
 * code; a request then costs a few array writes (metrics.ts). The supervisor sums the workers'
 * snapshots (telemetry/export.ts).
 */
import { ConfigError } from '../config/load.js';
import type { BackendConfig, EndpointConfig, ServiceConfig } from '../config/types.js';
import type { OtlpTraceExporter, TraceOptions } from './tracing.js';
import { ByOutcome, ByStatus, Counter, Histogram, Outcome, SIZE_BUCKETS, TIME_BUCKETS, type HistogramSeries, type Labels, type MetricJSON } from './metrics.js';

export const OTEL_NS = 'telemetry/opentelemetry';

export interface PrometheusExporter {
  readonly name: string;
  readonly port: number;
  readonly listenIp: string;
  readonly processMetrics: boolean;
}

export interface OtlpMetricsExporter {
  readonly name: string;
  /** `http://host:port/v1/metrics` */
  readonly url: string;
  readonly everyMs: number;
}

export interface OtelConfig {
  readonly serviceName: string;
  readonly serviceVersion: string;
  /** Endpoint paths whose requests are not measured (krakend-otel's `skip_paths`). */
  readonly skipPaths: ReadonlySet<string>;
  readonly prometheus: readonly PrometheusExporter[];
  readonly global: boolean;
  readonly proxy: boolean;
  readonly backend: boolean;
  readonly roundTrip: boolean;
  readonly staticGlobal: Labels;
  readonly staticBackend: Labels;
  /** Traces over OTLP/HTTP (telemetry/tracing.ts), or null. */
  readonly traces: TraceOptions | null;
  /** Metrics over OTLP/HTTP (telemetry/otlp-metrics.ts). */
  readonly otlpMetrics: readonly OtlpMetricsExporter[];
  /** Warnings for what gw reads but does not do (yet). */
  readonly warnings: readonly string[];
}

const DEFAULT_SKIP = ['/__health', '/__debug/', '/__echo/', '/__stats/'];

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** One histogram series as a worker reports it for `/__stats`. */
export interface StatEntry {
  family: string;
  labels: Labels;
  count: number;
  sum: number;
  min: number;
  max: number;
  sumSq: number;
  /** Bucket counts (not cumulative), one more than `bounds`. */
  counts: number[];
  bounds: readonly number[];
}

/** What the request metrics record when only `telemetry/metrics` asks for them: every layer, no exporter. */
export function statsOnlyConfig(cfg: ServiceConfig, version: string): OtelConfig {
  return {
    serviceName: cfg.name || 'KrakenD',
    serviceVersion: version,
    skipPaths: new Set(DEFAULT_SKIP),
    prometheus: [],
    global: true,
    proxy: true,
    backend: true,
    roundTrip: false,
    staticGlobal: {},
    staticBackend: {},
    traces: null,
    otlpMetrics: [],
    warnings: [],
  };
}

/** Parses `telemetry/opentelemetry`; null when absent. Bad values throw naming their path. */
export function parseOtel(cfg: ServiceConfig, version: string): OtelConfig | null {
  const raw = cfg.extraConfig[OTEL_NS];
  if (raw === undefined) return null;
  const where = `extra_config["${OTEL_NS}"]`;
  if (!isObj(raw)) throw new ConfigError(`${where}: must be an object`);
  const warnings: string[] = [];
  const str = (o: Obj, k: string, at: string, dflt: string): string => {
    const v = o[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'string') throw new ConfigError(`${at}.${k}: ${JSON.stringify(v)} is not a string`);
    return v;
  };
  const bool = (o: Obj, k: string, at: string, dflt = false): boolean => {
    const v = o[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') throw new ConfigError(`${at}.${k}: ${JSON.stringify(v)} is not true or false`);
    return v;
  };
  const int = (o: Obj, k: string, at: string, dflt: number, min: number, max: number): number => {
    const v = o[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ConfigError(`${at}.${k}: ${JSON.stringify(v)} is not an integer in ${min}…${max}`);
    return v;
  };
  const attrs = (o: Obj, k: string, at: string): Labels => {
    const v = o[k];
    if (v === undefined || v === null) return {};
    if (!Array.isArray(v)) throw new ConfigError(`${at}.${k}: must be a list of {key, value}`);
    const out: Record<string, string> = {};
    v.forEach((a, i) => {
      if (!isObj(a) || typeof a.key !== 'string' || typeof a.value !== 'string') throw new ConfigError(`${at}.${k}[${i}]: must be {"key": "…", "value": "…"}`);
      // Empty keys or values are ignored, as krakend-otel does.
      if (a.key !== '' && a.value !== '') out[promName(a.key)] = a.value;
    });
    return out;
  };

  const skip = raw.skip_paths;
  if (skip !== undefined && (!Array.isArray(skip) || skip.some((p) => typeof p !== 'string'))) throw new ConfigError(`${where}.skip_paths: must be a list of paths`);

  const exporters = isObj(raw.exporters) ? raw.exporters : {};
  if (raw.exporters !== undefined && !isObj(raw.exporters)) throw new ConfigError(`${where}.exporters: must be an object`);
  const list = (k: string): Obj[] => {
    const v = exporters[k];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || v.some((e) => !isObj(e))) throw new ConfigError(`${where}.exporters.${k}: must be a list of objects`);
    return v as Obj[];
  };
  const prometheus: PrometheusExporter[] = [];
  list('prometheus').forEach((e, i) => {
    const at = `${where}.exporters.prometheus[${i}]`;
    if (bool(e, 'disable_metrics', at)) return;
    // krakend-otel's code reads `host`; its schema and docs say `listen_ip`.
    const listenIp = str(e, 'listen_ip', at, str(e, 'host', at, '0.0.0.0'));
    prometheus.push({ name: str(e, 'name', at, `prometheus${i}`), port: int(e, 'port', at, 9090, 1, 65535), listenIp, processMetrics: bool(e, 'process_metrics', at) });
  });
  const traceExporters: OtlpTraceExporter[] = [];
  const otlpMetrics: OtlpMetricsExporter[] = [];
  const period = int(raw, 'metric_reporting_period', where, 30, 1, 86_400);
  list('otlp').forEach((e, i) => {
    const at = `${where}.exporters.otlp[${i}]`;
    const name = str(e, 'name', at, `otlp${i}`);
    if (!bool(e, 'use_http', at)) {
      warnings.push(`${at} (${name}): OTLP over gRPC is not implemented by gw: exporter ignored (set "use_http": true to send OTLP/HTTP, port 4318)`);
      return;
    }
    let host = str(e, 'host', at, 'localhost');
    let scheme = 'http';
    const m = /^(https?):\/\/(.*)$/.exec(host);
    if (m !== null) {
      scheme = m[1]!;
      host = m[2]!.replace(/\/+$/, '');
    }
    const port = int(e, 'port', at, 4318, 1, 65535);
    const base = `${scheme}://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
    if (!bool(e, 'disable_metrics', at)) otlpMetrics.push({ name, url: `${base}/v1/metrics`, everyMs: int(e, 'custom_reporting_period', at, period, 1, 86_400) * 1000 });
    if (!bool(e, 'disable_traces', at)) traceExporters.push({ name, url: `${base}/v1/traces` });
  });
  const rate = raw.trace_sample_rate;
  if (rate !== undefined && (typeof rate !== 'number' || rate < 0 || rate > 1)) throw new ConfigError(`${where}.trace_sample_rate: ${JSON.stringify(rate)} is not a number in 0…1`);
  const ports = new Set<number>();
  for (const p of prometheus) {
    if (ports.has(p.port)) throw new ConfigError(`${where}.exporters.prometheus: two exporters on port ${p.port}`);
    if (p.port === cfg.port) throw new ConfigError(`${where}.exporters.prometheus (${p.name}): port ${p.port} is the gateway's own port`);
    ports.add(p.port);
  }

  const layers = isObj(raw.layers) ? raw.layers : {};
  const layer = (k: string): Obj => (isObj(layers[k]) ? (layers[k] as Obj) : {});
  const g = layer('global');
  const px = layer('proxy');
  const b = layer('backend');
  // Without backend.metrics, krakend-otel's defaults: the stage and the round trip are measured.
  const bm = isObj(b.metrics) ? b.metrics : null;
  const at = `${where}.layers`;
  const bt = isObj(b.traces) ? b.traces : null;
  const serviceName = str(raw, 'service_name', where, cfg.name || 'KrakenD');
  const serviceVersion = str(raw, 'service_version', where, version);
  const traces: TraceOptions | null =
    traceExporters.length > 0 && !bool(g, 'disable_traces', `${at}.global`)
      ? {
          serviceName,
          serviceVersion,
          sampleRate: typeof rate === 'number' ? rate : 1,
          exporters: traceExporters,
          propagate: !bool(g, 'disable_propagation', `${at}.global`),
          skipPaths: new Set((skip as string[] | undefined) ?? DEFAULT_SKIP),
          proxy: !bool(px, 'disable_traces', `${at}.proxy`),
          backend: bt === null ? true : !bool(bt, 'disable_stage', `${at}.backend.traces`) || bool(bt, 'round_trip', `${at}.backend.traces`),
          exportEveryMs: 1000,
        }
      : null;
  return {
    serviceName,
    serviceVersion,
    traces,
    otlpMetrics,
    skipPaths: new Set((skip as string[] | undefined) ?? DEFAULT_SKIP),
    prometheus,
    global: !bool(g, 'disable_metrics', `${at}.global`),
    proxy: !bool(px, 'disable_metrics', `${at}.proxy`),
    backend: bm === null ? true : !bool(bm, 'disable_stage', `${at}.backend.metrics`),
    roundTrip: bm === null ? true : bool(bm, 'round_trip', `${at}.backend.metrics`),
    staticGlobal: attrs(g, 'metrics_static_attributes', `${at}.global`),
    staticBackend: bm === null ? {} : attrs(bm, 'static_attributes', `${at}.backend.metrics`),
    warnings,
  };
}

const KNOWN_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'CONNECT', 'TRACE']);

/** An attribute key as Prometheus writes it (`http.route` → `http_route`). */
function promName(k: string): string {
  return k.replace(/[^a-zA-Z0-9_]/g, '_');
}

/** krakend-otel's route form: `{id}` → `:id`. */
export function normaliseRoute(pattern: string): string {
  return pattern.replace(/\{\{?\.?([^}]+)\}?\}/g, (_, n: string) => ':' + n.toLowerCase());
}

/** Labels every series carries, as OpenTelemetry's exporter writes them. */
const SCOPE: Labels = { otel_scope_name: 'io.krakend.krakend-otel', otel_scope_version: '' };

/** The global layer of one route (an endpoint, or an unmatched request's status text). */
export class RouteMetrics {
  private readonly byStatus: ByStatus<{ labels: Labels; d: HistogramSeries; s: HistogramSeries }>;
  constructor(m: RequestMetrics, method: string, route: string) {
    const base = { ...m.config.staticGlobal, http_request_method: method, http_route: route, url_scheme: m.scheme };
    this.byStatus = new ByStatus(
      { bind: (l: Labels) => ({ labels: l, d: m.serverDuration.bind(l), s: m.serverSize.bind(l) }) },
      base,
    );
  }
  record(status: number, seconds: number, bytes: number): void {
    const c = this.byStatus.get(status);
    c.d.observe(seconds);
    c.s.observe(bytes);
  }
}

/** One backend's stage and round-trip metrics. */
export class BackendMetrics {
  private readonly stage: ByOutcome | null;
  private readonly rt: ByStatus<{ labels: Labels; started: { inc(): void }; failed: { inc(): void }; canceled: { inc(): void }; timedout: { inc(): void }; d: HistogramSeries; s: HistogramSeries }> | null;
  constructor(m: RequestMetrics, ep: EndpointConfig, b: BackendConfig) {
    const base = {
      ...m.config.staticBackend,
      http_request_method: b.method,
      http_route: normaliseRoute(b.urlPattern),
      krakend_endpoint_route: ep.path,
      krakend_endpoint_method: ep.method,
    };
    this.stage = m.config.backend ? new ByOutcome(m.backendDuration, base) : null;
    let server = '';
    let port = '';
    try {
      const u = new URL(b.hosts[0] ?? 'http://unknown');
      server = u.hostname;
      port = u.port || (u.protocol === 'https:' ? '443' : '80');
    } catch {
      /* a host gw's config check let through: no address labels */
    }
    const rtBase = { ...base, clientname: b.urlPattern, server_address: server, server_port: port };
    this.rt = m.config.roundTrip
      ? new ByStatus(
          {
            bind: (l: Labels) => ({
              labels: l,
              started: m.clientStarted.bind(l),
              failed: m.clientFailed.bind(l),
              canceled: m.clientCanceled.bind(l),
              timedout: m.clientTimedout.bind(l),
              d: m.clientDuration.bind(l),
              s: m.clientSize.bind(l),
            }),
          },
          rtBase,
        )
      : null;
  }

  /**
   * One call done: `status` is the backend's (0 when it never answered), `outcome` the stage's,
   * `bytes` the answer's length when known (-1 otherwise).
   */
  record(outcome: Outcome, seconds: number, status: number, bytes: number, timedOut: boolean): void {
    this.stage?.observe(outcome, seconds);
    const rt = this.rt;
    if (rt === null) return;
    const c = rt.get(status);
    c.started.inc();
    if (outcome === Outcome.Canceled) c.canceled.inc();
    else if (status === 0 || outcome === Outcome.Error) c.failed.inc();
    if (timedOut) c.timedout.inc();
    c.d.observe(seconds);
    if (bytes >= 0) c.s.observe(bytes);
  }
}

/** The endpoint's global and proxy series, and its no-op backend's. */
export class EndpointMetrics {
  readonly route: RouteMetrics | null;
  private readonly proxy: ByOutcome | null;
  constructor(m: RequestMetrics, ep: EndpointConfig) {
    this.route = m.config.global ? new RouteMetrics(m, ep.method, ep.path) : null;
    this.proxy = m.config.proxy ? new ByOutcome(m.proxyDuration, { http_request_method: ep.method, http_route: normaliseRoute(ep.path) }) : null;
  }
  /** The request answered (or left): its status, time and body size, and the proxy's outcome
   *  (null: refused before the proxy ran — an edge check, a guard). */
  record(status: number, seconds: number, bytes: number, outcome: Outcome | null): void {
    this.route?.record(status, seconds, bytes);
    if (outcome !== null) this.proxy?.observe(outcome, seconds);
  }
}

/** One worker's metrics. */
export class RequestMetrics {
  readonly serverDuration = new Histogram('http_server_duration', 'Time to answer a request, seconds (global layer)', TIME_BUCKETS);
  readonly serverSize = new Histogram('http_server_response_size', 'Size of the answer body, bytes (global layer)', SIZE_BUCKETS);
  readonly proxyDuration = new Histogram('krakend_proxy_duration', 'Time in the endpoint proxy, seconds (proxy layer)', TIME_BUCKETS);
  readonly backendDuration = new Histogram('krakend_backend_duration', 'Time in a backend stage, seconds (backend layer)', TIME_BUCKETS);
  readonly clientStarted = new Counter('http_client_request_started_count_total', 'Backend requests started');
  readonly clientFailed = new Counter('http_client_request_failed_count_total', 'Backend requests that failed (no answer, or an error status)');
  readonly clientCanceled = new Counter('http_client_request_canceled_count_total', 'Backend requests canceled (the client left, a concurrent call won)');
  readonly clientTimedout = new Counter('http_client_request_timedout_count_total', 'Backend requests cut by the endpoint timeout');
  readonly clientDuration = new Histogram('http_client_duration', 'Backend round trip until the answer head, seconds', TIME_BUCKETS);
  readonly clientSize = new Histogram('http_client_response_size', 'Backend answer Content-Length, bytes', SIZE_BUCKETS);
  readonly scheme: string;
  private readonly unmatched = new Map<string, RouteMetrics>();

  constructor(
    readonly config: OtelConfig,
    tls: boolean,
  ) {
    this.scheme = tls ? 'https' : 'http';
  }

  endpoint(ep: EndpointConfig): EndpointMetrics | null {
    if (this.config.skipPaths.has(ep.path)) return null;
    return new EndpointMetrics(this, ep);
  }

  backend(ep: EndpointConfig, b: BackendConfig): BackendMetrics | null {
    if (this.config.skipPaths.has(ep.path) || (!this.config.backend && !this.config.roundTrip)) return null;
    return new BackendMetrics(this, ep, b);
  }

  /** A request no endpoint matched: krakend-otel's route is the status text (`404 Not Found`). */
  unmatchedRoute(status: number, text: string, method: string): RouteMetrics | null {
    if (!this.config.global) return null;
    // The method and status come from the client: series are bounded by naming the rest `_OTHER`
    // (OpenTelemetry's convention) and keeping the router's own statuses only.
    const m = KNOWN_METHODS.has(method) ? method : '_OTHER';
    const key = `${status} ${m}`;
    let r = this.unmatched.get(key);
    if (r === undefined) {
      if (this.unmatched.size >= 64) return null;
      r = new RouteMetrics(this, m, text);
      this.unmatched.set(key, r);
    }
    return r;
  }

  /** The histogram series with what `/__stats` needs (telemetry/stats.ts): min, max, sum of squares. */
  statsSnapshot(): StatEntry[] {
    const out: StatEntry[] = [];
    for (const f of [this.serverDuration, this.serverSize, this.proxyDuration, this.backendDuration]) {
      for (const s of f.all()) {
        if (s.count === 0) continue;
        out.push({ family: f.name, labels: s.labels, count: s.count, sum: s.sum, min: s.min, max: s.max, sumSq: s.sumSq, counts: [...s.counts], bounds: f.bounds });
      }
    }
    return out;
  }

  /** prom-client's JSON of every family, plus the requests in flight now. */
  snapshot(inflight: number): MetricJSON[] {
    const fams = [
      this.serverDuration, this.serverSize, this.proxyDuration, this.backendDuration,
      this.clientStarted, this.clientFailed, this.clientCanceled, this.clientTimedout, this.clientDuration, this.clientSize,
    ];
    const out = fams.map((f) => f.toJSON(SCOPE));
    out.push({ name: 'http_server_active_requests', help: 'Requests in flight', type: 'gauge', aggregator: 'sum', values: [{ value: inflight, labels: { ...SCOPE } }] });
    return out;
  }
}

