/**
 * Per-backend response manipulation, compiled once: target → allow/deny → mapping → group
 * (lura's order). Returns null when the backend needs none, so the stage is not composed.
 */
import type { BackendConfig } from '../config/types.js';
import { compileFlatmap, flatmapOps, setKey } from './flatmap.js';

export type Formatter = (data: Record<string, unknown>) => Record<string, unknown>;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function getPath(o: Obj, path: readonly string[]): unknown {
  let cur: unknown = o;
  for (const k of path) {
    if (!isObj(cur) || !Object.prototype.hasOwnProperty.call(cur, k)) return undefined;
    cur = cur[k];
  }
  return cur;
}

function compileAllow(fields: readonly string[]): Formatter {
  const paths = fields.map((f) => f.split('.'));
  return (data) => {
    const out: Obj = Object.create(null);
    for (const p of paths) {
      const v = getPath(data, p);
      if (v === undefined) continue;
      let cur = out;
      for (let i = 0; i < p.length - 1; i++) {
        const k = p[i]!;
        if (!isObj(cur[k])) setKey(cur, k, Object.create(null));
        cur = cur[k] as Obj;
      }
      setKey(cur, p[p.length - 1]!, v);
    }
    return out;
  };
}

function compileDeny(fields: readonly string[]): Formatter {
  const paths = fields.map((f) => f.split('.'));
  return (data) => {
    for (const p of paths) {
      let cur: unknown = data;
      for (let i = 0; i < p.length - 1 && isObj(cur); i++) cur = (cur as Obj)[p[i]!];
      if (isObj(cur)) delete cur[p[p.length - 1]!];
    }
    return data;
  };
}

export function compileFormatter(b: BackendConfig): Formatter | null {
  const stages: Formatter[] = [];
  if (b.target) {
    const path = b.target.split('.');
    stages.push((data) => {
      const v = getPath(data, path);
      return isObj(v) ? v : Object.create(null);
    });
  }
  const flatmap = flatmapOps(b.extraConfig);
  if (flatmap !== null) {
    // flatmap_filter replaces allow/deny/mapping: target → flatmap ops → group.
    stages.push(compileFlatmap(flatmap));
  } else if (b.allow.length) stages.push(compileAllow(b.allow));
  else if (b.deny.length) stages.push(compileDeny(b.deny));
  const mapping = flatmap === null ? Object.entries(b.mapping) : [];
  if (mapping.length) {
    stages.push((data) => {
      for (const [from, to] of mapping) {
        if (!Object.prototype.hasOwnProperty.call(data, from)) continue;
        const v = data[from];
        delete data[from];
        setKey(data, to.split('.')[0]!, v);
      }
      return data;
    });
  }
  if (b.group) {
    const g = b.group;
    stages.push((data) => {
      const out: Obj = Object.create(null);
      setKey(out, g, data);
      return out;
    });
  }
  if (stages.length === 0) return null;
  if (stages.length === 1) return stages[0]!;
  return (data) => {
    let d = data;
    for (const s of stages) d = s(d);
    return d;
  };
}
