/**
 * Metrics over OTLP/HTTP: every `metric_reporting_period` (or the exporter's
 * `custom_reporting_period`) the supervisor collects the workers' snapshots, sums them with
 * prom-client's AggregatorRegistry (as for a Prometheus scrape), turns the sums back into
 * OpenTelemetry's data model (cumulative sums, histograms, gauges, under krakend-otel's instrument
 * and attribute names) and hands them to the OpenTelemetry SDK's OTLP exporter.
 */
import { hrTime } from '@opentelemetry/core';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { AggregatorRegistry } from 'prom-client';
import type { Logger } from '../log.js';
import type { MetricJSON } from './metrics.js';
import type { OtelConfig, OtlpMetricsExporter } from './otel.js';

/** krakend-otel's instrument names, by the Prometheus names gw records under. */
const INSTRUMENTS: Record<string, { name: string; unit: string }> = {
  http_server_duration: { name: 'http.server.duration', unit: 's' },
  http_server_response_size: { name: 'http.server.response.size', unit: 'By' },
  http_server_active_requests: { name: 'http.server.active_requests', unit: '' },
  krakend_proxy_duration: { name: 'krakend.proxy.duration', unit: 's' },
  krakend_backend_duration: { name: 'krakend.backend.duration', unit: 's' },
  http_client_request_started_count_total: { name: 'http.client.request.started.count', unit: '' },
  http_client_request_failed_count_total: { name: 'http.client.request.failed.count', unit: '' },
  http_client_request_canceled_count_total: { name: 'http.client.request.canceled.count', unit: '' },
  http_client_request_timedout_count_total: { name: 'http.client.request.timedout.count', unit: '' },
  http_client_duration: { name: 'http.client.duration', unit: 's' },
  http_client_response_size: { name: 'http.client.response.size', unit: 'By' },
};

/** Attribute names, back from their Prometheus form. */
const ATTRIBUTES: Record<string, string> = {
  http_route: 'http.route',
  http_request_method: 'http.request.method',
  http_response_status_code: 'http.response.status_code',
  url_scheme: 'url.scheme',
  krakend_endpoint_route: 'krakend.endpoint.route',
  krakend_endpoint_method: 'krakend.endpoint.method',
  server_address: 'server.address',
  server_port: 'server.port',
};
const SCOPE_LABELS = new Set(['otel_scope_name', 'otel_scope_version', 'le']);

function attributes(labels: Record<string, string | number>): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const k in labels) {
    if (SCOPE_LABELS.has(k)) continue;
    const v = labels[k]!;
    out[ATTRIBUTES[k] ?? k] = k === 'http_response_status_code' || k === 'server_port' ? Number(v) : v;
  }
  return out;
}

/** The summed snapshot in OpenTelemetry's data model. */
export function toResourceMetrics(families: MetricJSON[], otel: OtelConfig, start: [number, number]): ResourceMetrics {
  const end = hrTime();
  const metrics: MetricData[] = [];
  for (const f of families) {
    const inst = INSTRUMENTS[f.name];
    if (inst === undefined) continue;
    const descriptor = { name: inst.name, description: f.help, unit: inst.unit, valueType: 1 };
    if (f.type === 'histogram') {
      const series = new Map<string, { attrs: Record<string, string | number>; le: [number, number][]; sum: number; count: number }>();
      for (const v of f.values) {
        const attrs = attributes(v.labels);
        const key = JSON.stringify(attrs);
        let s = series.get(key);
        if (s === undefined) series.set(key, (s = { attrs, le: [], sum: 0, count: 0 }));
        if (v.metricName?.endsWith('_bucket')) s.le.push([v.labels.le === '+Inf' ? Infinity : Number(v.labels.le), v.value]);
        else if (v.metricName?.endsWith('_sum')) s.sum = v.value;
        else if (v.metricName?.endsWith('_count')) s.count = v.value;
      }
      metrics.push({
        descriptor,
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.HISTOGRAM,
        dataPoints: [...series.values()].map((s) => {
          s.le.sort((a, b) => a[0] - b[0]);
          const boundaries = s.le.filter(([b]) => b !== Infinity).map(([b]) => b);
          // Cumulative `le` counts → per-bucket counts (the last bucket is above the last boundary).
          const counts = s.le.map(([, c], i) => c - (i === 0 ? 0 : s.le[i - 1]![1]));
          return { attributes: s.attrs, startTime: start, endTime: end, value: { buckets: { boundaries, counts }, sum: s.sum, count: s.count } };
        }),
      } as MetricData);
    } else {
      metrics.push({
        descriptor,
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: f.type === 'counter' ? DataPointType.SUM : DataPointType.GAUGE,
        ...(f.type === 'counter' ? { isMonotonic: true } : {}),
        dataPoints: f.values.map((v) => ({ attributes: attributes(v.labels), startTime: start, endTime: end, value: v.value })),
      } as MetricData);
    }
  }
  return {
    resource: resourceFromAttributes({ 'service.name': otel.serviceName, 'service.version': otel.serviceVersion }),
    scopeMetrics: [{ scope: { name: 'io.krakend.krakend-otel', version: '' }, metrics }],
  } as ResourceMetrics;
}

/** One `exporters.otlp` entry sending metrics, on its period. */
export class OtlpMetricsPusher {
  private readonly exporter: OTLPMetricExporter;
  private timer: NodeJS.Timeout | null = null;
  private readonly start = hrTime();
  private busy = false;
  private failing = false;

  constructor(
    private readonly exp: OtlpMetricsExporter,
    private readonly otel: OtelConfig,
    private readonly collect: () => Promise<MetricJSON[][]>,
    private readonly logger: Logger,
  ) {
    this.exporter = new OTLPMetricExporter({ url: exp.url, timeoutMillis: 10_000 });
  }

  async listen(): Promise<number> {
    this.timer = setInterval(() => void this.push(), this.exp.everyMs);
    this.timer.unref();
    this.logger.info(`[SERVICE: OpenTelemetry] OTLP exporter '${this.exp.name}' sends metrics to ${this.exp.url} every ${this.exp.everyMs / 1000} s`);
    return 0;
  }

  private async push(): Promise<void> {
    if (this.busy) return; // a slow collector: the next period sends the newer sums
    this.busy = true;
    try {
      const workers = await this.collect();
      if (workers.length === 0) return;
      const summed = (await AggregatorRegistry.aggregate(workers as never).getMetricsAsJSON()) as unknown as MetricJSON[];
      const rm = toResourceMetrics(summed, this.otel, this.start);
      await new Promise<void>((resolve) =>
        this.exporter.export(rm, (r) => {
          this.state(r.code === 0 ? null : (r.error?.message ?? 'export failed'));
          resolve();
        }),
      );
    } catch (err) {
      this.state((err as Error).message);
    } finally {
      this.busy = false;
    }
  }

  /** Logged once per change: a collector that is down is not reported every period. */
  private state(error: string | null): void {
    if (error !== null && !this.failing) this.logger.warn(`[SERVICE: OpenTelemetry] OTLP exporter '${this.exp.name}': sending metrics failed (${error}); retrying every period`);
    else if (error === null && this.failing) this.logger.info(`[SERVICE: OpenTelemetry] OTLP exporter '${this.exp.name}': sending metrics again`);
    this.failing = error !== null;
  }

  async close(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    await this.exporter.shutdown().catch(() => {});
  }
}
