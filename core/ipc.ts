/**
 * What the supervisor (core/cluster.ts) and its worker processes (core/worker.ts) tell each other
 * over the IPC channel. A module of its own: importing worker.ts would run a worker.
 */

export interface WorkerInit {
  index: number;
  configFile: string;
  /** The config file as the supervisor read it at start-up: replacements run the same config. */
  rawConfig: string;
  debug: boolean;
  port: number;
  logLevel?: string;
  logFormat?: string;
  /** Only the first worker logs its start-up at DEBUG/INFO; the others start quietly. */
  quietStart: boolean;
  /** How many workers the instance runs: with more than one, rate limits lease tokens from the supervisor. */
  workers: number;
}

/** A rate-limit bucket family, as workers and the supervisor name it (core/qos/limiter.ts LimitSpec). */
export interface LimitSpecMsg {
  id: string;
  rate: number;
  everyMs: number;
  capacity: number;
}

/** Supervisor → worker. */
export type ToWorker =
  | { type: 'init'; init: WorkerInit }
  /** A reload's first step: close the listening socket, keep serving open connections as before; answered by `unlistened`. */
  | { type: 'unlisten' }
  /** Stop listening and drain; `lingerMs` (a reload): keep answering existing connections that long, each answer closing its connection. */
  | { type: 'shutdown'; waitMs: number; lingerMs?: number }
  /** Answer to `lease`: n tokens granted (0: none; a token is back in retryMs). */
  | { type: 'grant'; seq: number; n: number; retryMs: number }
  /** A metrics scrape: the worker answers `metrics` with the same seq. */
  | { type: 'metrics?'; seq: number; kind: 'prom' | 'stats' };

/** Worker → supervisor. */
export type FromWorker =
  | { type: 'hello' }
  | { type: 'ready'; port: number }
  /** Start-up failed (the worker exits 1); `listen` when it was the bind. */
  | { type: 'fatal'; message: string; config: boolean; listen: boolean }
  /** The last-resort handler fired; the worker exits 70 right after. */
  | { type: 'crash'; message: string }
  /** The worker stops on its own (a signal sent to it): it drains, then exits 0. */
  | { type: 'draining'; reason: string }
  /** After `unlisten` or `shutdown`: the listening socket is closed (new connections reach the other workers). */
  | { type: 'unlistened' }
  /** Rate limits: up to `want` tokens of bucket `key` of `spec`, answered by `grant` with the same seq. */
  | { type: 'lease'; seq: number; spec: LimitSpecMsg; key: string; want: number }
  /** Rate limits: leased tokens not spent, back to the bucket. */
  | { type: 'giveback'; spec: LimitSpecMsg; key: string; n: number }
  /** The worker's metrics (prom: prom-client's JSON, core/telemetry/metrics.ts; stats:
   *  core/telemetry/stats.ts WorkerStats), or null when off. */
  | { type: 'metrics'; seq: number; data: unknown };

/** sysexits' EX_SOFTWARE: the worker died of a bug (see its CRITICAL log line). */
export const CRASH_EXIT_CODE = 70;
