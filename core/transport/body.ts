/**
 * UpstreamBody: the body of a backend response while it is still on the backend socket.
 *
 * It is fed by undici's dispatch handler (push/end/fail) and drained by exactly one consumer:
 *  - `pipe(sink)`: the zero-copy path. Every chunk undici hands us goes straight to the sink
 *    (the uWS response); when the sink reports backpressure, the undici controller is paused and
 *    resumed by `sink` through `resume()`. Nothing is buffered beyond what undici already holds.
 *  - `bytes()/text()/json()`: buffered, for decoding encodings (json, string, ...).
 *  - async iteration / `stream()`: for plugins that want to look at the bytes.
 * Until a consumer attaches, the controller is paused and early chunks are queued (at most what
 * one socket read delivered).
 */
import { Readable } from 'node:stream';
import type { ResponseBody } from '../plugin/types.js';

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

const DUMP_LIMIT = 256 * 1024;

export class UpstreamBody implements ResponseBody {
  private queue: Buffer[] | null = null;
  private ended = false;
  private failed: Error | null = null;
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
    if (sink !== null) {
      if (!sink.write(chunk)) this.flow.pause();
      return;
    }
    (this.queue ??= []).push(chunk);
    this.flow.pause();
  }

  end(): void {
    this.ended = true;
    if (this.sink !== null) this.sink.end();
  }

  fail(err: Error): void {
    if (this.ended || this.failed) return;
    this.failed = err;
    if (this.sink !== null) this.sink.error(err);
  }

  // ---- consumer side ----

  /** The zero-copy path: hands chunks to `sink` as they arrive. */
  pipe(sink: BodySink): void {
    this.claim();
    this.sink = sink;
    const q = this.queue;
    this.queue = null;
    if (q !== null) {
      for (let i = 0; i < q.length; i++) {
        if (!sink.write(q[i]!)) {
          // Remaining queued chunks must wait for the sink: re-queue them behind a pause.
          const rest = q.slice(i + 1);
          if (rest.length) this.requeue(rest);
          return;
        }
      }
    }
    if (this.failed) sink.error(this.failed);
    else if (this.ended) sink.end();
    else this.flow.resume();
  }

  private pending: Buffer[] | null = null;

  private requeue(rest: Buffer[]): void {
    this.pending = rest;
  }

  /** Called by the sink when it can take more. */
  resume(): void {
    const p = this.pending;
    const sink = this.sink;
    if (p !== null && sink !== null) {
      this.pending = null;
      for (let i = 0; i < p.length; i++) {
        if (!sink.write(p[i]!)) {
          const rest = p.slice(i + 1);
          if (rest.length) this.pending = rest;
          return;
        }
      }
      if (this.failed) return sink.error(this.failed);
      if (this.ended) return sink.end();
    }
    this.flow.resume();
  }

  /** Stops the transfer (client left, timeout). */
  abort(reason: Error): void {
    if (this.ended) return;
    this.failed ??= reason;
    this.flow.abort(reason);
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

  dump(): void {
    if (this.consumed) return;
    if (this.length > DUMP_LIMIT || this.received > DUMP_LIMIT) {
      this.consumed = true;
      this.abort(new Error('response body discarded'));
      return;
    }
    let size = 0;
    const body = this;
    this.pipe({
      write(chunk) {
        size += chunk.length;
        if (size > DUMP_LIMIT) body.abort(new Error('response body discarded'));
        return true;
      },
      end() {},
      error() {},
    });
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
