/**
 * The application log: pino's API, KrakenD's lines. Messages carry KrakenD's tags
 * (`[SERVICE: ...]`, `[ENDPOINT: /p]`, `[BACKEND: /u]`) so existing log searches keep working, and
 * the line around them is the one `telemetry/logging` asks for:
 *
 *  - `default`:  `<prefix> 2006/01/02 - 15:04:05.000 ▶ LEVEL message` (krakend-gologging);
 *  - `logstash`: `{"@timestamp":"…", "@version": 1, "level": "INFO", "message": "…", "module": "KRAKEND"}`
 *                (gw escapes the message and writes the real UTC offset; KrakenD does neither);
 *  - `custom`:   `custom_format`, go-logging's `%{verb}` pattern;
 *  - `basic`:    no `telemetry/logging` at all: lura's `2006/01/02 15:04:05 KRAKEND INFO: message`;
 *  - `json`:     gw's own JSON lines (`--log-format json`): level names, ISO times, structured fields.
 *
 * Lines are written synchronously (they are rare: start-up, errors); the per-request access log
 * has its own buffered writer (telemetry/access.ts). Colours only on a terminal.
 */
import pino, { type Logger as PinoLogger } from 'pino';
import type { LoggingOptions, LogLevel } from './config/types.js';
import { goTimeFormat } from './telemetry/timefmt.js';
import { SyslogSink } from './telemetry/syslog.js';

export type Logger = PinoLogger<'critical'>;

const LEVELS: Record<LogLevel, string> = {
  DEBUG: 'debug',
  INFO: 'info',
  WARNING: 'warn',
  ERROR: 'error',
  CRITICAL: 'critical',
};

export const LOG_FORMATS = ['default', 'logstash', 'custom', 'basic', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LoggerOptions {
  level: LogLevel | string;
  /** `telemetry/logging.prefix` (default and basic formats only, as KrakenD). */
  prefix?: string;
  /** One of LOG_FORMATS; `auto`/`pretty` (older flags) mean `default`. */
  format?: string;
  /** `telemetry/logging.custom_format`, for `format: custom`. */
  customFormat?: string;
  /** `telemetry/logging.stdout === false` silences stdout. */
  stdout?: boolean;
  /** Extra sink for every line. */
  extra?: LineSink | null;
  /** Also to the local syslog (telemetry/logging `syslog`). */
  syslog?: { tag: string; facility: string; level: string } | null;
  /** Where lines go instead of fd 1 (tests). */
  destination?: LineSink;
  /** ANSI colours (default: stdout is a terminal). */
  color?: boolean;
}

export interface LineSink {
  write(line: string): unknown;
}

export function toPinoLevel(level: string): string {
  const up = level.toUpperCase();
  if (up in LEVELS) return LEVELS[up as LogLevel];
  const low = level.toLowerCase();
  return ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(low) ? low : 'info';
}

/** pino's numeric level → KrakenD's level name. */
export function levelName(n: number): string {
  return n >= 55 ? 'CRITICAL' : n >= 50 ? 'ERROR' : n >= 40 ? 'WARNING' : n >= 30 ? 'INFO' : 'DEBUG';
}

// go-logging's colours: %{color} per level (INFO has none), %{color:bold}, %{color:reset}.
const COLORS: Record<string, string> = { CRITICAL: '35', ERROR: '31', WARNING: '33', DEBUG: '36' };
const color = (name: string, bold: boolean) => (COLORS[name] === undefined ? '' : `\x1b[${COLORS[name]}${bold ? ';1' : ''}m`);
const RESET = '\x1b[0m';

type Format = (level: number, msg: string, now: Date) => string;

/** Thrown for a `custom_format` go-logging would refuse. */
export class LogFormatError extends Error {}

/** Go's printf for one string or number operand: `%-8s`, `%.4s`, `%04d`. */
function printf(spec: string): ((v: string | number) => string) | null {
  const m = /^([-0+ #]*)(\d*)(?:\.(\d+))?([sdvq])$/.exec(spec);
  if (m === null) return null;
  const [, flags, w, prec, verb] = m;
  const width = w === '' ? 0 : Number(w);
  const left = flags!.includes('-');
  const zero = flags!.includes('0') && !left && verb === 'd';
  return (v) => {
    let s = verb === 'q' ? JSON.stringify(String(v)) : String(v);
    if (prec !== undefined && verb !== 'd') s = s.slice(0, Number(prec));
    if (s.length >= width) return s;
    return left ? s.padEnd(width, ' ') : s.padStart(width, zero ? '0' : ' ');
  };
}

const VERB = /%\{(\w+)(?::(.*?))?\}/g;

/**
 * go-logging's pattern (`%{time:2006-01-02} %{level:.4s} %{message}`), compiled once. Verbs about
 * Go call sites (`shortfile`, `longfunc`, …) print `???`, as go-logging does when it cannot tell.
 */
export function compilePattern(pattern: string, useColor: boolean): Format {
  const parts: (string | ((level: string, msg: string, now: Date, id: number) => string))[] = [];
  let last = 0;
  let verbs = 0;
  for (const m of pattern.matchAll(VERB)) {
    verbs++;
    if (m.index! > last) parts.push(pattern.slice(last, m.index));
    last = m.index! + m[0].length;
    const [, verb, arg] = m;
    if (verb === 'time') {
      const f = goTimeFormat(arg ?? '2006-01-02T15:04:05.999Z-07:00');
      parts.push((_l, _m, now) => f(now));
      continue;
    }
    if (verb === 'color') {
      if (arg === 'reset') parts.push(() => (useColor ? RESET : ''));
      else if (arg === undefined || arg === 'bold') {
        const bold = arg === 'bold';
        parts.push((l) => (useColor ? color(l, bold) : ''));
      } else throw new LogFormatError(`%{color:${arg}}: only :bold and :reset are known`);
      continue;
    }
    const value: ((l: string, msg: string, now: Date, id: number) => string | number) | undefined = {
      level: (l: string) => l,
      message: (_l: string, msg: string) => msg,
      module: () => 'KRAKEND',
      program: () => 'gw',
      pid: () => process.pid,
      id: (_l: string, _m: string, _n: Date, id: number) => id,
      shortfile: () => '???',
      longfile: () => '???',
      shortfunc: () => '???',
      longfunc: () => '???',
      callpath: () => '???',
      shortpkg: () => '???',
    }[verb!];
    if (value === undefined) throw new LogFormatError(`unknown verb %{${verb}}`);
    const fmt = arg === undefined ? null : printf(arg);
    if (arg !== undefined && fmt === null) throw new LogFormatError(`%{${verb}:${arg}}: '${arg}' is not a printf layout`);
    parts.push(fmt === null ? (l, msg, now, id) => String(value(l, msg, now, id)) : (l, msg, now, id) => fmt(value(l, msg, now, id)));
  }
  if (verbs === 0) throw new LogFormatError('the pattern has no %{verb}');
  if (last < pattern.length) parts.push(pattern.slice(last));
  let id = 0;
  return (level, msg, now) => {
    const l = levelName(level);
    id++;
    let s = '';
    for (const p of parts) s += typeof p === 'string' ? p : p(l, msg, now, id);
    return s + '\n';
  };
}

const DEFAULT_PATTERN = ' %{time:2006/01/02 - 15:04:05.000} %{color}▶ %{level}%{color:reset} %{message}';

function compileFormat(format: LogFormat, prefix: string, custom: string, useColor: boolean): Format {
  switch (format) {
    case 'logstash': {
      const time = goTimeFormat('2006-01-02T15:04:05.000-07:00');
      return (level, msg, now) =>
        `{"@timestamp":"${time(now)}", "@version": 1, "level": "${levelName(level)}", "message": ${JSON.stringify(msg)}, "module": "KRAKEND"}\n`;
    }
    case 'custom':
      return compilePattern(custom, useColor);
    case 'basic': {
      const time = goTimeFormat('2006/01/02 15:04:05');
      const p = prefix === '' ? 'KRAKEND' : prefix;
      return (level, msg, now) => `${time(now)} ${p} ${levelName(level)}: ${msg}\n`;
    }
    default: {
      const f = compilePattern(DEFAULT_PATTERN, useColor);
      return (level, msg, now) => prefix + f(level, msg, now);
    }
  }
}

function normaliseFormat(f: string | undefined): LogFormat {
  if (f === undefined || f === 'auto' || f === 'pretty') return 'default';
  return (LOG_FORMATS as readonly string[]).includes(f) ? (f as LogFormat) : 'default';
}

export function createLogger(opts: LoggerOptions): Logger {
  const format = normaliseFormat(opts.format);
  const out: LineSink | null = opts.destination ?? (opts.stdout === false ? null : pino.destination({ fd: 1, sync: true }));
  const extra = opts.extra ?? null;
  const sys = opts.syslog
    ? new SyslogSink(opts.syslog.tag, opts.syslog.facility, opts.syslog.level, (why) => {
        process.stderr.write(`[SERVICE: Logging] syslog: ${why}; lines go to stdout only\n`);
      })
    : null;
  const options: pino.LoggerOptions<'critical'> = {
    level: toPinoLevel(String(opts.level)),
    customLevels: { critical: 55 },
    base: undefined,
  };
  if (format === 'json') {
    options.formatters = { level: (_label, n) => ({ level: levelName(n) }) };
    options.timestamp = pino.stdTimeFunctions.isoTime;
    const sink: LineSink = {
      write(s: string) {
        out?.write(s);
        extra?.write(s);
        if (sys !== null) {
          const o = JSON.parse(s) as { level: string; msg?: string };
          sys.message(o.level, o.msg ?? '');
        }
      },
    };
    return pino(options, sink as pino.DestinationStream);
  }
  // Text formats: pino hands the level and message with each line (needsMetadata), so a line is
  // rendered without parsing pino's JSON back.
  const fmt = compileFormat(format, opts.prefix ?? '', opts.customFormat ?? '', opts.color ?? (opts.destination === undefined && !!process.stdout.isTTY));
  options.timestamp = false;
  const sink = {
    [pino.symbols.needsMetadataGsym]: true,
    lastLevel: 30,
    lastMsg: '' as string | undefined,
    lastObj: undefined as { err?: Error } | undefined,
    write(_json: string) {
      const err = this.lastObj?.err;
      let msg = this.lastMsg ?? err?.message ?? '';
      if (err !== undefined && this.lastMsg !== undefined) msg += `: ${err.message}`;
      const line = fmt(this.lastLevel, msg, new Date());
      out?.write(line);
      extra?.write(line);
      sys?.message(levelName(this.lastLevel), msg);
    },
  };
  return pino(options, sink as unknown as pino.DestinationStream);
}

/**
 * The logger `telemetry/logging` asks for. `--log-format` (anything but `auto`) overrides its
 * format; `--log-level` its level.
 */
export function loggerFor(l: LoggingOptions, override: { level?: string; format?: string; extra?: LineSink | null } = {}): Logger {
  const flag = override.format;
  return createLogger({
    level: override.level ?? l.level,
    prefix: l.prefix,
    format: flag === undefined || flag === 'auto' ? l.format : flag,
    customFormat: l.customFormat,
    stdout: l.stdout,
    extra: override.extra ?? null,
    // KrakenD: every syslog line at the severity of the configured level.
    syslog: l.syslog ? { tag: l.prefix, facility: l.syslogFacility, level: l.level } : null,
    color: flag === 'pretty' ? true : undefined,
  });
}
