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
import { RE2JS } from 're2js';

type CelJs = typeof import('@marcbachmann/cel-js');
let parse: ((expr: string) => unknown) | undefined;

/**
 * cel-js is loaded only by configs with CEL checks (awaited by the gateway before it compiles any).
 * Its `matches()` runs JavaScript's backtracking RegExp; KrakenD's cel-go uses RE2 (linear time),
 * so gw routes `matches` to an RE2 implementation: no header value can stall a worker.
 */
export async function loadCel(): Promise<void> {
  if (parse !== undefined) return;
  const { Environment } = (await import('@marcbachmann/cel-js')) as CelJs;
  const env = new Environment({ unlistedVariablesAreDyn: true });
  env.registerFunction('string.re2_matches(string): bool', (s: string, p: string) => re2(p).matcher(s).find());
  env.registerFunction('re2_matches(string, string): bool', (s: string, p: string) => re2(p).matcher(s).find());
  parse = (expr) => env.parse(routeMatches(expr));
}

const patterns = new Map<string, RE2JS>();
function re2(p: string): RE2JS {
  let r = patterns.get(p);
  if (r === undefined) {
    r = RE2JS.compile(p);
    if (patterns.size >= 1024) patterns.clear();
    patterns.set(p, r);
  }
  return r;
}

/** Renames calls to `matches` (outside string literals) to the RE2 one. */
export function routeMatches(expr: string): string {
  let out = '';
  let i = 0;
  const n = expr.length;
  while (i < n) {
    const c = expr[i]!;
    if (c === '"' || c === "'") {
      // A string literal (raw when prefixed by r/R), possibly triple-quoted: copied untouched.
      const raw = i > 0 && (expr[i - 1] === 'r' || expr[i - 1] === 'R');
      const q = expr.startsWith(c.repeat(3), i) ? c.repeat(3) : c;
      let j = i + q.length;
      while (j < n && !expr.startsWith(q, j)) j += !raw && expr[j] === '\\' ? 2 : 1;
      j = Math.min(n, j + q.length);
      out += expr.slice(i, j);
      i = j;
    } else if (/[A-Za-z_]/.test(c) && (i === 0 || !/[\w]/.test(expr[i - 1]!))) {
      let j = i + 1;
      while (j < n && /\w/.test(expr[j]!)) j++;
      const word = expr.slice(i, j);
      let k = j;
      while (k < n && /\s/.test(expr[k]!)) k++;
      out += word === 'matches' && expr[k] === '(' ? 're2_matches' : word;
      i = j;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

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
  method: string, path: string, params: Record<string, string>, headers: Record<string, string[]>, query: string,
): Record<string, unknown> {
  return { req_method: method, req_path: path, req_params: params, req_headers: headers, req_querystring: queryMap(query), now: now() };
}

export function responseActivation(data: Record<string, unknown>, complete: boolean, status: number, headers: Record<string, string[]>): Record<string, unknown> {
  return { resp_completed: complete, resp_metadata_status: status, resp_metadata_headers: headers, resp_data: data, now: now() };
}

export function jwtActivation(claims: Record<string, unknown>): Record<string, unknown> {
  return { JWT: claims, now: now() };
}
