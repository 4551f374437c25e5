/**
 * The edge: checks on a request's framing and size that run before gw reads or forwards anything,
 * and the small writers every handler shares (plain refusals, bodies for HEAD answers).
 */
import type { Logger } from '../log.js';
import type { Cors } from './cors.js';
import { clientIp } from './capture.js';
import { statusLine } from './status.js';
import type { HttpRequest, HttpResponse } from './uws.js';

export const TEXT_PLAIN = 'text/plain; charset=utf-8';

/**
 * Ends an answer with `body`, or — for a HEAD request — with its headers only. `Content-Length`
 * then announces the length a GET would get. It is written by hand and `endWithoutBody` is called
 * without arguments: in the uWS 20.30 build any argument (even `undefined`) takes a path that
 * never completes the response, and uWS then aborts the process. `close` (a draining gateway)
 * ends the connection after the answer; a HEAD answer keeps it (the drain closes it later).
 */
export function endBody(res: HttpResponse, body: string, head: boolean, close = false): void {
  if (head) {
    res.writeHeader('Content-Length', String(Buffer.byteLength(body)));
    res.endWithoutBody();
  } else {
    res.end(body, close);
  }
}

/** A plain-text refusal written before any pipe started (414, 431, 413, 400). */
export function refuse(res: HttpResponse, status: number, message: string, close: boolean, cors: Cors | null, req: HttpRequest, method: string): void {
  // `req` is read now, while uWS still holds it.
  const allow = cors === null ? null : cors.allowOrigin(req.getHeader('origin'), method);
  res.cork(() => {
    res.writeStatus(statusLine(status));
    if (message !== '') res.writeHeader('Content-Type', TEXT_PLAIN);
    if (cors !== null) cors.write(res, allow);
    res.end(message, close);
  });
}

/**
 * Ambiguous framing: `400` with `Connection: close`, as nginx and Envoy answer — but never by
 * letting anything behind this request through. uWS keeps parsing what is left in its read buffer
 * after `end(body, true)`, so a pipelined (smuggled) request would reach its handler. The answer is
 * therefore written on the next turn of the loop: when bytes were pipelined behind the bad request,
 * uWS finds a request while this answer is pending and closes the connection itself (no answer,
 * nothing parsed); when nothing was, the client gets the 400 and the connection is closed.
 */
export function rejectFraming(res: HttpResponse, problem: string, path: string, logger: Logger): void {
  if (logger.isLevelEnabled('warn')) {
    logger.warn(`[ENDPOINT: ${path}] ${problem}; answered 400 and closed the connection from ${clientIp(res)}, nothing forwarded`);
  }
  const state = { gone: false };
  res.onAborted(() => {
    state.gone = true;
  });
  setImmediate(() => {
    if (state.gone) return;
    res.cork(() => {
      res.writeStatus('400 Bad Request');
      res.writeHeader('Content-Type', TEXT_PLAIN);
      res.end(`400 Bad Request: ${problem}`, true);
    });
  });
}

let headerTotal = 0;
function addHeader(k: string, v: string): void {
  headerTotal += k.length + v.length + 4;
}
/** Size of the request's header block (name: value CRLF), only computed when a limit is set. */
export function headerBytes(req: HttpRequest): number {
  headerTotal = 0;
  req.forEach(addHeader);
  return headerTotal;
}

const DIGITS = /^\d+$/;
const CHUNKED_LAST = /(?:^|,)[ \t]*chunked[ \t]*$/i;

/**
 * Framing the listener let through but gw refuses to forward: a Transfer-Encoding whose final
 * coding is not chunked (or names chunked twice), a non-numeric Content-Length, or several
 * Content-Length values that disagree. (uWS itself closes the connection on CL+TE, bad chunk
 * sizes, obs-fold, whitespace before the colon and bare CR/LF/NUL.)
 */
export function framingProblem(req: HttpRequest, cl: string, te: string): string | null {
  if (te !== '') {
    if (!CHUNKED_LAST.test(te) || te.toLowerCase().split('chunked').length > 2) return `unsupported Transfer-Encoding "${te}"`;
    if (cl !== '') return 'both Content-Length and Transfer-Encoding';
  }
  if (cl !== '') {
    if (!DIGITS.test(cl)) return 'invalid Content-Length';
    let bad = false;
    req.forEach((k, v) => {
      if (k === 'content-length' && v !== cl) bad = true;
    });
    if (bad) return 'conflicting Content-Length values';
  }
  return null;
}
