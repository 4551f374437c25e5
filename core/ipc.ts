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
}

/** Supervisor → worker. */
export type ToWorker = { type: 'init'; init: WorkerInit } | { type: 'shutdown'; waitMs: number };

/** Worker → supervisor. */
export type FromWorker =
  | { type: 'hello' }
  | { type: 'ready'; port: number }
  /** Start-up failed (the worker exits 1); `listen` when it was the bind. */
  | { type: 'fatal'; message: string; config: boolean; listen: boolean }
  /** The last-resort handler fired; the worker exits 70 right after. */
  | { type: 'crash'; message: string }
  /** The worker stops on its own (a signal sent to it): it drains, then exits 0. */
  | { type: 'draining'; reason: string };

/** sysexits' EX_SOFTWARE: the worker died of a bug (see its CRITICAL log line). */
export const CRASH_EXIT_CODE = 70;
