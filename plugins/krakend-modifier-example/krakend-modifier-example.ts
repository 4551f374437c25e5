// SPDX-License-Identifier: Apache-2.0
/**
 * krakend-modifier-example: a request and a response modifier that change what they see, ported
 * from the modifier example KrakenD's documentation points to for "how to update the request"
 * (Lura's `lura-request-modifier-example`, which appends `/fooo` to the request path and logs the
 * result).
 *
 *   "extra_config": { "plugin/req-resp-modifier": {
 *     "name": ["krakend-modifier-example-request", "krakend-modifier-example-response"],
 *     "krakend-modifier-example": { "path_suffix": "/fooo" } } }
 *
 * - `krakend-modifier-example-request` sets the header `X-Modified-By: krakend-modifier-example`
 *   on the request and, at backend level with a `path_suffix`, joins the suffix to the path of the
 *   backend URL (`/__echo/a` → `/__echo/a/fooo`). Then it logs the modified request.
 * - `krakend-modifier-example-response` marks the answer: on a decoding endpoint it adds
 *   `"modified_by": "krakend-modifier-example"` to the data; with `no-op` (where the data is empty
 *   and the body is a stream it leaves alone) it sets the `X-Modified-By` response header.
 */
import { posix } from 'node:path';
import type {
  ModifierFactory,
  ModifierRegisterer as Registerer,
  PluginLogger,
  RequestModifier,
  ResponseModifier,
} from '../../core/plugin/types.js';

const NAME = 'krakend-modifier-example';
const HEADER = 'X-Modified-By';

let logger: PluginLogger | null = null;

/** The plugin's own settings: `extra["krakend-modifier-example"]`, or {}. */
function settings(extra: Record<string, unknown>): Record<string, unknown> {
  const own = extra[NAME];
  return typeof own === 'object' && own !== null && !Array.isArray(own) ? (own as Record<string, unknown>) : {};
}

/** Go's path.Join of a URL path and a suffix: one slash between them, `.`/`..` resolved, no trailing slash. */
export function joinPath(base: string, suffix: string): string {
  const j = posix.join(base, suffix);
  return j.length > 1 && j.endsWith('/') ? j.slice(0, -1) : j;
}

const requestModifierFactory: ModifierFactory = (extra, ctx) => {
  const s = settings(extra);
  const suffix = s.path_suffix;
  if (suffix !== undefined && typeof suffix !== 'string') {
    // A start-up error naming the plugin and the place, not a silently ignored setting.
    throw new Error(`"${NAME}".path_suffix must be a string, got ${JSON.stringify(suffix)}`);
  }
  const value = [NAME];
  logger?.debug(`[PLUGIN: ${NAME}] Request modifier injected ${ctx.where}`);
  const modify: RequestModifier = (req) => {
    req.headers[HEADER] = value.slice();
    // The backend URL exists at backend level only (`url` is null at endpoint level, where the
    // path is the gateway's and changing it would not change any call).
    if (typeof suffix === 'string' && suffix !== '' && req.url !== null) {
      const u = new URL(req.url);
      u.pathname = joinPath(u.pathname, suffix);
      req.url = u.toString();
      req.path = u.pathname;
    }
    const l = logger;
    if (l !== null) {
      l.debug(`${ctx.where} params:`, JSON.stringify(req.params));
      l.debug(`${ctx.where} headers:`, JSON.stringify(req.headers));
      l.debug(`${ctx.where} method:`, req.method);
      l.debug(`${ctx.where} url:`, String(req.url));
      l.debug(`${ctx.where} query:`, JSON.stringify(req.query));
      l.debug(`${ctx.where} path:`, req.path);
    }
    return req;
  };
  return modify;
};

const responseModifierFactory: ModifierFactory = (_extra, ctx) => {
  logger?.debug(`[PLUGIN: ${NAME}] Response modifier injected ${ctx.where}`);
  const modify: ResponseModifier = (resp) => {
    // No-op: `io` is the backend's body, headers and status are the backend's. Decoding: `data`.
    const d = resp.data as unknown;
    if ((resp.io === null || resp.io === undefined) && typeof d === 'object' && d !== null) resp.data.modified_by = NAME;
    else resp.headers[HEADER] = [NAME];
    logger?.debug(`${ctx.where} status code:`, resp.statusCode, 'is complete:', resp.isComplete);
    return resp;
  };
  return modify;
};

/** The symbol gw's loader looks for. */
export const ModifierRegisterer: Registerer = {
  name: NAME,
  registerLogger(l) {
    logger = l;
    logger.debug(`[PLUGIN: ${NAME}] Logger loaded`);
  },
  registerModifiers(register) {
    register(`${NAME}-request`, requestModifierFactory, true, false);
    register(`${NAME}-response`, responseModifierFactory, false, true);
  },
};
