/**
 * `extra_config.proxy.flatmap_filter` (krakend flatmap): a list of `move` / `append` / `del`
 * operations over dot paths where `*` stands for every element of an array (or every key of an
 * object) and a number indexes an array. Compiled once into one function that edits the data in
 * place. Keys are written with `setKey`, so a path segment `__proto__` is an own key, never the
 * prototype.
 */
type Obj = Record<string, unknown>;
type Op = (data: Obj) => void;

export type FlatmapFilter = (data: Record<string, unknown>) => Record<string, unknown>;

export interface FlatmapOp {
  type: string;
  args: string[];
}

function isContainer(v: unknown): v is Obj | unknown[] {
  return typeof v === 'object' && v !== null;
}

export function setKey(o: Obj, k: string, v: unknown): void {
  if (k === '__proto__') Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}

function ownGet(c: Obj | unknown[], k: string): unknown {
  if (Array.isArray(c)) {
    const i = toIndex(k);
    return i >= 0 && i < c.length ? c[i] : undefined;
  }
  return Object.prototype.hasOwnProperty.call(c, k) ? c[k] : undefined;
}

function toIndex(k: string): number {
  return /^\d+$/.test(k) ? Number(k) : -1;
}

/** Every (container, key) the path reaches; `*` fans out over elements/keys. */
function locate(root: unknown, segs: readonly string[]): [Obj | unknown[], string][] {
  let cur: unknown[] = [root];
  for (let i = 0; i < segs.length - 1; i++) {
    const s = segs[i]!;
    const next: unknown[] = [];
    for (const c of cur) {
      if (!isContainer(c)) continue;
      if (s === '*') {
        if (Array.isArray(c)) next.push(...c);
        else for (const k of Object.keys(c)) next.push((c as Obj)[k]);
      } else {
        const v = ownGet(c as Obj, s);
        if (v !== undefined) next.push(v);
      }
    }
    cur = next;
  }
  const last = segs[segs.length - 1]!;
  const out: [Obj | unknown[], string][] = [];
  for (const c of cur) {
    if (!isContainer(c)) continue;
    if (last === '*') {
      const keys = Array.isArray(c) ? c.map((_, i) => String(i)) : Object.keys(c);
      for (const k of keys) out.push([c as Obj, k]);
    } else out.push([c as Obj, last]);
  }
  return out;
}

function del(c: Obj | unknown[], k: string): void {
  if (Array.isArray(c)) {
    const i = toIndex(k);
    if (i >= 0 && i < c.length) c.splice(i, 1);
  } else delete c[k];
}

/** Sets a value at a path without wildcards, creating objects on the way. */
function setPath(root: Obj, segs: readonly string[], v: unknown): void {
  let cur: Obj | unknown[] = root;
  for (let i = 0; i < segs.length - 1; i++) {
    const s = segs[i]!;
    let nx = ownGet(cur, s);
    if (!isContainer(nx)) {
      nx = Object.create(null) as Obj;
      if (Array.isArray(cur)) {
        const idx = toIndex(s);
        if (idx < 0) return;
        cur[idx] = nx;
      } else setKey(cur, s, nx);
    }
    cur = nx as Obj | unknown[];
  }
  const last = segs[segs.length - 1]!;
  if (Array.isArray(cur)) {
    const idx = toIndex(last);
    if (idx >= 0) cur[idx] = v;
  } else setKey(cur, last, v);
}

function getPath(root: unknown, segs: readonly string[]): unknown {
  let cur = root;
  for (const s of segs) {
    if (!isContainer(cur)) return undefined;
    cur = ownGet(cur as Obj, s);
  }
  return cur;
}

/** Length of the common prefix ending at the last `*` of both paths, or 0. */
function wildcardPrefix(a: readonly string[], b: readonly string[]): number {
  const la = a.lastIndexOf('*');
  if (la < 0 || b.lastIndexOf('*') !== la) return 0;
  for (let i = 0; i <= la; i++) if (a[i] !== b[i]) return 0;
  return la + 1;
}

/** Applies `rel` to every element the common wildcard prefix reaches. */
function perElement(prefix: readonly string[], rel: (el: Obj) => void): Op {
  const parentSegs = prefix.slice(0, -1);
  return (data) => {
    const parents = parentSegs.length === 0 ? [data] : locate(data, parentSegs).map(([c, k]) => ownGet(c, k));
    for (const p of parents) {
      if (!isContainer(p)) continue;
      const els = Array.isArray(p) ? p : Object.keys(p).map((k) => (p as Obj)[k]);
      for (const el of els) if (isContainer(el) && !Array.isArray(el)) rel(el as Obj);
    }
  };
}

function compileMove(src: string[], dst: string[]): Op {
  const n = wildcardPrefix(src, dst);
  if (n > 0 && src.length > n && dst.length > n) {
    const inner = compileMove(src.slice(n), dst.slice(n));
    return perElement(src.slice(0, n), inner);
  }
  if (!src.includes('*') && !dst.includes('*')) {
    return (data) => {
      const v = getPath(data, src);
      if (v === undefined) return;
      const loc = locate(data, src);
      for (const [c, k] of loc) del(c, k);
      setPath(data, dst, v);
    };
  }
  // Fan-in: every value the source reaches becomes one list at the destination.
  const plainDst = dst.filter((s) => s !== '*');
  return (data) => {
    const loc = locate(data, src);
    const vals: unknown[] = [];
    for (const [c, k] of loc) {
      const v = ownGet(c, k);
      if (v !== undefined) vals.push(v);
    }
    if (vals.length === 0) return;
    for (let i = loc.length - 1; i >= 0; i--) del(loc[i]![0], loc[i]![1]);
    setPath(data, plainDst, vals);
  };
}

function compileAppend(src: string[], dst: string[]): Op {
  const n = wildcardPrefix(src, dst);
  if (n > 0 && src.length > n && dst.length > n) {
    return perElement(src.slice(0, n), compileAppend(src.slice(n), dst.slice(n)));
  }
  return (data) => {
    const v = getPath(data, src);
    if (v === undefined) return;
    const d = getPath(data, dst);
    const out: unknown[] = Array.isArray(d) ? d.slice() : d === undefined ? [] : [d];
    if (Array.isArray(v)) out.push(...v);
    else out.push(v);
    for (const [c, k] of locate(data, src)) del(c, k);
    setPath(data, dst, out);
  };
}

function compileDel(path: string[]): Op {
  return (data) => {
    const loc = locate(data, path);
    // Reverse order so that array indexes stay valid while splicing.
    for (let i = loc.length - 1; i >= 0; i--) del(loc[i]![0], loc[i]![1]);
  };
}

/** Reads `extra_config.proxy.flatmap_filter`; null when absent or empty. */
export function flatmapOps(extra: Readonly<Record<string, unknown>>): FlatmapOp[] | null {
  const proxy = extra.proxy as Record<string, unknown> | undefined;
  const raw = proxy?.flatmap_filter;
  if (!Array.isArray(raw) || raw.length === 0) return null;
  const ops: FlatmapOp[] = [];
  for (const o of raw) {
    if (o === null || typeof o !== 'object') continue;
    const type = String((o as { type?: unknown }).type ?? '');
    const args = Array.isArray((o as { args?: unknown }).args) ? ((o as { args: unknown[] }).args.map(String)) : [];
    ops.push({ type, args });
  }
  return ops.length ? ops : null;
}

export function compileFlatmap(ops: readonly FlatmapOp[]): FlatmapFilter {
  const stages: Op[] = [];
  for (const op of ops) {
    const args = op.args.map((a) => a.split('.'));
    switch (op.type) {
      case 'move':
        if (args.length >= 2) stages.push(compileMove(args[0]!, args[1]!));
        break;
      case 'append':
        if (args.length >= 2) stages.push(compileAppend(args[0]!, args[1]!));
        break;
      case 'del':
        for (const a of args) stages.push(compileDel(a));
        break;
      default:
        // Unknown operation types are ignored, as in KrakenD.
        break;
    }
  }
  const n = stages.length;
  return (data) => {
    for (let i = 0; i < n; i++) stages[i]!(data);
    return data;
  };
}
