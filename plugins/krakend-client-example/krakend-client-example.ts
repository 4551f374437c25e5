// SPDX-License-Identifier: Apache-2.0
/**
 * krakend-client-example: the hello-world HTTP client plugin of KrakenD's documentation, ported to gw.
 *
 * A backend configured with
 *
 *   "extra_config": { "plugin/http-client": {
 *     "name": "krakend-client-example",
 *     "krakend-client-example": { "path": "/__debug/hijack-me" } } }
 *
 * gets its calls to that backend path answered by the plugin (hijack:
 * `{"message": "/__debug/hijack-me"}`, no backend call); every other call is delegated to gw's
 * pooled client untouched (zero-copy).
 */
import type {
  BackendResponse,
  ClientFactory,
  ClientHandler,
  ClientRegisterer as Registerer,
  PluginLogger,
} from '../../core/plugin/types.js';

const NAME = 'krakend-client-example';

let logger: PluginLogger | null = null;

/** Go's html.EscapeString: escapes <, >, &, ' and ". */
export function htmlEscape(s: string): string {
  return s.replace(/[<>&'"]/g, (c) =>
    c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '&' ? '&amp;' : c === "'" ? '&#39;' : '&#34;',
  );
}

/**
 * True when the path of `url` (an absolute URL as gw builds it: `scheme://host[:port]/path?query`)
 * is exactly `path`. Equivalent to `new URL(url).pathname === path` for the normalised URLs gw
 * sends, without allocating a URL per request.
 */
export function pathIs(url: string, path: string): boolean {
  const scheme = url.indexOf('://');
  // The path starts at the first '/', '?' or '#' after the authority ('?'/'#' first: empty path).
  let start = scheme < 0 ? 0 : scheme + 3;
  for (; start < url.length; start++) {
    const c = url.charCodeAt(start);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) break;
  }
  if (start === url.length || url.charCodeAt(start) !== 47) return path === '/';
  if (!url.startsWith(path, start)) return false;
  const end = start + path.length;
  if (end === url.length) return true;
  const c = url.charCodeAt(end);
  return c === 63 /* ? */ || c === 35 /* # */;
}

const factory: ClientFactory = (_ctx, extra) => {
  // Check the passed configuration and initialise the plugin.
  const name = extra.name;
  if (typeof name !== 'string') throw new Error('wrong config');
  if (name !== NAME) throw new Error(`unknown register ${name}`);

  // The plugin's own settings live under its name: { "path": "/some-path" }.
  const config = extra[NAME];
  const path =
    typeof config === 'object' && config !== null && typeof (config as Record<string, unknown>).path === 'string'
      ? ((config as Record<string, unknown>).path as string)
      : '';
  logger?.debug(`The plugin is now hijacking the path ${path}`);

  // Everything the hijacked answer needs is computed once, here, not per request.
  const escaped = htmlEscape(path);
  const body = JSON.stringify({ message: escaped });

  const handler: ClientHandler = (req, next) => {
    // The path is the backend call's path (after url_pattern substitution), not the client's.
    if (path !== '' && pathIs(req.url, path)) {
      logger?.debug('request:', escaped);
      // A fresh headers object per answer: gw may add headers to the response it receives.
      const res: BackendResponse = { status: 200, headers: { 'Content-Type': 'application/json' }, body };
      return res;
    }
    // Not ours: delegate to gw's pooled client and return its response untouched, so the body
    // streams from the backend socket to the client socket without being buffered.
    return next();
  };
  return handler;
};

/** The symbol gw's loader looks for. */
export const ClientRegisterer: Registerer = {
  name: NAME,
  registerLogger(l) {
    logger = l;
    logger.debug(`[PLUGIN: ${NAME}] Logger loaded`);
  },
  registerClients(register) {
    register(NAME, factory);
  },
};
