/**
 * Worker process entry (forked by core/cluster.ts, talks to it over the IPC channel): builds its
 * own gateway (own uWS app, own undici pools, own plugins) from the config text the supervisor
 * read, and listens on the shared port; the kernel spreads connections across the workers
 * (SO_REUSEPORT, uSockets' default on Linux).
 *
 * - SIGTERM / SIGINT (sent to this worker alone, or to the whole process group by Ctrl-C) or the
 *   supervisor's `shutdown`: close the listen socket at once, drain the requests in flight (up to
 *   max_shutdown_wait_time), close the pools, exit 0. A second signal exits at once.
 * - A reload: first the supervisor's `unlisten` (close the listen socket, serve open connections as
 *   before), then, once every previous worker stopped listening, `shutdown` with `lingerMs`: the
 *   same drain, but connections already open keep being answered for `lingerMs`, each answer
 *   closing its connection, so keep-alive clients move to the new workers between requests.
 * - SIGHUP: logged (the supervisor reloads). IPC channel closed (the supervisor is gone): drain and exit, so no
 *   worker outlives its supervisor holding the port.
 * - Last resort: an uncaught exception or unhandled rejection is a gw bug after which this
 *   worker's state cannot be trusted; it is logged with the requests in flight, reported to the
 *   supervisor, and the worker exits (70); the supervisor starts a replacement.
 */
import { ConfigError, normaliseConfig } from './config/load.js';
import { buildGateway, type Gateway } from './gateway.js';
import { CRASH_EXIT_CODE, type FromWorker, type ToWorker, type WorkerInit } from './ipc.js';
import { loggerFor, toPinoLevel, type Logger } from './log.js';
import { SupervisorAuthority } from './qos/shared.js';

const SIGNAL_NAMES: Partial<Record<NodeJS.Signals, string>> = { SIGINT: 'interrupt', SIGTERM: 'terminated', SIGHUP: 'hangup' };

let init: WorkerInit | null = null;
let gw: Gateway | null = null;
let logger: Logger | null = null;
let tag = `[SERVICE: Workers] worker (pid ${process.pid})`;
let waitMs = 10_000;
let draining = false;
/** A reload retires this worker: it must not listen (again), even if it was still starting. */
let unlistenAsked = false;
/** How long a retired worker (a reload) keeps answering its open connections before closing them. */
let lingerMs = 0;
let signals = 0;
/** Rate-limit tokens leased from the supervisor (several workers only). */
let limits: SupervisorAuthority | null = null;
let dying = false;

function send(m: FromWorker, then?: () => void): void {
  if (process.connected) {
    process.send!(m, undefined, {}, () => then?.());
  } else {
    then?.();
  }
}

function log(level: 'info' | 'warn' | 'error' | 'critical', msg: string): void {
  try {
    if (logger !== null) logger[level](msg);
    else console.error(msg);
  } catch {
    /* stdout gone: nothing left to tell */
  }
}

function lastResort(kind: string, err: unknown): void {
  if (dying) return; // a second error while reporting the first
  dying = true;
  let inflight: string[] = [];
  try {
    inflight = gw?.describeInflight() ?? [];
  } catch {
    /* the gateway's state may be what broke */
  }
  const context = inflight.length > 0 ? `${inflight.length} request(s) in flight:\n  ${inflight.join('\n  ')}` : 'no request in flight known';
  const stack = err instanceof Error ? (err.stack ?? err.message) : String(err);
  log('critical', `${tag}: ${kind} (a bug: please report it); the worker exits and is replaced; ${context}\n${stack}`);
  const summary = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  const exit = () => process.exit(CRASH_EXIT_CODE);
  // The report is a few bytes on a local channel; the timer only covers a channel that hangs.
  setTimeout(exit, 1000);
  send({ type: 'crash', message: `${kind}: ${summary.split('\n')[0]!.slice(0, 500)}` }, exit);
}

process.on('uncaughtException', (err) => lastResort('uncaught exception', err));
process.on('unhandledRejection', (reason) => lastResort('unhandled rejection', reason));

/** Stops listening now, drains, exits 0 (1 when the drain itself failed). Idempotent. */
function drain(): void {
  if (draining) return;
  draining = true;
  if (gw === null) process.exit(0); // still starting: nothing is in flight
  // Bounded even if closing hangs: the drain wait, then a grace for the pools.
  setTimeout(() => process.exit(1), waitMs + lingerMs + 5000).unref();
  const closing = gw!.close(waitMs, lingerMs);
  // close() shut the listening socket synchronously: a reload can now say it is done.
  send({ type: 'unlistened' });
  closing.then(
    () => process.exit(0),
    (err: Error) => {
      log('error', `${tag}: shutdown: ${err.message}`);
      process.exit(1);
    },
  );
}

function onSignal(signal: NodeJS.Signals): void {
  // Only signals count towards "second signal": with Ctrl-C the supervisor's `shutdown` message
  // and this worker's own SIGINT are one stop request, in either order.
  if (++signals > 1) {
    log('warn', `${tag}: signal intercepted again: ${SIGNAL_NAMES[signal]}; exiting now`);
    process.exit(1);
  }
  if (draining) return;
  log('info', `${tag}: signal intercepted: ${SIGNAL_NAMES[signal]}; draining`);
  send({ type: 'draining', reason: signal });
  drain();
}

process.on('SIGTERM', onSignal);
process.on('SIGINT', onSignal);
// A reload is the supervisor's: it starts new workers with the new configuration and retires these.
process.on('SIGHUP', () => log('info', `${tag}: signal intercepted: hangup; the supervisor reloads the configuration`));
process.on('disconnect', () => {
  if (init === null) process.exit(0); // a spare the supervisor never used (see preforkWorker)
  if (draining) return;
  log('warn', `${tag}: the supervisor is gone (IPC channel closed); draining and exiting`);
  drain();
});

process.on('message', (m: ToWorker) => {
  if (m.type === 'init' && init === null) {
    init = m.init;
    void start(m.init);
  } else if (m.type === 'grant') {
    limits?.granted(m.seq, m.n, m.retryMs);
  } else if (m.type === 'metrics?') {
    const seq = m.seq;
    (m.kind === 'stats' ? Promise.resolve(gw?.statsSnapshot() ?? null) : (gw?.metricsSnapshot() ?? Promise.resolve(null))).then(
      (data) => send({ type: 'metrics', seq, data }),
      () => send({ type: 'metrics', seq, data: null }),
    );
  } else if (m.type === 'unlisten') {
    unlistenAsked = true;
    gw?.unlisten();
    send({ type: 'unlistened' });
  } else if (m.type === 'shutdown') {
    waitMs = m.waitMs;
    lingerMs = m.lingerMs ?? 0;
    drain();
  }
});

async function start(i: WorkerInit): Promise<void> {
  tag = `[SERVICE: Workers] worker #${i.index} (pid ${process.pid})`;
  let listening = false;
  try {
    const cfg = normaliseConfig(JSON.parse(i.rawConfig), i.configFile);
    waitMs = cfg.maxShutdownWaitMs || 10_000;
    const level = i.logLevel ?? cfg.logging.level;
    // Start-up lines (warnings included) are printed by the first worker only: once per instance.
    logger = loggerFor(cfg.logging, { level: i.quietStart ? 'ERROR' : level, format: i.logFormat });
    if (i.workers > 1) limits = new SupervisorAuthority(i.workers, (m) => send(m));
    gw = await buildGateway(cfg, { logger, debug: i.debug, port: i.port, limits, workers: i.workers, logFormat: i.logFormat });
    if (draining) process.exit(0);
    listening = true;
    const bound = await gw.listen();
    if (unlistenAsked) gw.unlisten(); // retired while it started: its shutdown follows
    logger.level = toPinoLevel(level);
    if (draining) return; // a stop arrived while binding: drain() already runs
    send({ type: 'ready', port: bound });
  } catch (err) {
    send({ type: 'fatal', message: (err as Error).message, config: err instanceof ConfigError, listen: listening }, () => {
      void (gw?.close(0) ?? Promise.resolve()).catch(() => {}).finally(() => process.exit(1));
    });
  }
}

if (typeof process.send !== 'function') {
  console.error('core/worker.js is a gw worker process: it is started by `gw run`');
  process.exit(2);
}
send({ type: 'hello' });
