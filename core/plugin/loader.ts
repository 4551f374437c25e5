/**
 * The plugin loader (spec §5.1): runs when the root config has `"plugin": {"folder", "pattern"}`.
 *
 * KrakenD semantics:
 *  - `folder` (relative to `baseDir`, default the working directory) is read non-recursively, in
 *    name order; a file is a candidate when `pattern` is a *substring* of its name (not a glob);
 *  - every candidate is tried as every plugin kind (client, server, modifier), each kind looking up
 *    its own exported symbol (`ClientRegisterer`, `HandlerRegisterer`, `ModifierRegisterer`); `registerLogger`/`RegisterLogger` is called
 *    before the kind's register method when present;
 *  - failures never stop the gateway: they are logged and the file is skipped.
 *
 * gw-specific:
 *  - a candidate must also end in `.js`, `.mjs` or `.cjs`, so the `.js.map`/`.d.ts` siblings a
 *    TypeScript build leaves next to a plugin are skipped even with the usual `.js` pattern;
 *  - Go `.so` plugins cannot be loaded; a config that names them gets a WARNING saying so;
 *  - a module that throws while importing or registering is logged at WARNING (KrakenD: DEBUG),
 *    because a plugin that silently fails to load is a common cause of "my plugin does nothing";
 *  - registration is all-or-nothing per file and kind: if it throws or times out, none of the
 *    names it registered are kept;
 *  - the module import and an async registration are each capped at 5 s.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Logger } from '../log.js';
import { pluginLogger } from './logger.js';
import { KIND_TAG, PluginRegistry, type PluginKind } from './registry.js';

export { PluginRegistry } from './registry.js';
export type { PluginKind } from './registry.js';

export const LOADER_TAG = '[SERVICE: Plugin Loader]';
/** Extensions gw can import. */
export const JS_EXTENSIONS: readonly string[] = ['.js', '.mjs', '.cjs'];
export const REGISTER_TIMEOUT_MS = 5000;

export interface KindSpec {
  readonly kind: PluginKind;
  /** The exported symbol the kind looks for. */
  readonly symbol: string;
  /** Register method names: camelCase first, then the Go-style name. */
  readonly methods: readonly [string, string];
  /** `[OK] CLIENT` etc. in `gw test-plugin`. */
  readonly label: string;
  /** KrakenD's error when the symbol exists but does not implement the register interface. */
  readonly unknownType: string;
}

export const KINDS: Readonly<Record<PluginKind, KindSpec>> = {
  client: {
    kind: 'client',
    symbol: 'ClientRegisterer',
    methods: ['registerClients', 'RegisterClients'],
    label: 'CLIENT',
    unknownType: 'http-request-executor plugin loader: unknown type',
  },
  server: {
    kind: 'server',
    symbol: 'HandlerRegisterer',
    methods: ['registerHandlers', 'RegisterHandlers'],
    label: 'SERVER',
    unknownType: 'http-server-handler plugin loader: unknown type',
  },
  modifier: {
    kind: 'modifier',
    symbol: 'ModifierRegisterer',
    methods: ['registerModifiers', 'RegisterModifiers'],
    label: 'MODIFIER',
    unknownType: 'modifier plugin loader: unknown type',
  },
};

/** The kinds `loadPlugins` tries, in KrakenD's order. */
export const LOADED_KINDS: readonly PluginKind[] = ['client', 'server', 'modifier'];

export interface LoadError {
  /** `<folder>/<file>` as configured (KrakenD's `filepath.Join(folder, name)`). */
  file: string;
  kind: string;
  error: string;
}

export interface LoadResult {
  registry: PluginRegistry;
  /** Files registered successfully, summed over kinds. */
  loaded: number;
  errors: LoadError[];
}

export interface LoadOptions {
  /** Cap on a module import and on an async registration (default 5000 ms). */
  timeoutMs?: number;
  /** Given to modifier plugins' `registerContext` (KrakenD's root context): aborted at shutdown. */
  signal?: AbortSignal;
}

type Module = Record<string, unknown>;

/** An error as one line: `message`, or `Name: message` for anything more specific than Error. */
export function errorText(e: unknown): string {
  if (e instanceof Error) return e.name && e.name !== 'Error' ? `${e.name}: ${e.message}` : e.message;
  return String(e);
}

function isObjectLike(v: unknown): v is Record<string, unknown> {
  return (typeof v === 'object' && v !== null) || typeof v === 'function';
}

/** Resolves `p` or rejects with `what did not complete within N ms`. */
async function capped<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not complete within ${ms}ms`)), ms);
    timer.unref();
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Imports a plugin file (absolute path) as a module. Rejects with the import error. */
export function importPlugin(absPath: string, timeoutMs = REGISTER_TIMEOUT_MS): Promise<Module> {
  return capped(import(pathToFileURL(absPath).href) as Promise<Module>, timeoutMs, 'the import');
}

/** The kind's symbol, exported by name or on the default export (`export default { ClientRegisterer }`,
 *  or `module.exports = { ClientRegisterer }` from CommonJS). */
export function findSymbol(mod: Module, symbol: string): unknown {
  try {
    const direct = mod[symbol];
    if (direct !== undefined && direct !== null) return direct;
    const def = mod.default;
    if (isObjectLike(def)) {
      const v = def[symbol];
      if (v !== undefined && v !== null) return v;
    }
  } catch {
    // An export still in its temporal dead zone (circular import): treat it as absent.
  }
  return undefined;
}

export interface Registration {
  name: string;
  /** What the plugin passed after the name: `[factory]` for clients and servers,
   *  `[factory, appliesToRequest, appliesToResponse]` for modifiers. */
  args: unknown[];
}

export type RegisterOutcome =
  | { ok: true; registrations: Registration[] }
  | { ok: false; notFound: boolean; error: string };

export interface RegisterOptions {
  logger: Logger;
  /** The file name without extension: the logger's name when the registerer has no `name`, and the
   *  name in `symbol ... not found in plugin <x>`. */
  pluginName: string;
  /** For log lines. */
  file: string;
  timeoutMs?: number;
  /** Modifiers' `registerContext` signal. */
  signal?: AbortSignal;
}

/**
 * Runs one kind's registration against an imported module: looks up the symbol, calls
 * `registerLogger` (if any) and then the register method with a collecting callback. Never throws.
 */
export async function registerKind(kind: PluginKind, mod: Module, opts: RegisterOptions): Promise<RegisterOutcome> {
  const spec = KINDS[kind];
  const sym = findSymbol(mod, spec.symbol);
  if (sym === undefined) {
    return { ok: false, notFound: true, error: `plugin: symbol ${spec.symbol} not found in plugin ${opts.pluginName}` };
  }
  if (!isObjectLike(sym)) return { ok: false, notFound: false, error: spec.unknownType };
  const method = typeof sym[spec.methods[0]] === 'function' ? sym[spec.methods[0]] : sym[spec.methods[1]];
  if (typeof method !== 'function') return { ok: false, notFound: false, error: spec.unknownType };

  const registrations: Registration[] = [];
  let open = true;
  const register = (name: unknown, ...args: unknown[]): void => {
    if (!open) {
      opts.logger.warn(
        `${KIND_TAG[kind]} ${opts.file}: register(${JSON.stringify(name)}) called after the registration ended; ignored`,
      );
      return;
    }
    if (typeof name !== 'string' || name === '') {
      throw new TypeError(`register(name, factory): the name must be a non-empty string, got ${JSON.stringify(name)}`);
    }
    if (typeof args[0] !== 'function') {
      throw new TypeError(`register("${name}", factory): the factory must be a function, got ${typeof args[0]}`);
    }
    if (kind === 'modifier' && (typeof args[1] !== 'boolean' || typeof args[2] !== 'boolean')) {
      throw new TypeError(
        `register("${name}", factory, appliesToRequest, appliesToResponse): both flags must be booleans, got ${typeof args[1]} and ${typeof args[2]}`,
      );
    }
    registrations.push({ name, args });
  };

  const timeoutMs = opts.timeoutMs ?? REGISTER_TIMEOUT_MS;
  try {
    const logFn = typeof sym.registerLogger === 'function' ? sym.registerLogger : sym.RegisterLogger;
    if (typeof logFn === 'function') {
      const own = typeof sym === 'object' && typeof sym.name === 'string' && sym.name !== '' ? sym.name : opts.pluginName;
      await capped(Promise.resolve(logFn.call(sym, pluginLogger(opts.logger, own))), timeoutMs, 'registerLogger');
    }
    if (kind === 'modifier') {
      const ctxFn = typeof sym.registerContext === 'function' ? sym.registerContext : sym.RegisterContext;
      if (typeof ctxFn === 'function') ctxFn.call(sym, opts.signal ?? new AbortController().signal);
    }
    const r: unknown = method.call(sym, register);
    if (isObjectLike(r) && typeof r.then === 'function') {
      await capped(Promise.resolve(r), timeoutMs, `${spec.methods[0]}`);
    }
  } catch (e) {
    return { ok: false, notFound: false, error: `registering the plugin failed: ${errorText(e)}` };
  } finally {
    open = false;
  }
  return { ok: true, registrations };
}

function readdirError(folder: string, e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  const why =
    code === 'ENOENT'
      ? 'no such file or directory'
      : code === 'ENOTDIR'
        ? 'not a directory'
        : code === 'EACCES'
          ? 'permission denied'
          : errorText(e);
  return `open ${folder}: ${why}`;
}

interface Candidate {
  /** Index among the candidates (KrakenD's `plugin #i`). */
  index: number;
  /** `<folder>/<name>` as configured. */
  file: string;
  abs: string;
  pluginName: string;
}

/**
 * Loads the plugin folder into a new registry. Never throws: every problem is logged and collected
 * in `errors`, and the gateway starts with whatever did load.
 */
export async function loadPlugins(
  cfg: { folder: string; pattern: string },
  logger: Logger,
  baseDir: string = process.cwd(),
  opts: LoadOptions = {},
): Promise<LoadResult> {
  const registry = new PluginRegistry(logger);
  const errors: LoadError[] = [];
  let loaded = 0;
  const timeoutMs = opts.timeoutMs ?? REGISTER_TIMEOUT_MS;
  const folder = String(cfg.folder ?? '');
  const pattern = String(cfg.pattern ?? '');
  logger.debug(`${LOADER_TAG} Starting loading process`);

  let names: string[];
  const absFolder = path.resolve(baseDir, folder);
  try {
    const entries = await readdir(absFolder, { withFileTypes: true });
    // Like Go's os.ReadDir + !IsDir(): files and symlinks, sorted by name (byte order).
    names = entries
      .filter((d) => !d.isDirectory())
      .map((d) => d.name)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  } catch (e) {
    const msg = readdirError(folder, e);
    for (const kind of LOADED_KINDS) {
      logger.debug(`${KIND_TAG[kind]} ${msg}`);
      errors.push({ file: folder, kind, error: msg });
    }
    logger.debug(`${LOADER_TAG} Loading process completed`);
    return { registry, loaded, errors };
  }

  const matching = names.filter((n) => n.includes(pattern));
  const candidates: Candidate[] = [];
  const goPlugins: string[] = [];
  for (const name of matching) {
    const file = path.join(folder, name);
    const ext = path.extname(name);
    if (JS_EXTENSIONS.includes(ext)) {
      candidates.push({ index: candidates.length, file, abs: path.join(absFolder, name), pluginName: path.basename(name, ext) });
    } else if (ext === '.so') {
      goPlugins.push(file);
    } else {
      logger.debug(`${LOADER_TAG} skipping ${file}: not a JavaScript module (${JS_EXTENSIONS.join(', ')})`);
    }
  }
  if (goPlugins.length > 0 || (candidates.length === 0 && pattern.endsWith('.so'))) {
    const which = goPlugins.length > 0 ? ` (skipped: ${goPlugins.join(', ')})` : ` (pattern ${JSON.stringify(pattern)})`;
    logger.warn(
      `${LOADER_TAG} gw loads JavaScript plugin modules (ESM or CommonJS files ending in ${JS_EXTENSIONS.join(', ')} ` +
        `that export ClientRegisterer, HandlerRegisterer or ModifierRegisterer), not Go .so plugins${which}. Port the plugin to JavaScript/TypeScript and set ` +
        `"plugin.pattern" to ".js" (see docs/plugins.md).`,
    );
  }

  // Import each candidate once; every kind reads the same module.
  const modules = new Map<Candidate, { mod: Module } | { error: string }>();
  for (const c of candidates) {
    try {
      modules.set(c, { mod: await importPlugin(c.abs, timeoutMs) });
    } catch (e) {
      modules.set(c, { error: `unable to import the module: ${errorText(e)}` });
    }
  }

  for (const kind of LOADED_KINDS) {
    const tag = KIND_TAG[kind];
    let kindLoaded = 0;
    for (const c of candidates) {
      const imported = modules.get(c)!;
      const where = `${tag} plugin #${c.index} (${c.file})`;
      if ('error' in imported) {
        // Once as a WARNING (under the first kind's tag); the other kinds repeat it at DEBUG.
        if (kind === LOADED_KINDS[0]) logger.warn(`${where}: ${imported.error}`);
        else logger.debug(`${where}: ${imported.error}`);
        errors.push({ file: c.file, kind, error: imported.error });
        continue;
      }
      const out = await registerKind(kind, imported.mod, { logger, pluginName: c.pluginName, file: c.file, timeoutMs, signal: opts.signal });
      if (!out.ok) {
        if (out.notFound || out.error === KINDS[kind].unknownType) logger.debug(`${where}: ${out.error}`);
        else logger.warn(`${where}: ${out.error}`);
        errors.push({ file: c.file, kind, error: out.error });
        continue;
      }
      for (const r of out.registrations) {
        registry.register(kind, r.name, r.args[0], c.file, kind === 'modifier' ? { request: r.args[1] === true, response: r.args[2] === true } : undefined);
      }
      kindLoaded++;
    }
    if (kindLoaded > 0) logger.info(`${tag} Total plugins loaded: ${kindLoaded}`);
    loaded += kindLoaded;
  }

  logger.debug(`${LOADER_TAG} Loading process completed`);
  return { registry, loaded, errors };
}
