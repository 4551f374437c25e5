/**
 * createGateway(config) → { listen(), close() }.
 * Start-up order: pools → plugins → per-backend pipes (client plugin or pooled client) →
 * per-endpoint proxies → uWS routes (+ special endpoints and the 404/405/redirect fallback).
 */
import type { ServiceConfig } from './config/types.js';
import { AccessLog } from './telemetry/access.js';
import { GW_VERSION } from './version.js';
import type { MetricJSON } from './telemetry/metrics.js';
import { parseOtel, RequestMetrics, statsOnlyConfig } from './telemetry/otel.js';
import { parseStats, type WorkerStats } from './telemetry/stats.js';
import { Tracing } from './telemetry/tracing.js';
import { SrvHosts } from './proxy/sd.js';
import { processRegistry } from './telemetry/export.js';
import type { Logger } from './log.js';
import { loadPlugins } from './plugin/loader.js';
import type { PluginRegistry } from './plugin/registry.js';
import { pluginClient, pluginDirect, resolveClientPlugin } from './plugin/client.js';
import { buildBackendPipe, type BackendPipe, type Client, type DirectClient } from './proxy/backend.js';
import { composeEndpointProxy } from './proxy/compose.js';
import { compileCors, CORS_NS } from './router/cors.js';
import { compileJwt } from './auth/jwt.js';
import { SIGNER_NS } from './auth/signer.js';
import { CEL_NS, compileCel, loadCel } from './validation/cel.js';
import { compileRequestChecks } from './validation/request.js';
import { loadLua } from './lua/vm.js';
import { BOT_NS, compileBodySchema, compileBotDetector, SCHEMA_NS } from './validation/guards.js';
import { LUA_BACKEND, LUA_PROXY } from './lua/modifier.js';
import type { OutboundRequest, Proxy } from './proxy/types.js';
import type { EndpointRuntime, ServerState } from './router/exchange.js';
import { createApp } from './router/app.js';
import { framed, guarded, registerRoutes } from './router/routes.js';
import { pluginEntry } from './router/plugin-entry.js';
import { VirtualApp } from './router/virtual.js';
import { buildServerChain, SERVER_NAMESPACE } from './plugin/server.js';
import { resolveModifiers, type Modifiers } from './plugin/modifier.js';
import type { ServerHandler } from './plugin/types.js';
import { loadUws, type TemplatedApp, type us_listen_socket } from './router/uws.js';
import { send, stream } from './transport/client.js';
import { Pools } from './transport/pools.js';
import type { Authority } from './qos/limiter.js';
import { buildTraffic } from './qos/traffic.js';

export interface GatewayOptions {
  logger: Logger;
  /** `-d`: enables /__debug/ (the log level is not changed, as in KrakenD). */
  debug?: boolean;
  /** `-p`: overrides the config port when non-zero. */
  port?: number;
  /** Folder plugin paths are relative to (default: cwd). */
  baseDir?: string;
  /** With several workers: the supervisor's rate-limit token authority (core/qos/shared.ts). */
  limits?: Authority | null;
  /** Workers of this instance (default 1). */
  workers?: number;
  /** `--log-format` (json: the access log is JSON too). */
  logFormat?: string;
}

export interface Gateway {
  readonly endpoints: readonly EndpointRuntime[];
  readonly plugins: PluginRegistry | null;
  /** Config warnings found while building the pipes (beyond the config's own), for `gw check`. */
  readonly buildWarnings: readonly string[];
  /** Resolves with the bound port. */
  listen(): Promise<number>;
  /**
   * Closes the listening socket (synchronously) and nothing else: open connections keep being
   * served as before. A reload's first step (core/cluster.ts). Idempotent.
   */
  unlisten(): void;
  /**
   * Stops accepting, waits for in-flight requests up to `waitMs`. With `lingerMs` (a reload), the
   * connections already open keep being answered for that long (each answer closes its
   * connection), so a keep-alive client moves to the new workers between requests, not in the
   * middle of one.
   */
  close(waitMs?: number, lingerMs?: number): Promise<void>;
  /** One line per request in flight (method, path, client IP, age, phase), for crash reports. */
  describeInflight(): string[];
  /** This worker's metrics (telemetry/opentelemetry), prom-client's JSON; null when off. */
  metricsSnapshot(): Promise<MetricJSON[] | null>;
  /** This worker's `/__stats` series (telemetry/metrics); null when off. */
  statsSnapshot(): WorkerStats | null;
}

/**
 * Builds every pipe (this also runs plugin factories). Used by `gw run` and `gw check`;
 * the uWS binding is only loaded by `listen()`.
 */
export async function buildGateway(cfg: ServiceConfig, opts: GatewayOptions): Promise<Gateway> {
  const logger = opts.logger;
  for (const w of cfg.warnings) logger.warn(`[SERVICE: Config] ${w}`);
  const pools = new Pools(cfg.transport, cfg.limits.backendMaxQueue);
  const shutdown = new AbortController();
  let registry: PluginRegistry | null = null;
  if (cfg.plugin !== null) {
    registry = (await loadPlugins(cfg.plugin, logger, opts.baseDir)).registry;
  }
  const defaultClient: Client = (r: OutboundRequest) => send(pools, r.origin, r.path, r.method, r.headers, r.body as never, r.scope);
  const directClient: DirectClient = (r, receiver) => stream(pools, r.origin, r.path, r.method, r.headers, r.body as never, receiver, r.scope);
  // A client plugin's next() in receiver mode: its request's scope may be the plugin's own signal,
  // and a call the handler did not hand over is not the exchange's to cancel.
  const watchedDirect: DirectClient = (r, receiver) => stream(pools, r.origin, r.path, r.method, r.headers, r.body as never, receiver, r.scope, true);

  // Script and expression engines are loaded only when the config uses them.
  const uses = (ns: string) => cfg.endpoints.some((e) => e.extraConfig[ns] !== undefined || e.backends.some((b) => b.extraConfig[ns] !== undefined));
  if (uses(LUA_PROXY) || uses(LUA_BACKEND)) await loadLua();
  if (uses(CEL_NS)) await loadCel();
  const traffic = buildTraffic(cfg, { shared: opts.limits ?? null, workers: opts.workers ?? 1 }, logger);
  // Hints found while building (logged, and listed by `gw check`).
  const buildWarnings: string[] = [];
  const buildWarn = (m: string) => {
    logger.warn(m);
    buildWarnings.push(m);
  };
  const otel = parseOtel(cfg, GW_VERSION);
  for (const w of otel?.warnings ?? []) logger.warn(`[SERVICE: OpenTelemetry] ${w}`);
  // Metrics are recorded only when something reads them (a Prometheus exporter, /__stats).
  const stats = parseStats(cfg);
  const exported = otel !== null && (otel.prometheus.length > 0 || otel.otlpMetrics.length > 0);
  const metricsConfig = exported ? otel : stats !== null ? statsOnlyConfig(cfg, GW_VERSION) : null;
  const metrics = metricsConfig !== null ? new RequestMetrics(metricsConfig, cfg.tls !== null) : null;
  const processMetrics = metrics !== null && (otel?.prometheus ?? []).some((p) => p.processMetrics) ? processRegistry() : null;
  const tracing = otel?.traces != null ? new Tracing(otel.traces) : null;
  const endpoints: EndpointRuntime[] = [];
  /** `sd: "dns"` backends' SRV resolvers (refreshed until close). */
  const srv: SrvHosts[] = [];
  const serviceBot = compileBotDetector(cfg.extraConfig[BOT_NS], 'extra_config');
  for (const ep of cfg.endpoints) {
    logger.debug(`[ENDPOINT: ${ep.path}] Building the proxy pipe`);
    const pipes: BackendPipe[] = [];
    for (const b of ep.backends) {
      logger.debug(`[BACKEND: ${b.urlPattern}] Building the backend pipe`);
      let discovered: SrvHosts | null = null;
      if (b.sd === 'dns') {
        discovered = new SrvHosts(b.hosts[0]!, b.sdScheme, logger, `[BACKEND: ${b.urlPattern}]`, (o) => pools.get(o));
        srv.push(discovered);
        await discovered.start();
      } else {
        for (const h of b.hosts) {
          try {
            pools.get(h);
          } catch {
            /* hosts with disable_host_sanitize may not be valid origins; they fail per request */
          }
        }
      }
      let client = defaultClient;
      let direct: DirectClient | null = directClient;
      const plugin = await resolveClientPlugin(ep, b, registry, logger, shutdown.signal);
      const backendTag = `[BACKEND: ${b.method} ${ep.route} -> ${b.urlPattern}]`;
      if (plugin !== null) {
        client = pluginClient(plugin.name, plugin.handler, defaultClient, logger, backendTag);
        direct = pluginDirect(plugin.name, plugin.handler, watchedDirect, logger, backendTag);
      }
      const bMods = resolveModifiers(b.extraConfig, registry, logger, backendTag, `endpoint '${ep.method} ${ep.path}', backend ${b.index} (${b.urlPattern})`);
      pipes.push(buildBackendPipe(ep, b, client, cfg.transport.disableCompression, logger, direct, bMods, traffic.proxyLimiter(ep, b), metrics?.backend(ep, b) ?? null, discovered));
    }
    let proxy: Proxy | null = null;
    let noop: BackendPipe | null = null;
    const where = `endpoint ${ep.path}`;
    const epMods: Modifiers | null = resolveModifiers(ep.extraConfig, registry, logger, `[ENDPOINT: ${ep.path}]`, `endpoint '${ep.method} ${ep.path}'`);
    const cel = compileCel(ep.extraConfig[CEL_NS], where);
    const bodyCheck = compileBodySchema(ep.extraConfig[SCHEMA_NS], where);
    const requestChecks = compileRequestChecks(ep, bodyCheck, cel);
    // With a lua-proxy script, the request checks run after it, inside the proxy (KrakenD's order).
    const checksInProxy = ep.extraConfig[LUA_PROXY] !== undefined;
    if (ep.unenforced.length > 0) {
      // Fail closed: gw cannot apply what would have refused requests here (config/unsupported.ts).
      const why = `gw does not implement ${ep.unenforced.join(', ')}: request refused`;
      proxy = () => Promise.reject(new Error(why));
    } else if (ep.outputEncoding === 'no-op') {
      if ((cel?.post.length ?? 0) > 0) {
        throw new Error(`endpoint ${ep.path}: "${CEL_NS}" response checks (resp_*) need a decoding endpoint; a no-op endpoint streams the answer untouched`);
      }
      if (ep.extraConfig[SIGNER_NS] !== undefined) {
        throw new Error(`endpoint ${ep.path}: "${SIGNER_NS}" signs values of a decoded answer; a no-op endpoint streams the answer untouched`);
      }
      if (ep.extraConfig[LUA_PROXY] !== undefined) {
        throw new Error(`endpoint ${ep.path}: "${LUA_PROXY}" needs a decoding endpoint; a no-op endpoint streams the answer untouched (use "${LUA_BACKEND}" "pre" to change the request)`);
      }
      noop = pipes[0]!;
    } else {
      proxy = composeEndpointProxy(ep, pipes, logger, checksInProxy ? requestChecks : null, cel?.post ?? [], epMods);
    }
    logger.debug(`[ENDPOINT: ${ep.path}] Building the http handler`);
    // Every backend call reads the body (concurrent_calls sends it N times): >1 reader → read once
    // and shared. Scripts (`request:body()` is synchronous) and a body schema need it whole too.
    const readers = ep.backends.length * (ep.outputEncoding === 'no-op' ? 1 : Math.max(1, ep.concurrentCalls));
    const usesLua = ep.extraConfig[LUA_PROXY] !== undefined || ep.backends.some((b) => b.extraConfig[LUA_BACKEND] !== undefined);
    const bufferBody = readers > 1 || usesLua || bodyCheck !== null;
    const jwt = compileJwt(ep.extraConfig, where, ep.backends.map((b) => b.urlPattern), ep.inputHeaders, buildWarn);
    const epBot = compileBotDetector(ep.extraConfig[BOT_NS], where);
    const bot = epBot === null ? serviceBot : serviceBot === null ? epBot : (ua: string) => serviceBot(ua) || epBot(ua);
    // A body read whole is always bounded: max_payload, else gw's max_buffered_payload.
    const bodyLimit = ep.maxPayload || (bufferBody ? cfg.limits.maxBufferedPayload : 0);
    endpoints.push({
      config: ep, proxy, noop, noopMods: noop !== null ? epMods : null, bufferBody, bodyLimit, jwt, signed: ep.extraConfig[SIGNER_NS] !== undefined, bot,
      requestChecks: checksInProxy ? null : requestChecks, cel, rateLimits: traffic.routerLimits(ep),
      metrics: metrics?.endpoint(ep) ?? null, noopMetrics: noop !== null ? (metrics?.backend(ep, noop.config) ?? null) : null,
    });
  }

  const cors = compileCors(cfg.extraConfig[CORS_NS]);
  if (cors !== null) logger.info('[SERVICE: Gin][CORS] Enabled CORS for all requests');
  // KrakenD's gin access log, JSON when the application log is (logstash, --log-format json).
  const jsonLog = opts.logFormat === 'json' || opts.logFormat === 'logstash' || ((opts.logFormat ?? 'auto') === 'auto' && cfg.logging.format === 'logstash');
  const access = cfg.router.disableAccessLog ? null : new AccessLog(cfg.router.loggerSkipPaths, jsonLog, logger);
  const state: ServerState = { router: cfg.router, limits: cfg.limits, logger, cors, access, metrics, tracing, inflight: 0, draining: false, first: null, onIdle: null };
  const debug = !!opts.debug || cfg.debugEndpoint;
  // Server plugins wrap the whole router: it is then registered on a VirtualApp that the innermost
  // plugin's next() calls, and uWS gets one catch-all entry (router/plugin-entry.ts). Without them
  // uWS routes straight to the router's handlers.
  let chain: ServerHandler | null = null;
  if (cfg.extraConfig[SERVER_NAMESPACE] !== undefined) {
    const virtual = new VirtualApp();
    registerRoutes(virtual as unknown as TemplatedApp, cfg, endpoints, state, debug);
    chain = await buildServerChain(cfg.extraConfig, registry, (r) => virtual.handle(r), logger, shutdown.signal, tracing);
  }
  const register = chain === null
    ? (a: TemplatedApp) => registerRoutes(a, cfg, endpoints, state, debug)
    : (a: TemplatedApp) => {
        a.any('/*', guarded(framed(pluginEntry(chain!, state, logger), logger), logger));
      };
  let listenSocket: us_listen_socket | null = null;
  let app: TemplatedApp | null = null;
  const port = opts.port || cfg.port;

  const unlisten = (): void => {
    if (listenSocket !== null) {
      loadUws().uws.us_listen_socket_close(listenSocket);
      listenSocket = null;
    }
  };
  return {
    endpoints,
    plugins: registry,
    buildWarnings: [...traffic.warnings, ...buildWarnings],
    statsSnapshot() {
      if (metrics === null || stats === null) return null;
      const m = process.memoryUsage();
      return { entries: metrics.statsSnapshot(), memory: { rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external } };
    },
    async metricsSnapshot() {
      if (metrics === null || !exported) return null;
      const own = metrics.snapshot(state.inflight);
      if (processMetrics === null) return own;
      return [...own, ...((await processMetrics.getMetricsAsJSON()) as unknown as MetricJSON[])];
    },
    describeInflight() {
      const now = Date.now();
      const out: string[] = [];
      for (let x = state.first; x !== null && out.length < 50; x = x.next) out.push(x.describe(now));
      if (state.inflight > out.length) out.push(`… and ${state.inflight - out.length} more`);
      return out;
    },
    async listen() {
      // The parser must accept what gw's own limits let through (+ CRLFs and ": " per field).
      traffic.start();
      const { uws, name } = loadUws({ minHeaderBlock: cfg.limits.maxHeaderBytes + cfg.limits.maxUrlLength + 8192 });
      logger.info(`[SERVICE: uWS] Using ${name}`);
      const created = createApp(uws, cfg.tls, register);
      app = created.app;
      logger.info(`[SERVICE: uWS] Serving ${created.describe}`);
      // No listen_ip: every interface, IPv4 and IPv6 (uSockets' dual-stack default), as KrakenD.
      const host = cfg.listenIp;
      return new Promise<number>((resolve, reject) => {
        const onListen = (ls: us_listen_socket | false) => {
          if (!ls) {
            reject(new Error(`listen ${host || '*'}:${port} failed (port in use or not permitted)`));
            return;
          }
          listenSocket = ls;
          const bound = uws.us_socket_local_port(ls as never);
          logger.info(`[SERVICE: Gin] Listening on port: ${bound}`);
          resolve(bound);
        };
        if (host) app!.listen(host, port, onListen);
        else app!.listen(port, onListen);
      });
    },
    unlisten,
    async close(waitMs = 10_000, lingerMs = 0) {
      shutdown.abort();
      // From now on every answer ends its connection; idle ones are closed with the app below.
      state.draining = true;
      unlisten();
      const until = Date.now() + (waitMs || 2_147_000_000);
      const idle = (): Promise<void> =>
        state.inflight === 0
          ? Promise.resolve()
          : new Promise<void>((resolve) => {
              const t = setTimeout(resolve, Math.max(0, until - Date.now()));
              state.onIdle = () => {
                clearTimeout(t);
                resolve();
              };
            });
      await idle();
      if (lingerMs > 0) {
        await new Promise((r) => setTimeout(r, Math.max(0, Math.min(lingerMs, until - Date.now()))));
        await idle();
      }
      // Closes idle keep-alive connections too, so no uWS handle outlives the gateway.
      try {
        (app as (TemplatedApp & { close?: () => void }) | null)?.close?.();
      } catch {
        /* older builds have no App.close() */
      }
      app = null;
      // Keep-alive sockets close at once; a response body nobody reads cannot hold shutdown.
      const closed = pools.close();
      const timedOut = await Promise.race([closed.then(() => false), new Promise<boolean>((r) => setTimeout(r, Math.min(waitMs || 2000, 5000), true).unref())]);
      if (timedOut) await pools.destroy();
      traffic.close();
      for (const d of srv) d.close();
      await tracing?.close();
      logger.info('[SERVICE: Gin] Router execution ended');
    },
  };
}
