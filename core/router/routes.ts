/**
 * The uWS route table, registered once at start-up: one handler per endpoint (endpoint.ts), the
 * special endpoints (special.ts), CORS preflights, and the router's own 404/405/redirect answers
 * (fallback.ts). Every handler is wrapped by `guarded`: a throw that escapes it (a bug) ends that
 * request with a 500 or a closed connection and a log line — never the worker.
 */
import type { ServiceConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { VERSION_HEADER_VALUE } from '../version.js';
import type { Cors } from './cors.js';
import { makeEndpointHandler } from './endpoint.js';
import { endBody, framingProblem, rejectFraming } from './edge.js';
import type { EndpointRuntime, ServerState } from './exchange.js';
import { FallbackRouter } from './fallback.js';
import { goJson } from './json.js';
import { clientIp } from './capture.js';
import { accessStart } from '../telemetry/access.js';
import { statusLine } from './status.js';
import { debugHandler, echoHandler, healthHandler } from './special.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

type Handler = (res: HttpResponse, req: HttpRequest) => void;

const METHOD_REGISTER: Record<string, 'get' | 'post' | 'put' | 'patch' | 'del'> = {
  GET: 'get',
  POST: 'post',
  PUT: 'put',
  PATCH: 'patch',
  DELETE: 'del',
};

/** The last line of defence around a uWS handler. */
export function guarded(h: Handler, logger: Logger): Handler {
  return (res, req) => {
    try {
      h(res, req);
    } catch (err) {
      logger.error(`[SERVICE: Router] internal error in a request handler: ${(err as Error).stack ?? String(err)}`);
      // Answered already (or the client left): uWS throws on any access, so close instead.
      try {
        res.cork(() => {
          res.writeStatus('500 Internal Server Error');
          res.end('', true);
        });
      } catch {
        try {
          res.close();
        } catch {
          /* the response is gone */
        }
      }
    }
  };
}

/**
 * The edge's framing check, for the answers gw writes itself (404/405/redirects, CORS preflights,
 * /__health, /__debug, /__echo); endpoint handlers run it themselves (endpoint.ts). uWS frames a
 * body with conflicting Content-Length values by the first one and serves the bytes after it as
 * the next request, which a front proxy framing by the other value never sent: such a request is
 * refused as an endpoint refuses it (400 + close, nothing behind it handled).
 */
export function framed(h: Handler, logger: Logger): Handler {
  return (res, req) => {
    const cl = req.getHeader('content-length');
    const te = req.getHeader('transfer-encoding');
    if (cl !== '' || te !== '') {
      const problem = framingProblem(req, cl, te);
      if (problem !== null) return rejectFraming(res, problem, req.getUrl(), logger);
    }
    h(res, req);
  };
}

export function registerRoutes(app: TemplatedApp, cfg: ServiceConfig, endpoints: readonly EndpointRuntime[], state: ServerState, debug: boolean): void {
  const logger = state.logger;
  const route = (h: Handler) => guarded(h, logger);
  /** A route whose answer gw writes itself. */
  const own = (h: Handler) => guarded(framed(h, logger), logger);
  const router = cfg.router;
  const fallback = new FallbackRouter({
    redirectTrailingSlash: !router.disableRedirectTrailingSlash,
    redirectFixedPath: !router.disableRedirectFixedPath,
    handleMethodNotAllowed: !router.disableHandleMethodNotAllowed,
  });
  for (const rt of endpoints) {
    const ep = rt.config;
    app[METHOD_REGISTER[ep.method]!](ep.route, route(makeEndpointHandler(rt, state)));
    fallback.add(ep.method, ep.route);
  }
  // CORS wraps the whole router in KrakenD: preflights to the special endpoints are answered too.
  const preflightFirst = (h: Handler): Handler => {
    const c = state.cors;
    if (c === null) return h;
    return (res, req) => {
      if (req.getMethod() === 'options' && c.preflight(res, req) === true) return;
      h(res, req);
    };
  };
  if (!router.disableHealth) {
    app.get(router.healthPath, own(healthHandler(state)));
    fallback.add('GET', router.healthPath);
  }
  const special = { logger, maxBody: cfg.limits.maxBufferedPayload, server: state };
  if (debug) {
    const h = own(preflightFirst(debugHandler(special)));
    app.any('/__debug', h);
    app.any('/__debug/*', h);
  }
  if (cfg.echoEndpoint) {
    const h = own(preflightFirst(echoHandler(special)));
    app.any('/__echo', h);
    app.any('/__echo/*', h);
  }
  const notFound = router.errorBody?.['404'];
  const notAllowed = router.errorBody?.['405'];
  const cors = state.cors;
  const noHeaders = () => {};
  const access = state.access;
  const metrics = state.metrics;
  const answer = (res: HttpResponse, req: HttpRequest, extra: (res: HttpResponse) => void) => {
    const method = req.getCaseSensitiveMethod().toUpperCase();
    const url = req.getUrl();
    const query = req.getQuery() ?? '';
    if (access === null && metrics === null) {
      answerFallback(res, method, url, query, extra);
      return;
    }
    const t0 = accessStart();
    const ip = access === null ? '' : clientIp(res);
    const status = answerFallback(res, method, url, query, extra);
    access?.record(t0, status, ip, method, url, query, null);
    // krakend-otel names an unmatched request's route by its status text (`404 Not Found`).
    metrics?.unmatchedRoute(status, statusLine(status), method)?.record(status, (accessStart() - t0) / 1000, 0);
  };
  /** The router's own answer for an unmatched request; returns its status. */
  const answerFallback = (res: HttpResponse, method: string, url: string, query: string, extra: (res: HttpResponse) => void): number => {
    // A HEAD answer carries headers only: a body would be read as the next response.
    const head = method === 'HEAD';
    const d = fallback.decide(method, url, query);
    switch (d.kind) {
      case 'redirect':
        res.cork(() => {
          res.writeStatus(d.status === 301 ? '301 Moved Permanently' : '307 Temporary Redirect');
          res.writeHeader('Location', d.location);
          extra(res);
          res.end('', state.draining);
        });
        return d.status;
      case 'method-not-allowed':
        if (notAllowed !== undefined) {
          writeJson(res, 405, notAllowed, extra, head, state.draining);
          return 405;
        }
        res.cork(() => {
          res.writeStatus('405 Method Not Allowed');
          res.writeHeader('Allow', d.allow.join(', '));
          res.writeHeader('Content-Type', 'text/plain');
          res.writeHeader('X-Krakend', VERSION_HEADER_VALUE);
          res.writeHeader('X-Krakend-Completed', 'false');
          extra(res);
          endBody(res, '405 method not allowed', head, state.draining);
        });
        return 405;
      default:
        if (notFound !== undefined) {
          writeJson(res, 404, notFound, extra, head, state.draining);
          return 404;
        }
        res.cork(() => {
          res.writeStatus('404 Not Found');
          res.writeHeader('Content-Type', 'text/plain');
          res.writeHeader('X-Krakend', VERSION_HEADER_VALUE);
          res.writeHeader('X-Krakend-Completed', 'false');
          extra(res);
          endBody(res, '404 page not found', head, state.draining);
        });
        return 404;
    }
  };
  if (cors === null) {
    app.any('/*', own((res, req) => answer(res, req, noHeaders)));
    return;
  }
  // CORS wraps the router (as in KrakenD): preflights are answered on any path, and the router's
  // own 404/405/redirect answers carry the CORS headers too.
  app.options(
    '/*',
    own((res, req) => {
      const p = cors.preflight(res, req);
      if (p === true) return;
      answer(res, req, p === false ? corsWriter(cors, req, 'OPTIONS') : p);
    }),
  );
  app.any(
    '/*',
    own((res, req) => {
      answer(res, req, corsWriter(cors, req, req.getCaseSensitiveMethod().toUpperCase()));
    }),
  );
}

function writeJson(res: HttpResponse, status: number, body: unknown, extra: (res: HttpResponse) => void, head: boolean, close: boolean): void {
  res.cork(() => {
    res.writeStatus(status === 404 ? '404 Not Found' : '405 Method Not Allowed');
    res.writeHeader('Content-Type', 'application/json; charset=utf-8');
    extra(res);
    endBody(res, goJson(body), head, close);
  });
}

/** The CORS headers of an answer gw writes itself (`req` is read now, while it is alive). */
function corsWriter(cors: Cors, req: HttpRequest, method: string): (res: HttpResponse) => void {
  const allow = cors.allowOrigin(req.getHeader('origin'), method);
  return (res) => cors.write(res, allow);
}
