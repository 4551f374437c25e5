/**
 * `gw test-plugin [-s] [-c] [-m] [--config FILE] [files...]`: KrakenD's plugin smoke test (spec §4),
 * plus a gw check of the factories a configuration uses.
 *
 * File mode (KrakenD's): loads each file as each requested kind, with the same lookup and
 * registration code as the gateway's loader, and prints KrakenD's lines:
 *
 *   [OK] CLIENT\t<registered name>        (one line per name the plugin registered)
 *   [KO] CLIENT\t<file>: The plugin does not contain a ClientRegisterer.
 *   [KO] CLIENT\t<file>: <error>
 *   [KO] Unable to open the plugin <path>.
 *   [OK] N tested plugin(s) in <dur>                              → exit 0
 *   [KO] N tested plugin(s) in <dur>.\nM plugin(s) failed.        → exit 1
 *
 * Kinds are tried in KrakenD's order (server, modifier, client). Factories are not called (as in
 * KrakenD). Lines go to stdout (KrakenD's cobra prints them on stderr) without colours.
 *
 * Config mode (gw's, `--config FILE`; `-c` keeps KrakenD's meaning, `--client`): loads the
 * configuration and its plugin folder as `gw run` does, then calls every factory the configuration
 * uses with its `extra_config`, one line each:
 *
 *   [OK] SERVER\t<name>\tservice
 *   [OK] MODIFIER\t<name>\tendpoint 'GET /x' (request modifier)
 *   [KO] CLIENT\t<name>\tendpoint 'GET /x', backend 0 (/x): <error>
 *   [OK] N tested plugin factory(ies) in <dur>                                 → exit 0
 *   [KO] N tested plugin factory(ies) in <dur>.\nM factory(ies) failed.       → exit 1
 *
 * With kind flags only those kinds are checked (default: all three). A client name the plugin
 * folder does not register may be one of gw's built-in client plugins, as in `gw run`.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import pino from 'pino';
import type { ServiceConfig } from '../core/config/types.js';
import { loadConfig } from '../core/config/load.js';
import type { Logger } from '../core/log.js';
import { KINDS, REGISTER_TIMEOUT_MS, errorText, importPlugin, loadPlugins, registerKind, type PluginKind } from '../core/plugin/loader.js';
import { BUILTIN_CLIENT_NAMES, builtinClient } from '../core/plugin/builtin/index.js';
import { pluginLogger } from '../core/plugin/logger.js';
import { PluginRegistry } from '../core/plugin/registry.js';
import type { ClientFactory, ModifierFactory, ServerFactory, ServerHandler } from '../core/plugin/types.js';

export interface TestPluginKinds {
  server?: boolean;
  client?: boolean;
  modifier?: boolean;
}

export interface TestPluginOptions {
  /** Base for relative file paths (default: the working directory). */
  cwd?: string;
  /** Receives what plugins log through `registerLogger` (default: discarded, like KrakenD's NoOp logger). */
  logger?: Logger;
  /** Cap on an import and an async registration (default 5000 ms). */
  timeoutMs?: number;
}

/** Go's `time.Duration.String()` for a duration in nanoseconds: `350ns`, `1.2µs`, `15.0423ms`, `1.5s`, `1m2s`. */
export function goDuration(nsIn: number | bigint): string {
  const ns = typeof nsIn === 'bigint' ? nsIn : BigInt(Math.round(nsIn));
  if (ns === 0n) return '0s';
  const neg = ns < 0n;
  const abs = neg ? -ns : ns;
  const frac = (v: bigint, digits: number): string => {
    const p = 10n ** BigInt(digits);
    const f = (v % p).toString().padStart(digits, '0').replace(/0+$/, '');
    return (v / p).toString() + (f ? `.${f}` : '');
  };
  let out: string;
  if (abs < 1000n) out = `${abs}ns`;
  else if (abs < 1_000_000n) out = `${frac(abs, 3)}µs`;
  else if (abs < 1_000_000_000n) out = `${frac(abs, 6)}ms`;
  else {
    const h = abs / 3_600_000_000_000n;
    const m = (abs / 60_000_000_000n) % 60n;
    const s = frac(abs % 60_000_000_000n, 9) + 's';
    out = h > 0n ? `${h}h${m}m${s}` : m > 0n ? `${m}m${s}` : s;
  }
  return neg ? `-${out}` : out;
}

const ORDER: readonly PluginKind[] = ['server', 'modifier', 'client'];

function silentLogger(): Logger {
  return pino({ level: 'silent', customLevels: { critical: 55 } }) as unknown as Logger;
}

/**
 * Tests the plugin files and writes the report to `out`. Returns the exit code (0 all good, 1 any
 * failure or a usage error). Never throws.
 */
export async function runTestPlugin(
  files: readonly string[],
  kinds: TestPluginKinds | readonly PluginKind[],
  out: { write(s: string): unknown },
  opts: TestPluginOptions = {},
): Promise<number> {
  const println = (s: string) => void out.write(`${s}\n`);
  const wanted = new Set<PluginKind>(
    Array.isArray(kinds) ? (kinds as readonly PluginKind[]) : ORDER.filter((k) => (kinds as TestPluginKinds)[k]),
  );
  if (files.length === 0) {
    println('At least one plugin is required.');
    return 1;
  }
  if (wanted.size === 0) {
    println('You must declare the expected type of the plugin.');
    return 1;
  }

  const start = process.hrtime.bigint();
  const cwd = opts.cwd ?? process.cwd();
  const logger = opts.logger ?? silentLogger();
  let failed = 0;

  for (const file of files) {
    const abs = path.resolve(cwd, file);
    try {
      await stat(abs);
    } catch (e) {
      if ((e as NodeJS.ErrnoException)?.code === 'ENOENT') {
        println(`[KO] Unable to open the plugin ${file}.`);
        failed++;
        continue;
      }
    }
    const name = path.basename(file);
    const ext = path.extname(name);
    let mod: Record<string, unknown> | undefined;
    let importError = '';
    if (ext === '.so') {
      importError = 'gw loads JavaScript plugin modules (.js, .mjs, .cjs), not Go .so plugins';
    } else {
      try {
        mod = await importPlugin(abs, opts.timeoutMs);
      } catch (e) {
        importError = `unable to import the module: ${errorText(e)}`;
      }
    }

    let ok = true;
    for (const kind of ORDER) {
      if (!wanted.has(kind)) continue;
      const spec = KINDS[kind];
      if (!mod) {
        println(`[KO] ${spec.label}\t${name}: ${importError}`);
        ok = false;
        continue;
      }
      const res = await registerKind(kind, mod, {
        logger,
        pluginName: path.basename(name, ext),
        file,
        timeoutMs: opts.timeoutMs,
      });
      if (!res.ok) {
        println(
          res.notFound
            ? `[KO] ${spec.label}\t${name}: The plugin does not contain a ${spec.symbol}.`
            : `[KO] ${spec.label}\t${name}: ${res.error}`,
        );
        ok = false;
        continue;
      }
      if (res.registrations.length === 0) println(`[OK] ${spec.label}\t${name}`);
      for (const r of res.registrations) println(`[OK] ${spec.label}\t${r.name}`);
    }
    if (!ok) failed++;
  }

  const dur = goDuration(process.hrtime.bigint() - start);
  if (failed > 0) {
    println(`[KO] ${files.length} tested plugin(s) in ${dur}.\n${failed} plugin(s) failed.`);
    return 1;
  }
  println(`[OK] ${files.length} tested plugin(s) in ${dur}`);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Config mode
// ---------------------------------------------------------------------------------------------

const CLIENT_NS = 'plugin/http-client';
const SERVER_NS = 'plugin/http-server';
const MODIFIER_NS = 'plugin/req-resp-modifier';
const NAMESPACE_OF: Readonly<Record<PluginKind, string>> = { client: CLIENT_NS, server: SERVER_NS, modifier: MODIFIER_NS };

/** The inner handler a server factory gets in config mode: the router of an empty gateway. */
const dummyRouter: ServerHandler = () => ({ status: 404, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: '404 page not found' });

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Resolves `p` or rejects after `ms` (a factory that never settles would hang the command). */
async function capped<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the factory did not complete within ${ms}ms`)), ms);
        timer.unref();
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

interface Use {
  kind: PluginKind;
  /** The name, or null when the namespace names none (then `problem` says why). */
  name: string | null;
  /** `service`, `endpoint 'GET /x'`, `endpoint 'GET /x', backend 0 (/x)`. */
  where: string;
  /** The modifier context's `where`: `[ENDPOINT: /x]`, `[BACKEND: GET /x -> /y]`. */
  tag: string;
  extra: Record<string, unknown>;
  problem?: string;
  /** Client uses: what the factory's context says about the backend. */
  ctx?: { endpoint: string; method: string; backend: { index: number; urlPattern: string; hosts: readonly string[] } };
}

/** Every plugin use in the configuration, in the order gw builds them. */
function pluginUses(cfg: ServiceConfig, wanted: ReadonlySet<PluginKind>): Use[] {
  const uses: Use[] = [];
  const server = cfg.extraConfig[SERVER_NS];
  if (wanted.has('server') && server !== undefined) {
    const extra = isRecord(server) ? server : {};
    const n = extra.name;
    const list = typeof n === 'string' ? [n] : Array.isArray(n) ? n : null;
    if (!isRecord(server) || list === null || list.length === 0) {
      uses.push({ kind: 'server', name: null, where: 'service', tag: '', extra, problem: `extra_config["${SERVER_NS}"].name must be a plugin name or a non-empty list of names` });
    } else {
      for (const x of list) {
        if (typeof x === 'string' && x !== '') uses.push({ kind: 'server', name: x, where: 'service', tag: '', extra });
        else uses.push({ kind: 'server', name: null, where: 'service', tag: '', extra, problem: `extra_config["${SERVER_NS}"].name lists ${JSON.stringify(x)}, not a name` });
      }
    }
  }
  const modifiers = (ec: Readonly<Record<string, unknown>>, where: string, tag: string) => {
    const m = ec[MODIFIER_NS];
    if (!wanted.has('modifier') || m === undefined) return;
    const extra = isRecord(m) ? m : {};
    const n = extra.name;
    if (!Array.isArray(n)) {
      uses.push({
        kind: 'modifier', name: typeof n === 'string' ? n : null, where, tag, extra,
        problem: `extra_config["${MODIFIER_NS}"].name must be a list of names${typeof n === 'string' ? ` (["${n}"]: KrakenD ignores a single string)` : ''}`,
      });
      return;
    }
    for (const x of n) {
      if (typeof x === 'string' && x !== '') uses.push({ kind: 'modifier', name: x, where, tag, extra });
      else uses.push({ kind: 'modifier', name: null, where, tag, extra, problem: `extra_config["${MODIFIER_NS}"].name lists ${JSON.stringify(x)}, not a name` });
    }
  };
  for (const e of cfg.endpoints) {
    const ewhere = `endpoint '${e.method} ${e.path}'`;
    modifiers(e.extraConfig, ewhere, `[ENDPOINT: ${e.path}]`);
    for (const b of e.backends) {
      const bwhere = `${ewhere}, backend ${b.index} (${b.urlPattern})`;
      const btag = `[BACKEND: ${b.method} ${e.route} -> ${b.urlPattern}]`;
      modifiers(b.extraConfig, bwhere, btag);
      const c = b.extraConfig[CLIENT_NS];
      if (wanted.has('client') && c !== undefined) {
        const extra = isRecord(c) ? c : {};
        const n = extra.name;
        const ctx = { endpoint: e.path, method: e.method, backend: { index: b.index, urlPattern: b.urlPattern, hosts: b.hosts } };
        if (typeof n === 'string' && n !== '') uses.push({ kind: 'client', name: n, where: bwhere, tag: btag, extra, ctx });
        else uses.push({ kind: 'client', name: null, where: bwhere, tag: btag, extra, problem: `extra_config["${CLIENT_NS}"] has no "name" (a string naming a client plugin)` });
      }
    }
  }
  return uses;
}

const NOT_FOUND = /^plugin: symbol \w+ not found in plugin /;

/**
 * `gw test-plugin --config FILE`: loads the configuration and its plugin folder as `gw run` does
 * (the folder relative to `cwd`), calls every factory the configuration uses with its
 * `extra_config` (client: `factory(ctx, extra)`, server: `factory(ctx, extra, next)` chained as gw
 * chains them, modifier: `factory(extra, ctx)`), and prints one `[OK]`/`[KO]` line per factory.
 * Returns the exit code: 1 when a factory failed, a name is not registered, a plugin file failed
 * to load, or the configuration uses no plugin of the requested kinds. Never throws.
 */
export async function runTestPluginConfig(
  configFile: string,
  kinds: TestPluginKinds | readonly PluginKind[],
  out: { write(s: string): unknown },
  opts: TestPluginOptions = {},
): Promise<number> {
  const println = (s: string) => void out.write(`${s}\n`);
  const listed = Array.isArray(kinds) ? (kinds as readonly PluginKind[]) : ORDER.filter((k) => (kinds as TestPluginKinds)[k]);
  // No kind flag: every kind (KrakenD's "You must declare the expected type" is for file mode).
  const wanted = new Set<PluginKind>(listed.length > 0 ? listed : ORDER);
  const start = process.hrtime.bigint();
  const cwd = opts.cwd ?? process.cwd();
  const logger = opts.logger ?? silentLogger();
  const timeoutMs = opts.timeoutMs ?? REGISTER_TIMEOUT_MS;

  let cfg: ServiceConfig;
  try {
    cfg = loadConfig(opts.cwd === undefined ? configFile : path.resolve(cwd, configFile));
  } catch (e) {
    println(`[KO] Unable to load the configuration ${configFile}: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }

  let problems = 0;
  let registry = new PluginRegistry(logger);
  const shutdown = new AbortController();
  if (cfg.plugin !== null) {
    const loaded = await loadPlugins(cfg.plugin, logger, cwd, { timeoutMs, signal: shutdown.signal });
    registry = loaded.registry;
    // One line per distinct problem: an unreadable folder or a failed import is reported under
    // every kind by the loader, but printed once. A missing symbol is normal (other kinds).
    const lines = new Set<string>();
    for (const err of loaded.errors) {
      if (NOT_FOUND.test(err.error)) continue;
      if (err.error.startsWith('open ')) lines.add(`[KO] Unable to read the plugin folder: ${err.error}`);
      else if (err.error.startsWith('unable to import the module')) lines.add(`[KO] ${err.file}: ${err.error}`);
      else if (wanted.has(err.kind as PluginKind)) lines.add(`[KO] ${KINDS[err.kind as PluginKind].label}\t${err.file}: ${err.error}`);
    }
    for (const l of lines) println(l);
    problems += lines.size;
  }

  const uses = pluginUses(cfg, wanted);
  if (uses.length === 0) {
    const which = ORDER.filter((k) => wanted.has(k)).map((k) => NAMESPACE_OF[k]).join(', ');
    println(`[KO] ${configFile} uses no plugin (${which}): nothing to test.`);
    shutdown.abort();
    return 1;
  }

  let failed = 0;
  let serverNext: ServerHandler = dummyRouter;
  for (const u of uses) {
    const label = KINDS[u.kind].label;
    const shown = u.name ?? '(no name)';
    const ko = (why: string) => {
      println(`[KO] ${label}\t${shown}\t${u.where}: ${why}`);
      failed++;
    };
    if (u.problem !== undefined || u.name === null) {
      ko(u.problem ?? 'no plugin name');
      continue;
    }
    let note = '';
    // A client name the folder does not register may be one of gw's built-in client plugins.
    const builtin = u.kind === 'client' && !registry.get('client', u.name) ? builtinClient(u.name) : undefined;
    const reg = registry.get(u.kind, u.name) ?? (builtin ? { factory: builtin.factory, file: builtin.file, request: false, response: false } : undefined);
    if (!reg) {
      const known = registry.names(u.kind);
      const also = u.kind === 'client' && BUILTIN_CLIENT_NAMES.length > 0 ? `; built-in: ${BUILTIN_CLIENT_NAMES.join(', ')}` : '';
      const why =
        cfg.plugin === null
          ? `the configuration has no "plugin": {"folder", "pattern"} to load plugins from${also}`
          : known.length
            ? `registered: ${known.join(', ')}${also}`
            : `no ${u.kind} plugin was loaded${also}`;
      ko(`no ${u.kind} plugin registered as ${u.name} (${why})`);
      continue;
    }
    if (builtin) note = ' (built-in)';
    const plog = pluginLogger(logger, u.name);
    try {
      if (u.kind === 'client') {
        const h = await capped(Promise.resolve().then(() => (reg.factory as ClientFactory)(
          { ...u.ctx!, signal: shutdown.signal, logger: plog },
          u.extra,
        )), timeoutMs);
        if (typeof h !== 'function') throw new Error(`the factory returned ${h === null ? 'null' : typeof h}, not a handler function`);
      } else if (u.kind === 'server') {
        const h = await capped(Promise.resolve().then(() => (reg.factory as ServerFactory)({ name: u.name!, signal: shutdown.signal, logger: plog }, u.extra, serverNext)), timeoutMs);
        if (typeof h !== 'function') throw new Error(`the factory returned ${h === null ? 'null' : typeof h}, not a handler function`);
        serverNext = h;
      } else {
        const m = await capped(Promise.resolve().then(() => (reg.factory as ModifierFactory)(u.extra, { where: u.tag, logger: plog })), timeoutMs);
        if (m !== null && m !== undefined && typeof m !== 'function') throw new Error(`the factory returned ${typeof m}, not a modifier function (or nothing)`);
        note =
          m === null || m === undefined
            ? ' (the factory returned nothing: skipped)'
            : reg.request
              ? ' (request modifier)'
              : reg.response
                ? ' (response modifier)'
                : ' (registered for neither requests nor responses: never applied)';
      }
    } catch (e) {
      ko(`the factory failed: ${errorText(e)}`);
      continue;
    }
    println(`[OK] ${label}\t${u.name}\t${u.where}${note}`);
  }
  shutdown.abort();

  const dur = goDuration(process.hrtime.bigint() - start);
  if (failed > 0 || problems > 0) {
    println(`[KO] ${uses.length} tested plugin factory(ies) in ${dur}.`);
    if (failed > 0) println(`${failed} factory(ies) failed.`);
    if (problems > 0) println(`${problems} plugin loading problem(s).`);
    return 1;
  }
  println(`[OK] ${uses.length} tested plugin factory(ies) in ${dur}`);
  return 0;
}

interface TestPluginFlags extends TestPluginKinds {
  config?: string;
}

/** Adds `test-plugin` to the gw program. The action is async: run the program with `parseAsync`. */
export function addTestPluginCommand(program: Command): void {
  program
    .command('test-plugin')
    .description(
      'Tests that one or more plugins are loadable into gw (KrakenD\'s test-plugin); with --config, also builds every plugin factory a configuration uses.',
    )
    .usage('[flags] [artifacts...]')
    .option('-s, --server', 'test the files as HTTP server plugins (they must export HandlerRegisterer)')
    .option('-c, --client', 'test the files as HTTP client plugins (they must export ClientRegisterer)')
    .option('-m, --modifier', 'test the files as request/response modifier plugins (they must export ModifierRegisterer)')
    .option(
      '--config <file>',
      'gw only: load this gw configuration and its plugin folder, and call every factory it uses (plugin/http-client, plugin/http-server, plugin/req-resp-modifier) with its extra_config; -s/-c/-m then limit the kinds (default: all). Long form only: -c means --client, as in KrakenD',
    )
    .argument('[artifacts...]', 'plugin files (.js, .mjs, .cjs)')
    .addHelpText(
      'after',
      `
At least one of -s, -c, -m is required with files; a file is tested as each kind given, and passes
only if it exports every one of them. Exit code 0 when everything passed, 1 otherwise.

Examples:
  gw test-plugin -c dist/plugins/my-client.js          # KrakenD-style: can the file be loaded as a client plugin?
  gw test-plugin -s -m plugins/both.js                 # as a server and as a modifier plugin
  gw test-plugin --config gw.json                      # every factory gw.json configures, with its extra_config
  gw test-plugin -m --config gw.json                   # only the modifiers gw.json uses`,
    )
    .action(async (files: string[], flags: TestPluginFlags) => {
      const kinds: TestPluginKinds = { server: flags.server, client: flags.client, modifier: flags.modifier };
      let code = 0;
      if (flags.config === undefined || (files ?? []).length > 0) code = await runTestPlugin(files ?? [], kinds, process.stdout);
      if (flags.config !== undefined) code = Math.max(code, await runTestPluginConfig(flags.config, kinds, process.stdout));
      process.exitCode = code;
      // A plugin may keep timers or sockets open past the shutdown signal: do not hang on them.
      setTimeout(() => process.exit(code), 1000).unref();
    });
}
