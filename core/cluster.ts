/**
 * `gw run` with N > 1 workers: the main thread starts N worker threads on one port, reports
 * start-up errors, replaces workers that die, and drains them all on shutdown.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from './log.js';
import type { WorkerInit, WorkerMessage } from './worker.js';

export interface ClusterOptions {
  workers: number;
  configFile: string;
  debug: boolean;
  port: number;
  logLevel?: string;
  logFormat?: string;
  logger: Logger;
}

export interface Cluster {
  readonly port: number;
  /** Drains every worker (each waits up to waitMs for its in-flight requests). */
  close(waitMs: number): Promise<void>;
}

export class StartupError extends Error {
  constructor(
    message: string,
    readonly config: boolean,
  ) {
    super(message);
  }
}

const WORKER_URL = new URL('./worker.js', import.meta.url);
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 30_000;

export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const { logger } = opts;
  const workers = new Set<Worker>();
  let closing = false;
  const restarts: number[] = [];

  const spawn = (index: number, port: number, quietStart: boolean): Promise<{ worker: Worker; port: number }> =>
    new Promise((resolve, reject) => {
      const init: WorkerInit = {
        index, configFile: opts.configFile, debug: opts.debug, port, logLevel: opts.logLevel, logFormat: opts.logFormat, quietStart,
      };
      const w = new Worker(WORKER_URL, { workerData: init });
      let ready = false;
      w.on('message', (m: WorkerMessage) => {
        if (m.type === 'ready') {
          ready = true;
          workers.add(w);
          resolve({ worker: w, port: m.port });
        } else if (m.type === 'fatal') {
          reject(new StartupError(m.message, m.config));
        }
      });
      w.on('error', (err) => {
        if (!ready) reject(new StartupError(err.message, false));
        else logger.error(`[SERVICE: Workers] worker #${index} failed: ${err.stack ?? err.message}`);
      });
      w.on('exit', (code) => {
        workers.delete(w);
        if (!ready) {
          reject(new StartupError(`worker #${index} exited with code ${code} during start-up`, false));
          return;
        }
        if (closing) return;
        logger.error(`[SERVICE: Workers] worker #${index} exited with code ${code}; starting a replacement`);
        const now = Date.now();
        restarts.push(now);
        while (restarts.length && restarts[0]! < now - RESTART_WINDOW_MS) restarts.shift();
        if (restarts.length > MAX_RESTARTS) {
          logger.fatal(`[SERVICE: Workers] ${restarts.length} workers died within ${RESTART_WINDOW_MS / 1000}s; giving up`);
          process.exit(1);
        }
        spawn(index, boundPort, true).catch((err: Error) => {
          logger.fatal(`[SERVICE: Workers] cannot replace worker #${index}: ${err.message}`);
          process.exit(1);
        });
      });
    });

  // The first worker binds (possibly an ephemeral port); the others join the same port.
  const first = await spawn(0, opts.port, false);
  let boundPort = first.port;
  try {
    await Promise.all(Array.from({ length: opts.workers - 1 }, (_, i) => spawn(i + 1, boundPort, true)));
  } catch (err) {
    closing = true;
    await Promise.allSettled([...workers].map((w) => w.terminate()));
    throw err;
  }
  logger.info(`[SERVICE: Workers] ${opts.workers} workers listening on port ${boundPort}`);

  return {
    port: boundPort,
    async close(waitMs: number) {
      closing = true;
      await Promise.allSettled(
        [...workers].map(
          (w) =>
            new Promise<void>((resolve) => {
              w.once('exit', () => resolve());
              w.on('message', (m: WorkerMessage) => m.type === 'closed' && resolve());
              w.postMessage({ type: 'shutdown', waitMs });
              // A worker that does not drain in time is given up on.
              setTimeout(resolve, waitMs + 2000).unref();
            }),
        ),
      );
    },
  };
}
