// SPDX-License-Identifier: Apache-2.0
/**
 * krakend-debugger: the request/response modifier plugin of KrakenD's documentation ("the
 * debugger plugin"), ported to gw. It changes nothing: it logs what a request and a response look
 * like at the place it is configured (endpoint or backend), at DEBUG level.
 *
 *   "extra_config": { "plugin/req-resp-modifier": {
 *     "name": ["krakend-debugger-request", "krakend-debugger-response"] } }
 *
 * - `krakend-debugger-request` logs the params, headers, method, URL, query and path;
 * - `krakend-debugger-response` logs the data, whether it is complete, the headers and the status.
 */
import type {
  ModifierFactory,
  ModifierRegisterer as Registerer,
  PluginLogger,
  RequestModifier,
  RequestWrapper,
  ResponseModifier,
  ResponseWrapper,
} from '../../core/plugin/types.js';

const NAME = 'krakend-debugger';

let logger: PluginLogger | null = null;

/** One value of a dump: maps as JSON (stable, greppable), the rest as it is. */
function show(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

const requestDump: ModifierFactory = (_cfg, ctx) => {
  // If this modifier needed settings they would be under its plugin name:
  //   "plugin/req-resp-modifier": { "name": [...], "krakend-debugger": { "A": "foo", "B": 42 } }
  logger?.debug(`request dumper injected ${ctx.where}`);
  const dump: RequestModifier = (req: RequestWrapper) => {
    const l = logger;
    if (l === null) return; // no logger, nothing to do: the request goes on unchanged
    l.debug(`${ctx.where} params:`, show(req.params));
    l.debug(`${ctx.where} headers:`, show(req.headers));
    l.debug(`${ctx.where} method:`, req.method);
    l.debug(`${ctx.where} url:`, show(req.url));
    l.debug(`${ctx.where} query:`, show(req.query));
    l.debug(`${ctx.where} path:`, req.path);
    // Returning nothing keeps the wrapper as it is (the Go original returns its input).
  };
  return dump;
};

const responseDump: ModifierFactory = (_cfg, ctx) => {
  logger?.debug(`response dumper injected ${ctx.where}`);
  const dump: ResponseModifier = (resp: ResponseWrapper) => {
    const l = logger;
    if (l === null) return;
    // `data` is the decoded answer (empty with no-op); the no-op body (`io`) is a stream and is
    // not read here, so that it still streams to the client.
    l.debug(`${ctx.where} data:`, show(resp.data));
    l.debug(`${ctx.where} is complete:`, resp.isComplete);
    l.debug(`${ctx.where} headers:`, show(resp.headers));
    l.debug(`${ctx.where} status code:`, resp.statusCode);
  };
  return dump;
};

/** The symbol gw's loader looks for. */
export const ModifierRegisterer: Registerer = {
  name: NAME,
  registerLogger(l) {
    logger = l;
    logger.debug(`[PLUGIN: ${NAME}] Logger loaded`);
  },
  registerModifiers(register) {
    // One name per direction: a name registered for both would be applied to requests only.
    register(`${NAME}-request`, requestDump, true, false);
    register(`${NAME}-response`, responseDump, false, true);
    logger?.debug(`[PLUGIN: ${NAME}] registered`);
  },
};
