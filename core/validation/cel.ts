/**
 * `validation/cel` (KrakenD's krakend-cel): lists of `check_expr` CEL expressions, on
 * @marcbachmann/cel-js. As in KrakenD, an expression runs in every phase whose variables it names:
 *  - request (`req_method`, `req_path`, `req_params`, `req_headers`, `req_querystring`, `now`): before
 *    the endpoint's backends are called, or before one backend's call;
 *  - response (`resp_completed`, `resp_metadata_status`, `resp_metadata_headers`, `resp_data`): on
 *    the merged answer, or on one backend's answer;
 *  - `JWT` (endpoint level, with auth/validator): on the accepted token's claims → 401 when refused.
 * A check that is false or fails to evaluate aborts with `request aborted by evaluator #i` (500 at
 * the endpoint; at a backend, that backend fails and the answer is partial). An expression that does
 * not parse is a start-up error (KrakenD logs it and skips the whole check list: fail-open).
 */
type CelJs = typeof import('@marcbachmann/cel-js');
let parse: CelJs['parse'] | undefined;

/** cel-js is loaded only by configs with CEL checks (awaited by the gateway before it compiles any). */
export async function loadCel(): Promise<void> {
  parse ??= (await import('@marcbachmann/cel-js')).parse;
}
import type { CapturedHeaders } from '../proxy/request.js';

export const CEL_NS = 'validation/cel';

type Program = (ctx: Record<string, unknown>) => unknown;

export interface CelChecks {
  readonly pre: readonly Program[];
  readonly post: readonly Program[];
  readonly jwt: readonly Program[];
}

export class CelRejection extends Error {
  constructor(index: number) {
    super(`request aborted by evaluator #${index}`);
    this.name = 'CelRejection';
  }
}

export function compileCel(raw: unknown, where: string): CelChecks | null {
  if (raw === undefined) return null;
  if (!Array.isArray(raw)) throw new Error(`${where}: "${CEL_NS}" must be a list of {"check_expr": ...}`);
  const pre: Program[] = [];
  const post: Program[] = [];
  const jwt: Program[] = [];
  raw.forEach((d: unknown, i) => {
    const expr = (d as { check_expr?: unknown } | null)?.check_expr;
    if (typeof expr !== 'string' || expr === '') return;
    let p: Program;
    if (parse === undefined) throw new Error('loadCel() was not awaited');
    try {
      p = parse(expr) as unknown as Program;
    } catch (err) {
      throw new Error(`${where}: "${CEL_NS}"[${i}] ${JSON.stringify(expr)}: ${(err as Error).message.split('\n')[0]}`);
    }
    if (expr.includes('req')) pre.push(p);
    if (expr.includes('resp')) post.push(p);
    if (expr.includes('JWT')) jwt.push(p);
  });
  return { pre, post, jwt };
}

/** Runs the checks in order; throws a {@link CelRejection} at the first one that does not hold. */
export function runChecks(programs: readonly Program[], ctx: Record<string, unknown>): void {
  for (let i = 0; i < programs.length; i++) {
    let ok: unknown;
    try {
      ok = programs[i]!(ctx);
    } catch {
      ok = false;
    }
    if (ok !== true) throw new CelRejection(i);
  }
}

/** RFC 3339 `now`, as KrakenD passes it (a string). */
function now(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function queryMap(q: string): Record<string, string[]> {
  const out: Record<string, string[]> = Object.create(null);
  if (q === '') return out;
  for (const [k, v] of new URLSearchParams(q)) (out[k] ??= []).push(v);
  return out;
}

export function requestActivation(
  method: string, path: string, params: Record<string, string>, headers: CapturedHeaders | Record<string, string[]>, query: string,
): Record<string, unknown> {
  const h = headers instanceof Map ? Object.fromEntries(headers) : headers;
  return { req_method: method, req_path: path, req_params: params, req_headers: h, req_querystring: queryMap(query), now: now() };
}

export function responseActivation(data: Record<string, unknown>, complete: boolean, status: number, headers: Record<string, string[]>): Record<string, unknown> {
  return { resp_completed: complete, resp_metadata_status: status, resp_metadata_headers: headers, resp_data: data, now: now() };
}

export function jwtActivation(claims: Record<string, unknown>): Record<string, unknown> {
  return { JWT: claims, now: now() };
}
