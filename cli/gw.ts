#!/usr/bin/env node
/**
 * The gw command line (KrakenD's `krakend` commands): run, check, test-plugin, version; and gw's own
 * `plugin init`.
 */
import { Command, Option } from 'commander';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { preforkWorker, Supervisor, type StartupError } from '../core/cluster.js';
import { loadConfig, normaliseConfig, readConfigFile } from '../core/config/load.js';
import { formatDuration } from '../core/config/duration.js';
import type { ServiceConfig } from '../core/config/types.js';
import { createLogger, loggerFor, type Logger } from '../core/log.js';
import { parseOtel, type OtelConfig } from '../core/telemetry/otel.js';
import { PrometheusServer } from '../core/telemetry/export.js';
import { OtlpMetricsPusher } from '../core/telemetry/otlp-metrics.js';
import { parseStats, StatsServer, type StatsConfig } from '../core/telemetry/stats.js';
import { GW_VERSION, KRAKEND_COMPAT_VERSION } from '../core/version.js';
import { addPluginCommand } from './plugin-init.js';
import { addTestPluginCommand } from './test-plugin.js';

const PROVIDE_CONFIG = 'Please, provide the path to the configuration file with --config or see all the options with --help';

function isTTY(): boolean {
  return !!process.stdout.isTTY;
}

function red(s: string): string {
  return isTTY() ? `\x1b[31m${s}\x1b[0m` : s;
}

function green(s: string): string {
  return isTTY() ? `\x1b[32m${s}\x1b[0m` : s;
}

interface RunFlags {
  config?: string;
  workers?: string;
  debug?: number;
  port?: string;
  logLevel?: string;
  logFormat?: string;
  watch?: boolean;
}

function makeLogger(cfg: ServiceConfig, flags: RunFlags): Logger {
  return loggerFor(cfg.logging, { level: flags.logLevel, format: flags.logFormat });
}

async function run(flags: RunFlags): Promise<void> {
  if (!flags.config) {
    console.log(PROVIDE_CONFIG);
    return;
  }
  preforkWorker();
  let cfg: ServiceConfig;
  let rawConfig: string;
  let otel: OtelConfig | null;
  let stats: StatsConfig | null;
  const overrides: string[] = [];
  try {
    const raw = readConfigFile(flags.config, overrides);
    // Kept as read: every worker, replacements included, runs this config even if the file changes.
    rawConfig = JSON.stringify(raw);
    cfg = normaliseConfig(raw, flags.config);
    otel = parseOtel(cfg, GW_VERSION);
    stats = parseStats(cfg);
  } catch (err) {
    console.error(`ERROR parsing the configuration file: ${(err as Error).message}`);
    process.exitCode = 255;
    return;
  }
  const logger = makeLogger(cfg, flags);
  logger.info(`Starting gw v${GW_VERSION} (KrakenD ${KRAKEND_COMPAT_VERSION} compatible)`);
  logger.info(`Working directory is ${process.cwd()}`);
  logger.info('Starting the KrakenD instance');
  for (const o of overrides) logger.info(`[SERVICE: Config] ${o}`);
  const waitMs = cfg.maxShutdownWaitMs || 10_000;
  const supervisor = new Supervisor({
    workers: workerCount(flags, cfg),
    configFile: flags.config,
    rawConfig,
    debug: (flags.debug ?? 0) > 0,
    port: Number(flags.port) || cfg.port,
    host: cfg.listenIp,
    logLevel: flags.logLevel,
    logFormat: flags.logFormat,
    logger,
  });
  // Signals are handled from the start: a stop that arrives while workers boot stops those too.
  // Ctrl-C signals every worker as well (same process group); they treat it and the supervisor's
  // `shutdown` message as one stop request.
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn(`Signal intercepted again: ${SIGNALS[signal]}; killing the workers`);
      supervisor.kill();
      process.exit(1);
    }
    stopping = true;
    const closed = supervisor.close(waitMs); // first: the workers stop listening now
    for (const e of exporters) void e.close();
    logger.info(`Signal intercepted: ${SIGNALS[signal]}`);
    void closed.then((code) => {
      logger.info('[SERVICE: Workers] all workers stopped');
      process.exit(code);
    });
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  // Reload: SIGHUP, or a change of the file with --watch. One at a time; one more is queued.
  let reloading = false;
  let again: string | null = null;
  const reload = async (why: string): Promise<void> => {
    if (stopping) return;
    if (reloading) {
      again = why;
      return;
    }
    reloading = true;
    try {
      await reloadOnce(why);
    } finally {
      reloading = false;
      const next = again;
      again = null;
      if (next !== null) void reload(next);
    }
  };
  const reloadOnce = async (why: string): Promise<void> => {
    logger.info(`[SERVICE: Config] ${why}: reloading ${flags.config}`);
    const overrides: string[] = [];
    let next: ServiceConfig;
    let raw: unknown;
    try {
      raw = readConfigFile(flags.config!, overrides);
      next = normaliseConfig(raw, flags.config);
      parseOtel(next, GW_VERSION);
      parseStats(next);
    } catch (err) {
      logger.error(`[SERVICE: Config] reload refused, still serving the previous configuration: ${(err as Error).message}`);
      return;
    }
    const port = Number(flags.port) || next.port;
    if (port !== (Number(flags.port) || cfg.port) || next.listenIp !== cfg.listenIp) {
      logger.error('[SERVICE: Config] reload refused, still serving the previous configuration: the listen address (port, listen_ip) changed; that needs a restart');
      return;
    }
    const telemetry = (c: ServiceConfig) => JSON.stringify([c.extraConfig['telemetry/opentelemetry'], c.extraConfig['telemetry/metrics']]);
    if (telemetry(next) !== telemetry(cfg)) {
      logger.warn('[SERVICE: Config] telemetry/opentelemetry and telemetry/metrics exporters keep their start-up settings until a restart');
    }
    for (const o of overrides) logger.info(`[SERVICE: Config] ${o}`);
    const workers = workerCount(flags, next);
    try {
      await supervisor.reload(JSON.stringify(raw), workers, next.maxShutdownWaitMs || 10_000, RELOAD_LINGER_MS);
    } catch (err) {
      logger.error(`[SERVICE: Config] reload failed, still serving the previous configuration: ${(err as Error).message}`);
      return;
    }
    cfg = next;
    logger.info(`[SERVICE: Config] reloaded: ${workers} ${workers === 1 ? 'worker' : 'workers'} serving the new configuration; the previous ones drain`);
  };
  process.on('SIGHUP', () => {
    logger.info('Signal intercepted: hangup');
    void reload('SIGHUP');
  });
  if (flags.watch) watchConfig(flags.config, logger, () => void reload('the configuration file changed'));
  // The supervisor serves the metrics exporters: it sums the workers' snapshots on each scrape.
  const exporters: { listen(): Promise<number>; close(): Promise<void> }[] = (otel?.prometheus ?? []).map((p) => new PrometheusServer(p, otel!, () => supervisor.collectMetrics(), logger));
  for (const e of otel?.otlpMetrics ?? []) exporters.push(new OtlpMetricsPusher(e, otel!, () => supervisor.collectMetrics(), logger));
  if (stats !== null) exporters.push(new StatsServer(stats, () => supervisor.collectStats(), logger));
  try {
    // Before any worker serves: a taken exporter port stops the start with nothing to undo.
    for (const e of exporters) await e.listen();
    await supervisor.start();
  } catch (err) {
    for (const e of exporters) void e.close();
    const e = err as StartupError;
    console.error(`${e.config ? 'ERROR parsing the configuration file' : 'ERROR starting the gateway'}: ${e.message}`);
    process.exit(e.config ? 255 : 1);
  }
  void supervisor.gaveUp.then((code) => process.exit(code));
}

const SIGNALS: Partial<Record<NodeJS.Signals, string>> = { SIGINT: 'interrupt', SIGTERM: 'terminated' };

/** How long a retired worker keeps answering its open connections (each answer closing it). */
const RELOAD_LINGER_MS = 1000;

/**
 * `--watch`: calls `changed` when the file's content changes (editors that write a new file and
 * rename it over the old one included: the folder is watched), at most once per 300 ms burst.
 */
function watchConfig(file: string, logger: Logger, changed: () => void): void {
  const abs = path.resolve(file);
  let last = fs.existsSync(abs) ? fs.readFileSync(abs, 'utf8') : '';
  let timer: NodeJS.Timeout | null = null;
  const check = () => {
    timer = null;
    let now: string;
    try {
      now = fs.readFileSync(abs, 'utf8');
    } catch {
      return; // being replaced: the rename that follows triggers again
    }
    if (now === last) return;
    last = now;
    changed();
  };
  try {
    const w = fs.watch(path.dirname(abs), (_event, name) => {
      if (name !== null && name !== path.basename(abs)) return;
      if (timer === null) timer = setTimeout(check, 300);
    });
    w.unref();
    // The folder removed or unreadable: no more reloads on save, the gateway keeps serving.
    w.on('error', (err) => logger.error(`[SERVICE: Config] --watch: ${err.message}; no longer watching ${abs} (SIGHUP still reloads)`));
    logger.info(`[SERVICE: Config] watching ${abs} for changes`);
  } catch (err) {
    logger.error(`[SERVICE: Config] --watch: cannot watch ${abs}: ${(err as Error).message}`);
  }
}

/** `--workers`, else `extra_config["gw/server"].workers`, else one per available core. */
function workerCount(flags: RunFlags, cfg: ServiceConfig): number {
  const n = flags.workers !== undefined ? Number(flags.workers) : cfg.limits.workers || os.availableParallelism();
  return Number.isInteger(n) && n > 0 ? Math.min(n, 256) : 1;
}

interface CheckFlags {
  config?: string;
  debug?: number;
  lint?: boolean;
}

async function check(flags: CheckFlags): Promise<void> {
  if (!flags.config) {
    console.log(PROVIDE_CONFIG);
    return;
  }
  let cfg: ServiceConfig;
  try {
    cfg = loadConfig(flags.config, { lint: !!flags.lint });
  } catch (err) {
    const label = flags.lint && !(err as Error).message.startsWith('unsupported version') ? 'ERROR linting the configuration file:' : 'ERROR parsing the configuration file:';
    console.log(red(`${label}\t${(err as Error).message}`));
    process.exitCode = 1;
    return;
  }
  if ((flags.debug ?? 0) > 0) dumpConfig(cfg);
  // Build the pipes as `run` would (plugins are loaded and their factories called), without listening.
  const logger = createLogger({ level: (flags.debug ?? 0) > 1 ? 'DEBUG' : 'ERROR', format: 'auto' });
  let built: readonly string[] = [];
  try {
    // Loaded here only: `gw run`'s supervisor never builds a gateway (its workers do).
    const { buildGateway } = await import('../core/gateway.js');
    const gw = await buildGateway(cfg, { logger });
    built = gw.buildWarnings;
    await gw.close(0);
  } catch (err) {
    console.log(red(`ERROR parsing the configuration file:\t${(err as Error).message}`));
    process.exitCode = 1;
    return;
  }
  for (const w of [...cfg.warnings, ...built]) console.log(`WARNING: ${w}`);
  console.log(green('Syntax OK!'));
}

function dumpConfig(cfg: ServiceConfig): void {
  const out: string[] = ['Parsed configuration:', '\tGlobal settings', `\tName: ${cfg.name}`, `\tPort: ${cfg.port}`];
  out.push(`\t${cfg.endpoints.length} API endpoints:`);
  for (const e of cfg.endpoints) {
    out.push(`\t\t- ${e.method} ${e.route}`, `\t\tTimeout: ${formatDuration(e.timeoutMs)}`, `\t\tConnecting to ${e.backends.length} backend(s):`);
    for (const b of e.backends) {
      out.push(`\t\t\t[+] ${b.method} ${b.urlPattern}`, `\t\t\tHosts: [${b.hosts.join(' ')}]`);
    }
  }
  console.log(out.join('\n'));
}

function version(): void {
  console.log(`gw Version: ${GW_VERSION}`);
  console.log(`KrakenD Version: ${KRAKEND_COMPAT_VERSION} (compatible)`);
  console.log(`Node Version: ${process.version}`);
}

const count = (_: string, prev: number) => prev + 1;

export function program(): Command {
  const p = new Command('gw')
    .description('gw: a KrakenD-compatible API gateway')
    .version(`gw Version: ${GW_VERSION}`, '-v, --version')
    .showHelpAfterError();
  p.exitOverride((err) => {
    // commander's own help/version exits are fine; usage errors exit 255 as KrakenD's cobra does.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
    process.exit(255);
  });
  p.command('run')
    .description('Runs the gateway')
    .option('-c, --config <file>', 'Path to the configuration file')
    .option('-d, --debug', 'Enables the /__debug/ endpoint (the log level is unchanged)', count, 0)
    .option('-p, --port <port>', 'Listening port for the http service')
    .option('-w, --workers <n>', 'Worker processes sharing the port, supervised and replaced when they die (default: one per core)')
    .addOption(new Option('--log-level <level>', 'Overrides telemetry/logging.level').choices(['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL', 'debug', 'info', 'warning', 'error', 'critical']))
    .addOption(new Option('--log-format <format>', 'Overrides telemetry/logging.format (auto: as configured; json: gw\'s JSON lines; pretty: default with colours)').choices(['auto', 'default', 'logstash', 'json', 'pretty']).default('auto'))
    .option('--watch', 'Reloads the configuration when the file changes (as SIGHUP does): new workers start with it, the previous ones drain')
    .action((flags: RunFlags) => run(flags));
  p.command('check')
    .alias('validate')
    .description('Validates that the configuration file is valid')
    .option('-c, --config <file>', 'Path to the configuration file')
    .option('-d, --debug', 'Dumps the parsed configuration (-dd also shows the build log)', count, 0)
    .option('-l, --lint', 'Rejects unknown keys (strict schema)')
    .action((flags: CheckFlags) => check(flags));
  p.command('version').description('Shows the version').action(version);
  addTestPluginCommand(p);
  addPluginCommand(p);
  return p;
}

program()
  .parseAsync(process.argv)
  .catch((err: Error) => {
    console.error(err.message);
    process.exitCode = 255;
  });
