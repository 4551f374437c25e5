/**
 * A token bucket (KrakenD's krakend-ratelimit: `max_rate` tokens per `every`, up to `capacity`,
 * starting full). Refilled lazily from the clock on each use, so an idle bucket costs nothing and a
 * full one is the same as no bucket at all (which is what lets the sweepers drop it).
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    /** Tokens per millisecond. */
    readonly perMs: number,
    readonly capacity: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.last = now;
  }

  private refill(now: number): void {
    if (now > this.last) {
      const t = this.tokens + (now - this.last) * this.perMs;
      this.tokens = t < this.capacity ? t : this.capacity;
      this.last = now;
    }
  }

  /** Takes up to `n` whole tokens; returns how many it took (0 when empty). */
  take(n: number, now: number): number {
    this.refill(now);
    const have = Math.floor(this.tokens);
    const g = n < have ? n : have;
    if (g > 0) this.tokens -= g;
    return g;
  }

  /** Puts back `n` tokens taken earlier and not used (never above capacity). */
  give(n: number, now: number): void {
    this.refill(now);
    const t = this.tokens + n;
    this.tokens = t < this.capacity ? t : this.capacity;
  }

  /** Milliseconds until one whole token is there (0 when one is). */
  waitMs(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? 0 : Math.ceil((1 - this.tokens) / this.perMs);
  }

  /** True when full: dropping the bucket changes nothing. */
  full(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.capacity;
  }
}
