/**
 * JSON as KrakenD writes it (Go's encoding/json over maps): object keys sorted, `<`, `>`, `&`,
 * U+2028 and U+2029 escaped. Output is byte-identical to JSON.stringify over the same data with
 * every object's keys sorted as JS strings.
 *
 * The hot case (plain objects and arrays, as JSON.parse and the merge build them) is written by a
 * small serializer that sorts each object shape's keys once: JSON.parse interns keys, so objects of
 * one shape (the 9 items of a list, the same backend answer request after request) find their
 * sorted order and pre-quoted `"key":` prefixes in a shape cache after comparing their
 * Object.keys by identity. It writes UTF-8 bytes straight into one scratch buffer (no string
 * rope to flatten and encode on the way out), which makes it about as fast as a plain
 * JSON.stringify followed by the encoding every answer needs; the property-list form below costs
 * 2.5× (V8's slow path). Anything else (toJSON, class instances, boxed primitives, nesting deeper
 * than MAX_FAST_DEPTH) goes to the general path for that subtree.
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
  /** `"key":` for order[i], UTF-8: first written. */
  readonly first: Buffer[];
  /** `,"key":` for order[i], UTF-8: written after another member. */
  readonly next: Buffer[];
}

/** Shapes by first key; bounded (cleared when full), and wide objects are never cached. */
const shapes = new Map<string, Shape>();
const MAX_SHAPES = 512;
const MAX_CACHED_KEYS = 64;
/** Deeper than this, a subtree goes to the general path (which detects cycles, and throws RangeError on absurd depth). */
const MAX_FAST_DEPTH = 64;

function htmlSafe(s: string): string {
  HTML_UNSAFE.lastIndex = 0;
  return HTML_UNSAFE.test(s) ? s.replace(HTML_UNSAFE, (c) => ESCAPES[c]!) : s;
}

const COMMA = Buffer.from(',');

function makeShape(keys: string[]): Shape {
  const order = keys.slice().sort();
  const first = order.map((k) => Buffer.from(htmlSafe(JSON.stringify(k)) + ':', 'utf8'));
  return { keys, order, first, next: first.map((q) => Buffer.concat([COMMA, q])) };
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

// ---- the output: bytes written straight into one scratch buffer per worker ----
// Building the text with `+=` makes a rope of hundreds of pieces that uWS (or Buffer.from) must
// flatten before sending: writing the bytes as they are produced costs what JSON.stringify does.

const INITIAL = 16 * 1024;
/** A scratch buffer grown past this is dropped after use rather than kept for the worker's life. */
const KEEP = 1024 * 1024;
let out = Buffer.allocUnsafeSlow(INITIAL);
let pos = 0;
/** A goJson call is running (a toJSON calling goJson gets a scratch buffer of its own). */
let busy = false;

function grow(n: number): void {
  const bigger = Buffer.allocUnsafeSlow(Math.max(out.length * 2, pos + n));
  out.copy(bigger, 0, 0, pos);
  out = bigger;
}

/** An ASCII string (numbers, literals, punctuation). */
function putAscii(s: string): void {
  const n = s.length;
  if (pos + n > out.length) grow(n);
  const o = out;
  let p = pos;
  for (let i = 0; i < n; i++) o[p++] = s.charCodeAt(i);
  pos = p;
}

function putByte(c: number): void {
  if (pos === out.length) grow(1);
  out[pos++] = c;
}

function putBytes(b: Buffer): void {
  const n = b.length;
  if (pos + n > out.length) grow(n);
  const o = out;
  let p = pos;
  for (let i = 0; i < n; i++) o[p++] = b[i]!;
  pos = p;
}

/** Any text, as UTF-8. */
function putText(s: string): void {
  const max = s.length * 3;
  if (pos + max > out.length) grow(max);
  pos += out.write(s, pos, 'utf8');
}

/**
 * A JSON string. Printable ASCII without `"`, `\\`, `<`, `>`, `&` is copied byte by byte; anything
 * else (escapes, non-ASCII, lone surrogates, U+2028/9) is written as JSON.stringify + Go's HTML
 * escaping would.
 */
function putString(v: string): void {
  const n = v.length;
  if (pos + n + 2 > out.length) grow(n + 2);
  const o = out;
  let p = pos;
  o[p++] = 0x22;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c || c === 0x3c || c === 0x3e || c === 0x26) {
      putText(htmlSafe(JSON.stringify(v)));
      return;
    }
    o[p++] = c;
  }
  o[p++] = 0x22;
  pos = p;
}

/** Writes the JSON of `v` (HTML-safe); false, writing nothing, where JSON.stringify gives undefined (functions, symbols, undefined). */
function write(v: unknown, depth: number): boolean {
  switch (typeof v) {
    case 'string':
      putString(v);
      return true;
    case 'number':
      putAscii(Number.isFinite(v) ? '' + v : 'null');
      return true;
    case 'boolean':
      putAscii(v ? 'true' : 'false');
      return true;
    case 'object': {
      if (v === null) {
        putAscii('null');
        return true;
      }
      if (depth > MAX_FAST_DEPTH) return putGeneral(v);
      if (Array.isArray(v)) {
        const n = v.length;
        putByte(0x5b);
        for (let i = 0; i < n; i++) {
          if (i !== 0) putByte(0x2c);
          if (!write(v[i], depth + 1)) putAscii('null');
        }
        putByte(0x5d);
        return true;
      }
      const toJSON = (v as { toJSON?: unknown }).toJSON;
      // What toJSON gives is written like any value (an object it returns is sorted too).
      if (typeof toJSON === 'function') return write((toJSON as (k: string) => unknown).call(v, ''), depth + 1);
      const proto: unknown = Object.getPrototypeOf(v);
      if (proto !== objectProto && proto !== null) return putGeneral(v);
      const keys = Object.keys(v);
      if (keys.length === 0) {
        putAscii('{}');
        return true;
      }
      const { order, first, next } = shapeOf(keys);
      const o = v as Record<string, unknown>;
      putByte(0x7b);
      let any = false;
      for (let i = 0; i < order.length; i++) {
        const val = o[order[i]!];
        const mark = pos;
        putBytes(any ? next[i]! : first[i]!);
        if (write(val, depth + 1)) any = true;
        else pos = mark; // no member for undefined, functions, symbols
      }
      putByte(0x7d);
      return true;
    }
    case 'bigint':
      JSON.stringify(v); // throws TypeError, as JSON.stringify does
      return false;
    default:
      // undefined, function, symbol
      return false;
  }
}

function putGeneral(v: unknown): boolean {
  const s = general(v);
  if (s === undefined) return false;
  putText(s);
  return true;
}

/** Runs the writer over `v` and hands its bytes (a view of the scratch buffer) to `use`. */
function render<T>(v: unknown, use: (bytes: Buffer) => T): T {
  // Re-entered (a toJSON or `use` that renders JSON itself): the outer call's bytes stay where
  // they are, the inner one writes into a buffer of its own.
  const outer = busy;
  const savedOut = out;
  const savedPos = pos;
  if (outer) out = Buffer.allocUnsafeSlow(INITIAL);
  busy = true;
  pos = 0;
  try {
    if (!write(v, 0)) putAscii('null');
    return use(out.subarray(0, pos));
  } finally {
    if (outer) {
      out = savedOut;
      pos = savedPos;
    } else {
      busy = false;
      if (out.length > KEEP) out = Buffer.allocUnsafeSlow(INITIAL);
    }
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

function toText(b: Buffer): string {
  return b.toString('utf8');
}

function copied(b: Buffer): Buffer {
  return Buffer.from(b);
}

/** KrakenD's JSON of `v`, as a string. */
export function goJson(v: unknown): string {
  return render(v, toText);
}

/**
 * The same JSON as UTF-8 bytes in a buffer of its own (for a response body: no string to flatten
 * and encode on the way out).
 */
export function goJsonBytes(v: unknown): Buffer {
  return render(v, copied);
}

/**
 * The same JSON as a view of the writer's scratch buffer, without a copy: valid only until the next
 * goJson call in this worker, so for a body that is written out at once (a decoding endpoint's
 * answer, exchange.ts `answer`).
 */
export function goJsonView(v: unknown): Buffer {
  return render(v, view);
}

function view(b: Buffer): Buffer {
  return b;
}

/** The same JSON handed to `use` as a view that is valid only during the call (no copy at all). */
export function withGoJson<T>(v: unknown, use: (bytes: Buffer) => T): T {
  return render(v, use);
}
