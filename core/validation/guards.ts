/**
 * Request guards that answer before anything is forwarded:
 *  - `security/bot-detector` (service or endpoint; KrakenD's krakend-botdetector): a User-Agent in
 *    `allow` passes, one in `deny` or matching a `patterns` regexp gets 403 with an empty body;
 *    `empty_user_agent_is_bot` refuses requests without one. Verdicts are cached (`cache_size`).
 *  - `validation/json-schema` (endpoint; krakend-jsonschema): the request body must be JSON valid
 *    against the schema, else 400 (the reason is the body with `return_error_msg`).
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

/** One validator instance per schema (so two endpoints may use the same `$id`); drafts 4, 6 and 7. */
function validatorFor(schema: Record<string, unknown>) {
  const draft = typeof schema.$schema === 'string' ? schema.$schema : '';
  if (draft.includes('draft-04')) return new AjvDraft04({ strict: false });
  const ajv = new Ajv({ strict: false, allErrors: false });
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
