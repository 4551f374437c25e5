// SPDX-License-Identifier: Apache-2.0
/**
 * http-client-auth: adds a credential header to every call to a backend and retries an idempotent,
 * body-less call once when the connection is reset before any response arrives (a keep-alive
 * connection the backend or a load balancer closed while gw was reusing it).
 *
 *   "extra_config": { "plugin/http-client": {
 *     "name": "http-client-auth",
 *     "http-client-auth": { "header": "Authorization", "value_env": "BACKEND_TOKEN" } } }
 *
 * Settings (under "http-client-auth"):
 *   header          the header name (required); canonicalised (`x-api-key` → `X-Api-Key`), and it
 *                   replaces any value of that header the client sent
 *   value           the header value, or
 *   value_env       the name of an environment variable holding it, read once at start-up; a
 *                   missing/empty variable is a start-up error naming it
 *   retry_on_reset  default true; false disables the retry
 *
 * Delegation with a change: the response is always the backend's, returned untouched (zero-copy).
 */
import type {
  BackendRequest,
  BackendResponse,
  ClientFactory,
  ClientHandler,
  ClientRegisterer as Registerer,
  NextClient,
  PluginLogger,
} from '../../core/plugin/types.js';

const NAME = 'http-client-auth';

let logger: PluginLogger | null = null;

/** Methods that may be sent twice (RFC 9110 §9.2.2), uppercased as gw passes them. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
const RESET_CODES = new Set(['ECONNRESET', 'UND_ERR_SOCKET']);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Go's CanonicalMIMEHeaderKey: `x-api-key` → `X-Api-Key`. */
export function canonicalHeader(name: string): string {
  return name.toLowerCase().replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
}

/** True for a connection reset / socket error, looking through `cause` chains (undici and fetch wrap it). */
export function isConnectionReset(err: unknown): boolean {
  for (let e = err, depth = 0; e !== null && typeof e === 'object' && depth < 5; depth++) {
    const { code, message, cause } = e as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof code === 'string' && RESET_CODES.has(code)) return true;
    if (typeof message === 'string' && message.includes('ECONNRESET')) return true;
    e = cause;
  }
  return false;
}

function hasBody(body: BackendRequest['body']): boolean {
  if (body === null || body === undefined) return false;
  if (typeof body === 'string') return body.length > 0;
  if (body instanceof Uint8Array) return body.byteLength > 0;
  return true; // a stream: assume it carries bytes (it can only be read once)
}

async function sendWithRetry(req: BackendRequest, next: NextClient): Promise<BackendResponse> {
  try {
    return await next(req);
  } catch (err) {
    // next() rejects only before a response exists, so a retry never duplicates a partial answer.
    if (req.signal.aborted || !isConnectionReset(err)) throw err;
    logger?.debug(`retrying ${req.method} ${req.url} once after a connection reset`);
    return next(req);
  }
}

function settings(extra: Record<string, unknown>): Record<string, unknown> {
  const cfg = extra[NAME];
  if (cfg === undefined) throw new Error(`${NAME}: missing the "${NAME}" settings object`);
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new Error(`${NAME}: "${NAME}" must be an object`);
  return cfg as Record<string, unknown>;
}

const factory: ClientFactory = (_ctx, extra) => {
  if (extra.name !== NAME) throw new Error(`unknown register ${String(extra.name)}`);
  const cfg = settings(extra);

  if (typeof cfg.header !== 'string' || !TOKEN.test(cfg.header)) {
    throw new Error(`${NAME}: "header" must be a valid header name, got ${JSON.stringify(cfg.header)}`);
  }
  const header = canonicalHeader(cfg.header);

  let value: string;
  if (cfg.value !== undefined && cfg.value_env !== undefined) {
    throw new Error(`${NAME}: set either "value" or "value_env", not both`);
  } else if (typeof cfg.value === 'string') {
    value = cfg.value;
  } else if (typeof cfg.value_env === 'string' && cfg.value_env !== '') {
    const v = process.env[cfg.value_env];
    if (v === undefined || v === '') {
      throw new Error(`${NAME}: the environment variable ${cfg.value_env} (value_env) is not set`);
    }
    value = v;
  } else {
    throw new Error(`${NAME}: "value" (a string) or "value_env" (an environment variable name) is required`);
  }
  if (/[\r\n\0]/.test(value)) throw new Error(`${NAME}: the value for ${header} contains a line break or NUL`);

  const retry = cfg.retry_on_reset !== false;
  logger?.debug(`adding the ${header} header${retry ? ', retrying idempotent calls once on connection reset' : ''}`);

  // Per request: one property write, and (for retryable calls) one async frame. The value is never logged.
  const handler: ClientHandler = (req, next) => {
    req.headers[header] = value;
    if (!retry || !IDEMPOTENT.has(req.method) || hasBody(req.body)) return next(req);
    return sendWithRetry(req, next);
  };
  return handler;
};

export const ClientRegisterer: Registerer = {
  name: NAME,
  registerLogger(l) {
    logger = l;
    logger.debug('Logger loaded');
  },
  registerClients(register) {
    register(NAME, factory);
  },
};
