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
import type { Client, DirectClient } from '../proxy/backend.js';
import { OutboundRequest, Scope } from '../proxy/types.js';
import { isUpstreamBody } from '../transport/body.js';
import { RawResponse, type Receiver, type UpstreamResponse } from '../transport/client.js';
import type { FlowControl } from '../transport/body.js';
import type { PluginSpan } from '../telemetry/span.js';
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
  const p = new PluginRun(name, handler, logger, tag);
  return (r: OutboundRequest): Promise<BackendResponse> => p.promise(r, next);
}

/**
 * The same client in receiver mode (a no-op endpoint's backend, proxy/backend.ts DirectClient).
 * A handler that returns the promise of its one `next()` call as it is — `(req, next) => next()`,
 * the shape of most delegating plugins — hands the answer over unchanged, so that call is switched
 * to the receiver itself: the exchange gets the raw head synchronously from undici's parser, as
 * without a plugin (no promise turn, no header object). Every other handler (async, awaiting,
 * changing the answer, several calls, a traced request) takes the promise path, whose answers it
 * may read and change. Null for built-ins, whose direct form is promise-based.
 */
export function pluginDirect(name: string, handler: ClientHandler, next: DirectClient, logger: Logger, tag: string): DirectClient | null {
  if (directOf(handler) !== undefined) return null;
  const p = new PluginRun(name, handler, logger, tag);
  return (r: OutboundRequest, receiver: Receiver): FlowControl | null => p.direct(r, next, receiver);
}

/** A request rebuilt from what the handler passed to `next()`. */
function toOutbound(orig: OutboundRequest, r: BackendRequest): OutboundRequest {
  if (r === orig) return orig.urlChanged() ? orig.rebased() : orig;
  // A new request object from the plugin.
  const u = new URL(r.url);
  return new OutboundRequest(
    r.method, u.origin, u.pathname + u.search, r.url, r.headers, r.body, r.signal ? Scope.of(r.signal) : orig.scope, [], [],
  );
}

// The resolve/reject pair of the Delegation being built (a Promise subclass cannot take them from
// its executor before `super()` returns).
let capturedResolve: ((v: BackendResponse) => void) | null = null;
let capturedReject: ((e: unknown) => void) | null = null;
function capture(res: (v: BackendResponse) => void, rej: (e: unknown) => void): void {
  capturedResolve = res;
  capturedReject = rej;
}

/**
 * What one `next()` call of a handler in receiver mode returns: a promise that is also the call's
 * receiver. It knows whether anybody read it (`then`, which `await`, `catch`, `finally` and
 * Promise.resolve all go through): one nobody read when the handler returned it can be switched to
 * the exchange. Promises derived from it are plain ones.
 */
class Delegation extends Promise<BackendResponse> implements Receiver {
  static override get [Symbol.species](): PromiseConstructor {
    return Promise;
  }

  /** Somebody asked for the answer (then / await / catch / finally). */
  observed = false;
  /** Head or failure arrived. */
  settled = false;
  /** Where the answer goes when the handler handed it over unread (the exchange), else null. */
  target: Receiver | null = null;
  /** The transport call, to cancel it. */
  call: FlowControl | null = null;
  /** Set with `target`: a failure then reaches the exchange as the plugin's error. */
  run: PluginRun | null = null;
  /** The handler settled without returning this call's answer nor reading it: a late answer is released. */
  orphan = false;
  /** The plain answer this call gave the handler: released if the handler does not return it. */
  kept: BackendResponse | null = null;
  private readonly res: ((v: BackendResponse) => void) | null;
  private readonly rej: ((e: unknown) => void) | null;

  constructor(executor?: (res: (v: BackendResponse) => void, rej: (e: unknown) => void) => void) {
    super(executor ?? capture);
    this.res = executor === undefined ? capturedResolve : null;
    this.rej = executor === undefined ? capturedReject : null;
    capturedResolve = capturedReject = null;
  }

  override then<A = BackendResponse, B = never>(
    onOk?: ((v: BackendResponse) => A | PromiseLike<A>) | null,
    onErr?: ((e: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    this.observed = true;
    return super.then(onOk, onErr);
  }

  head(r: UpstreamResponse): void {
    this.settled = true;
    const t = this.target;
    if (t !== null) {
      t.head(r);
      // Read after the hand-over (a late `then`): it learns the head; the body is the client's.
      if (this.observed) this.res!(r instanceof RawResponse ? r.plain() : r);
      return;
    }
    if (this.orphan && !this.observed) {
      discardBody(r.body);
      return;
    }
    // A plain object: the handler may copy it ({ ...res }) or change it.
    const plain = r instanceof RawResponse ? r.plain() : r;
    this.kept = plain;
    this.res!(plain);
  }

  failed(err: Error): void {
    this.settled = true;
    const t = this.target;
    if (t !== null) {
      t.failed(this.run!.error(err));
      if (!this.observed) return;
    }
    // Nobody read this call (yet): its failure is not an unhandled rejection that would take the
    // worker down; whoever reads it later still gets it.
    if (!this.observed) super.then(undefined, ignore);
    this.rej!(err);
  }
}

/**
 * One client plugin on one backend: runs its handler per request, in promise mode (decoding
 * endpoints, and the handlers that read or change the answer) or receiver mode (see pluginDirect).
 */
class PluginRun {
  constructor(
    private readonly name: string,
    private readonly handler: ClientHandler,
    private readonly logger: Logger,
    private readonly tag: string,
  ) {}

  /** A handler's failure, logged and wrapped as the backend call's error. */
  error(err: unknown): PluginError {
    const msg = err instanceof Error ? err.message : String(err);
    this.logger.error(`${this.tag} [PLUGIN: ${this.name}] ${msg}`);
    return new PluginError(this.name, `plugin ${this.name}: ${msg}`, err);
  }

  /**
   * The handler's answer once it settled, checked; the answers of next() calls it did not return
   * (a retry, a probe) still hold a pool connection with an unread body and are released.
   */
  settle(
    out: BackendResponse | Promise<BackendResponse>,
    delegated: () => readonly BackendResponse[] | null,
    span: PluginSpan | null,
  ): Promise<BackendResponse> {
    if (span !== null) {
      // Traced: the handler's own span, under the backend call's.
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
          release(delegated(), null);
          throw this.error(new Error('the handler returned no response ({ status, headers, body })'));
        }
        const problem = responseProblem(resp);
        if (problem !== null) {
          release(delegated(), null);
          discardBody(resp.body);
          throw this.error(new Error(`the handler ${problem}`));
        }
        if (resp.headers === undefined || resp.headers === null) resp.headers = {};
        release(delegated(), resp);
        return resp;
      },
      (err) => {
        release(delegated(), null);
        throw err instanceof PluginError ? err : this.error(err);
      },
    );
  }

  /** The handler's result; a throw ends the handler's span and is thrown as the plugin's error. */
  private call(r: OutboundRequest, nextFn: NextClient, span: PluginSpan | null): BackendResponse | Promise<BackendResponse> {
    try {
      return this.handler(r, nextFn);
    } catch (err) {
      span?.end(err as Error);
      throw this.error(err);
    }
  }

  promise(r: OutboundRequest, next: Client): Promise<BackendResponse> {
    let delegated: BackendResponse[] | null = null;
    const nextFn: NextClient = (req) => {
      const p = next(toOutbound(r, req ?? r)).then((got) => {
        // A plain object: the handler may copy it ({ ...res }) or change it.
        const res = got instanceof RawResponse ? got.plain() : got;
        (delegated ??= []).push(res);
        return res;
      });
      // A call the handler never reads (a probe, a retry it gave up) fails without taking the
      // worker down as an unhandled rejection; a handler that reads it still gets the failure.
      p.catch(ignore);
      return p;
    };
    const span = r.trace?.plugin('plugin/http-client', this.name) ?? null;
    let out: BackendResponse | Promise<BackendResponse>;
    try {
      out = this.call(r, nextFn, span);
    } catch (err) {
      return Promise.reject(err as PluginError);
    }
    return this.settle(out, () => delegated, span);
  }

  direct(r: OutboundRequest, next: DirectClient, receiver: Receiver): FlowControl | null {
    // The handler's next() calls: the first, then any others (rare: retries, probes).
    let first: Delegation | null = null;
    let more: Delegation[] | null = null;
    const nextFn: NextClient = (req) => {
      const d = new Delegation();
      if (first === null) first = d;
      else (more ??= []).push(d);
      let out: OutboundRequest;
      try {
        out = toOutbound(r, req ?? r);
      } catch (err) {
        d.failed(err as Error);
        return d;
      }
      d.call = next(out, d);
      return d;
    };
    const span = r.trace?.plugin('plugin/http-client', this.name) ?? null;
    let out: BackendResponse | Promise<BackendResponse>;
    try {
      out = this.call(r, nextFn, span);
    } catch (err) {
      receiver.failed(err as PluginError);
      return null;
    }
    const d = first as Delegation | null;
    if (d !== null && out === d && more === null && span === null && !d.observed && !d.settled) {
      // Handed over unread: the answer goes to the exchange, a failure as the handler's.
      d.target = receiver;
      d.run = this;
      return d.call;
    }
    const answers = (): BackendResponse[] | null => {
      if (d === null) return null;
      const all = more === null ? [d] : [d, ...(more as Delegation[])];
      for (const c of all) c.orphan = true;
      return all.flatMap((c) => (c.kept === null ? [] : [c.kept]));
    };
    this.settle(out, answers, span).then(
      (resp) => receiver.head(resp as UpstreamResponse),
      (err: Error) => receiver.failed(err),
    );
    return null;
  }
}

function ignore(): void {}

function release(delegated: readonly BackendResponse[] | null, kept: BackendResponse | null): void {
  if (delegated === null) return;
  for (const d of delegated) if (d !== kept && d.body !== kept?.body && isUpstreamBody(d.body)) d.body.dump();
}
