/**
 * Answering a client that is still uploading: a 413 once the body passed its cap mid-upload, and
 * any answer gw writes itself before the upload ended (a guard's refusal, a failed call's error;
 * exchange.ts `endOwn`).
 *
 * uWS ends a `closeConnection` answer with FIN and an immediate close(). With upload bytes still
 * unread in the kernel that close() sends RST, and a client busy writing its body can lose the
 * answer it had not read yet: it sees EPIPE / "connection reset" instead of the 413. Go's server
 * (KrakenD's) closes its write side and waits 500 ms before closing for this reason; nginx lingers.
 * uWS can neither close after a finished answer nor close cleanly after a chunked one, so:
 *
 *  1. HOLD: nothing is written yet; the rest of the upload is read and dropped (no copy). If it
 *     ends, or the client goes quiet for QUIET_MS (it sent what it had and waits), the whole answer
 *     goes out with a close — nothing is left unread, so the close is a clean FIN.
 *  2. SENT: data still flowing after HOLD_MS — a client writing faster than it reads. The answer
 *     is written now but not finished (chunked, `Connection: close`) so the client can read it
 *     while gw keeps dropping its upload; an upload that ends within LINGER_MS gets the last chunk
 *     (a whole answer), else the connection is cut then.
 *
 * One interval timer per lingering connection; nothing here runs for other requests.
 */
import type { HttpResponse, RecognizedString } from './uws.js';

const TICK_MS = 10;
/** No upload data for this long: the client is waiting for the answer. */
const QUIET_MS = 20;
/** Upload still flowing this long after the cap: answer while it flows. */
const HOLD_MS = 100;
/** How long a client still writing has to read the answer before the connection is cut (Go: 500 ms). */
export const LINGER_MS = 500;

const HOLD = 0;
const SENT = 1;
const DONE = 2;

export class Linger {
  private phase = HOLD;
  private since = Date.now();
  private last = this.since;
  private readonly timer: NodeJS.Timeout;

  /** `head` writes the status line and headers (inside a cork); `body` is the answer's body. */
  constructor(
    private readonly res: HttpResponse,
    private readonly head: (res: HttpResponse) => void,
    private readonly body: RecognizedString,
  ) {
    this.timer = setInterval(tick, TICK_MS, this);
  }

  /** uWS onData, after the cap: the rest of the upload is dropped. */
  feed(_ab: ArrayBuffer, isLast: boolean): void {
    if (this.phase === DONE) return;
    if (isLast) {
      const res = this.res;
      if (this.phase === HOLD) res.cork(() => this.whole());
      else res.cork(() => res.end('', false)); // the client was told to close
      this.stop();
    } else {
      this.last = Date.now();
    }
  }

  /** Every TICK_MS: quiet → whole answer; still flowing → answer now; lingered enough → cut. */
  check(): void {
    if (this.phase === DONE) return;
    const now = Date.now();
    const res = this.res;
    if (this.phase === HOLD) {
      if (now - this.last >= QUIET_MS) {
        res.cork(() => this.whole());
        this.stop();
      } else if (now - this.since >= HOLD_MS) {
        res.cork(() => {
          this.head(res);
          res.writeHeader('Connection', 'close');
          res.write(this.body);
        });
        this.phase = SENT;
        this.since = now;
      }
    } else if (now - this.since >= LINGER_MS) {
      this.stop();
      try {
        res.close();
      } catch {
        /* already gone */
      }
    }
  }

  /** uWS onAborted: the client left. */
  gone(): void {
    this.stop();
  }

  private whole(): void {
    this.head(this.res);
    this.res.end(this.body, true);
  }

  private stop(): void {
    this.phase = DONE;
    clearInterval(this.timer);
  }
}

function tick(l: Linger): void {
  l.check();
}
