/**
 * `gw test-plugin [-s] [-c] [-m] <files...>`: KrakenD's plugin smoke test (spec §4). Loads each file
 * as each requested kind, with the same lookup and registration code as the gateway's loader, and
 * prints KrakenD's lines:
 *
 *   [OK] CLIENT\t<registered name>        (one line per name the plugin registered)
 *   [KO] CLIENT\t<file>: The plugin does not contain a ClientRegisterer.
 *   [KO] CLIENT\t<file>: <error>
 *   [KO] Unable to open the plugin <path>.
 *   [OK] N tested plugin(s) in <dur>                              → exit 0
 *   [KO] N tested plugin(s) in <dur>.\nM plugin(s) failed.        → exit 1
 *
 * Kinds are tried in KrakenD's order (server, modifier, client). Factories are not called (as in
 * KrakenD): a factory error shows up only when a config uses the plugin (`gw check` / `gw run`).
 * Lines go to stdout (KrakenD's cobra prints them on stderr) without colours.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import pino from 'pino';
import type { Logger } from '../core/log.js';
import { KINDS, errorText, importPlugin, registerKind, type PluginKind } from '../core/plugin/loader.js';

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

/** Adds `test-plugin` to the gw program. The action is async: run the program with `parseAsync`. */
export function addTestPluginCommand(program: Command): void {
  program
    .command('test-plugin')
    .description('Tests that one or more plugins are loadable into gw.')
    .usage('[flags] [artifacts]')
    .option('-s, --server', 'The tested plugin is an http server handler')
    .option('-c, --client', 'The tested plugin is an http client handler')
    .option('-m, --modifier', 'The tested plugin is a request/response modifier')
    .argument('[artifacts...]', 'plugin files (.js, .mjs, .cjs)')
    .action(async (files: string[], flags: TestPluginKinds) => {
      process.exitCode = await runTestPlugin(files ?? [], flags, process.stdout);
    });
}
