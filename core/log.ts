/**
 * pino, with KrakenD's level names. Messages carry KrakenD's tags (`[SERVICE: ...]`,
 * `[ENDPOINT: /p]`, `[BACKEND: ...]`) so existing log searches keep working.
 * On a TTY (or with `format: "pretty"`) lines are rendered by pino-pretty; otherwise JSON lines.
 */
import { createRequire } from 'node:module';
import pino, { type Logger as PinoLogger } from 'pino';
import type { LogLevel } from './config/types.js';

export type Logger = PinoLogger<'critical'>;

const LEVELS: Record<LogLevel, string> = {
  DEBUG: 'debug',
  INFO: 'info',
  WARNING: 'warn',
  ERROR: 'error',
  CRITICAL: 'critical',
};

export interface LoggerOptions {
  level: LogLevel | string;
  prefix?: string;
  /** 'json' | 'pretty' | 'auto' (pretty on a TTY). */
  format?: string;
  destination?: NodeJS.WritableStream;
}

export function toPinoLevel(level: string): string {
  const up = level.toUpperCase();
  if (up in LEVELS) return LEVELS[up as LogLevel];
  const low = level.toLowerCase();
  return ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(low) ? low : 'info';
}

const require = createRequire(import.meta.url);

export function createLogger(opts: LoggerOptions): Logger {
  const format = opts.format ?? 'auto';
  const pretty = format === 'pretty' || (format === 'auto' && !!process.stdout.isTTY);
  const options: pino.LoggerOptions<'critical'> = {
    level: toPinoLevel(String(opts.level)),
    customLevels: { critical: 55 },
    base: undefined,
    msgPrefix: opts.prefix ? `${opts.prefix} ` : undefined,
  };
  if (pretty) {
    try {
      const prettyFactory = require('pino-pretty') as (o: object) => NodeJS.WritableStream;
      const stream = prettyFactory({
        sync: true,
        colorize: !!process.stdout.isTTY,
        translateTime: 'SYS:yyyy/mm/dd - HH:MM:ss.l',
        ignore: 'pid,hostname',
        customLevels: 'critical:55',
        destination: 1,
      });
      return pino(options, stream as pino.DestinationStream);
    } catch {
      // pino-pretty is a dev dependency; fall back to JSON lines.
    }
  }
  return pino(options, (opts.destination as pino.DestinationStream | undefined) ?? pino.destination({ fd: 1, sync: true }));
}
