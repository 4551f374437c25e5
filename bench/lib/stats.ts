/** Small statistics helpers over latency samples (any unit). */

export interface Summary {
  samples: number;
  mean: number;
  p50: number;
  p99: number;
  min: number;
  max: number;
}

/** Linear-interpolated quantile of an ascending array. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function summarise(samples: readonly number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  let sum = 0;
  for (const v of s) sum += v;
  return {
    samples: s.length,
    mean: s.length ? sum / s.length : NaN,
    p50: quantile(s, 0.5),
    p99: quantile(s, 0.99),
    min: s[0] ?? NaN,
    max: s[s.length - 1] ?? NaN,
  };
}

/** Rounds to a few significant digits for the JSON output. */
export function sig(v: number, digits = 4): number {
  if (!Number.isFinite(v) || v === 0) return v;
  return Number(v.toPrecision(digits));
}
