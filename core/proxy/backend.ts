/**
 * The per-backend proxy for decoding encodings: build the backend request (url_pattern, balanced
 * host, query and header filters) → client (default pooled client or a client plugin) → status
 * check (200/201) → decompress → decode → formatter. The no-op path shares `buildOutbound` and the
 * client but streams instead of decoding (router/noop.ts).
 */
import { Readable } from 'node:stream';
import type { BackendConfig, EndpointConfig } from '../config/types.js';
import type { BackendResponse, Headers } from '../plugin/types.js';
import { isUpstreamBody, type FlowControl } from '../transport/body.js';
import { RawResponse, type Receiver } from '../transport/client.js';
import { modifyDecoded, modifyOutbound, modifyStreamed, type Modifiers } from '../plugin/modifier.js';
import { decodeLimited } from '../transport/inflate.js';
import { compileFormatter } from './formatter.js';
import { Outcome } from '../telemetry/metrics.js';
import type { BackendMetrics } from '../telemetry/otel.js';
import { compileHeaderBuilder, compileQueryFilter, compileUrlPattern } from './request.js';
import { CanceledError, DeadlineError, OutboundRequest, StatusError, withBackend, type ProxyRequest, type ProxyResponse, type Scope } from './types.js';
import { decodeRss, decodeXml } from './xml.js';
import { compileBackendLua, type BackendLua, type LuaLog } from '../lua/modifier.js';
import { RAW_BODY, wholeResponseNeeded } from './merge.js';
import { CEL_NS, compileCel, requestActivation, responseActivation, runChecks, type CelChecks } from '../validation/cel.js';
import { BREAKER_NS, CircuitBreaker, EXCLUDED, FAILURE, parseBreakerConfig, SUCCESS } from '../qos/breaker.js';
import { CACHE_NS, cacheFor, cachedClient, parseHttpCacheConfig } from '../qos/cache.js';
import { ALLOW, DENY, type Limiter } from '../qos/limiter.js';
import { LIMITED } from '../qos/ratelimit.js';
import { compileMartian, martianClient, martianRequest, MARTIAN_NS } from './martian.js';

export type Client = (r: OutboundRequest) => Promise<BackendResponse>;

/** What the backend pipe logs with (the gateway's logger; `warn` is optional for callers that only have `error`). */
export interface BackendLog extends LuaLog {
  warn?(msg: string): void;
}

/** A start-up warning through `log` (as an error line where the caller's logger has no warn). */
function warnOf(log: BackendLog): (msg: string) => void {
  return (msg) => (log.warn ?? log.error).call(log, msg);
}

/** gw's own client in receiver mode (transport/client.ts `stream`): returns the call, to cancel it. */
export type DirectClient = (r: OutboundRequest, receiver: Receiver) => FlowControl | null;

export interface BackendPipe {
  readonly config: BackendConfig;
  /**
   * Builds the backend request for one client request (host balanced round-robin). A promise only
   * when a lua-backend `pre` script made an HTTP call (`http_response.new`).
   */
  buildOutbound(req: ProxyRequest): OutboundRequest | Promise<OutboundRequest>;
  readonly client: Client;
  /** The same client in receiver mode (gw's own, or a client plugin's: plugin/client.ts pluginDirect), or null. */
  readonly direct: DirectClient | null;
  /** Decoding proxy (not composed for no-op backends). */
  readonly proxy: ((req: ProxyRequest) => Promise<ProxyResponse>) | null;
}

/**
 * Largest backend body gw decodes into memory, before and after decompression (the no-op path
 * streams and has no limit).
 */
const MAX_DECODE_BYTES = 64 * 1024 * 1024;

export function buildBackendPipe(
  endpoint: EndpointConfig,
  b: BackendConfig,
  client: Client,
  disableCompression: boolean,
  log: BackendLog,
  direct: DirectClient | null = null,
  mods: Modifiers | null = null,
  /** `qos/ratelimit/proxy` (core/qos/traffic.ts), or null. */
  proxyLimit: Limiter | null = null,
  /** telemetry/opentelemetry's backend series (stage and round trip), or null. */
  metrics: BackendMetrics | null = null,
  /** Discovered hosts (`sd: "dns"`, proxy/sd.ts) read per request, or null for the static `hosts`. */
  discovered: { readonly list: readonly string[] } | null = null,
): BackendPipe {
  const tpl = compileUrlPattern(b.urlPattern, endpoint.params);
  const queryFilter = compileQueryFilter(endpoint.inputQueryStrings, b.inputQueryStrings);
  // For a query an endpoint modifier plugin already saw through the endpoint's list.
  const backendQueryFilter = compileQueryFilter(b.inputQueryStrings ?? '*', null);
  const buildHeaders = compileHeaderBuilder(b.inputHeaders, disableCompression);
  const hosts = b.hosts;
  const nHosts = hosts.length;
  let rr = nHosts > 1 ? Math.floor(Math.random() * nHosts) : 0;
  const method = b.method;

  const buildRequest = (req: ProxyRequest): OutboundRequest => {
    let origin: string;
    if (discovered === null) {
      if (nHosts === 0) throw new Error('no hosts available');
      origin = hosts[rr]!;
      if (nHosts > 1) rr = (rr + 1) % nHosts;
    } else {
      const list = discovered.list;
      if (list.length === 0) throw new Error('no hosts available');
      if (rr >= list.length) rr = 0;
      origin = list[rr]!;
      rr = (rr + 1) % list.length;
    }
    const extra = req.extra;
    let path = tpl.render(req.params, extra);
    const q = req.endpointFiltered ? backendQueryFilter(req.query) : queryFilter(req.query);
    if (q !== '') path += (tpl.hasQuery ? '&' : '?') + q;
    let values: readonly string[] = req.params;
    let names: readonly string[] = req.paramNames;
    if (extra !== null) {
      // Sequential values are request params too (as lura's `Resp0_x`), for client plugins.
      const keys = Object.keys(extra);
      names = names.concat(keys.map(capitalize));
      values = values.concat(keys.map((k) => extra[k]!));
    }
    const out = new OutboundRequest(
      method, origin, path, origin + path, buildHeaders(req.client), req.body, req.scope, values, names,
    );
    const t = req.client.trace;
    if (t != null) {
      // The backend span, and its context to the backend (W3C traceparent).
      const bt = t.backend(b.urlPattern, method, out.url);
      if (bt !== null) {
        out.trace = bt;
        // gw's span replaces whatever trace context the client sent through input_headers.
        const h = out.headers;
        for (const k in h) if (k.toLowerCase() === 'traceparent' || k.toLowerCase() === 'tracestate') delete h[k];
        for (const k in bt.headers) h[k === 'traceparent' ? 'Traceparent' : 'Tracestate'] = bt.headers[k]!;
      }
    }
    return out;
  };

  const where = `endpoint ${endpoint.path}, backend ${endpoint.backends.indexOf(b)} (${b.urlPattern})`;
  const lua = compileBackendLua(b.extraConfig, where, b.urlPattern, endpoint.timeoutMs, log);
  if (lua !== null && b.encoding === 'no-op' && endpoint.outputEncoding !== 'no-op' && lua.hasPost) {
    throw new Error(`${where}: "modifier/lua-backend" post on a no-op backend: gw does not decode nor keep that body, so the script would see nothing`);
  }
  if (lua !== null && endpoint.outputEncoding === 'no-op' && (lua.hasPost || lua.skipNext)) {
    throw new Error(`${where}: "modifier/lua-backend" post and skip_next need a decoding endpoint; a no-op endpoint streams the answer untouched (only "pre" applies)`);
  }
  // Lua `pre` edits the built request, on the streaming (no-op) path as on the decoding one; the
  // request CEL checks see the result (KrakenD: Lua backend → CEL → HTTP proxy).
  const cel = compileCel(b.extraConfig[CEL_NS], where);
  if (cel !== null && cel.post.length > 0 && (endpoint.outputEncoding === 'no-op' || b.encoding === 'no-op')) {
    throw new Error(`${where}: "${CEL_NS}" response checks (resp_*) need a decoded backend answer; this one is no-op`);
  }
  const withLua = lua === null ? buildRequest : (req: ProxyRequest) => lua.pre(buildRequest(req));
  const celPre = cel !== null && cel.pre.length > 0 ? cel.pre : null;
  const checked = (req: ProxyRequest, out: OutboundRequest): OutboundRequest => {
    try {
      runChecks(celPre!, outboundActivation(out, req.client.headers.has('Accept-Encoding')));
    } catch (err) {
      lua?.release(out);
      throw err;
    }
    return out;
  };
  const buildOutbound = celPre === null ? withLua : (req: ProxyRequest) => {
    const out = withLua(req);
    return out instanceof Promise ? out.then((o) => checked(req, o)) : checked(req, out);
  };

  // qos/http-cache: under everything that calls the client (decoding call, no-op stream,
  // modifiers); KrakenD caches in its default HTTP client only, so not behind a client plugin.
  const cacheCfg = parseHttpCacheConfig(b.extraConfig[CACHE_NS], where);
  let cached = false;
  if (cacheCfg !== null) {
    const warn = warnOf(log);
    if (b.extraConfig['plugin/http-client'] !== undefined) {
      warn(`${where}: "${CACHE_NS}" is ignored: the backend uses a client plugin ("plugin/http-client"), and KrakenD caches in its default HTTP client only`);
    } else {
      client = cachedClient(client, cacheFor(cacheCfg, where, warn), mods !== null);
      cached = true;
    }
  }
  // modifier/martian: around the client (the cache and any client plugin included), as KrakenD
  // wraps its request executor. Request-only modifiers keep gw's receiver mode; response ones need
  // the whole answer.
  const martian = compileMartian(b.extraConfig[MARTIAN_NS], where);
  if (martian !== null) {
    client = martianClient(client, martian);
    if (direct !== null) {
      const rq = martian.response === null && martian.request !== null ? martianRequest(martian) : null;
      const d = direct;
      direct = rq === null ? null : (out, receiver) => {
        let o: OutboundRequest;
        try {
          o = rq(out);
        } catch (err) {
          receiver.failed(err as Error);
          return null;
        }
        return d(o, receiver);
      };
    }
  }
  const guards = backendGuards(b, where, log, proxyLimit);

  let proxy: ((req: ProxyRequest) => Promise<ProxyResponse>) | null = null;
  if (endpoint.outputEncoding !== 'no-op') {
    let call = b.encoding === 'no-op' ? spanEnding(discardingCall(client, keepsRawBody(endpoint, b))) : decodingCall(b, client);
    if (cel !== null && cel.post.length > 0) call = withCelPost(call, cel.post);
    if (mods !== null) call = modifiedCall(call, mods);
    proxy = toProxy(buildOutbound, call, lua);
    // The guards see the whole backend proxy, status errors included (KrakenD: circuit breaker →
    // proxy rate limit → Lua → CEL → HTTP proxy), each of concurrent_calls' calls on its own.
    // Measured inside the guards: a call a breaker or a limit refused was never started.
    if (metrics !== null) proxy = meteredProxy(proxy, metrics);
    if (guards.length > 0) proxy = guardCall(guards, proxy);
  }
  if (proxy !== null && endpoint.concurrentCalls > 1) proxy = composeConcurrent(proxy, endpoint.concurrentCalls, endpoint.timeoutMs);

  // Modifiers see the no-op answer as a whole response (io, status, headers): no receiver mode.
  let noopClient = mods !== null ? modifiedClient(client, mods) : client;
  // A no-op endpoint calls `client` (the proxy is not composed): the guards go around it, up to the
  // answer's head (a body cut later is the client's business, as in KrakenD). Neither guards nor
  // the cache work in receiver mode, which stays the path of backends without them.
  if (proxy === null && guards.length > 0) noopClient = guardCall(guards, noopClient);
  const pipe: BackendPipe = {
    config: b,
    buildOutbound,
    client: noopClient,
    direct: mods !== null || cached || (proxy === null && guards.length > 0) ? null : direct,
    proxy,
  };
  return pipe;
}

/** The backend stage measured (krakend-otel's backend layer): its time, outcome and status. */
function meteredProxy(proxy: (req: ProxyRequest) => Promise<ProxyResponse>, m: BackendMetrics): (req: ProxyRequest) => Promise<ProxyResponse> {
  return (req) => {
    const t = performance.now();
    return proxy(req).then(
      (r) => {
        m.record(r.isComplete ? Outcome.Complete : Outcome.Incomplete, (performance.now() - t) / 1000, 200, -1, false);
        return r;
      },
      (err: Error) => {
        const canceled = err instanceof CanceledError && !(req.scope.reason instanceof DeadlineError);
        m.record(canceled ? Outcome.Canceled : Outcome.Error, (performance.now() - t) / 1000, err instanceof StatusError ? err.status : 0, -1, err instanceof DeadlineError || req.scope.reason instanceof DeadlineError);
        throw err;
      },
    );
  };
}

/**
 * A backend guard: runs before a backend call and may refuse it — return a rejected promise (an
 * Error) without calling `run` and nothing is sent — or call `run()` and watch how it ends.
 * `scope` is the call's cancellation (its `reason` says whether the caller gave up).
 */
export type BackendGuard = <T>(run: () => Promise<T>, scope: Scope) => Promise<T>;

/**
 * The backend guards of `b`, outermost first, as KrakenD stacks them: the circuit breaker, then
 * the proxy rate limit (`qos/ratelimit/proxy`: add it here, after the breaker, so that a refusal
 * by the limit counts as a breaker failure as in KrakenD), then the call. Empty when none is
 * configured: the pipe is then built exactly as without this function.
 */
export function backendGuards(b: BackendConfig, where: string, log: BackendLog, proxyLimit: Limiter | null = null): BackendGuard[] {
  const guards: BackendGuard[] = [];
  const raw = b.extraConfig[BREAKER_NS];
  const cb = parseBreakerConfig(raw, where);
  if (cb !== null) guards.push(breakerGuard(cb, log));
  else if (raw !== undefined) {
    warnOf(log)(`${where}: "${BREAKER_NS}" has every value zero or empty: no circuit breaker (as KrakenD); set max_errors, timeout and interval`);
  }
  if (proxyLimit !== null) guards.push(limitGuard(proxyLimit));
  return guards;
}

/** `qos/ratelimit/proxy` as a guard: over the limit the call fails with KrakenD's `rate limit exceded`, nothing is sent. */
function limitGuard(l: Limiter): BackendGuard {
  return <T>(run: () => Promise<T>): Promise<T> => {
    const v = l.take('');
    if (v === ALLOW) return run();
    if (v === DENY) return Promise.reject(new Error(LIMITED));
    return new Promise<T>((resolve, reject) => {
      l.wait('', (ok) => {
        if (!ok) reject(new Error(LIMITED));
        else run().then(resolve, reject);
      });
    });
  };
}

/** Wraps `call` (a backend proxy or client) with `guards`, the first outermost. */
export function guardCall<A extends { readonly scope: Scope }, T>(guards: readonly BackendGuard[], call: (a: A) => Promise<T>): (a: A) => Promise<T> {
  let f = call;
  for (let i = guards.length - 1; i >= 0; i--) {
    const g = guards[i]!;
    const inner = f;
    f = (a) => g(() => inner(a), a.scope);
  }
  return f;
}

/**
 * `qos/circuit-breaker` as a guard: refuses while open (`circuit breaker is open`) or while its
 * half-open probe is out (`too many requests`); any error of the call is a failure but a
 * cancellation by the caller (the client left, a concurrent call that lost), which counts neither
 * way (KrakenD's `IsExcluded(context.Canceled)`).
 */
function breakerGuard(cfg: NonNullable<ReturnType<typeof parseBreakerConfig>>, log: BackendLog): BackendGuard {
  // KrakenD's line, as it writes it (a `name` is how one tells the backends apart).
  const warn = warnOf(log);
  const onChange = cfg.logStatusChange
    ? (name: string, from: string, to: string) => warn(`[CB] Circuit breaker named '${name}' went from '${from}' to '${to}'`)
    : null;
  const breaker = new CircuitBreaker(cfg, onChange);
  return <T>(run: () => Promise<T>, scope: Scope): Promise<T> => {
    const gen = breaker.before();
    if (typeof gen !== 'number') return Promise.reject(gen);
    let p: Promise<T>;
    try {
      p = run();
    } catch (err) {
      p = Promise.reject(err as Error);
    }
    return p.then(
      (r) => {
        breaker.after(gen, SUCCESS);
        return r;
      },
      (err: unknown) => {
        breaker.after(gen, err instanceof CanceledError || scope.reason instanceof CanceledError ? EXCLUDED : FAILURE);
        throw err;
      },
    );
  };
}

type Call = (out: OutboundRequest) => Promise<ProxyResponse>;

/** Backend-level modifier plugins around a decoding call: the built request before, the decoded data after. */
function modifiedCall(call: Call, mods: Modifiers): Call {
  const pre = modifyOutbound(mods);
  if (pre === null) return (out) => call(out).then((r) => modifyDecoded(mods, r, null, out.trace));
  return (out) => pre(out).then(({ out: o, wrapper }) => call(o).then((r) => modifyDecoded(mods, r, wrapper, o.trace)));
}

/** Backend-level modifier plugins around the no-op client: the built request before, the streamed answer after. */
function modifiedClient(client: Client, mods: Modifiers): Client {
  const pre = modifyOutbound(mods);
  if (pre === null) return (out) => client(out).then((r) => modifyStreamed(mods, r, null, out.trace));
  return (out) => pre(out).then(({ out: o, wrapper }) => client(o).then((r) => modifyStreamed(mods, r, wrapper, o.trace)));
}

/** Backend response CEL checks: a refused answer fails this backend. */
function withCelPost(call: Call, checks: CelChecks['post']): Call {
  return (out) =>
    call(out).then((r) => {
      runChecks(checks, responseActivation(r.data, r.isComplete, 200, {}));
      return r;
    });
}

/**
 * The CEL request variables of a built backend request. The Accept-Encoding gw adds on its own is
 * left out: KrakenD's Go client adds it at send time, so its scripts never see it.
 */
function outboundActivation(out: OutboundRequest, clientSentAcceptEncoding: boolean): Record<string, unknown> {
  const q = out.path.indexOf('?');
  const params: Record<string, string> = Object.create(null);
  const p = out.params;
  for (const k in p) params[capitalize(k)] = p[k]!;
  const headers: Record<string, string[]> = Object.create(null);
  for (const k in out.headers) {
    if (k === 'Accept-Encoding' && !clientSentAcceptEncoding) continue;
    const v = out.headers[k]!;
    headers[k] = Array.isArray(v) ? v : [v];
  }
  return requestActivation(out.method, q < 0 ? out.path : out.path.slice(0, q), params, headers, q < 0 ? '' : out.path.slice(q + 1));
}

/** Build the request (a throw becomes a rejection), call, and run lua-backend's skip_next/post. */
function toProxy(buildOutbound: (req: ProxyRequest) => OutboundRequest | Promise<OutboundRequest>, call: Call, lua: BackendLua | null) {
  const send = (out: OutboundRequest): Promise<ProxyResponse> => {
    if (lua === null) return call(out);
    const p = lua.skipNext ? Promise.resolve<ProxyResponse>({ data: Object.create(null), isComplete: false, errors: null }) : call(out);
    return p.then(
      (r) => lua.finish(r, out),
      (err: Error) => {
        lua.release(out);
        throw err;
      },
    );
  };
  return (req: ProxyRequest): Promise<ProxyResponse> => {
    let out: OutboundRequest | Promise<OutboundRequest>;
    try {
      out = buildOutbound(req);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return out instanceof Promise ? out.then(send) : send(out);
  };
}

function capitalize(s: string): string {
  return s.length === 0 ? s : s[0]!.toUpperCase() + s.slice(1);
}

/**
 * `concurrent_calls` (lura's concurrent.go): the same backend request N times in parallel under
 * 75 % of the endpoint timeout; the first complete success wins and the others are aborted. With
 * no complete answer, the last incomplete one is returned, else the last error.
 */
export function composeConcurrent(
  next: (req: ProxyRequest) => Promise<ProxyResponse>,
  n: number,
  timeoutMs: number,
): (req: ProxyRequest) => Promise<ProxyResponse> {
  const limitMs = Math.max(1, Math.floor(timeoutMs * 0.75));
  return (req) =>
    new Promise<ProxyResponse>((resolve, reject) => {
      const ac = req.scope.child();
      const sub = req.derive(ac);
      let pending = n;
      let done = false;
      let lastErr: Error | null = null;
      let partial: ProxyResponse | null = null;
      const settle = (timedOut: boolean) => {
        done = true;
        clearTimeout(timer);
        ac.detach();
        // Cancel the calls still running (nothing happens when they all ended): past the limit
        // they timed out; after a winner they were cancelled (lura: the context's cancel), which a
        // circuit breaker does not count as their failure.
        if (pending > 0) ac.cancel(timedOut ? new DeadlineError() : new CanceledError());
      };
      const timer = setTimeout(() => {
        if (done) return;
        settle(true);
        if (partial !== null) resolve(partial);
        else reject(lastErr ?? new DeadlineError());
      }, limitMs);
      const ok = (r: ProxyResponse) => {
        pending--;
        if (done) return;
        if (r.isComplete) {
          settle(false);
          resolve(r);
          return;
        }
        partial = r;
        if (pending === 0) {
          settle(false);
          resolve(r);
        }
      };
      const fail = (err: Error) => {
        pending--;
        if (done) return;
        lastErr = err;
        if (pending === 0) {
          settle(false);
          if (partial !== null) resolve(partial);
          else reject(err);
        }
      };
      for (let i = 0; i < n; i++) {
        let p: Promise<ProxyResponse>;
        try {
          p = next(sub);
        } catch (err) {
          p = Promise.reject(err as Error);
        }
        p.then(ok, fail);
      }
    });
}

/**
 * A no-op backend inside a decoding endpoint (lura's NoOpHTTPResponseParser): it is called, its
 * status is not checked, and it contributes no data to the merge.
 */
function discardingCall(client: Client, keepRaw: boolean): Call {
  if (keepRaw) {
    // A later sequential step uses this whole response: its raw body, as lura propagates it.
    return async (out) => {
      const res = await client(out);
      const data: Record<string | symbol, unknown> = Object.create(null);
      data[RAW_BODY] = (await readBody(res, MAX_DECODE_BYTES)).toString('utf8');
      return { data: data as Record<string, unknown>, isComplete: true, errors: null };
    };
  }
  return async (out) => {
    const res = await client(out);
    discard(res.body);
    return { data: Object.create(null), isComplete: true, errors: null };
  };
}

/** A traced call's backend span ends with it (decodingCall does the same inline). */
function spanEnding(call: Call): Call {
  return (out) => {
    const span = out.trace;
    if (span === null) return call(out);
    return call(out).then(
      (r) => {
        span.end(200, null);
        return r;
      },
      (err: Error) => {
        span.end(err instanceof StatusError ? err.status : 0, err);
        throw err;
      },
    );
  };
}

/** A no-op backend of a sequential endpoint whose whole response a later step reads. */
function keepsRawBody(endpoint: EndpointConfig, b: BackendConfig): boolean {
  const p = endpoint.extraConfig.proxy as { sequential?: unknown; sequential_propagated_params?: unknown } | undefined;
  if (p?.sequential !== true) return false;
  const i = endpoint.backends.indexOf(b);
  const propagated = Array.isArray(p.sequential_propagated_params) ? p.sequential_propagated_params.map(String) : [];
  return wholeResponseNeeded(i, propagated, endpoint.backends.slice(i + 1).map((x) => x.urlPattern));
}

function decodingCall(b: BackendConfig, client: Client): Call {
  const decode = compileDecoder(b);
  const format = compileFormatter(b);
  const httpOpts = (b.extraConfig['backend/http'] ?? {}) as Record<string, unknown>;
  const detailsAlias = typeof httpOpts.return_error_details === 'string' && httpOpts.return_error_details ? httpOpts.return_error_details : null;
  const returnCode = httpOpts.return_error_code === true;
  const needBody = detailsAlias !== null || returnCode;
  const label = `[${b.method} ${b.urlPattern}]`;

  const statusAnswer = async (res: BackendResponse, out: OutboundRequest): Promise<ProxyResponse> => {
    let body: string | null = null;
    if (needBody) body = (await readBody(res, MAX_DECODE_BYTES)).toString('utf8');
    else discard(res.body);
    const ct = responseHeader(res, 'content-type');
    if (detailsAlias !== null) {
      const data: Record<string, unknown> = Object.create(null);
      data['error_' + detailsAlias] = { http_status_code: res.status, http_body: body, http_body_encoding: ct ?? '' };
      return { data, isComplete: false, errors: null };
    }
    const err = new StatusError('invalid status code', res.status, body, ct, returnCode);
    (err as { detail?: string }).detail = `invalid status code ${res.status} ${label}: ${out.url}`;
    throw err;
  };
  const decoded = (buf: Buffer): ProxyResponse => {
    let data = decode(buf);
    if (format !== null) data = format(data);
    return { data, isComplete: true, errors: null };
  };
  const pattern = b.urlPattern;
  /**
   * The answer decoded, errors naming the backend. A small body has usually arrived whole by the
   * time the head's promise turn runs (undici parses a packet in one go): it is then taken as it
   * is, without the promise turns of a read.
   */
  const call = (out: OutboundRequest): Promise<ProxyResponse> =>
    client(out).then(
      (res) => {
        let later: Promise<ProxyResponse>;
        try {
          if (res.status !== 200 && res.status !== 201) later = statusAnswer(res, out);
          else {
            const body = res.body;
            const whole = isUpstreamBody(body) && plainEncoding(res) ? body.takeWhole(MAX_DECODE_BYTES) : null;
            if (whole !== null) return decoded(whole);
            later = readBody(res, MAX_DECODE_BYTES).then(decoded);
          }
        } catch (err) {
          throw withBackend(err as Error, out, pattern);
        }
        return later.catch((err: Error) => {
          throw withBackend(err, out, pattern);
        });
      },
      (err: Error) => {
        throw withBackend(err, out, pattern);
      },
    );
  return (out) => {
    if (out.trace === null) return call(out);
    // Traced: the backend span ends with the call.
    const span = out.trace;
    return call(out).then(
      (r) => {
        span.end(200, null);
        return r;
      },
      (e: Error) => {
        span.end(e instanceof StatusError ? e.status : 0, e);
        throw e;
      },
    );
  };
}

/** True when the answer needs no decompression (no Content-Encoding, or identity). */
function plainEncoding(res: BackendResponse): boolean {
  const enc = responseHeader(res, 'content-encoding');
  return enc === null || enc === '' || enc === 'identity';
}

/** A response header by lower-case name; a raw head from gw's client is read without building its object. */
function responseHeader(res: BackendResponse, name: string): string | null {
  if (res instanceof RawResponse) return res.header(name) ?? null;
  return headerValue(res.headers, name);
}

function headerValue(h: Headers, name: string): string | null {
  for (const k in h) {
    if (k.length === name.length && k.toLowerCase() === name) {
      const v = h[k];
      return Array.isArray(v) ? (v[0] ?? null) : (v ?? null);
    }
  }
  return null;
}

function discard(body: unknown): void {
  if (isUpstreamBody(body)) body.dump();
  else if (body instanceof Readable) body.destroy();
}

/** Reads any supported body shape into one buffer, decompressing per Content-Encoding. */
export async function readBody(res: BackendResponse, limit: number): Promise<Buffer> {
  const b = res.body;
  let buf: Buffer;
  if (b === null || b === undefined) buf = Buffer.alloc(0);
  else if (isUpstreamBody(b)) buf = await b.bytes(limit);
  else if (typeof b === 'string') buf = Buffer.from(b);
  else if (b instanceof Uint8Array) buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  else if (typeof (b as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function') {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of b as AsyncIterable<Uint8Array | string>) {
      const buf = Buffer.from(c as string); // a copy, for strings and bytes alike
      size += buf.length;
      if (size > limit) throw new Error(`response body larger than ${limit} bytes`);
      chunks.push(buf);
    }
    buf = Buffer.concat(chunks, size);
  } else buf = Buffer.from(JSON.stringify(b));
  const enc = responseHeader(res, 'content-encoding');
  if (enc === null || enc === '' || enc === 'identity') return buf;
  // The same limit bounds the decoded body: a few hundred KB of gzip can inflate to gigabytes.
  return decodeLimited(buf, enc, limit);
}

type Decoder = (buf: Buffer) => Record<string, unknown>;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function compileDecoder(b: BackendConfig): Decoder {
  switch (b.encoding) {
    case 'xml': {
      const coll = b.isCollection;
      return (buf) => decodeXml(buf, coll);
    }
    case 'rss':
      return decodeRss;
    case 'string':
      return (buf) => ({ content: buf.toString('utf8') });
    case 'safejson':
      return (buf) => {
        const v = JSON.parse(buf.toString('utf8'));
        if (isPlainObject(v)) return v;
        if (Array.isArray(v)) return { collection: v };
        return { content: v };
      };
    default:
      if (b.isCollection) {
        return (buf) => {
          const v = JSON.parse(buf.toString('utf8'));
          if (!Array.isArray(v)) throw new Error('json: cannot unmarshal object into Go value of type []interface {}');
          return { collection: v };
        };
      }
      return (buf) => {
        const v = JSON.parse(buf.toString('utf8'));
        if (v === null) return {};
        if (!isPlainObject(v)) {
          throw new Error(`json: cannot unmarshal ${Array.isArray(v) ? 'array' : typeof v} into Go value of type map[string]interface {}`);
        }
        return v;
      };
  }
}
