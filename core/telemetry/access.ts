/**
 * The access log: one line per request the router answered, in gin's format as KrakenD prints it
 *
 *     [GIN] 2026/12/06 - 10:11:12 | 200 |      5.8972ms |       127.0.0.1 | GET      "/users/42?x=1"
 *     Error #01: Get "http://backend/users/42": connect ECONNREFUSED 127.0.0.1:8000
 *
 * or, when the application log is JSON (`logstash`, `--log-format json`), one JSON object per line.
 * Like KrakenD's it goes straight to stdout (no prefix, no level), unless `router.disable_access_log`;
 * `router.logger_skip_paths` are exact paths (no query) that are never logged.
 *
 * Off the request's critical path: a line is built from values the request already has (the
 * date part is rebuilt once per second) and appended to a SonicBoom buffer; the buffer goes out
 * in writes of at most 4 KiB of whole lines (PIPE_BUF: workers sharing one stdout pipe never
 * interleave inside a line), from libuv's thread pool, at 2 KiB or every 200 ms. A stdout that does
 * not drain costs lines, not memory: beyond 8 MiB buffered, lines are dropped and counted, and the
 * count is reported once the output flows again.
 */
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import type { Logger } from '../log.js';
import { goTimeFormat } from './timefmt.js';

// sonic-boom is CommonJS (pino's destination): its class comes through require.
const { SonicBoom } = createRequire(import.meta.url)('sonic-boom') as typeof import('sonic-boom');

export interface AccessSink {
  write(data: string): boolean;
  flushSync?(): void;
}

const GIN_TIME = goTimeFormat('2006/01/02 - 15:04:05');

/** A monotonic start stamp (ms, sub-µs resolution) for `record`. */
export const accessStart = (): number => performance.now();

export class AccessLog {
  private readonly skip: ReadonlySet<string>;
  private readonly out: AccessSink;
  private sec = -1;
  private stamp = '';
  private dropped = 0;

  constructor(
    skipPaths: readonly string[],
    private readonly json: boolean,
    private readonly logger: Logger,
    sink?: AccessSink,
  ) {
    this.skip = new Set(skipPaths);
    if (sink !== undefined) this.out = sink;
    else {
      const boom = new SonicBoom({ fd: 1, sync: false, minLength: 2048, maxWrite: 4096, maxLength: 8 * 1024 * 1024, periodicFlush: 200 });
      boom.on('drop', () => {
        if (this.dropped++ === 0) setTimeout(() => this.reportDrops(), 1000).unref();
      });
      // A closed stdout (EPIPE) must not kill the worker: lines are lost, requests are not.
      boom.on('error', () => {});
      process.once('exit', () => {
        try {
          boom.flushSync();
        } catch {
          /* stdout gone */
        }
      });
      this.out = boom;
    }
  }

  private reportDrops(): void {
    const n = this.dropped;
    this.dropped = 0;
    if (n > 0) this.logger.warn(`[SERVICE: Gin] access log: stdout is not draining; ${n} line(s) dropped`);
  }

  /** True when `path` (no query) is logged at all: callers skip the work otherwise. */
  logs(path: string): boolean {
    return !this.skip.has(path);
  }

  /**
   * One request answered. `start` is `accessStart()` when the request arrived; `path` is the URL
   * path and `query` the raw query ('' when none); `errors` are the failures KrakenD attaches to
   * gin's context (its `Error #01:` lines), or null.
   */
  record(start: number, status: number, ip: string, method: string, path: string, query: string, errors: readonly Error[] | null): void {
    if (this.skip.has(path)) return;
    const ns = Math.round((performance.now() - start) * 1e6);
    const nowMs = Date.now();
    const full = query === '' ? path : `${path}?${query}`;
    let line: string;
    if (this.json) {
      line = `{"@timestamp":"${new Date(nowMs).toISOString()}","type":"access","status":${status},"latency_ns":${ns},"latency":"${goDuration(ns)}","client_ip":${JSON.stringify(ip)},"method":"${method}","path":${JSON.stringify(full)}${errors === null ? '' : `,"errors":${JSON.stringify(errors.map(describe))}`}}\n`;
    } else {
      const sec = Math.floor(nowMs / 1000);
      if (sec !== this.sec) {
        this.sec = sec;
        this.stamp = GIN_TIME(new Date(nowMs));
      }
      line = `[GIN] ${this.stamp} | ${status} | ${pad(goDuration(ns > 60e9 ? Math.floor(ns / 1e9) * 1e9 : ns), 13)} | ${pad(ip, 15)} | ${method.padEnd(7, ' ')}  ${goQuote(full)}\n${errors === null ? '' : errorLines(errors)}`;
    }
    this.out.write(line);
  }
}

const describe = (e: Error): string => (e as { detail?: string }).detail ?? e.message;

/** gin's `Error #01: …` lines, one per error. */
function errorLines(errors: readonly Error[]): string {
  let s = '';
  for (let i = 0; i < errors.length; i++) s += `Error #${i < 9 ? '0' : ''}${i + 1}: ${describe(errors[i]!)}\n`;
  return s;
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : ' '.repeat(n - s.length) + s;
}

/** Go's %#v of a string: double-quoted, with Go's escapes for quotes, backslashes and controls. */
function goQuote(s: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/["\\\x00-\x1f\x7f]/.test(s)) return `"${s}"`;
  return JSON.stringify(s).replace(/\\u00([0-9a-f]{2})/g, '\\x$1');
}

/** Go's time.Duration.String() of `ns` nanoseconds: `950ns`, `4.529µs`, `5.8972ms`, `1.5s`, `2m3.1s`. */
export function goDuration(ns: number): string {
  if (ns === 0) return '0s';
  if (ns < 1e3) return `${ns}ns`;
  if (ns < 1e6) return frac(ns, 1e3, 3) + 'µs';
  if (ns < 1e9) return frac(ns, 1e6, 6) + 'ms';
  const totalS = ns / 1e9;
  const h = Math.floor(totalS / 3600);
  const m = Math.floor((totalS % 3600) / 60);
  const s = frac(ns - (h * 3600 + m * 60) * 1e9, 1e9, 9) + 's';
  if (h > 0) return `${h}h${m}m${s}`;
  if (m > 0) return `${m}m${s}`;
  return s;
}

function frac(v: number, unit: number, digits: number): string {
  const int = Math.floor(v / unit);
  const rest = Math.round(v - int * unit);
  if (rest === 0) return String(int);
  return `${int}.${String(rest).padStart(digits, '0').replace(/0+$/, '')}`;
}
