// SPDX-License-Identifier: Apache-2.0
/**
 * krakend-server-example: the hello-world HTTP server (handler) plugin of KrakenD's documentation,
 * ported to gw.
 *
 * A service configured with
 *
 *   "extra_config": { "plugin/http-server": {
 *     "name": ["krakend-server-example"],
 *     "krakend-server-example": { "path": "/hijack-me" } } }
 *
 * answers requests for that exact path itself (`Hello, "/hijack-me"`, text/plain, no endpoint,
 * no backend) and passes every other request on to the router (or to the plugin listed before it)
 * untouched, so the router's answer streams to the client as it would without the plugin.
 */
import type {
  HandlerRegisterer as Registerer,
  PluginLogger,
  ServerFactory,
  ServerHandler,
  ServerResponse,
} from '../../core/plugin/types.js';

const NAME = 'krakend-server-example';

let logger: PluginLogger | null = null;

/** Go's html.EscapeString: escapes <, >, &, ' and ". */
export function htmlEscape(s: string): string {
  return s.replace(/[<>&'"]/g, (c) =>
    c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '&' ? '&amp;' : c === "'" ? '&#39;' : '&#34;',
  );
}

const GO_ESCAPES: Record<string, string> = { '\x07': '\\a', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\v': '\\v' };

/**
 * Go's `%q` of a string (strconv.Quote) for the characters a URL path can hold once decoded:
 * double quotes around it, `"` and `\` escaped, C escapes for the usual control characters,
 * `\xNN` for the other ASCII control characters and `\uNNNN` for the C1 controls and line
 * separators. Printable non-ASCII characters are kept as they are, as Go does.
 */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (GO_ESCAPES[ch] !== undefined) out += GO_ESCAPES[ch];
    else if (c < 0x20 || c === 0x7f) out += '\\x' + c.toString(16).padStart(2, '0');
    else if ((c >= 0x80 && c < 0xa0) || c === 0xad || c === 0x2028 || c === 0x2029 || c === 0xfeff) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += ch;
  }
  return out + '"';
}

/** Go's `req.URL.Path`: the path percent-decoded (kept as sent when it is not valid encoding). */
export function decodedPath(p: string): string {
  if (!p.includes('%')) return p;
  try {
    return decodeURIComponent(p);
  } catch {
    return p;
  }
}

const factory: ServerFactory = (_ctx, extra, next) => {
  // The plugin's own settings live under its name: { "path": "/some-path" }. Without them the
  // factory fails: KrakenD then logs the error and serves without the plugin, gw refuses to start
  // (the error names the plugin), as it does for every plugin whose factory fails.
  const config = extra[NAME];
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new Error('configuration not found');

  // The path to hijack. A missing or non-string "path" hijacks nothing, as in the original (the
  // empty string is never a request path).
  const p = (config as Record<string, unknown>).path;
  const path = typeof p === 'string' ? p : '';
  logger?.debug(`The plugin is now hijacking the path ${path}`);

  // The answer is the same for every hijacked request: built once, here.
  const escaped = htmlEscape(path);
  const body = `Hello, ${goQuote(escaped)}`;

  const handler: ServerHandler = (req) => {
    // Not our path: the router answers, untouched (its body streams with backpressure).
    if (req.path !== path && (!req.path.includes('%') || decodedPath(req.path) !== path)) return next(req);
    // Ours: answered here; the rest of an upload, if any, is read and dropped by gw.
    logger?.debug('request:', escaped);
    // Go's ResponseWriter sniffs text/plain for this body; a fresh headers object per answer.
    const res: ServerResponse = { status: 200, headers: { 'Content-Type': 'text/plain; charset=utf-8' }, body };
    return res;
  };
  return handler;
};

/** The symbol gw's loader looks for. */
export const HandlerRegisterer: Registerer = {
  name: NAME,
  registerLogger(l) {
    logger = l;
    logger.debug(`[PLUGIN: ${NAME}] Logger loaded`);
  },
  registerHandlers(register) {
    register(NAME, factory);
  },
};
