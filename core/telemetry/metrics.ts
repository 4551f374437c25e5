/**
 * Request metrics, recorded per worker at the cost of a few array writes per request.
 *
 * Series are bound once (per endpoint, per backend, per status seen) and hold plain counters and
 * histogram buckets; nothing is hashed or allocated per request once a series exists. A scrape
 * (or an OTLP export) asks every worker for `snapshot()`: prom-client's JSON form of each family,
 * which the supervisor sums over workers with prom-client's AggregatorRegistry and renders
 * (telemetry/export.ts). The names and labels are krakend-otel's, after OpenTelemetry's
 * Prometheus translation, so KrakenD dashboards keep working.
 */

/** krakend-otel's buckets (config/histogram_buckets.go). */
export const TIME_BUCKETS: readonly number[] = [0.01, 0.02, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.35, 0.5, 0.75, 1, 1.5, 2, 3.5, 5, 10];
export const SIZE_BUCKETS: readonly number[] = [128, 256, 512, 1024, 4096, 8192, 16384, 32768, 65536, 262144, 524288, 1048576, 4194304, 16777216, 67108864];

export type Labels = Readonly<Record<string, string>>;

/** prom-client's `MetricObjectWithValues` (what `Registry.getMetricsAsJSON()` returns). */
export interface MetricJSON {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  aggregator: 'sum';
  values: { value: number; labels: Record<string, string | number>; metricName?: string }[];
}

/** One histogram series: bucket counts (not cumulative), sum, count, and what /__stats needs. */
export class HistogramSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  min = Infinity;
  max = -Infinity;
  sumSq = 0;
  constructor(
    readonly labels: Labels,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
    this.sumSq += v * v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
  }
}

export class CounterSeries {
  value = 0;
  constructor(readonly labels: Labels) {}
  inc(n = 1): void {
    this.value += n;
  }
}

abstract class Family<S extends { labels: Labels }> {
  protected readonly series = new Map<string, S>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  protected abstract make(labels: Labels): S;
  /** The series for `labels`, made on first use (start-up, or the first request with a new status). */
  bind(labels: Labels): S {
    const key = JSON.stringify(labels);
    let s = this.series.get(key);
    if (s === undefined) {
      s = this.make(labels);
      this.series.set(key, s);
    }
    return s;
  }
  all(): IterableIterator<S> {
    return this.series.values();
  }
  abstract toJSON(scope: Labels): MetricJSON;
}

export class Histogram extends Family<HistogramSeries> {
  constructor(
    name: string,
    help: string,
    readonly bounds: readonly number[],
  ) {
    super(name, help);
  }
  protected make(labels: Labels): HistogramSeries {
    return new HistogramSeries(labels, this.bounds);
  }
  toJSON(scope: Labels): MetricJSON {
    const values: MetricJSON['values'] = [];
    for (const s of this.series.values()) {
      if (s.count === 0) continue;
      const labels = { ...s.labels, ...scope };
      let cum = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cum += s.counts[i]!;
        values.push({ value: cum, labels: { ...labels, le: i < this.bounds.length ? this.bounds[i]! : '+Inf' }, metricName: `${this.name}_bucket` });
      }
      values.push({ value: s.sum, labels, metricName: `${this.name}_sum` });
      values.push({ value: s.count, labels, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: 'histogram', aggregator: 'sum', values };
  }
}

export class Counter extends Family<CounterSeries> {
  protected make(labels: Labels): CounterSeries {
    return new CounterSeries(labels);
  }
  toJSON(scope: Labels): MetricJSON {
    const values: MetricJSON['values'] = [];
    for (const s of this.series.values()) if (s.value !== 0) values.push({ value: s.value, labels: { ...s.labels, ...scope } });
    return { name: this.name, help: this.help, type: 'counter', aggregator: 'sum', values };
  }
}

/** Per-status series of one route, looked up by status code without building a key. */
export class ByStatus<S extends { labels: Labels }> {
  private readonly byCode = new Map<number, S>();
  constructor(
    private readonly family: { bind(l: Labels): S },
    private readonly base: Labels,
    private readonly statusLabel = 'http_response_status_code',
  ) {}
  get(status: number): S {
    let s = this.byCode.get(status);
    if (s === undefined) {
      s = this.family.bind({ ...this.base, [this.statusLabel]: String(status) });
      this.byCode.set(status, s);
    }
    return s;
  }
}

/** Outcome flags of a proxy or backend call, as krakend-otel labels them. */
export const enum Outcome {
  Complete = 0,
  Incomplete = 1,
  Error = 2,
  Canceled = 3,
}

const OUTCOME_LABELS: readonly Labels[] = [
  { complete: 'true', error: 'false', canceled: 'false' },
  { complete: 'false', error: 'false', canceled: 'false' },
  { complete: 'false', error: 'true', canceled: 'false' },
  { complete: 'false', error: 'false', canceled: 'true' },
];

/** The four outcome series of one proxy or backend stage. */
export class ByOutcome {
  private readonly s: HistogramSeries[];
  constructor(family: Histogram, base: Labels) {
    this.s = OUTCOME_LABELS.map((o) => family.bind({ ...base, ...o }));
  }
  observe(o: Outcome, seconds: number): void {
    this.s[o]!.observe(seconds);
  }
}
