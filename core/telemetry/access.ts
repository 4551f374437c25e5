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
 * date is rebuilt once per second) and appended to a pending batch; a batch goes out when it
 * reaches 4 KiB or 100 ms after its first line, as one asynchronous write from libuv's thread
 * pool. Batches never exceed PIPE_BUF (4096 bytes) and hold whole lines, so workers sharing one
 * stdout pipe never interleave inside a line. A stdout that does not drain costs lines, not
 * memory: beyond 8 MiB waiting, lines are dropped and counted, and the count is reported once
 * (at WARNING) when the output flows again.
 */
import fs from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.js';
import { goTimeFormat } from './timefmt.js';

/** Where batches go (stdout by default; tests and benchmarks may pass their own). */
export interface AccessSink {
  /** Writes one batch; calls `done` when the next one may be written. */
  write(batch: Buffer, done: (err: Error | null) => void): void;
}

const GIN_TIME = goTimeFormat('2006/01/02 - 15:04:05');
/** PIPE_BUF on Linux: a write up to this size to a pipe is atomic. */
const BATCH_BYTES = 4096;
const FLUSH_MS = 100;
const MAX_WAITING_BYTES = 8 * 1024 * 1024;

/** A monotonic start stamp (ms, sub-µs resolution) for `record`. */
export const accessStart = (): number => performance.now();

const METHODS: Record<string, string> = {};
for (const m of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'CONNECT', 'TRACE']) METHODS[m] = m.padEnd(7, ' ');

/**
 * stdout as a batch writer. libuv's thread pool costs ~20 µs of CPU per write, more than the
 * write itself, so where a write cannot block the loop it is made directly:
 *  - a regular file, a terminal or /dev/null: written synchronously;
 *  - a pipe (a container runtime's log pipe): opened again through /proc as its own non-blocking
 *    file description, so a full pipe answers EAGAIN (the batch is retried 5 ms later) instead of
 *    stalling requests, and the other writers of the pipe keep their blocking mode;
 *  - a socket (a parent process's stdio, systemd's journal stream): a libuv stream on the fd,
 *    which waits for a full socket with epoll.
 * Anything else goes through the thread pool.
 */
function stdoutSink(): AccessSink {
  let st: fs.Stats | null = null;
  try {
    st = fs.fstatSync(1);
  } catch {
    /* no stdout: the thread pool path reports the failure */
  }
  if (st !== null && (st.isFile() || st.isCharacterDevice())) return syncSink(1);
  if (st !== null && st.isFIFO()) {
    try {
      return syncSink(fs.openSync('/proc/self/fd/1', fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    } catch {
      /* no /proc: the thread pool */
    }
  }
  if (st !== null && st.isSocket()) {
    const sock = new net.Socket({ fd: 1, readable: false, writable: true });
    let failed: ((err: Error) => void) | null = null;
    // A closed stdout (EPIPE) must not kill the worker: lines are lost, requests are not.
    sock.on('error', (err) => failed?.(err));
    return {
      write(batch, done) {
        failed = done;
        sock.write(batch, (err) => {
          failed = null;
          done(err ?? null);
        });
      },
    };
  }
  const sink: AccessSink = {
    write(batch, done) {
      fs.write(1, batch, 0, batch.length, null, (err, n) => {
        if (err !== null) done(err);
        else if (n < batch.length) sink.write(batch.subarray(n), done);
        else done(null);
      });
    },
  };
  return sink;
}

function syncSink(fd: number): AccessSink {
  const sink: AccessSink = {
    write(batch, done) {
      let n: number;
      try {
        n = fs.writeSync(fd, batch);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          setTimeout(() => sink.write(batch, done), 5);
          return;
        }
        done(err as Error);
        return;
      }
      // A batch fits PIPE_BUF, so a pipe takes all of it or nothing; a file may take part.
      if (n < batch.length) sink.write(batch.subarray(n), done);
      else done(null);
    },
  };
  return sink;
}

export class AccessLog {
  private readonly skip: ReadonlySet<string>;
  private sec = -1;
  private stamp = '';
  /** Lines not yet in a batch, and their length in UTF-16 units (≈ bytes: lines are mostly ASCII). */
  private pending = '';
  private pendingLen = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Batches waiting for the one being written. */
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private writing = false;
  private dropped = 0;
  private broken = false;
  private inflight: Buffer | null = null;
  private nextScheduled = false;

  constructor(
    skipPaths: readonly string[],
    private readonly json: boolean,
    private readonly logger: Logger,
    sink?: AccessSink,
  ) {
    this.skip = new Set(skipPaths);
    // stdout is looked at (and a pipe reopened, a socket opened as a stream) on the first batch
    // only: `gw check`, and a gateway that never logs, leave it as it is.
    this.sink = sink ?? null;
    if (sink === undefined) process.once('exit', () => this.flushSync());
  }
  private sink: AccessSink | null;

  /**
   * One request answered. `start` is `accessStart()` when the request arrived; `path` is the URL
   * path and `query` the raw query ('' when none); `errors` are the failures KrakenD attaches to
   * gin's context (its `Error #01:` lines), or null.
   */
  record(start: number, status: number, ip: string, method: string, path: string, query: string, errors: readonly Error[] | null): void {
    if (this.skip.has(path)) return;
    const ns = Math.round((performance.now() - start) * 1e6);
    const nowMs = Date.now();
    let full = query === '' ? path : path + '?' + query;
    // A line must fit a batch, and a batch PIPE_BUF: a very long target is cut (and says so).
    if (full.length > MAX_TARGET) full = full.slice(0, MAX_TARGET) + '…(cut)';
    let line: string;
    if (this.json) {
      line = `{"@timestamp":"${new Date(nowMs).toISOString()}","type":"access","status":${status},"latency_ns":${ns},"latency":"${goDuration(ns)}","client_ip":${JSON.stringify(ip)},"method":${METHODS[method] !== undefined ? `"${method}"` : JSON.stringify(method)},"path":${JSON.stringify(full)}${errors === null ? '' : `,"errors":${JSON.stringify(errors.slice(0, 5).map(describe))}`}}\n`;
    } else {
      const sec = (nowMs / 1000) | 0;
      if (sec !== this.sec) {
        this.sec = sec;
        this.stamp = GIN_TIME(new Date(nowMs));
      }
      const lat = goDuration(ns > 60e9 ? Math.floor(ns / 1e9) * 1e9 : ns);
      line =
        '[GIN] ' + this.stamp + ' | ' + status + ' | ' + (lat.length < 13 ? SPACES.slice(0, 13 - lat.length) + lat : lat) + ' | ' +
        (ip.length < 15 ? SPACES.slice(0, 15 - ip.length) + ip : ip) + ' | ' + (METHODS[method] ?? method.padEnd(7, ' ')) + '  ' + goQuote(full) + '\n';
      if (errors !== null) line += errorLines(errors);
    }
    this.append(line);
  }

  private append(line: string): void {
    if (this.pendingLen + line.length > BATCH_BYTES - 64 && this.pendingLen > 0) this.cut();
    this.pending += line;
    this.pendingLen += line.length;
    if (this.timer === null) this.timer = setTimeout(this.onTimer, FLUSH_MS);
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    if (this.pendingLen > 0) this.cut();
  };

  /** Closes the pending batch and hands it to the writer (or drops it when too much waits). */
  private cut(): void {
    const all = Buffer.from(this.pending, 'utf8');
    this.pending = '';
    this.pendingLen = 0;
    // Characters are not bytes: a batch with multi-byte text is split at line ends to fit PIPE_BUF.
    for (const batch of all.length <= BATCH_BYTES ? [all] : splitLines(all)) {
      if (this.writing) {
        if (this.queued + batch.length > MAX_WAITING_BYTES) {
          this.dropped += countLines(batch);
          continue;
        }
        this.queue.push(batch);
        this.queued += batch.length;
      } else this.send(batch);
    }
  }

  private send(batch: Buffer): void {
    this.writing = true;
    this.inflight = batch;
    let called = false;
    (this.sink ??= stdoutSink()).write(batch, (err) => {
      // A sink reports once per batch, however its failure surfaces (callback and 'error').
      if (called) return;
      called = true;
      this.onWritten(err);
    });
  }

  /** The next queued batch, on the next turn: a sink that completes synchronously never recurses. */
  private readonly next = (): void => {
    this.nextScheduled = false;
    if (this.writing) return;
    const next = this.queue.shift();
    if (next !== undefined) {
      this.queued -= next.length;
      this.send(next);
    }
  };


  private onWritten(err: Error | null): void {
    this.writing = false;
    const batch = this.inflight;
    this.inflight = null;
    if (err !== null) {
      // stdout closed (EPIPE) or failing: lines are lost (and counted), requests are not.
      if (batch !== null) this.dropped += countLines(batch);
      if (!this.broken) {
        this.broken = true;
        this.logger.warn(`[SERVICE: Gin] access log: writing to stdout failed (${err.message}); access lines are dropped until it works again`);
      }
    } else {
      this.broken = false;
      if (this.dropped > 0) {
        this.logger.warn(`[SERVICE: Gin] access log: stdout did not drain; ${this.dropped} line(s) dropped`);
        this.dropped = 0;
      }
    }
    if (this.queue.length > 0 && !this.nextScheduled) {
      this.nextScheduled = true;
      setImmediate(this.next);
    }
  }

  /**
   * At exit: the batch being written (a retry pending, or still in a stream's queue), the queued
   * ones and the pending lines, in order, synchronously; a full stdout is waited for up to 1 s.
   */
  flushSync(): void {
    const parts = [...(this.inflight !== null ? [this.inflight] : []), ...this.queue];
    if (this.pendingLen > 0) parts.push(Buffer.from(this.pending, 'utf8'));
    this.queue.length = 0;
    this.inflight = null;
    this.pending = '';
    this.pendingLen = 0;
    const until = Date.now() + 1000;
    for (let b of parts) {
      while (b.length > 0) {
        try {
          b = b.subarray(fs.writeSync(1, b));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || Date.now() > until) return;
          Atomics.wait(SLEEP, 0, 0, 5);
        }
      }
    }
  }
}

const SPACES = ' '.repeat(16);
/** Longest request target written (characters): with the rest of a line, ≤ 4 KiB even in 3-byte UTF-8. */
const MAX_TARGET = 1000;
/** Error text per `Error #NN` line, for the same reason. */
const MAX_ERROR = 200;

const SLEEP = new Int32Array(new SharedArrayBuffer(4));

/** A batch over PIPE_BUF cut at line ends into pieces that fit (every line fits: MAX_TARGET). */
function splitLines(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  while (b.length - start > BATCH_BYTES) {
    const cut = b.lastIndexOf(10, start + BATCH_BYTES - 1);
    const end = cut < start ? start + BATCH_BYTES : cut + 1;
    out.push(b.subarray(start, end));
    start = end;
  }
  if (start < b.length) out.push(b.subarray(start));
  return out;
}

function countLines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++;
  return n;
}

const describe = (e: Error): string => {
  const t = (e as { detail?: string }).detail ?? e.message;
  return t.length > MAX_ERROR ? t.slice(0, MAX_ERROR) + '…' : t;
};

/** gin's `Error #01: …` lines, one per error. */
function errorLines(errors: readonly Error[]): string {
  let s = '';
  const n = Math.min(errors.length, 5);
  for (let i = 0; i < n; i++) s += `Error #0${i + 1}: ${describe(errors[i]!).replace(/[\r\n]+/g, ' ')}\n`;
  if (errors.length > n) s += `Error #0${n + 1}: … and ${errors.length - n} more\n`;
  return s;
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

/** `v / unit` with up to `digits` decimals, trailing zeros dropped (Go's fmtFrac). */
function frac(v: number, unit: number, digits: number): string {
  const int = Math.floor(v / unit);
  let rest = Math.round(v - int * unit);
  if (rest === 0) return String(int);
  let d = digits;
  while (rest % 10 === 0) {
    rest /= 10;
    d--;
  }
  const r = String(rest);
  return int + '.' + (r.length < d ? '000000000'.slice(0, d - r.length) + r : r);
}
