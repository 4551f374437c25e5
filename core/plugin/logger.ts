/**
 * The logger handed to plugins (`registerLogger`, `ClientContext.logger`): KrakenD's
 * `Debug/Info/Warning/Error/Critical/Fatal(v ...interface{})`, writing through gw's pino logger.
 *
 * Each call joins its arguments with single spaces, like Go's `Println`, and prefixes the message
 * with `[PLUGIN: <name>] ` unless the plugin already wrote that prefix itself (a port of the Go
 * example formats `"[PLUGIN: %s] Logger loaded"` on its own).
 *
 * `fatal` logs at CRITICAL and returns. In KrakenD, `Fatal` exits the process; in gw one plugin must
 * not be able to take the whole gateway (and every other backend) down with a log call, so a plugin
 * that really cannot continue should throw from its factory (a start-up error naming it) or from its
 * handler (an error for that backend only).
 */
import { inspect } from 'node:util';
import type { Logger } from '../log.js';
import type { PluginLogger } from './types.js';

type PinoLevel = 'debug' | 'info' | 'warn' | 'error' | 'critical';

/** One value as Go's `%v` would roughly print it. */
function str(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v instanceof Error) return v.message;
  if (v === null || v === undefined || (typeof v !== 'object' && typeof v !== 'function')) return String(v);
  return inspect(v, { breakLength: Infinity, depth: 4 });
}

/** Joins like Println: a single space between every pair of operands. */
export function joinArgs(v: readonly unknown[]): string {
  if (v.length === 1) return str(v[0]);
  let out = '';
  for (let i = 0; i < v.length; i++) out += (i === 0 ? '' : ' ') + str(v[i]);
  return out;
}

export function pluginLogger(logger: Logger, name: string): PluginLogger {
  const prefix = `[PLUGIN: ${name}] `;
  const write = (level: PinoLevel, v: unknown[]): void => {
    // Cheap when the level is off: nothing is formatted.
    if (!logger.isLevelEnabled(level)) return;
    const msg = joinArgs(v);
    logger[level](msg.startsWith('[PLUGIN:') ? msg : prefix + msg);
  };
  return {
    debug: (...v) => write('debug', v),
    info: (...v) => write('info', v),
    warning: (...v) => write('warn', v),
    error: (...v) => write('error', v),
    critical: (...v) => write('critical', v),
    // Deliberately not process.exit(): see the module comment.
    fatal: (...v) => write('critical', v),
  };
}
