/**
 * JSON as KrakenD writes it (Go's encoding/json over maps): object keys sorted, `<`, `>`, `&`,
 * U+2028 and U+2029 escaped. Output is byte-identical to JSON.stringify over the same data with
 * every object's keys sorted as JS strings.
 *
 * The hot case (plain objects and arrays, as JSON.parse and the merge build them) is written by a
 * small serializer that sorts each object shape's keys once: JSON.parse interns keys, so objects of
 * one shape (the 9 items of a list, the same backend answer request after request) find their
 * sorted order and pre-quoted `"key":` prefixes in a shape cache after comparing their
 * Object.keys by identity. About as fast as a plain JSON.stringify, where the property-list form
 * below costs 2.5× (V8's slow path). Anything else (toJSON, class instances, boxed primitives,
 * nesting deeper than MAX_FAST_DEPTH) goes to the general path for that subtree.
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

interface Shape {
  /** Object.keys of the objects this entry serves, in their own order. */
  readonly keys: string[];
  /** The same keys sorted. */
  readonly order: string[];
  /** `"key":` for order[i]: first written. */
  readonly first: string[];
  /** `,"key":` for order[i]: written after another member. */
  readonly next: string[];
}

/** Shapes by first key; bounded (cleared when full), and wide objects are never cached. */
const shapes = new Map<string, Shape>();
const MAX_SHAPES = 512;
const MAX_CACHED_KEYS = 64;
/** Deeper than this, a subtree goes to the general path (which detects cycles, and throws RangeError on absurd depth). */
const MAX_FAST_DEPTH = 64;
/**
 * A string JSON.stringify would escape (quote, backslash, control char, any surrogate: lone ones
 * are escaped) or Go would (`<>&`, U+2028/9).
 */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff<>&\u2028\u2029]/;

function htmlSafe(s: string): string {
  HTML_UNSAFE.lastIndex = 0;
  return HTML_UNSAFE.test(s) ? s.replace(HTML_UNSAFE, (c) => ESCAPES[c]!) : s;
}

function makeShape(keys: string[]): Shape {
  const order = keys.slice().sort();
  const first = order.map((k) => htmlSafe(JSON.stringify(k)) + ':');
  return { keys, order, first, next: first.map((q) => ',' + q) };
}

function shapeOf(keys: string[]): Shape {
  const n = keys.length;
  if (n > MAX_CACHED_KEYS) return makeShape(keys);
  const k0 = keys[0]!;
  let e = shapes.get(k0);
  if (e !== undefined && e.keys.length === n) {
    const ek = e.keys;
    let i = 1;
    while (i < n && ek[i] === keys[i]) i++;
    if (i === n) return e;
  }
  e = makeShape(keys);
  if (shapes.size >= MAX_SHAPES) shapes.clear();
  shapes.set(k0, e);
  return e;
}

const objectProto = Object.prototype;

/** JSON text of `v` (HTML-safe), or undefined where JSON.stringify gives undefined (functions, symbols, undefined). */
function write(v: unknown, depth: number): string | undefined {
  switch (typeof v) {
    case 'string':
      return NEEDS_ESCAPE.test(v) ? htmlSafe(JSON.stringify(v)) : '"' + v + '"';
    case 'number':
      return Number.isFinite(v) ? '' + v : 'null';
    case 'boolean':
      return v ? 'true' : 'false';
    case 'object': {
      if (v === null) return 'null';
      if (depth > MAX_FAST_DEPTH) return general(v);
      if (Array.isArray(v)) {
        const n = v.length;
        if (n === 0) return '[]';
        let s = '[';
        for (let i = 0; i < n; i++) {
          if (i !== 0) s += ',';
          s += write(v[i], depth + 1) ?? 'null';
        }
        return s + ']';
      }
      const proto: unknown = Object.getPrototypeOf(v);
      if ((proto !== objectProto && proto !== null) || typeof (v as { toJSON?: unknown }).toJSON === 'function') return general(v);
      const keys = Object.keys(v);
      if (keys.length === 0) return '{}';
      const { order, first, next } = shapeOf(keys);
      const o = v as Record<string, unknown>;
      let s = '{';
      let any = false;
      for (let i = 0; i < order.length; i++) {
        const w = write(o[order[i]!], depth + 1);
        if (w === undefined) continue;
        s += any ? next[i]! : first[i]!;
        s += w;
        any = true;
      }
      return s + '}';
    }
    default:
      // undefined, function, symbol → undefined; bigint throws as JSON.stringify does.
      return JSON.stringify(v);
  }
}

/** The general path: any value JSON.stringify accepts, keys in Go's order, HTML-safe. */
function general(v: unknown): string | undefined {
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
  return s === undefined ? s : htmlSafe(s);
}

export function goJson(v: unknown): string {
  return write(v, 0) ?? 'null';
}
