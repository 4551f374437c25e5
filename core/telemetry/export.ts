/**
 * Metrics out of the instance. The workers record (telemetry/otel.ts); the supervisor, which
 * serves no traffic, owns the exporters: on each Prometheus scrape it asks every worker for its
 * snapshot over IPC and sums them with prom-client's AggregatorRegistry, so a scrape sees one
 * instance whatever the worker count, and rendering never runs on a worker's event loop.
 *
 * A worker that is replaced takes its counts with it: the instance's counters go down once, which
 * Prometheus' rate() reads as a counter reset.
 */
import http from 'node:http';
import { AggregatorRegistry, collectDefaultMetrics, Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { MetricJSON } from './metrics.js';
import type { OtelConfig, PrometheusExporter } from './otel.js';

/** A worker's process metrics (CPU, memory, heap, event loop lag, GC), prom-client's defaults. */
export function processRegistry(): Registry {
  const r = new Registry();
  collectDefaultMetrics({ register: r });
  return r;
}

/** Asks every worker for its snapshot; resolves with the answers that came within the bound. */
export type Collect = () => Promise<MetricJSON[][]>;

/**
 * A small HTTP server of the supervisor's (metrics, stats): bounded idle and request times, and an
 * error listener for its whole life, so a later accept error (EMFILE) is logged, never thrown at
 * the supervisor.
 */
export abstract class SupervisorServer {
  private readonly server: http.Server;

  constructor(
    /** `Prometheus exporter 'x'`, `telemetry/metrics`: for messages. */
    private readonly what: string,
    private readonly host: string,
    private readonly port: number,
    protected readonly logger: Logger,
  ) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 10_000;
  }

  protected abstract handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void>;

  /** Resolves with the bound port; `serving` says what (logged at INFO). */
  listen(serving = ''): Promise<number> {
    return new Promise((resolve, reject) => {
      let listening = false;
      this.server.on('error', (err) => {
        if (!listening) reject(new Error(`${this.what} on ${this.host}:${this.port}: ${err.message}`));
        else this.logger.error(`[SERVICE: Telemetry] ${this.what}: ${err.message}`);
      });
      this.server.listen(this.port, this.host, () => {
        listening = true;
        const port = (this.server.address() as { port: number }).port;
        this.logger.info(`[SERVICE: Telemetry] ${this.what} serving ${serving} on ${this.host}:${port}`);
        resolve(port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/** One `exporters.prometheus` entry: `GET /metrics` on its own port. */
export class PrometheusServer extends SupervisorServer {
  /** The scrape being collected: concurrent scrapes share it (one snapshot per worker at a time). */
  private rendering: Promise<string> | null = null;

  constructor(
    private readonly exp: PrometheusExporter,
    private readonly otel: OtelConfig,
    private readonly collect: Collect,
    logger: Logger,
  ) {
    super(`Prometheus exporter '${exp.name}'`, exp.listenIp, exp.port, logger);
  }

  override listen(): Promise<number> {
    return super.listen('/metrics');
  }

  protected async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('404 page not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('405 method not allowed\n');
      return;
    }
    try {
      this.rendering ??= this.render().finally(() => (this.rendering = null));
      const text = await this.rendering;
      res.writeHead(200, { 'content-type': AggregatorRegistry.PROMETHEUS_CONTENT_TYPE });
      res.end(req.method === 'HEAD' ? undefined : text);
    } catch (err) {
      this.logger.error(`[SERVICE: OpenTelemetry] Prometheus exporter '${this.exp.name}': ${(err as Error).message}`);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('metrics unavailable\n');
    }
  }

  /** The instance's metrics in Prometheus' text format. */
  async render(): Promise<string> {
    const workers = await this.collect();
    const own: MetricJSON[] = [
      {
        name: 'target_info',
        help: 'Target metadata',
        type: 'gauge',
        aggregator: 'sum',
        values: [{ value: 1, labels: { service_name: this.otel.serviceName, service_version: this.otel.serviceVersion } }],
      },
      { name: 'gw_workers', help: 'Worker processes that answered this scrape', type: 'gauge', aggregator: 'sum', values: [{ value: workers.length, labels: {} }] },
    ];
    const registry = AggregatorRegistry.aggregate([own, ...workers] as never);
    return registry.metrics();
  }
}
