/**
 * Writing a streamed body to a uWS response with backpressure both ways.
 *
 * Known length (backend Content-Length): `tryEnd(chunk, total)`; when it reports not-ok the
 * unsent tail is retried from `onWritable` using write offsets, and the source stays paused.
 * Unknown length: `write(chunk)` (chunked to the client); false means uWS buffered it and we
 * wait for `onWritable` before asking the source for more. Every write is corked, since chunks
 * arrive from undici's socket callbacks, outside uWS's own.
 */
import type { HttpResponse } from './uws.js';
import type { BodySink } from '../transport/body.js';

export interface Resumable {
  resume(): void;
}

export interface StreamOwner {
  /** The client connection is gone; never touch `res` again. */
  readonly aborted: boolean;
  /** Writes status and headers; called inside the cork of the first body write, so a small
   *  response leaves in one send. */
  writeHead(): void;
  /** The body failed before anything was written: the owner can still answer (500). */
  failBeforeHead(err: Error): void;
  /** A chunked answer is complete: true when the owner calls `end` itself, later. */
  holdEnd(end: () => void): boolean;
  /** Called once when the body was fully written, or failed. */
  streamDone(err: Error | null): void;
}

export class ClientSink implements BodySink {
  source: Resumable | null = null;
  private pending: Buffer | null = null;
  private pendingOffset = 0;
  private finished = false;
  private waiting = false;
  private ok = true;
  private chunk: Buffer | null = null;
  private headDone = false;
  /** Body bytes handed to uWS (the metrics' response size when no length was announced). */
  sent = 0;

  constructor(
    private readonly res: HttpResponse,
    private readonly owner: StreamOwner,
    /** Total body length, or -1 for chunked. */
    private readonly total: number,
  ) {
    res.onWritable((offset) => this.onWritable(offset));
  }

  private readonly corkedWrite = (): void => {
    const res = this.res;
    const chunk = this.chunk!;
    if (!this.headDone) {
      this.headDone = true;
      this.owner.writeHead();
    }
    if (this.total >= 0) {
      const offset = res.getWriteOffset();
      const [ok, done] = res.tryEnd(chunk, this.total);
      if (done) this.finish(null);
      else if (!ok) {
        this.pending = chunk;
        this.pendingOffset = offset;
      }
      this.ok = ok || done;
    } else {
      this.ok = res.write(chunk);
    }
  };

  /** Finished, failed or the client left: a producer should stop. */
  get closed(): boolean {
    return this.finished || this.owner.aborted;
  }

  write(chunk: Buffer): boolean {
    // An empty chunk is nothing to send, and uWS 20.57's tryEnd('') reports the response done
    // (hasResponded) while only part of the announced length went out.
    if (this.finished || this.owner.aborted || chunk.length === 0) return true;
    this.sent += chunk.length;
    this.chunk = chunk;
    this.res.cork(this.corkedWrite);
    this.chunk = null;
    if (!this.ok) this.waiting = true;
    return this.ok;
  }

  private onWritable(offset: number): boolean {
    if (this.finished || this.owner.aborted) return true;
    const p = this.pending;
    if (p !== null) {
      const [ok, done] = this.res.tryEnd(p.subarray(offset - this.pendingOffset), this.total);
      if (done) {
        this.pending = null;
        this.finish(null);
        return true;
      }
      if (!ok) return false;
      this.pending = null;
    }
    if (this.waiting) {
      this.waiting = false;
      this.source?.resume();
    }
    return true;
  }

  end(): void {
    if (this.finished || this.owner.aborted) return;
    if (this.total <= 0) {
      if (!this.owner.holdEnd(this.endNow)) this.endNow();
    } else if (this.pending === null) {
      // Fewer bytes than announced: the client must not take a short body as complete.
      this.fail(new Error('backend body shorter than its Content-Length'));
    }
    // else: the last chunk is still being flushed; onWritable finishes.
  }

  /** Ends a chunked (or empty) answer. */
  private readonly endNow = (): void => {
    if (this.finished || this.owner.aborted) return;
    this.res.cork(() => {
      if (!this.headDone) {
        this.headDone = true;
        this.owner.writeHead();
      }
      this.res.end();
    });
    this.finish(null);
  };

  error(err: Error): void {
    this.fail(err);
  }

  private fail(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    if (!this.headDone && !this.owner.aborted) {
      // Nothing was sent yet: the client gets a proper error answer instead of a cut connection.
      this.owner.failBeforeHead(err);
      return;
    }
    // Headers are already out: closing the connection is the only honest signal. Report first:
    // close() fires onAborted synchronously.
    const aborted = this.owner.aborted;
    this.owner.streamDone(err);
    if (!aborted) this.res.close();
  }

  private finish(err: Error | null): void {
    if (this.finished) return;
    this.finished = true;
    this.owner.streamDone(err);
  }
}

/** Adapts a Node Readable / async iterable (a plugin's own stream) to a sink, with backpressure. */
export async function pumpIterable(src: AsyncIterable<Uint8Array>, sink: ClientSink): Promise<void> {
  let wake: (() => void) | null = null;
  sink.source = {
    resume() {
      const w = wake;
      wake = null;
      w?.();
    },
  };
  try {
    for await (const c of src as AsyncIterable<Uint8Array | string>) {
      // Leaving the loop calls the iterator's return(): a generator stops, a Readable is destroyed.
      if (sink.closed) return;
      const buf = typeof c === 'string' ? Buffer.from(c) : Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      if (!sink.write(buf)) await new Promise<void>((r) => (wake = r));
      if (sink.closed) return;
    }
    sink.end();
  } catch (err) {
    sink.error(err as Error);
  }
}
