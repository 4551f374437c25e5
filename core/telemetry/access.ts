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
 * Off the request's critical path: a request stores its fields (references and numbers) in a
 * ring of 512 slots; when the ring is full, or 100 ms after its first record, the lines are
 * formatted in one pass straight into a buffer (the common gin line byte by byte, the date once
 * per second, the wall clock once per batch) and written without blocking (see stdoutSink).
 * Batches hold whole lines and never exceed what the output takes atomically (PIPE_BUF, 4096
 * bytes, for a pipe), so workers sharing one stdout never interleave inside a line. A stdout
 * that does not drain costs lines, not memory: beyond 8 MiB waiting, lines are dropped and
 * counted, and the count is reported once (at WARNING) when the output flows again.
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
  /** The largest batch it takes in one write (default 4096, PIPE_BUF). */
  readonly batchBytes?: number;
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
  // A write to a regular file is atomic (the inode is locked for it), so batches may be large.
  if (st !== null && (st.isFile() || st.isCharacterDevice())) return syncSink(1, 64 * 1024);
  if (st !== null && st.isFIFO()) {
    try {
      return syncSink(fs.openSync('/proc/self/fd/1', fs.constants.O_WRONLY | fs.constants.O_NONBLOCK), BATCH_BYTES);
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
      // A unix stream socket queues a write up to ~32 KiB as one buffer: writers do not interleave.
      batchBytes: 16 * 1024,
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

function syncSink(fd: number, batchBytes: number): AccessSink {
  const sink: AccessSink = {
    batchBytes,
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

/** Records held before they are formatted (a ring: filled, then formatted in one pass). */
const RING = 512;
/** Bytes a fast-path gin line may take at most (its target is ≤ MAX_TARGET ASCII characters). */
const FAST_LINE_MAX = 1200; // stamp 30 + status 6 + latency 14 + ip 48 + method 12 + target < 1000 + 2
/** Formatted lines go into chunks of this size, then into batches the sink takes. */
const CHUNK = 64 * 1024;

export class AccessLog {
  /** Exact paths never logged, or null when there are none (no lookup per request). */
  private readonly skip: ReadonlySet<string> | null;
  // The ring: one request's fields per slot, formatted when it fills or 100 ms after its first record.
  private readonly t0s = new Float64Array(RING);
  private readonly t1s = new Float64Array(RING);
  private readonly statuses = new Uint16Array(RING);
  private readonly ips: string[] = new Array<string>(RING).fill('');
  private readonly methods: string[] = new Array<string>(RING).fill('');
  private readonly paths: string[] = new Array<string>(RING).fill('');
  private readonly queries: string[] = new Array<string>(RING).fill('');
  private readonly errs: (readonly Error[] | null)[] = new Array<readonly Error[] | null>(RING).fill(null);
  private n = 0;
  private sec = -1;
  /** `[GIN] 2006/01/02 - 15:04:05 | ` of the current second, as bytes. */
  private stamp: Buffer = Buffer.alloc(0);
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
    this.skip = skipPaths.length === 0 ? null : new Set(skipPaths);
    // stdout is looked at (and a pipe reopened, a socket opened as a stream) on the first batch
    // only: `gw check`, and a gateway that never logs, leave it as it is.
    this.sink = sink ?? null;
    if (sink === undefined) process.once('exit', () => this.flushSync());
  }
  private sink: AccessSink | null;

  /**
   * One request answered. `start` is `accessStart()` when the request arrived; `path` is the URL
   * path and `query` the raw query ('' when none); `errors` are the failures KrakenD attaches to
   * gin's context (its `Error #01:` lines), or null. The fields are stored; the line is made
   * later, with the other lines of its batch.
   */
  record(start: number, status: number, ip: string, method: string, path: string, query: string, errors: readonly Error[] | null): void {
    if (this.skip !== null && this.skip.has(path)) return;
    const i = this.n;
    this.t0s[i] = start;
    this.t1s[i] = performance.now();
    this.statuses[i] = status;
    this.ips[i] = ip;
    this.methods[i] = method;
    this.paths[i] = path;
    this.queries[i] = query;
    if (errors !== null) this.errs[i] = errors;
    if (++this.n === RING) this.cut();
    else if (this.timer === null) this.timer = setTimeout(this.onTimer, FLUSH_MS);
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    if (this.n > 0) this.cut();
  };

  /** Formats the ring and hands the batches to the writer (or drops them when too much waits). */
  private cut(): void {
    const chunks = this.format();
    const max = (this.sink ??= stdoutSink()).batchBytes ?? BATCH_BYTES;
    for (const chunk of chunks) {
      for (const batch of chunk.length <= max ? [chunk] : splitLines(chunk, max)) {
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
  }

  /** The ring's lines, in chunks of whole lines; the ring is emptied. */
  private format(): Buffer[] {
    const n = this.n;
    this.n = 0;
    const out: Buffer[] = [];
    // Wall-clock time of a record = its monotonic stamp + this offset (one Date per batch).
    const wall = Date.now() - performance.now();
    let buf = Buffer.allocUnsafe(CHUNK);
    let off = 0;
    for (let i = 0; i < n; i++) {
      const t1 = this.t1s[i]!;
      const ns = Math.round((t1 - this.t0s[i]!) * 1e6);
      const errors = this.errs[i]!;
      const fast = !this.json && errors === null && off + FAST_LINE_MAX <= buf.length ? this.ginFast(buf, off, i, ns, t1 + wall) : -1;
      if (fast >= 0) off = fast;
      else {
        const line = this.json ? this.jsonLine(i, ns, t1 + wall) : this.ginLine(i, ns, t1 + wall);
        const len = Buffer.byteLength(line);
        if (off + len > buf.length) {
          if (off > 0) out.push(buf.subarray(0, off));
          buf = Buffer.allocUnsafe(Math.max(CHUNK, len));
          off = 0;
        }
        off += buf.write(line, off);
      }
      this.ips[i] = '';
      this.paths[i] = '';
      this.queries[i] = '';
      if (errors !== null) this.errs[i] = null;
    }
    if (off > 0) out.push(buf.subarray(0, off));
    return out;
  }

  /**
   * The gin line of slot `i` written straight into `buf` at `off` (its end returned), when its
   * target needs no quoting escapes and is short, and its method is a known one; else -1.
   */
  private ginFast(buf: Buffer, off: number, i: number, ns: number, wallMs: number): number {
    const path = this.paths[i]!;
    const query = this.queries[i]!;
    const method = METHOD_BYTES[this.methods[i]!];
    const status = this.statuses[i]!;
    const ip = this.ips[i]!;
    if (method === undefined || status < 100 || status > 999 || ns >= 1e9 || ip.length > 45 || path.length + query.length >= MAX_TARGET) return -1;
    if (!plainAscii(path) || !plainAscii(query)) return -1;
    const sec = Math.floor(wallMs / 1000);
    if (sec !== this.sec) {
      this.sec = sec;
      this.stamp = Buffer.from('[GIN] ' + GIN_TIME(new Date(wallMs)) + ' | ', 'latin1');
    }
    off += this.stamp.copy(buf, off);
    buf[off] = 48 + ((status / 100) | 0);
    buf[off + 1] = 48 + (((status / 10) | 0) % 10);
    buf[off + 2] = 48 + (status % 10);
    buf[off + 3] = 32;
    buf[off + 4] = 124;
    buf[off + 5] = 32;
    off = writeLatency(buf, off + 6, ns);
    buf[off] = 32;
    buf[off + 1] = 124;
    buf[off + 2] = 32;
    off += 3;
    for (let k = ip.length; k < 15; k++) buf[off++] = 32;
    off += buf.write(ip, off, 'latin1');
    buf[off] = 32;
    buf[off + 1] = 124;
    buf[off + 2] = 32;
    off += 3;
    off += method.copy(buf, off);
    off += buf.write(path, off, 'latin1');
    if (query.length > 0) {
      buf[off++] = 63;
      off += buf.write(query, off, 'latin1');
    }
    buf[off] = 34;
    buf[off + 1] = 10;
    return off + 2;
  }

  /** The gin line of slot `i` as a string (any target, method, latency or errors). */
  private ginLine(i: number, ns: number, wallMs: number): string {
    const ip = this.ips[i]!;
    const method = this.methods[i]!;
    const errors = this.errs[i]!;
    const lat = goDuration(ns > 60e9 ? Math.floor(ns / 1e9) * 1e9 : ns);
    let line =
      '[GIN] ' + GIN_TIME(new Date(wallMs)) + ' | ' + this.statuses[i]! + ' | ' + (lat.length < 13 ? SPACES.slice(0, 13 - lat.length) + lat : lat) + ' | ' +
      (ip.length < 15 ? SPACES.slice(0, 15 - ip.length) + ip : ip) + ' | ' + (METHODS[method] ?? method.slice(0, 32).padEnd(7, ' ')) + '  ' + goQuote(this.target(i)) + '\n';
    if (errors !== null) line += errorLines(errors);
    return line;
  }

  /** The JSON line of slot `i` (`logstash`, `--log-format json`). */
  private jsonLine(i: number, ns: number, wallMs: number): string {
    const method = this.methods[i]!;
    const errors = this.errs[i]!;
    return `{"@timestamp":"${new Date(wallMs).toISOString()}","type":"access","status":${this.statuses[i]!},"latency_ns":${ns},"latency":"${goDuration(ns)}","client_ip":${JSON.stringify(this.ips[i]!)},"method":${METHODS[method] !== undefined ? `"${method}"` : JSON.stringify(method.slice(0, 32))},"path":${JSON.stringify(this.target(i))}${errors === null ? '' : `,"errors":${JSON.stringify(errors.slice(0, 5).map(describe))}`}}\n`;
  }

  /** Path and query; a very long one is cut (and says so), so that a line fits a batch. */
  private target(i: number): string {
    const query = this.queries[i]!;
    const full = query === '' ? this.paths[i]! : this.paths[i]! + '?' + query;
    return full.length > MAX_TARGET ? full.slice(0, MAX_TARGET) + '…(cut)' : full;
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
   * ones and the ring's lines, in order, synchronously; a full stdout is waited for up to 1 s.
   */
  flushSync(): void {
    const parts = [...(this.inflight !== null ? [this.inflight] : []), ...this.queue, ...this.format()];
    this.queue.length = 0;
    this.inflight = null;
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

/** No byte that gin's %#v would escape, and nothing beyond ASCII: written as it is. */
function plainAscii(s: string): boolean {
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return false;
  }
  return true;
}

/** `s` right-aligned in 13 characters, as gin's `%13v` of a duration (< 1 s here), into `buf`. */
export function writeLatency(buf: Buffer, off: number, ns: number): number {
  // Go's Duration.String for ns < 1 s: `950ns`, `4.529µs`, `5.8972ms` (trailing zeros dropped).
  let unit: number;
  let digits: number;
  let suffix: Buffer;
  if (ns < 1e3) {
    unit = 1;
    digits = 0;
    suffix = NS;
  } else if (ns < 1e6) {
    unit = 1e3;
    digits = 3;
    suffix = US;
  } else {
    unit = 1e6;
    digits = 6;
    suffix = MS;
  }
  const int = Math.floor(ns / unit);
  let rest = ns - int * unit;
  while (digits > 0 && rest % 10 === 0) {
    rest /= 10;
    digits--;
  }
  const intDigits = int < 10 ? 1 : int < 100 ? 2 : 3;
  // Characters (µ is one), as Go's width counts runes.
  const chars = ns === 0 ? 2 : intDigits + (digits > 0 ? digits + 1 : 0) + 2;
  for (let k = chars; k < 13; k++) buf[off++] = 32;
  if (ns === 0) {
    buf[off] = 48;
    buf[off + 1] = 115;
    return off + 2;
  }
  for (let k = intDigits - 1, v = int; k >= 0; k--, v = (v / 10) | 0) buf[off + k] = 48 + (v % 10);
  off += intDigits;
  if (digits > 0) {
    buf[off++] = 46;
    for (let k = digits - 1, v = rest; k >= 0; k--, v = Math.floor(v / 10)) buf[off + k] = 48 + (v % 10);
    off += digits;
  }
  return off + suffix.copy(buf, off);
}

const NS = Buffer.from('ns');
const US = Buffer.from('µs');
const MS = Buffer.from('ms');
const METHOD_BYTES: Record<string, Buffer> = {};
for (const m of Object.keys(METHODS)) METHOD_BYTES[m] = Buffer.from(METHODS[m] + '  "', 'latin1');

const SPACES = ' '.repeat(16);
/** Longest request target written (characters): with the rest of a line, ≤ 4 KiB even in 3-byte UTF-8. */
const MAX_TARGET = 1000;
/** Error text per `Error #NN` line, for the same reason. */
const MAX_ERROR = 200;

const SLEEP = new Int32Array(new SharedArrayBuffer(4));

/** A batch over PIPE_BUF cut at line ends into pieces that fit (every line fits: MAX_TARGET). */
function splitLines(b: Buffer, max: number): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  while (b.length - start > max) {
    const cut = b.lastIndexOf(10, start + max - 1);
    const end = cut < start ? start + max : cut + 1;
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
