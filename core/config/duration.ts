/**
 * Go `time.ParseDuration` semantics, in milliseconds: "300ms", "2s", "1m30s", "1.5h", "100us".
 * KrakenD turns a value that does not parse into 0 ("use the default"), so does `parseDuration`;
 * `isDuration` lets the schema report the bad value instead.
 */
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  'µs': 1e-3,
  'μs': 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

const PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/** Returns the duration in ms, or `undefined` when `s` is not a Go duration. */
export function tryParseDuration(s: string): number | undefined {
  if (typeof s !== 'string' || s.length === 0) return undefined;
  let i = 0;
  let sign = 1;
  if (s[0] === '-' || s[0] === '+') {
    sign = s[0] === '-' ? -1 : 1;
    i = 1;
  }
  if (s.slice(i) === '0') return 0;
  let total = 0;
  let parts = 0;
  PART.lastIndex = i;
  while (PART.lastIndex < s.length) {
    const m = PART.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    parts++;
  }
  return parts === 0 ? undefined : sign * total;
}

export function parseDuration(v: unknown): number {
  if (typeof v === 'number' && Number.isFinite(v)) return v / 1e6; // Go: a bare number is nanoseconds
  if (typeof v !== 'string') return 0;
  return tryParseDuration(v) ?? 0;
}

export function isDuration(v: unknown): boolean {
  return typeof v === 'string' ? tryParseDuration(v) !== undefined : typeof v === 'number';
}

/** Formats ms like Go's Duration.String() for the common cases ("3s", "1m30s", "150ms"). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000) return `${ms}ms`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = (ms % 60_000) / 1000;
  return `${h ? `${h}h` : ''}${h || m ? `${m}m` : ''}${s}s`;
}
