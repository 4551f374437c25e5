/**
 * `qos/circuit-breaker` (backend; KrakenD's krakend-circuitbreaker over sony/gobreaker v2): a
 * per-backend state machine, one per worker process.
 *
 *   closed ──(consecutive failures > max_errors)──► open ──(timeout s)──► half-open
 *   half-open ──(the probe succeeds)──► closed      half-open ──(the probe fails)──► open
 *
 * As gobreaker: counts reset every `interval` seconds in the closed state (0: never) and at every
 * state change; calls that started before a reset or a state change do not count (generations);
 * open → half-open happens lazily, when the next call asks; half-open lets MaxRequests = 1 call
 * through (the others fail with `too many requests`); `timeout` 0 means gobreaker's 60 s.
 * A cancelled call (the client went away, a concurrent call that lost) counts neither way, as
 * KrakenD's `IsExcluded(context.Canceled)`; in half-open it gives its probe slot back, or the
 * breaker would wait forever for an outcome that never comes.
 *
 * Pure logic: the clock is injected (`now()` in ms) and nothing here knows about HTTP.
 */
export const BREAKER_NS = 'qos/circuit-breaker';

export type BreakerState = 'closed' | 'half-open' | 'open';

/** gobreaker's ErrOpenState text. */
export const OPEN_STATE = 'circuit breaker is open';
/** gobreaker's ErrTooManyRequests text. */
export const TOO_MANY_REQUESTS = 'too many requests';

/** A call refused by the breaker (nothing was sent). */
export class BreakerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BreakerError';
  }
}

export interface BreakerConfig {
  readonly name: string;
  /** Closed-state window after which the counts reset, ms (0: never). */
  readonly intervalMs: number;
  /** Open-state duration before a half-open probe, ms (> 0). */
  readonly timeoutMs: number;
  /** Trips when consecutive failures exceed this. */
  readonly maxErrors: number;
  readonly logStatusChange: boolean;
}

/** gobreaker's default when `timeout` is 0 or absent. */
const DEFAULT_TIMEOUT_MS = 60_000;
/** gobreaker's MaxRequests 0 → 1: one probe in half-open; one success closes it. */
const MAX_REQUESTS = 1;

const KEYS = new Set(['name', 'interval', 'timeout', 'max_errors', 'log_status_change']);

/**
 * Validates and reads `extra_config["qos/circuit-breaker"]`; null when absent or when every
 * value is zero/empty — KrakenD then installs no breaker at all (its ZeroCfg check), so neither
 * does gw. `where` names the place in start-up errors. Throws on a bad value.
 */
export function parseBreakerConfig(raw: unknown, where: string): BreakerConfig | null {
  if (raw === undefined) return null;
  const ns = `"${BREAKER_NS}"`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where}: ${ns} must be an object`);
  const c = raw as Record<string, unknown>;
  const int = (key: string): number => {
    const v = c[key];
    if (v === undefined) return 0;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw new Error(`${where}: ${ns} ${key} must be a non-negative integer${key === 'max_errors' ? '' : ' (seconds)'}, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const interval = int('interval');
  const timeout = int('timeout');
  const maxErrors = int('max_errors');
  const name = c.name ?? '';
  if (typeof name !== 'string') throw new Error(`${where}: ${ns} name must be a string, got ${JSON.stringify(name)}`);
  const log = c.log_status_change ?? false;
  if (typeof log !== 'boolean') throw new Error(`${where}: ${ns} log_status_change must be a boolean, got ${JSON.stringify(log)}`);
  for (const k of Object.keys(c)) {
    if (!KEYS.has(k) && !/^[@$_#]/.test(k)) throw new Error(`${where}: ${ns} has an unknown key "${k}" (known: ${[...KEYS].join(', ')})`);
  }
  if (interval === 0 && timeout === 0 && maxErrors === 0 && name === '' && !log) return null;
  return {
    name,
    intervalMs: interval * 1000,
    timeoutMs: timeout > 0 ? timeout * 1000 : DEFAULT_TIMEOUT_MS,
    maxErrors,
    logStatusChange: log,
  };
}

/** How a call ended, for {@link CircuitBreaker.after}. */
export const SUCCESS = 0;
export const FAILURE = 1;
/** Cancelled by the caller: counts neither way. */
export const EXCLUDED = 2;
export type Outcome = typeof SUCCESS | typeof FAILURE | typeof EXCLUDED;

export class CircuitBreaker {
  private state: BreakerState = 'closed';
  private generation = 0;
  /** Calls let through in this generation (gobreaker's Counts.Requests). */
  private requests = 0;
  private consecutiveFailures = 0;
  private consecutiveSuccesses = 0;
  /** When the current state's window ends (ms); 0: never (closed without interval, half-open). */
  private expiry = 0;

  constructor(
    readonly config: BreakerConfig,
    private readonly onStateChange: ((name: string, from: BreakerState, to: BreakerState) => void) | null = null,
    private readonly now: () => number = Date.now,
  ) {
    this.newGeneration(this.now());
  }

  /** The state now (open turns half-open once its timeout passed). */
  current(): BreakerState {
    this.advance(this.now());
    return this.state;
  }

  /**
   * Asks to start a call: its generation (pass it to {@link after}), or the refusal — the call
   * must then not be made.
   */
  before(): number | BreakerError {
    this.advance(this.now());
    if (this.state === 'open') return new BreakerError(OPEN_STATE);
    if (this.state === 'half-open' && this.requests >= MAX_REQUESTS) return new BreakerError(TOO_MANY_REQUESTS);
    this.requests++;
    return this.generation;
  }

  /** Records how a call that {@link before} let through ended. */
  after(generation: number, outcome: Outcome): void {
    const now = this.now();
    this.advance(now);
    if (generation !== this.generation) return;
    if (outcome === EXCLUDED) {
      if (this.state === 'half-open') this.requests--;
      return;
    }
    if (outcome === SUCCESS) {
      this.consecutiveFailures = 0;
      this.consecutiveSuccesses++;
      if (this.state === 'half-open' && this.consecutiveSuccesses >= MAX_REQUESTS) this.setState('closed', now);
      return;
    }
    this.consecutiveSuccesses = 0;
    this.consecutiveFailures++;
    if (this.state === 'closed') {
      if (this.consecutiveFailures > this.config.maxErrors) this.setState('open', now);
    } else if (this.state === 'half-open') {
      this.setState('open', now);
    }
  }

  private advance(now: number): void {
    if (this.state === 'closed') {
      if (this.expiry !== 0 && this.expiry < now) this.newGeneration(now);
    } else if (this.state === 'open') {
      if (this.expiry < now) this.setState('half-open', now);
    }
  }

  private setState(to: BreakerState, now: number): void {
    const from = this.state;
    if (from === to) return;
    this.state = to;
    this.newGeneration(now);
    this.onStateChange?.(this.config.name, from, to);
  }

  private newGeneration(now: number): void {
    this.generation++;
    this.requests = 0;
    this.consecutiveFailures = 0;
    this.consecutiveSuccesses = 0;
    const s = this.state;
    if (s === 'closed') this.expiry = this.config.intervalMs === 0 ? 0 : now + this.config.intervalMs;
    else if (s === 'open') this.expiry = now + this.config.timeoutMs;
    else this.expiry = 0;
  }
}
