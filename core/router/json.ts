/**
 * JSON as KrakenD writes it (Go's encoding/json over maps): object keys sorted, `<`, `>`, `&`,
 * U+2028 and U+2029 escaped. Objects whose keys are already in order (the usual case for Go
 * backends) are not copied.
 */
const HTML_UNSAFE = /[<>&\u2028\u2029]/g;
const ESCAPES: Record<string, string> = {
  '<': '\\u003c',
  '>': '\\u003e',
  '&': '\\u0026',
  '\u2028': '\\u2028',
  '\u2029': '\\u2029',
};

function sorted(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) {
    let copy: unknown[] | null = null;
    for (let i = 0; i < v.length; i++) {
      const s = sorted(v[i]);
      if (s !== v[i]) (copy ??= v.slice())[i] = s;
    }
    return copy ?? v;
  }
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  let inOrder = true;
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1]! > keys[i]!) {
      inOrder = false;
      break;
    }
  }
  let changed = !inOrder;
  const vals: unknown[] = new Array(keys.length);
  for (let i = 0; i < keys.length; i++) {
    const val = o[keys[i]!];
    const s = sorted(val);
    vals[i] = s;
    if (s !== val) changed = true;
  }
  if (!changed) return o;
  const order = inOrder ? keys.map((_, i) => i) : keys.map((_, i) => i).sort((a, b) => (keys[a]! < keys[b]! ? -1 : keys[a]! > keys[b]! ? 1 : 0));
  const out: Record<string, unknown> = {};
  for (const i of order) {
    const k = keys[i]!;
    if (k === '__proto__') Object.defineProperty(out, k, { value: vals[i], enumerable: true, writable: true, configurable: true });
    else out[k] = vals[i];
  }
  return out;
}

/** True when every object in `v` already has its keys in Go's order (no copy needed). */
function isSorted(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return true;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (!isSorted(v[i])) return false;
    return true;
  }
  let prev: string | null = null;
  const o = v as Record<string, unknown>;
  for (const k in o) {
    if (prev !== null && prev > k) return false;
    prev = k;
    if (!isSorted(o[k])) return false;
  }
  return true;
}

/** Every key of every object in `v` into `keys`; returns how many objects it holds. */
function collectKeys(v: unknown, keys: Set<string>): number {
  if (typeof v !== 'object' || v === null) return 0;
  let n = 0;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) n += collectKeys(v[i], keys);
    return n;
  }
  const o = v as Record<string, unknown>;
  for (const k in o) {
    keys.add(k);
    n += collectKeys(o[k], keys);
  }
  return n + 1;
}

/**
 * Past this many (objects × distinct keys), a property list makes JSON.stringify look up too many
 * absent keys (a large document with many different keys): the objects are copied in order instead.
 */
const LIST_BUDGET = 200_000;

export function goJson(v: unknown): string {
  let s: string | undefined;
  // isSorted: integer-like keys ("9" before "10", V8's enumeration order) count as out of order.
  if (isSorted(v)) s = JSON.stringify(v);
  else {
    const keys = new Set<string>();
    const objects = collectKeys(v, keys);
    if (keys.size * objects <= LIST_BUDGET && !keys.has('__proto__')) {
      // JSON.stringify with a property list writes every object's keys in the list's order,
      // skipping those it lacks: sorted once, the list is Go's map order for the whole document,
      // and no object is copied. (A listed key is read with [[Get]], so only `__proto__` could come
      // from the prototype, hence the exception; inherited methods are functions, which JSON skips.)
      s = JSON.stringify(v, [...keys].sort());
    } else {
      s = JSON.stringify(sorted(v));
    }
  }
  s ??= 'null';
  HTML_UNSAFE.lastIndex = 0;
  return HTML_UNSAFE.test(s) ? s.replace(HTML_UNSAFE, (c) => ESCAPES[c]!) : s;
}
