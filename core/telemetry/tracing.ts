/**
 * Traces (`telemetry/opentelemetry` with an OTLP exporter): krakend-otel's spans, exported over
 * OTLP/HTTP by the OpenTelemetry SDK from each worker.
 *
 *   global  (SERVER, named by the raw path; parent: the client's `traceparent`, unless
 *            layers.global.disable_propagation)
 *   └ proxy (INTERNAL, the endpoint route `/users/:id`)
 *     ├ plugin/req-resp-modifier: <name> (INTERNAL, an endpoint-level modifier call)
 *     └ backend (CLIENT, the backend url_pattern): its context goes to the backend as `traceparent`
 *       └ plugin/http-client: <name>, plugin/req-resp-modifier: <name> (INTERNAL)
 *
 * With server plugins (`plugin/http-server`), each plugin's call is a span too, outermost first,
 * and the global span is a child of the innermost one (KrakenD runs them outside its telemetry;
 * gw traces them so that their time is not a gap before the global span).
 *
 * Nothing here runs unless traces are configured; a request that is not sampled costs one
 * sampler call and carries no span.
 */
import { context, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';

export interface OtlpTraceExporter {
  readonly name: string;
  /** `http://host:port/v1/traces` */
  readonly url: string;
}

export interface TraceOptions {
  readonly serviceName: string;
  readonly serviceVersion: string;
  readonly sampleRate: number;
  readonly exporters: readonly OtlpTraceExporter[];
  /** The client's traceparent is honoured (layers.global.disable_propagation false). */
  readonly propagate: boolean;
  /** Endpoint paths whose requests are not traced (skip_paths). */
  readonly skipPaths: ReadonlySet<string>;
  readonly proxy: boolean;
  readonly backend: boolean;
  /** How often spans are sent (ms). */
  readonly exportEveryMs: number;
}

const propagator = new W3CTraceContextPropagator();
const headerGetter = {
  keys: (c: Record<string, string>) => Object.keys(c),
  get: (c: Record<string, string>, k: string) => c[k],
};
const headerSetter = {
  set: (c: Record<string, string>, k: string, v: string) => {
    c[k] = v;
  },
};

import type { PluginSpan } from './span.js';
export type { PluginSpan } from './span.js';

/** Where a plugin's span hangs: a request (proxy span), a backend call, or a server plugin's context. */
export interface PluginSpans {
  plugin(kind: string, name: string): PluginSpan;
}

function pluginSpan(tracer: Tracer, parent: Context, kind: string, name: string): PluginSpan & { readonly ctx: Context } {
  const span = tracer.startSpan(`${kind}: ${name}`, { kind: SpanKind.INTERNAL, attributes: { 'krakend.stage': 'plugin', 'krakend.plugin': name, 'krakend.plugin.kind': kind } }, parent);
  return {
    ctx: trace.setSpan(parent, span),
    end(error) {
      if (error !== null) {
        span.recordException(error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      }
      span.end();
    },
  };
}

/** One request's spans. */
export class RequestTrace implements PluginSpans {
  private readonly proxyCtx: Context;
  constructor(
    private readonly t: Tracing,
    readonly server: Span,
    readonly proxy: Span | null,
  ) {
    this.proxyCtx = trace.setSpan(ROOT_CONTEXT, proxy ?? server);
  }

  /** A backend call's span, and the `traceparent` (and `tracestate`) to send with it; null when backends are not traced. */
  backend(pattern: string, method: string, url: string): BackendTrace | null {
    if (!this.t.opts.backend) return null;
    const span = this.t.tracer.startSpan(pattern, { kind: SpanKind.CLIENT, attributes: { 'krakend.stage': 'backend-request', 'http.request.method': method, 'url.full': url, 'http.route': pattern } }, this.proxyCtx);
    const carrier: Record<string, string> = {};
    propagator.inject(trace.setSpan(context.active(), span), carrier, headerSetter);
    return new BackendTrace(span, carrier, this.t.tracer);
  }

  /** An endpoint-level plugin's span (a request or response modifier), under the proxy span. */
  plugin(kind: string, name: string): PluginSpan {
    return pluginSpan(this.t.tracer, this.proxyCtx, kind, name);
  }

  /** The request answered (or left): the proxy and global spans end. */
  end(status: number, error: Error | null): void {
    for (const s of [this.proxy, this.server]) {
      if (s === null) continue;
      s.setAttribute('http.response.status_code', status);
      if (error !== null) s.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      s.end();
    }
  }
}

export class BackendTrace implements PluginSpans {
  constructor(
    readonly span: Span,
    /** `traceparent` (and `tracestate`) for the backend request. */
    readonly headers: Readonly<Record<string, string>>,
    private readonly tracer: Tracer,
  ) {}

  /** A plugin's span under this backend call (an HTTP client plugin's handler, a backend modifier). */
  plugin(kind: string, name: string): PluginSpan {
    return pluginSpan(this.tracer, trace.setSpan(ROOT_CONTEXT, this.span), kind, name);
  }
  end(status: number, error: Error | null): void {
    if (status > 0) this.span.setAttribute('http.response.status_code', status);
    if (error !== null) {
      this.span.recordException(error);
      this.span.setStatus({ code: SpanStatusCode.ERROR, message: (error as { detail?: string }).detail ?? error.message });
    }
    this.span.end();
  }
}

/** One worker's tracer. */
export class Tracing {
  readonly tracer: Tracer;
  private readonly provider: BasicTracerProvider;

  constructor(readonly opts: TraceOptions) {
    const rate = opts.sampleRate;
    // krakend-otel: a rate strictly between 0 and 1 samples (honouring a sampled parent); anything else samples all.
    const sampler = rate > 0 && rate < 1 ? new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(rate) }) : new AlwaysOnSampler();
    this.provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': opts.serviceName, 'service.version': opts.serviceVersion }),
      sampler,
      spanProcessors: opts.exporters.map(
        (e) => new BatchSpanProcessor(new OTLPTraceExporter({ url: e.url, timeoutMillis: 5000 }), { scheduledDelayMillis: opts.exportEveryMs, maxQueueSize: 8192 }),
      ),
    });
    this.tracer = this.provider.getTracer('io.krakend.krakend-otel');
  }

  /** The global span (and the proxy span under it) of a request; `traceparent` is the client's header ('' when none). */
  start(path: string, method: string, route: string, traceparent: string, tracestate: string, within?: Context): RequestTrace {
    const parent = within ?? this.clientContext(traceparent, tracestate);
    const server = this.tracer.startSpan(path, { kind: SpanKind.SERVER, attributes: { 'http.request.method': method, 'url.path': path, 'krakend.stage': 'global' } }, parent);
    const proxy = this.opts.proxy
      ? this.tracer.startSpan(route, { kind: SpanKind.INTERNAL, attributes: { 'http.request.method': method, 'http.route': route, 'krakend.stage': 'proxy' } }, trace.setSpan(ROOT_CONTEXT, server))
      : null;
    return new RequestTrace(this, server, proxy);
  }

  /** The client's trace context: its `traceparent` when propagation is on, else a new trace. */
  clientContext(traceparent: string, tracestate: string): Context {
    if (!this.opts.propagate || traceparent === '') return ROOT_CONTEXT;
    const carrier: Record<string, string> = { traceparent };
    if (tracestate !== '') carrier.tracestate = tracestate;
    return propagator.extract(ROOT_CONTEXT, carrier, headerGetter);
  }

  /**
   * A server plugin's span (`plugin/http-server`), under `parent`: the client's context for the
   * outermost plugin, the enclosing plugin's span for the others. Its `ctx` is the parent of what
   * the plugin calls next, down to the router's global span.
   */
  serverPlugin(parent: Context, name: string): PluginSpan & { readonly ctx: Context } {
    return pluginSpan(this.tracer, parent, 'plugin/http-server', name);
  }

  skips(path: string): boolean {
    return this.opts.skipPaths.has(path);
  }

  /** Sends what is queued and stops (shutdown). */
  close(): Promise<void> {
    return this.provider.shutdown().catch(() => {});
  }
}
