/**
 * KrakenD's built-in endpoints: `/__health`, `/__debug/*` and `/__echo/*`.
 */
import type { Logger } from '../log.js';
import { endBody } from './edge.js';
import type { ServerState } from './exchange.js';
import { goJson } from './json.js';
import { clientIp } from './capture.js';
import { accessStart, type AccessLog } from '../telemetry/access.js';
import type { HttpRequest, HttpResponse } from './uws.js';
import { Linger } from './linger.js';

const APPLICATION_JSON = 'application/json; charset=utf-8';
const START_NS = process.hrtime.bigint();

/** Go's `time.Now().String()`: `2022-01-19 18:38:38.084402465 +0000 UTC m=+30.674738658`. */
export function goNow(): string {
  const now = new Date();
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const off = -now.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const ns = (process.hrtime.bigint() % 1_000_000n).toString().padStart(6, '0');
  const mono = Number(process.hrtime.bigint() - START_NS) / 1e9;
  const zone = off === 0 ? 'UTC' : Intl.DateTimeFormat('en', { timeZoneName: 'short' }).formatToParts(now).find((p) => p.type === 'timeZoneName')?.value ?? '';
  return (
    `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())} ` +
    `${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}.${pad(now.getMilliseconds(), 3)}${ns} ` +
    `${sign}${pad(Math.floor(Math.abs(off) / 60))}${pad(Math.abs(off) % 60)} ${zone} m=+${mono.toFixed(9)}`
  );
}

export function healthHandler(server: ServerState): (res: HttpResponse, req: HttpRequest) => void {
  const access = server.access;
  return (res, req) => {
    const t0 = access === null ? 0 : accessStart();
    const body = `{"agents":{},"now":${JSON.stringify(goNow())},"status":"ok"}`;
    const ip = access === null ? '' : clientIp(res);
    res.cork(() => {
      res.writeStatus('200 OK');
      res.writeHeader('Content-Type', APPLICATION_JSON);
      res.end(body, server.draining);
    });
    if (access !== null) access.record(t0, 200, ip, 'GET', req.getUrl(), req.getQuery() ?? '', null);
  };
}

/** What the access log needs of a special endpoint's request, read while uWS still holds it. */
function accessEntry(access: AccessLog | null, res: HttpResponse, req: HttpRequest): ((status: number) => void) | null {
  if (access === null) return null;
  const t0 = accessStart();
  const ip = clientIp(res);
  const method = req.getCaseSensitiveMethod().toUpperCase();
  const url = req.getUrl();
  const query = req.getQuery() ?? '';
  return (status) => access.record(t0, status, ip, method, url, query, null);
}

interface Snapshot {
  method: string;
  url: string;
  query: string;
  headers: Record<string, string[]>;
}

function snapshot(req: HttpRequest): Snapshot {
  const headers: Record<string, string[]> = Object.create(null);
  req.forEach((k, v) => (headers[k] ??= []).push(v));
  const q = req.getQuery() ?? '';
  return { method: req.getCaseSensitiveMethod().toUpperCase(), url: req.getUrl(), query: q, headers };
}

export interface SpecialOptions {
  readonly logger: Logger;
  /** Largest body /__debug and /__echo read (they read it whole); larger → 413. */
  readonly maxBody: number;
  /** `draining`: answers end their connection. */
  readonly server: ServerState;
}

function head413(res: HttpResponse): void {
  res.writeStatus('413 Payload Too Large');
  res.writeHeader('Content-Type', 'text/plain; charset=utf-8');
}

/** Reads the body (bounded) then calls `done`; onAborted is registered first. */
function withBody(res: HttpResponse, req: HttpRequest, maxBody: number, done: (body: Buffer) => void, logged: ((status: number) => void) | null): void {
  let aborted = false;
  let linger: Linger | null = null;
  res.onAborted(() => {
    aborted = true;
    linger?.gone();
  });
  const cl = req.getHeader('content-length');
  if ((cl === '' || cl === '0') && req.getHeader('transfer-encoding') === '') {
    done(EMPTY_BODY);
    return;
  }
  // Mid-upload (the client still sending), ending with a close could reset the answer away.
  const tooLarge = (midUpload: boolean) => {
    aborted = true;
    const message = `request body larger than ${maxBody} bytes`;
    if (midUpload) linger = new Linger(res, head413, message);
    else {
      res.cork(() => {
        head413(res);
        res.end(message, true);
      });
    }
    logged?.(413);
  };
  if (cl !== '' && Number(cl) > maxBody) {
    tooLarge(false);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  res.onData((ab, isLast) => {
    if (linger !== null) return linger.feed(ab, isLast);
    if (aborted) return;
    size += ab.byteLength;
    if (size > maxBody) return tooLarge(!isLast);
    chunks.push(Buffer.from(ab.slice(0)));
    if (isLast) done(Buffer.concat(chunks, size));
  });
}

const EMPTY_BODY = Buffer.alloc(0);

function parseQuery(q: string): Record<string, string[]> {
  const out: Record<string, string[]> = Object.create(null);
  for (const [k, v] of new URLSearchParams(q)) (out[k] ??= []).push(v);
  return out;
}

export function debugHandler(opts: SpecialOptions): (res: HttpResponse, req: HttpRequest) => void {
  const logger = opts.logger;
  return (res, req) => {
    const snap = logger.isLevelEnabled('debug') ? snapshot(req) : null;
    const head = req.getMethod() === 'head';
    const logged = accessEntry(opts.server.access, res, req);
    withBody(res, req, opts.maxBody, (body) => {
      if (snap !== null) {
        const tag = '[ENDPOINT: /__debug/*]';
        logger.debug(`${tag} Method: ${snap.method}`);
        logger.debug(`${tag} URL: ${snap.url}${snap.query ? '?' + snap.query : ''}`);
        logger.debug(`${tag} Query: ${JSON.stringify(parseQuery(snap.query))}`);
        logger.debug(`${tag} Headers: ${JSON.stringify(snap.headers)}`);
        logger.debug(`${tag} Body: ${body.toString('utf8')}`);
      }
      res.cork(() => {
        res.writeStatus('200 OK');
        res.writeHeader('Content-Type', APPLICATION_JSON);
        endBody(res, '{"message":"pong"}', head, opts.server.draining);
      });
      logged?.(200);
    }, logged);
  };
}

export function echoHandler(opts: SpecialOptions): (res: HttpResponse, req: HttpRequest) => void {
  return (res, req) => {
    const snap = snapshot(req);
    const host = req.getHeader('host');
    const head = snap.method === 'HEAD';
    const logged = accessEntry(opts.server.access, res, req);
    withBody(res, req, opts.maxBody, (body) => {
      const uri = snap.url + (snap.query ? '?' + snap.query : '');
      const canonical: Record<string, string[]> = {};
      for (const k of Object.keys(snap.headers).sort()) {
        if (k === 'host') continue;
        canonical[k.replace(/(^|-)([a-z])/g, (_, d: string, c: string) => d + c.toUpperCase())] = snap.headers[k]!;
      }
      // Key order as KrakenD writes it (a struct, not a map).
      const out =
        `{"req_uri":${goJson(uri)},` +
        `"req_uri_details":${goJson({ fragment: '', host, path: snap.url, query: snap.query, user: '' })},` +
        `"req_method":${goJson(snap.method)},` +
        `"req_querystring":${goJson(parseQuery(snap.query))},` +
        `"req_body":${goJson(body.toString('utf8'))},` +
        `"req_headers":${goJson(canonical)}}`;
      res.cork(() => {
        res.writeStatus('200 OK');
        res.writeHeader('Content-Type', APPLICATION_JSON);
        endBody(res, out, head, opts.server.draining);
      });
      logged?.(200);
    }, logged);
  };
}
