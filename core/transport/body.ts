/**
 * UpstreamBody: the body of a backend response while it is still on the backend socket.
 *
 * It is fed by undici's dispatch handler (push/end/fail) and drained by exactly one consumer:
 *  - `pipe(sink)`: the zero-copy path. Every chunk undici hands us goes straight to the sink
 *    (the uWS response); when the sink reports backpressure, the undici controller is paused and
 *    resumed by `sink` through `resume()`. Nothing is buffered beyond what undici already holds.
 *  - `bytes()/text()/json()`: buffered, for decoding encodings (json, string, ...).
 *  - async iteration / `stream()`: for plugins that want to look at the bytes.
 * Until a consumer attaches, early chunks are queued; past QUEUE_BYTES the controller is paused,
 * so a consumer that comes late (a plugin, a decoding call a promise turn later) costs no parser
 * pause and resume for a body that came in with its head, and never more than that much memory.
 */
import { Readable } from 'node:stream';
import type { ResponseBody } from '../plugin/types.js';
import { CanceledError } from '../proxy/types.js';

export interface BodySink {
  /** Returns false when the sink is full; it then calls `body.resume()` once it drained. */
  write(chunk: Buffer): boolean;
  end(): void;
  error(err: Error): void;
}

export interface FlowControl {
  pause(): void;
  resume(): void;
  abort(reason: Error): void;
}

/** Bytes queued before a consumer attaches, beyond which the backend socket is paused. */
const QUEUE_BYTES = 64 * 1024;

/** A discarded body longer than this is not read: its connection is closed instead. */
const DUMP_LIMIT = 256 * 1024;
/**
 * How long a discarded body may take to arrive. Draining only serves to reuse the connection
 * (the client was answered already), and `bodyTimeout` is an idle timer a trickling backend never
 * trips: past this, the connection is closed rather than pinned. A fixed bound, not the request's
 * remaining time: the streamed path has none left to give (its timer stops at the headers), and a
 * reconnect costs less than a connection held for seconds. Go closes such a connection at once.
 */
const DUMP_MS = 1000;

const EMPTY = Buffer.alloc(0);

export class UpstreamBody implements ResponseBody {
  /** Chunks that arrived before a consumer attached, or that the sink could not take yet. */
  private queue: Buffer[] | null = null;
  private ended = false;
  private failed: Error | null = null;
  /** The sink was told the outcome (end or error); nothing more goes to it. */
  private settled = false;
  private sink: BodySink | null = null;
  private consumed = false;
  private received = 0;

  constructor(
    private readonly flow: FlowControl,
    /** Value of the backend's Content-Length, or -1. */
    readonly length: number,
  ) {}

  // ---- producer side (undici handler) ----

  push(chunk: Buffer): void {
    this.received += chunk.length;
    const sink = this.sink;
    if (sink !== null && this.queue === null && !this.settled) {
      if (!sink.write(chunk)) this.flow.pause();
      return;
    }
    (this.queue ??= []).push(chunk);
    // Waiting for a consumer: pause only past the bound (a small body is already all here).
    if (sink !== null || this.received > QUEUE_BYTES) this.flow.pause();
  }

  end(): void {
    if (this.ended || this.failed !== null) return;
    this.ended = true;
    this.settle();
  }

  fail(err: Error): void {
    if (this.ended) return;
    this.failed ??= err;
    this.settle();
  }

  /** Tells the sink the outcome once every queued chunk went out. */
  private settle(): void {
    const sink = this.sink;
    if (sink === null || this.settled || this.queue !== null) return;
    if (this.failed !== null) {
      this.settled = true;
      sink.error(this.failed);
    } else if (this.ended) {
      this.settled = true;
      sink.end();
    }
  }

  // ---- consumer side ----

  /** The zero-copy path: hands chunks to `sink` as they arrive. */
  pipe(sink: BodySink): void {
    this.claim();
    this.sink = sink;
    this.drain();
  }

  /** Writes queued chunks until the sink is full; then settles or resumes the producer. */
  private drain(): void {
    const sink = this.sink!;
    const q = this.queue;
    if (q !== null) {
      while (q.length > 0) {
        if (this.settled) return;
        if (!sink.write(q.shift()!)) {
          if (q.length === 0) this.queue = null;
          // Settle (or resume the producer) when the sink calls resume().
          return;
        }
      }
      this.queue = null;
    }
    if (this.failed !== null || this.ended) this.settle();
    else this.flow.resume();
  }

  /** Called by the sink when it can take more. */
  resume(): void {
    if (this.sink === null || this.settled) return;
    this.drain();
  }

  /** Stops the transfer (client left, timeout, size limit). The consumer, if any, gets `reason`. */
  abort(reason: Error): void {
    if (this.ended) return;
    this.failed ??= reason;
    this.queue = null;
    this.flow.abort(reason);
    this.settle();
  }

  /**
   * The whole body at once when it has all arrived (≤ `limit` bytes) and nobody read it yet, else
   * null (then read it with bytes()). Small answers usually have by the time their head is handled.
   */
  takeWhole(limit: number): Buffer | null {
    if (!this.ended || this.consumed || this.failed !== null || this.received > limit) return null;
    this.consumed = true;
    this.settled = true;
    const q = this.queue;
    this.queue = null;
    if (q === null) return EMPTY;
    return q.length === 1 ? q[0]! : Buffer.concat(q, this.received);
  }

  bytes(limit = Infinity): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const body = this;
      this.pipe({
        write(chunk) {
          size += chunk.length;
          if (size > limit) {
            body.abort(new Error(`response body larger than ${limit} bytes`));
            return true;
          }
          chunks.push(chunk);
          return true;
        },
        end() {
          resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
        },
        error: reject,
      });
    });
  }

  async text(): Promise<string> {
    return (await this.bytes()).toString('utf8');
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  /** Discards the body: read to its end when short and prompt (the connection is reused), else the exchange is aborted. */
  dump(): void {
    if (this.consumed) return;
    if (this.length > DUMP_LIMIT || this.received > DUMP_LIMIT) {
      this.consumed = true;
      this.abort(new Error('response body discarded'));
      return;
    }
    let size = 0;
    let timer: NodeJS.Timeout | null = null;
    const body = this;
    const done = () => {
      if (timer !== null) clearTimeout(timer);
    };
    this.pipe({
      write(chunk) {
        size += chunk.length;
        if (size > DUMP_LIMIT) body.abort(new Error('response body discarded'));
        return true;
      },
      end: done,
      error: done,
    });
    if (!this.settled) {
      timer = setTimeout(() => body.abort(new Error(`response body discarded: not complete within ${DUMP_MS} ms`)), DUMP_MS);
      timer.unref();
    }
  }

  stream(): Readable {
    let body: UpstreamBody;
    const readable = new Readable({
      read() {
        body.resume();
      },
      destroy(err, cb) {
        if (!body.ended) body.abort(err ?? new Error('response body stream destroyed'));
        cb(err);
      },
    });
    body = this;
    this.pipe({
      write(chunk) {
        return readable.push(chunk);
      },
      end() {
        readable.push(null);
      },
      error(err) {
        readable.destroy(err);
      },
    });
    return readable;
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return this.stream()[Symbol.asyncIterator]();
  }

  private claim(): void {
    if (this.consumed) throw new Error('the response body was already consumed');
    this.consumed = true;
  }
}

/** True for gw's own streamed bodies, which can take the zero-copy path. */
export function isUpstreamBody(b: unknown): b is UpstreamBody {
  return b instanceof UpstreamBody;
}

/** A backend body nobody will read: a gw stream is aborted, a plugin's Readable destroyed. */
export function releaseBody(b: unknown): void {
  if (isUpstreamBody(b)) b.abort(new CanceledError());
  else if (b instanceof Readable) b.destroy();
}
