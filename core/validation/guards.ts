/**
 * Request guards that answer before anything is forwarded:
 *  - `security/bot-detector` (service or endpoint; KrakenD's krakend-botdetector): a User-Agent in
 *    `allow` passes, one in `deny` or matching a `patterns` regexp gets 403 with an empty body;
 *    `empty_user_agent_is_bot` refuses requests without one. Verdicts are cached (`cache_size`).
 *  - `validation/json-schema` (endpoint; krakend-jsonschema): the request body must be JSON valid
 *    against the schema, else 400 (the reason is the body with `return_error_msg`). `pattern` and
 *    `patternProperties` run on RE2 (see `re2Engine`).
 */
import { createRequire } from 'node:module';
import type { ErrorObject } from 'ajv';
import { RE2JS } from 're2js';

const require = createRequire(import.meta.url);
const Ajv = require('ajv') as typeof import('ajv').default;
const AjvDraft04 = require('ajv-draft-04') as typeof import('ajv-draft-04').default;
const DRAFT_06 = require('ajv/dist/refs/json-schema-draft-06.json') as object;

export const BOT_NS = 'security/bot-detector';
export const SCHEMA_NS = 'validation/json-schema';

/** True when the User-Agent belongs to a bot to refuse. */
export type BotCheck = (userAgent: string) => boolean;

export function compileBotDetector(raw: unknown, where: string): BotCheck | null {
  if (raw === undefined) return null;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where}: "${BOT_NS}" must be an object`);
  const c = raw as Record<string, unknown>;
  const list = (v: unknown) => (Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : []);
  const allow = new Set(list(c.allow));
  const deny = new Set(list(c.deny));
  // RE2 (as Go's regexp, which KrakenD uses): linear time, so no User-Agent can stall a worker.
  const patterns = list(c.patterns).map((p, i) => {
    try {
      return RE2JS.compile(p);
    } catch (err) {
      throw new Error(`${where}: "${BOT_NS}" patterns[${i}] ${JSON.stringify(p)}: ${(err as Error).message}`);
    }
  });
  const emptyIsBot = c.empty_user_agent_is_bot === true;
  const cacheSize = typeof c.cache_size === 'number' && c.cache_size > 0 ? Math.floor(c.cache_size) : 0;
  const decide = (ua: string): boolean => {
    if (ua === '') return emptyIsBot;
    if (allow.has(ua)) return false;
    if (deny.has(ua)) return true;
    for (const p of patterns) if (p.matcher(ua).find()) return true;
    return false;
  };
  if (cacheSize === 0) return decide;
  const cache = new Map<string, boolean>();
  return (ua) => {
    let v = cache.get(ua);
    if (v === undefined) {
      v = decide(ua);
      if (cache.size >= cacheSize) cache.delete(cache.keys().next().value!); // oldest first
      cache.set(ua, v);
    }
    return v;
  };
}

/** Returns the validation error text, or null when the body is valid. */
export type BodyCheck = (body: Buffer | null) => string | null;

/** A schema pattern RE2 cannot run. */
class PatternError extends Error {
  constructor(
    readonly pattern: string,
    reason: string,
  ) {
    super(reason);
  }
}

/**
 * ajv's RegExp engine for `pattern` and `patternProperties`: RE2, linear in the input whatever the
 * pattern, as Go's regexp in KrakenD's validator (a backtracking `^(\w+\s?)*$` takes seconds on 31
 * characters and blocks the worker). Patterns are compiled once, when the schema is. JSON Schema
 * patterns are ECMA-262; what only a backtracking engine can run (lookaround, backreferences) is a
 * start-up error (KrakenD's Go regexp refuses them too). JS-only escapes of one character (`\uXXXX`,
 * surrogate pairs, `\u{X}`) are rewritten to RE2's `\x{X}`. As in Go, `\s`, `\w`, `\d` and `\b`
 * are ASCII-only and `.` matches `\r`.
 */
const re2Engine = Object.assign(
  (pattern: string): { test(s: string): boolean; toString(): string } => {
    let re: RE2JS;
    try {
      re = RE2JS.compile(jsEscapesToRe2(pattern));
    } catch (err) {
      throw new PatternError(pattern, (err as Error).message);
    }
    return { test: (s: string) => re.matcher(s).find(), toString: () => pattern };
  },
  { code: 're2' },
);

const U_ESCAPE = /^u(?:([0-9a-fA-F]{4})|\{([0-9a-fA-F]{1,6})\})/;

/** `\uXXXX` (a surrogate pair joined) and `\u{X}` → `\x{X}`; every other escape is kept as written. */
function jsEscapesToRe2(p: string): string {
  if (p.indexOf('\\u') === -1) return p;
  let out = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c !== '\\') {
      out += c;
      continue;
    }
    const m = U_ESCAPE.exec(p.slice(i + 1, i + 10));
    if (m === null) {
      out += c + (p[i + 1] ?? '');
      i++;
      continue;
    }
    let cp = parseInt(m[1] ?? m[2]!, 16);
    let used = m[0].length;
    if (m[1] !== undefined && cp >= 0xd800 && cp <= 0xdbff) {
      const low = /^\\u(d[c-f][0-9a-f]{2})/i.exec(p.slice(i + 1 + used, i + 7 + used));
      if (low !== null) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (parseInt(low[1]!, 16) - 0xdc00);
        used += 6;
      }
    }
    out += `\\x{${cp.toString(16)}}`;
    i += used;
  }
  return out;
}

/** One validator instance per schema (so two endpoints may use the same `$id`); drafts 4, 6 and 7. */
function validatorFor(schema: Record<string, unknown>) {
  const draft = typeof schema.$schema === 'string' ? schema.$schema : '';
  const code = { regExp: re2Engine };
  if (draft.includes('draft-04')) return new AjvDraft04({ strict: false, code });
  const ajv = new Ajv({ strict: false, allErrors: false, code });
  if (draft.includes('draft-06')) ajv.addMetaSchema(DRAFT_06);
  return ajv;
}

export function compileBodySchema(schema: unknown, where: string): BodyCheck | null {
  if (schema === undefined) return null;
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw new Error(`${where}: "${SCHEMA_NS}" must be a JSON schema object`);
  let validate;
  try {
    validate = validatorFor(schema as Record<string, unknown>).compile(schema);
  } catch (err) {
    if (err instanceof PatternError) {
      throw new Error(
        `${where}: "${SCHEMA_NS}" pattern ${JSON.stringify(err.pattern)} cannot be used: ${err.message} ` +
          `(gw matches schema patterns with RE2, in linear time like Go's regexp: no lookaround, no backreferences)`,
      );
    }
    throw new Error(`${where}: "${SCHEMA_NS}" is not a valid JSON schema: ${(err as Error).message}`);
  }
  return (body) => {
    let v: unknown;
    try {
      v = JSON.parse(body === null || body.length === 0 ? 'null' : body.toString('utf8'));
    } catch (err) {
      return `invalid JSON body: ${(err as Error).message}`;
    }
    try {
      if (validate(v)) return null;
    } catch (err) {
      // e.g. uniqueItems on arrays nested thousands deep overflows the stack: refuse, never crash.
      return `the body cannot be validated: ${(err as Error).message}`;
    }
    const e = (validate.errors ?? [])[0] as ErrorObject | undefined;
    return e === undefined ? 'the body does not match the schema' : `${e.instancePath || '(root)'} ${e.message ?? 'is invalid'}`;
  };
}
