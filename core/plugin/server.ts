/**
 * Server (handler) plugins: service-level `extra_config["plugin/http-server"]` (spec §5.2). Each
 * listed name's factory gets the whole namespace object and the handler it wraps; the first listed
 * wraps the router, the last listed is the outermost. An unknown name or a failing factory is a
 * start-up error naming it (KrakenD logs and skips it; gw refuses, as for client plugins).
 */
import { ConfigError } from '../config/load.js';
import type { Logger } from '../log.js';
import { pluginLogger } from './logger.js';
import type { PluginRegistry } from './registry.js';
import type { Context } from '@opentelemetry/api';
import type { Tracing } from '../telemetry/tracing.js';
import { TRACE_CONTEXT } from '../router/virtual.js';
import { inSpan } from '../telemetry/span.js';
import type { ServerFactory, ServerHandler, ServerRequest, ServerResponse } from './types.js';

export const SERVER_NAMESPACE = 'plugin/http-server';
const TAG = '[PLUGIN: Server]';

/** The names listed in the namespace (a string or a list of strings); throws ConfigError. */
export function serverPluginNames(extra: unknown): string[] {
  const where = `extra_config["${SERVER_NAMESPACE}"]`;
  if (typeof extra !== 'object' || extra === null || Array.isArray(extra)) throw new ConfigError(`${where} must be an object with a "name"`);
  const n = (extra as { name?: unknown }).name;
  const list = typeof n === 'string' ? [n] : Array.isArray(n) ? n : null;
  if (list === null || list.length === 0) {
    throw new ConfigError(`${where}.name must be a plugin name or a non-empty list of names`);
  }
  for (const [i, x] of list.entries()) {
    if (typeof x !== 'string' || x === '') throw new ConfigError(`${where}.name[${i}] must be a non-empty string`);
  }
  return list as string[];
}

/**
 * Builds the handler chain around `router`, or returns null when the service configures no server
 * plugin. Throws ConfigError naming the plugin that is not registered or whose factory failed.
 */
export async function buildServerChain(
  serviceExtra: Readonly<Record<string, unknown>>,
  registry: PluginRegistry | null,
  router: ServerHandler,
  logger: Logger,
  signal: AbortSignal,
  tracing: Tracing | null = null,
): Promise<ServerHandler | null> {
  const extra = serviceExtra[SERVER_NAMESPACE];
  if (extra === undefined) return null;
  const names = serverPluginNames(extra);
  let h = router;
  for (const name of names) {
    const reg = registry?.get('server', name) as { factory: ServerFactory; file: string } | undefined;
    if (!reg) {
      logger.error(`${TAG} No plugin registered as ${name}`);
      const known = registry?.names('server') ?? [];
      throw new ConfigError(
        `extra_config["${SERVER_NAMESPACE}"]: server plugin '${name}' is not registered` +
          (registry === null
            ? ' (the configuration has no "plugin": {"folder", "pattern"} to load plugins from)'
            : known.length
              ? ` (registered: ${known.join(', ')})`
              : ' (no server plugin was loaded; see the plugin loader lines above)'),
      );
    }
    let built: unknown;
    try {
      built = await reg.factory({ name, signal, logger: pluginLogger(logger, name) }, extra as Record<string, unknown>, h);
    } catch (err) {
      logger.error(`${TAG} Error getting the plugin handler: ${(err as Error)?.message ?? String(err)}`);
      throw new ConfigError(`extra_config["${SERVER_NAMESPACE}"]: server plugin '${name}' (${reg.file}) failed to start: ${(err as Error)?.message ?? String(err)}`);
    }
    if (typeof built !== 'function') {
      logger.error(`${TAG} Wrong plugin handler type: ${name}`);
      throw new ConfigError(`extra_config["${SERVER_NAMESPACE}"]: server plugin '${name}' (${reg.file}): the factory returned ${typeof built}, not a handler function`);
    }
    h = named(name, built as ServerHandler, tracing);
    logger.info(`${TAG} Injecting plugin ${name}`);
  }
  return h;
}

/**
 * Errors a plugin's handler throws or rejects with carry its name (for the log line); a traced
 * request's call is a `plugin/http-server: <name>` span, ended when the handler's answer (its
 * status and headers) is there.
 */
function named(name: string, h: ServerHandler, tracing: Tracing | null): ServerHandler {
  const tag = (err: unknown): never => {
    const e = err instanceof Error ? err : new Error(String(err));
    if ((e as { plugin?: string }).plugin === undefined) {
      try {
        (e as { plugin?: string }).plugin = name;
      } catch {
        /* a frozen error */
      }
    }
    throw e;
  };
  const call = (req: ServerRequest): ServerResponse | Promise<ServerResponse> => {
    let r: ServerResponse | Promise<ServerResponse>;
    try {
      r = h(req);
    } catch (err) {
      return tag(err);
    }
    return r !== null && typeof (r as Promise<ServerResponse>).then === 'function' ? (r as Promise<ServerResponse>).then(undefined, tag) : r;
  };
  if (tracing === null) return call;
  return (req) => {
    const parent = (req as { [TRACE_CONTEXT]?: Context })[TRACE_CONTEXT];
    if (parent === undefined) return call(req);
    const span = tracing.serverPlugin(parent, name);
    (req as { [TRACE_CONTEXT]?: Context })[TRACE_CONTEXT] = span.ctx;
    return inSpan(span, () => call(req));
  };
}
