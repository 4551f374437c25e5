/**
 * What the plugin loader registered, by kind and name. Built once at start-up, read while the
 * pipes are built; never touched on the request path.
 *
 * All three of KrakenD's kinds: `client` (ClientRegisterer), `server` (HandlerRegisterer) and
 * `modifier` (ModifierRegisterer, which also records whether a name applies to requests and/or
 * responses).
 */
import type { Logger } from '../log.js';
import type { ClientFactory } from './types.js';

export type PluginKind = 'client' | 'server' | 'modifier';

/** KrakenD's log tag for each kind (`[SERVICE: Executor Plugin] ...`). */
export const KIND_TAG: Readonly<Record<PluginKind, string>> = {
  client: '[SERVICE: Executor Plugin]',
  server: '[SERVICE: Handler Plugin]',
  modifier: '[SERVICE: Modifier Plugin]',
};

export interface Registered<T> {
  readonly factory: T;
  /** The plugin file (as the loader names it: `<folder>/<file>`) that registered it. */
  readonly file: string;
  /** Modifiers: KrakenD's appliesToRequest / appliesToResponse flags. */
  readonly request?: boolean;
  readonly response?: boolean;
}

export class PluginRegistry {
  readonly #kinds = new Map<PluginKind, Map<string, Registered<unknown>>>();
  readonly #logger: Logger | undefined;

  constructor(logger?: Logger) {
    this.#logger = logger;
  }

  /**
   * Records `factory` under `name` for `kind`. A name registered twice keeps the first registration
   * (files load in name order, so the winner is deterministic) and logs a WARNING naming both files.
   * Returns false when the name was already taken.
   */
  register(kind: PluginKind, name: string, factory: unknown, file: string, flags?: { request: boolean; response: boolean }): boolean {
    let byName = this.#kinds.get(kind);
    if (!byName) {
      byName = new Map();
      this.#kinds.set(kind, byName);
    }
    const prev = byName.get(name);
    if (prev && kind === 'modifier' && flags && prev.file === file) {
      // KrakenD keeps request and response modifiers apart, so one plugin may register a name once
      // per direction; a name found as a request modifier is applied as one only. Same here.
      const request = (prev.request ?? false) || flags.request;
      const response = (prev.response ?? false) || flags.response;
      const factoryKept = flags.request && !prev.request ? factory : prev.factory;
      byName.set(name, { factory: factoryKept, file, request, response });
      this.#logger?.debug(`${KIND_TAG[kind]} ${file} registers "${name}" for requests and responses: applied as a request modifier (as KrakenD)`);
      return true;
    }
    if (prev) {
      this.#logger?.warn(
        `${KIND_TAG[kind]} plugin name "${name}" registered by ${file} is already registered by ${prev.file}; keeping the one from ${prev.file}`,
      );
      return false;
    }
    byName.set(name, flags ? { factory, file, request: flags.request, response: flags.response } : { factory, file });
    return true;
  }

  get(kind: PluginKind, name: string): Registered<unknown> | undefined {
    return this.#kinds.get(kind)?.get(name);
  }

  names(kind: PluginKind): string[] {
    return [...(this.#kinds.get(kind)?.keys() ?? [])];
  }

  registerClient(name: string, factory: ClientFactory, file: string): boolean {
    return this.register('client', name, factory, file);
  }

  getClient(name: string): { factory: ClientFactory; file: string } | undefined {
    const r = this.get('client', name);
    return r ? { factory: r.factory as ClientFactory, file: r.file } : undefined;
  }

  clientNames(): string[] {
    return this.names('client');
  }
}
