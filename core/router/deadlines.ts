/**
 * Endpoint timeouts without a timer per request.
 *
 * Every request of an endpoint waits under the same `timeout`, so the order in which they start is
 * the order in which their deadlines fall: a FIFO list is already sorted. One DeadlineQueue per
 * endpoint keeps its waiting requests in an intrusive doubly linked list (the Exchange is the node:
 * adding and removing is a few pointer writes, nothing is allocated) and arms a single Node timer
 * for the head. When it fires, every request whose deadline passed expires, and the timer is armed
 * again for the new head. A request that ends before its deadline just leaves the list; the timer
 * it may have been armed for fires later, finds nothing due and re-arms.
 *
 * Precision is that of setTimeout (whole milliseconds, never early).
 */

export interface Timed {
  /** Epoch ms after which `expire()` runs; 0 while not queued. */
  deadline: number;
  tprev: Timed | null;
  tnext: Timed | null;
  expire(): void;
}

export class DeadlineQueue {
  private head: Timed | null = null;
  private tail: Timed | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly ms: number) {}

  /** Queues `x` to expire `ms` after `now`. */
  add(x: Timed, now: number): void {
    x.deadline = now + this.ms;
    x.tnext = null;
    const t = this.tail;
    x.tprev = t;
    if (t === null) this.head = x;
    else t.tnext = x;
    this.tail = x;
    if (this.timer === null) this.arm(x.deadline, now);
  }

  /** Takes `x` out of the queue (it ended, or its deadline stopped applying). */
  remove(x: Timed): void {
    if (x.deadline === 0) return;
    x.deadline = 0;
    const p = x.tprev;
    const n = x.tnext;
    if (p === null) this.head = n;
    else p.tnext = n;
    if (n === null) this.tail = p;
    else n.tprev = p;
    x.tprev = x.tnext = null;
  }

  private arm(deadline: number, now: number): void {
    // Unreferenced: the requests' own sockets keep the process alive, not their deadlines.
    this.timer = setTimeout(this.fire, Math.max(1, deadline - now)).unref();
  }

  private readonly fire = (): void => {
    this.timer = null;
    const now = Date.now();
    let x = this.head;
    while (x !== null && x.deadline <= now) {
      this.remove(x);
      try {
        x.expire();
      } catch {
        /* an exchange handles its own failures; one must never stop the others expiring */
      }
      x = this.head;
    }
    if (x !== null) this.arm(x.deadline, now);
  };

  /** Requests waiting (tests, shutdown). */
  get size(): number {
    let n = 0;
    for (let x = this.head; x !== null; x = x.tnext) n++;
    return n;
  }

  /** Stops the timer (the queue is dropped with its gateway). */
  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
