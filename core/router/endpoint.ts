/**
 * One uWS handler per endpoint, built once at start-up. Per request it:
 *  0. runs the edge checks (URL length 414, header size 431, framing 400 + close, declared body
 *     size 413, path params 400) — nothing below runs for a request gw will not forward;
 *  1. creates the Exchange (exchange.ts: registers onAborted, joins the in-flight list) and reads
 *     what the request stages need from uWS's HttpRequest synchronously (it dies when the handler
 *     returns): params, raw query, allow-listed headers, Host, client IP, stage captures;
 *  2. queues the exchange on the endpoint's deadline queue (deadlines.ts: one timer per endpoint,
 *     not per request) and starts the stage chain (stages.ts): guards, then the pipe.
 * Everything after that — answers, failures, aborts — is the Exchange's.
 */
import type { EndpointConfig } from '../config/types.js';
import type { ClientInfo } from '../proxy/request.js';
import { ProxyRequest } from '../proxy/types.js';
import { clientIp, compileCapture } from './capture.js';
import { framingProblem, headerBytes, refuse as refuseEarly, rejectFraming } from './edge.js';
import type { Context } from '@opentelemetry/api';
import { accessStart, type AccessLog } from '../telemetry/access.js';
import { normaliseRoute, type EndpointMetrics } from '../telemetry/otel.js';
import type { Cors } from './cors.js';
import { DeadlineQueue } from './deadlines.js';
import { Exchange, RequestBody, type EndpointRuntime, type ServerState } from './exchange.js';
import { checkQuery, decodeParam, ParamError } from './params.js';
import { compileRender } from './render.js';
import { botStage, checksStage, compileChain, jwtStage, noopPipe, proxyPipe, rateLimitStage, readBodyStage, type Stage } from './stages.js';
import type { HttpRequest, HttpResponse } from './uws.js';

export type { EndpointRuntime, ServerState } from './exchange.js';

/** The request stages of an endpoint, in KrakenD's order; absent guards are not composed. */
function compileStages(rt: EndpointRuntime): Stage[] {
  const stages: Stage[] = [];
  // The service's limits guard the whole router (before anything else); the endpoint's run after
  // authentication, as KrakenD's handler chain (JWT → Lua → rate limit).
  for (const l of rt.rateLimits) if (l.service) stages.push(rateLimitStage(l));
  if (rt.bot !== null) stages.push(botStage(rt.bot));
  if (rt.jwt !== null) stages.push(jwtStage(rt.jwt, rt.cel));
  for (const l of rt.rateLimits) if (!l.service) stages.push(rateLimitStage(l));
  if (rt.bufferBody || rt.config.maxPayload > 0) stages.push(readBodyStage(rt.bufferBody));
  if (rt.requestChecks !== null) stages.push(checksStage(rt.requestChecks));
  return stages;
}

const EMPTY: string[] = [];

/** An edge refusal (414, 431, 413, 400), with its access-log line. */
function refuse(
  res: HttpResponse, req: HttpRequest, status: number, message: string, close: boolean, cors: Cors | null, method: string,
  access: AccessLog | null, t0: number, url: string, query: string, metrics: EndpointMetrics | null,
): void {
  const ip = access === null ? '' : clientIp(res);
  refuseEarly(res, status, message, close, cors, req, method);
  if (access !== null) access.record(t0, status, ip, method, url, query, null);
  if (metrics !== null) metrics.record(status, (accessStart() - t0) / 1000, Buffer.byteLength(message), null);
}

export function makeEndpointHandler(rt: EndpointRuntime, server: ServerState): (res: HttpResponse, req: HttpRequest) => void {
  const ep: EndpointConfig = rt.config;
  const nParams = ep.params.length;
  const capture = compileCapture(ep.inputHeaders);
  // One timer for all of this endpoint's requests in flight (deadlines.ts).
  const deadlines = new DeadlineQueue(ep.timeoutMs);
  const noop = rt.noop;
  const clientSendsAcceptEncoding =
    ep.inputHeaders === '*' || (ep.inputHeaders as readonly string[]).includes('Accept-Encoding');
  const method = ep.method;
  const { render, needsAccept } = compileRender(ep);
  const chain = compileChain(compileStages(rt), noop !== null ? noopPipe(noop, rt.noopMods ?? null, ep.inputQueryStrings) : proxyPipe(rt.proxy!));
  const stageCapture = chain.capture;
  const start = chain.start;

  const maxUrl = server.limits.maxUrlLength;
  const cors = server.cors;
  const maxHeaderBytes = server.limits.maxHeaderBytes;
  const bodyLimit = rt.bodyLimit;
  const access = server.access;
  // The access log and the metrics both need the arrival time.
  const timed = access !== null || rt.metrics !== null || rt.noopMetrics !== null;
  const tracing = server.tracing !== null && !server.tracing.skips(ep.path) ? server.tracing : null;
  const traceRoute = normaliseRoute(ep.path);

  return (res, req) => {
    // 0. Edge checks: nothing below runs for a request gw will not forward.
    const t0 = timed ? accessStart() : 0;
    const query = req.getQuery() ?? '';
    const url = req.getUrl();
    if (url.length + query.length >= maxUrl) return refuse(res, req, 414, '', true, cors, method, access, t0, url, query, rt.metrics);
    if (maxHeaderBytes > 0 && headerBytes(req) > maxHeaderBytes) {
      return refuse(res, req, 431, `request headers larger than ${maxHeaderBytes} bytes`, true, cors, method, access, t0, url, query, rt.metrics);
    }
    const cl = req.getHeader('content-length');
    const te = req.getHeader('transfer-encoding');
    if (cl !== '' || te !== '') {
      const problem = framingProblem(req, cl, te);
      if (problem !== null) {
        if (access !== null) access.record(t0, 400, clientIp(res), method, url, query, null);
        rt.metrics?.record(400, (accessStart() - t0) / 1000, 0, null);
        return rejectFraming(res, problem, ep.path, server.logger);
      }
      if (bodyLimit > 0 && cl !== '' && Number(cl) > bodyLimit) {
        return refuse(res, req, 413, `request body larger than ${bodyLimit} bytes`, true, cors, method, access, t0, url, query, rt.metrics);
      }
    }
    let params: string[];
    if (nParams === 0) params = EMPTY;
    else {
      params = new Array<string>(nParams);
      for (let i = 0; i < nParams; i++) {
        const v = decodeParam(req.getParameter(i));
        if (v instanceof ParamError) return refuse(res, req, 400, v.message, false, cors, method, access, t0, url, query, rt.metrics);
        params[i] = v;
      }
    }
    // Raw UTF-8 is forwarded percent-encoded; bytes uWS could not decode are refused, not altered.
    const fwdQuery = checkQuery(query);
    if (fwdQuery instanceof ParamError) return refuse(res, req, 400, fwdQuery.message, false, cors, method, access, t0, url, query, rt.metrics);
    // 1. The exchange; from here on every failure is its.
    const ip = clientIp(res);
    const x = new Exchange(res, rt, server, url, ip);
    if (timed) {
      x.t0 = t0;
      x.query = query;
    }
    try {
      if (cors !== null) x.corsOrigin = cors.allowOrigin(req.getHeader('origin'), method);
      let client: ClientInfo;
      if (tracing === null) client = { headers: capture(req), host: req.getHeader('host'), path: url, ip };
      else {
        x.trace = tracing.start(url, method, traceRoute, req.getHeader('traceparent'), req.getHeader('tracestate'), (req as { traceContext?: Context }).traceContext);
        client = { headers: capture(req), host: req.getHeader('host'), path: url, ip, trace: x.trace };
      }
      let body: RequestBody | null = null;
      if ((cl !== '' && cl !== '0') || te !== '') {
        const b = new RequestBody(x, bodyLimit, cl !== '');
        body = b;
        x.body = b;
        res.onData((ab, isLast) => b.feed(ab, isLast));
      }
      x.render = render;
      if (needsAccept) x.accept = req.getHeader('accept');
      if (noop !== null) {
        x.acceptsGzip = req.getHeader('accept-encoding').includes('gzip');
        x.sentAcceptEncoding = clientSendsAcceptEncoding;
      }
      if (stageCapture !== null) stageCapture(req, x);
      x.preq = new ProxyRequest(params, ep.params, fwdQuery, client, body, x, method);
      // 2. The stages, bounded by the endpoint timeout.
      x.dq = deadlines;
      deadlines.add(x, x.startedAt);
    } catch (err) {
      x.crashed(err as Error);
      return;
    }
    start(x);
  };
}
