/**
 * Client plugins in the backend pipe: resolves `extra_config["plugin/http-client"]` per backend at
 * start-up (unknown names and factory failures are start-up errors, stricter than KrakenD), and
 * wraps the handler so that `next()` reaches gw's pooled client. A response returned from `next()`
 * keeps its UpstreamBody, so delegation stays on the zero-copy path.
 *
 * A name is looked up in the plugin folder's registry, then among gw's built-in client plugins
 * (./builtin: `no-redirect`, `static-filesystem`), which need no "plugin" section. A folder plugin
 * registering a built-in's name is used in its place.
 */
import { Readable } from 'node:stream';
import type { BackendConfig, EndpointConfig } from '../config/types.js';
import { ConfigError } from '../config/load.js';
import type { Logger } from '../log.js';
import type { Client } from '../proxy/backend.js';
import { OutboundRequest, Scope } from '../proxy/types.js';
import { isUpstreamBody } from '../transport/body.js';
import { RawResponse } from '../transport/client.js';
import type { BackendRequest, BackendResponse, ClientFactory, ClientHandler, NextClient } from './types.js';
import { pluginLogger } from './logger.js';
import { responseProblem } from './checks.js';
import type { PluginRegistry } from './registry.js';
import { BUILTIN_CLIENT_NAMES, builtinClient, directOf } from './builtin/index.js';

export const CLIENT_NAMESPACE = 'plugin/http-client';

export class PluginError extends Error {
  constructor(
    readonly plugin: string,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'PluginError';
  }
}

function backendTag(e: EndpointConfig, b: BackendConfig): string {
  return `[BACKEND: ${b.method} ${e.route} -> ${b.urlPattern}]`;
}

/** Returns the plugin name a backend asks for, or null. */
export function clientPluginName(b: BackendConfig): string | null {
  const extra = b.extraConfig[CLIENT_NAMESPACE] as Record<string, unknown> | undefined;
  if (!extra || typeof extra !== 'object') return null;
  return typeof extra.name === 'string' && extra.name !== '' ? extra.name : null;
}

/** Builds the handler for one backend, or null when it names no plugin. Throws ConfigError. */
export async function resolveClientPlugin(
  e: EndpointConfig,
  b: BackendConfig,
  registry: PluginRegistry | null,
  logger: Logger,
  signal: AbortSignal,
): Promise<{ name: string; handler: ClientHandler } | null> {
  const extra = b.extraConfig[CLIENT_NAMESPACE] as Record<string, unknown> | undefined;
  if (extra === undefined) return null;
  const where = `endpoint '${e.method} ${e.path}', backend ${b.index} (${b.urlPattern})`;
  const name = clientPluginName(b);
  if (name === null) {
    throw new ConfigError(`${where}: extra_config["${CLIENT_NAMESPACE}"] has no "name" (a string naming a client plugin)`);
  }
  const tag = backendTag(e, b);
  const loaded = registry?.get('client', name) as { factory: ClientFactory; file: string } | undefined;
  const builtin = builtinClient(name);
  if (loaded && builtin) logger.debug(`${tag} Client plugin ${name} from ${loaded.file} replaces the built-in one`);
  const reg = loaded ?? builtin;
  if (!reg) {
    const known = registry?.names('client') ?? [];
    const builtins = `built-in: ${BUILTIN_CLIENT_NAMES.join(', ')}`;
    throw new ConfigError(
      `${where}: client plugin '${name}' is not registered` +
        (registry === null
          ? ` (${builtins}; the configuration has no "plugin": {"folder", "pattern"} to load others from)`
          : known.length
            ? ` (registered: ${known.join(', ')}; ${builtins})`
            : ` (${builtins}; no client plugin was loaded from the plugin folder, see the plugin loader lines above)`),
    );
  }
  let handler: ClientHandler;
  try {
    handler = await reg.factory(
      {
        endpoint: e.path,
        method: e.method,
        backend: { index: b.index, urlPattern: b.urlPattern, hosts: b.hosts },
        signal,
        logger: pluginLogger(logger, name),
      },
      extra as Record<string, unknown>,
    );
  } catch (err) {
    throw new ConfigError(`${where}: client plugin '${name}' (${reg.file}) failed to start: ${(err as Error)?.message ?? String(err)}`);
  }
  if (typeof handler !== 'function') {
    throw new ConfigError(`${where}: client plugin '${name}' (${reg.file}): the factory returned ${typeof handler}, not a handler function`);
  }
  logger.debug(`${tag} Injecting plugin ${name}`);
  return { name, handler };
}


/** Frees a body gw will not send: an upstream body is dumped, a stream destroyed. */
function discardBody(b: unknown): void {
  if (isUpstreamBody(b)) b.dump();
  else if (b instanceof Readable) b.destroy();
}

/**
 * Wraps a plugin handler as the backend's client. A built-in's handler brings its own direct form,
 * built on `next` without the wrapper (./builtin/direct.ts).
 */
export function pluginClient(name: string, handler: ClientHandler, next: Client, logger: Logger, tag: string): Client {
  const direct = directOf(handler);
  if (direct !== undefined) return direct(next);
  const toOutbound = (orig: OutboundRequest, r: BackendRequest): OutboundRequest => {
    if (r === orig) return orig.urlChanged() ? orig.rebased() : orig;
    // A new request object from the plugin.
    const u = new URL(r.url);
    return new OutboundRequest(
      r.method, u.origin, u.pathname + u.search, r.url, r.headers, r.body, r.signal ? Scope.of(r.signal) : orig.scope, [], [],
    );
  };
  const fail = (err: unknown): never => {
    const msg = err instanceof Error ? err.message : String(err);
    logger.error(`${tag} [PLUGIN: ${name}] ${msg}`);
    throw new PluginError(name, `plugin ${name}: ${msg}`, err);
  };
  return (r: OutboundRequest): Promise<BackendResponse> => {
    // Responses from next() that the handler did not return (a retry, a probe) still hold a pool
    // connection with an unread body: they are discarded once the handler settles.
    let delegated: BackendResponse[] | null = null;
    const nextFn: NextClient = (req) =>
      next(toOutbound(r, req ?? r)).then((got) => {
        // A plain object: the handler may copy it ({ ...res }) or change it.
        const res = got instanceof RawResponse ? got.plain() : got;
        (delegated ??= []).push(res);
        return res;
      });
    const release = (kept: BackendResponse | null): void => {
      if (delegated === null) return;
      for (const d of delegated) if (d !== kept && d.body !== kept?.body && isUpstreamBody(d.body)) d.body.dump();
    };
    let out: BackendResponse | Promise<BackendResponse>;
    // Traced: the handler's own span, under the backend call's.
    const span = r.trace?.plugin('plugin/http-client', name) ?? null;
    try {
      out = handler(r, nextFn);
    } catch (err) {
      span?.end(err as Error);
      return Promise.reject(fail(err));
    }
    if (span !== null) {
      out = Promise.resolve(out).then(
        (v) => {
          span.end(null);
          return v;
        },
        (err: unknown) => {
          span.end(err instanceof Error ? err : new Error(String(err)));
          throw err;
        },
      );
    }
    return Promise.resolve(out).then(
      (resp) => {
        if (resp === null || typeof resp !== 'object') {
          release(null);
          fail(new Error('the handler returned no response ({ status, headers, body })'));
        }
        const problem = responseProblem(resp);
        if (problem !== null) {
          release(null);
          discardBody(resp.body);
          fail(new Error(`the handler ${problem}`));
        }
        if (resp.headers === undefined || resp.headers === null) resp.headers = {};
        release(resp);
        return resp;
      },
      (err) => {
        release(null);
        return fail(err);
      },
    );
  };
}
