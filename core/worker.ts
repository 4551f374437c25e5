/**
 * Worker-thread entry: each worker builds its own gateway (own uWS app, own undici pools, own
 * plugins) from the same file and listens on the same port; the kernel spreads connections
 * across them (SO_REUSEPORT, uSockets' default on Linux). The main thread (core/cluster.ts)
 * supervises: start-up errors, restarts, shutdown.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ConfigError, loadConfig } from './config/load.js';
import { buildGateway, type Gateway } from './gateway.js';
import { createLogger, guardRejections, toPinoLevel } from './log.js';

export interface WorkerInit {
  index: number;
  configFile: string;
  debug: boolean;
  port: number;
  logLevel?: string;
  logFormat?: string;
  /** Only the first worker logs its start-up at DEBUG/INFO; the others start quietly. */
  quietStart: boolean;
}

export type WorkerMessage =
  | { type: 'ready'; port: number }
  | { type: 'fatal'; message: string; config: boolean }
  | { type: 'closed' };

async function main(): Promise<void> {
  const init = workerData as WorkerInit;
  const port = parentPort!;
  let gw: Gateway | null = null;
  try {
    const cfg = loadConfig(init.configFile);
    const level = init.logLevel ?? cfg.logging.level;
    const logger = createLogger({ level: init.quietStart ? 'WARNING' : level, prefix: cfg.logging.prefix, format: init.logFormat });
    guardRejections(logger);
    gw = await buildGateway(cfg, { logger, debug: init.debug, port: init.port });
    const bound = await gw.listen();
    logger.level = toPinoLevel(level);
    const g = gw;
    port.on('message', (m: { type: string; waitMs?: number }) => {
      if (m.type === 'shutdown') {
        // The main thread ends the process once every worker reported 'closed'; a worker does not
        // exit by itself while uWS's loop handles are open (Node aborts on that).
        g.close(m.waitMs).finally(() => port.postMessage({ type: 'closed' } satisfies WorkerMessage));
      }
    });
    port.postMessage({ type: 'ready', port: bound } satisfies WorkerMessage);
  } catch (err) {
    port.postMessage({ type: 'fatal', message: (err as Error).message, config: err instanceof ConfigError } satisfies WorkerMessage);
    await gw?.close(0).catch(() => {});
    process.exit(1);
  }
}

void main();
