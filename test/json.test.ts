// KrakenD's JSON writer (core/router/json.ts) against a plain reference serializer: keys sorted as
// Go sorts map keys, `<>&` and U+2028/9 escaped, everything else as JSON.stringify writes it.
// The writer produces bytes in a scratch buffer, so this checks the bytes and the string forms on
// random documents (every string class: escapes, non-ASCII, lone surrogates), the general path
// (toJSON, class instances), re-entry, and an answer larger than the kept scratch buffer.
// Run: node --import tsx --test test/json.test.ts
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { goJson, goJsonBytes, withGoJson } from '../core/router/json.ts';

const esc = (s: string) => s.replace(/[<>&\u2028\u2029]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));

/** What Go's encoding/json writes for the same data (maps sorted by key). */
function ref(v: unknown): string | undefined {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string':
      return esc(JSON.stringify(v));
    case 'number':
      return Number.isFinite(v) ? JSON.stringify(v) : 'null';
    case 'boolean':
      return String(v);
    case 'object': {
      if (typeof (v as { toJSON?: unknown }).toJSON === 'function') return ref((v as { toJSON: () => unknown }).toJSON());
      if (Array.isArray(v)) return '[' + v.map((x) => ref(x) ?? 'null').join(',') + ']';
      const parts: string[] = [];
      for (const k of Object.keys(v).sort()) {
        const r = ref((v as Record<string, unknown>)[k]);
        if (r !== undefined) parts.push(esc(JSON.stringify(k)) + ':' + r);
      }
      return '{' + parts.join(',') + '}';
    }
    default:
      return undefined;
  }
}

/** A small deterministic PRNG (mulberry32), so a failure names its seed. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = ['a', 'id', 'x y', '"', '\\', '<', '>', '&', '\n', '\u0000', '\u001f', '\u007f', 'é', '€', '😀', '\ud800', '\udc00', '\u2028', '\u2029', '10', '9', '__proto__', ''];

function randomString(r: () => number): string {
  let s = '';
  const n = Math.floor(r() * 5);
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(r() * PIECES.length)];
  return s;
}

function randomValue(r: () => number, depth: number): unknown {
  const k = Math.floor(r() * (depth > 4 ? 7 : 10));
  switch (k) {
    case 0:
      return randomString(r);
    case 1:
      return [0, -0, 1, -1, 0.1, 1e21, 1e-7, 2 ** 53, NaN, Infinity, 123456789][Math.floor(r() * 11)];
    case 2:
      return r() < 0.5;
    case 3:
      return null;
    case 4:
      return undefined;
    case 5:
      return () => 1;
    case 6:
      return 'plain-ascii-' + Math.floor(r() * 1000);
    case 7: {
      const n = Math.floor(r() * 5);
      return Array.from({ length: n }, () => randomValue(r, depth + 1));
    }
    default: {
      const o: Record<string, unknown> = {};
      const n = Math.floor(r() * 6);
      for (let i = 0; i < n; i++) {
        const key = randomString(r);
        if (key === '__proto__') Object.defineProperty(o, key, { value: randomValue(r, depth + 1), enumerable: true, writable: true, configurable: true });
        else o[key] = randomValue(r, depth + 1);
      }
      return o;
    }
  }
}

test('random documents: the bytes and the string are what Go writes, for 3000 seeds', () => {
  for (let seed = 1; seed <= 3000; seed++) {
    const v = randomValue(rng(seed), 0);
    const want = ref(v) ?? 'null';
    const got = goJson(v);
    assert.equal(got, want, `seed ${seed}`);
    assert.equal(goJsonBytes(v).toString('utf8'), want, `seed ${seed} (bytes)`);
  }
});

test('documents as JSON.parse builds them: the same shape twice, keys out of order, integer-like keys', () => {
  const text = '{"b":1,"a":{"z":[1,2,{"y":"<tag>","x":"&amp;"}],"10":"ten","9":"nine"},"c":"caf\\u00e9 \\u2028"}';
  const want = '{"a":{"10":"ten","9":"nine","z":[1,2,{"x":"\\u0026amp;","y":"\\u003ctag\\u003e"}]},"b":1,"c":"café \\u2028"}';
  for (let i = 0; i < 3; i++) assert.equal(goJson(JSON.parse(text)), want);
  assert.deepEqual(goJsonBytes(JSON.parse(text)), Buffer.from(want, 'utf8'));
});

test('the general path: toJSON, Dates, class instances, Maps, boxed values', () => {
  class Point {
    constructor(
      readonly y: number,
      readonly x: number,
    ) {}
  }
  const d = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
  const v = { when: d, p: new Point(2, 1), m: new Map([['a', 1]]), s: new String('<s>'), n: new Number(3), custom: { toJSON: () => ({ b: 2, a: 1 }) } };
  assert.equal(goJson(v), '{"custom":{"a":1,"b":2},"m":{},"n":3,"p":{"x":1,"y":2},"s":"\\u003cs\\u003e","when":"2026-01-02T03:04:05.000Z"}');
  assert.equal(goJson(undefined), 'null');
  assert.equal(goJson(() => 1), 'null');
  assert.throws(() => goJson({ a: 1n }), TypeError);
  // A failure leaves the writer usable.
  assert.equal(goJson({ b: 1, a: 2 }), '{"a":2,"b":1}');
});

test('a toJSON that writes JSON itself does not disturb the outer document', () => {
  const inner = { toJSON: () => ({ nested: goJson({ z: 1, y: [1, 2] }) }) };
  const v = { b: 'before', a: inner, c: 'after' };
  assert.equal(goJson(v), '{"a":{"nested":"{\\"y\\":[1,2],\\"z\\":1}"},"b":"before","c":"after"}');
  // The same while a view of the scratch buffer is in use.
  withGoJson({ k: 'v' }, (bytes) => {
    assert.equal(goJson({ other: true }), '{"other":true}');
    assert.equal(bytes.toString(), '{"k":"v"}');
  });
});

test('an answer larger than the kept scratch buffer (3 MB), then small ones again', () => {
  const big = { list: Array.from({ length: 30_000 }, (_, i) => ({ id: i, name: 'n'.repeat(90) })) };
  const want = ref(big)!;
  assert.equal(goJson(big), want);
  assert.equal(goJsonBytes(big).length, Buffer.byteLength(want));
  assert.equal(goJson({ b: [], a: {} }), '{"a":{},"b":[]}');
});

test('absurd nesting is a RangeError, not a crash', () => {
  let v: unknown = 1;
  for (let i = 0; i < 100_000; i++) v = [v];
  assert.throws(() => goJson(v), RangeError);
  assert.equal(goJson([1]), '[1]');
});
