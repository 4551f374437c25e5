/**
 * KrakenD's Lua modifiers (krakend-lua) on the proxy pipe:
 *  - `modifier/lua-proxy` (endpoint): `pre` sees the gateway request before the backends are called
 *    (params, query, headers and body it changes reach every backend); `post` sees the merged
 *    response (data, completeness, headers added to the client answer).
 *  - `modifier/lua-backend` (backend): `pre` sees the built backend request (URL, method, headers,
 *    body); `post` sees that backend's decoded, filtered response.
 * `skip_next` skips the wrapped call (post then starts from an empty response).
 *
 * Everything is compiled at start-up: a wrong md5 or a syntax error stops `gw run` and fails
 * `gw check`, naming the endpoint, backend and file. A source file that cannot be read is logged at
 * start-up and fails every request through that modifier (500, naming the file), as KrakenD does:
 * one missing script never takes the other endpoints down, and never lets a request skip it.
 *
 * Each request runs in its own environment: the compiled `sources` run first in it (defining their
 * functions and globals afresh, as KrakenD's state per request does), then `pre`, and later `post`
 * in the same one.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { LuaState } from 'fengari';
import { canonicalHeader } from '../config/load.js';
import type { Headers } from '../plugin/types.js';
import { HOP_BY_HOP, validHeaderName, validHeaderValue } from '../proxy/request.js';
import { OutboundRequest, ProxyRequest, StatusError, type ProxyResponse } from '../proxy/types.js';
import { argBytes, argString, isNilArg, lua, LuaListRef, LuaTableRef, LuaVm, pushString, pushValue, ScriptHttpError, self, Sources, type HttpCaller, type ScriptObject } from './vm.js';
import { scriptHttpClient } from './http.js';


export const LUA_PROXY = 'modifier/lua-proxy';
export const LUA_BACKEND = 'modifier/lua-backend';

type HeaderMap = Map<string, string[]>;

/** What `request.load()` returns: a mutable copy the modifier applies back after `pre`. */
export class ScriptRequest implements ScriptObject {
  bodyChanged = false;
  constructor(
    public method: string,
    public path: string,
    public query: string,
    public url: string,
    public params: Record<string, string>,
    public headers: HeaderMap,
    public body: Buffer,
  ) {}
  get methods() {
    return REQUEST_METHODS;
  }
}

/** What `response.load()` returns; `data` is the response's own object, changed in place. */
export class ScriptResponse implements ScriptObject {
  headersChanged = false;
  constructor(
    public data: Record<string, unknown>,
    public isComplete: boolean,
    public statusCode: number,
    public headers: HeaderMap,
  ) {}
  get methods() {
    return RESPONSE_METHODS;
  }
}

/** `get()` with one argument, `set()` with two, as KrakenD's accessors. */
function accessor<T>(cls: abstract new (...a: never[]) => T, what: string, get: (o: T, L: LuaState) => void, set: (o: T, L: LuaState) => void) {
  return (L: LuaState) => {
    const o = self(L, cls, what);
    if (lua.lua_gettop(L) === 1) {
      get(o, L);
      return 1;
    }
    set(o, L);
    return 0;
  };
}

function headerMethods<T extends { headers: HeaderMap }>(cls: abstract new (...a: never[]) => T, what: string, onSet: (o: T) => void) {
  return {
    headers(L: LuaState) {
      const o = self(L, cls, what);
      const n = lua.lua_gettop(L);
      if (n === 1) {
        const t: Record<string, unknown> = Object.create(null);
        for (const [k, v] of o.headers) t[k] = v;
        lua.lua_pushlightuserdata(L, new LuaTableRef(t));
        return 1;
      }
      const key = canonicalHeader(argString(L, 2));
      if (n === 2) return pushString(L, o.headers.get(key)?.[0] ?? '');
      if (!validHeaderName(key)) throw new Error(`invalid header name ${JSON.stringify(key)}`);
      if (isNilArg(L, 3)) o.headers.delete(key);
      else o.headers.set(key, [headerValue(argString(L, 3), key)]);
      onSet(o);
      return 0;
    },
    headerList(L: LuaState) {
      const o = self(L, cls, what);
      const n = lua.lua_gettop(L);
      if (n < 2) throw new Error('need arguments');
      const key = canonicalHeader(argString(L, 2));
      if (n === 2) {
        lua.lua_pushlightuserdata(L, new LuaListRef((o.headers.get(key) ?? []).slice()));
        return 1;
      }
      const l = lua.lua_touserdata(L, 3);
      if (!(l instanceof LuaListRef)) throw new Error('invalid header value, must be a luaList');
      if (!validHeaderName(key)) throw new Error(`invalid header name ${JSON.stringify(key)}`);
      o.headers.set(key, l.data.map((v) => headerValue(String(v), key)));
      onSet(o);
      return 0;
    },
  };
}

/** A script-set header value, refused when it could start another header line. */
function headerValue(v: string, name: string): string {
  if (!validHeaderValue(v)) throw new Error(`invalid value for header ${name}: CR, LF and NUL are not allowed`);
  return v;
}

const REQUEST_METHODS = {
  method: accessor(ScriptRequest, 'request', (r, L) => pushString(L, r.method), (r, L) => (r.method = argString(L, 2).toUpperCase())),
  path: accessor(ScriptRequest, 'request', (r, L) => pushString(L, r.path), (r, L) => (r.path = argString(L, 2))),
  query: accessor(ScriptRequest, 'request', (r, L) => pushString(L, r.query), (r, L) => (r.query = argString(L, 2).replace(/^\?/, ''))),
  url: accessor(ScriptRequest, 'request', (r, L) => pushString(L, r.url), (r, L) => (r.url = argString(L, 2))),
  params(L: LuaState) {
    const r = self(L, ScriptRequest, 'request');
    const n = lua.lua_gettop(L);
    if (n === 1) {
      lua.lua_pushlightuserdata(L, new LuaTableRef(r.params));
      return 1;
    }
    const k = argString(L, 2);
    if (n === 2) return pushString(L, Object.prototype.hasOwnProperty.call(r.params, k) ? r.params[k]! : '');
    r.params[k] = argString(L, 3);
    return 0;
  },
  ...headerMethods(ScriptRequest, 'request', () => {}),
  body: accessor(ScriptRequest, 'request', (r, L) => lua.lua_pushstring(L, r.body), (r, L) => {
    r.body = argBytes(L, 2);
    r.bodyChanged = true;
  }),
};

const RESPONSE_METHODS = {
  isComplete: accessor(ScriptResponse, 'response', (r, L) => lua.lua_pushboolean(L, r.isComplete), (r, L) => (r.isComplete = lua.lua_toboolean(L, 2))),
  statusCode: accessor(ScriptResponse, 'response', (r, L) => lua.lua_pushinteger(L, r.statusCode), (r, L) => (r.statusCode = Math.trunc(lua.lua_tonumber(L, 2)))),
  data(L: LuaState) {
    lua.lua_pushlightuserdata(L, new LuaTableRef(self(L, ScriptResponse, 'response').data));
    return 1;
  },
  ...headerMethods(ScriptResponse, 'response', (r) => (r.headersChanged = true)),
  body: accessor(ScriptResponse, 'response', (_r, L) => pushValue(L, ''), () => {
    throw new Error('response:body() needs a no-op response; gw decodes this one (use response:data())');
  }),
};

// ---- config ----

interface LuaConfig {
  vm: LuaVm;
  pre: number | null;
  post: number | null;
  skipNext: boolean;
  sources: Sources;
  sourcesRef: number | null;
  label: string;
  /** Why this modifier cannot run (a source file missing at start-up), or null. */
  broken: string | null;
  /** A `live` reload that failed: requests fail until a later change loads. */
  reloadError: string | null;
  limitMs: number;
  /** Serves the scripts' `http_response.new`, bounded by the endpoint timeout. */
  http: HttpCaller;
}

export interface LuaLog {
  error(msg: string): void;
}

/** Compiles one namespace's config, or returns null when it is absent. Throws start-up errors. */
function compile(extra: Readonly<Record<string, unknown>>, ns: string, where: string, label: string, log: LuaLog, limitMs: number): LuaConfig | null {
  const raw = extra[ns];
  if (raw === undefined) return null;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where}: "${ns}" must be an object`);
  const c = raw as Record<string, unknown>;
  const files = Array.isArray(c.sources) ? c.sources.filter((s): s is string => typeof s === 'string').map((s) => resolve(s)) : [];
  let sources: Sources;
  let broken: string | null = null;
  try {
    sources = new Sources(files, c.live === true);
  } catch (err) {
    broken = `lua: unable to load required source ${(err as NodeJS.ErrnoException).path ?? ''}: ${(err as Error).message}`;
    log.error(`${label} ${where}: ${broken}; every request through this modifier fails until it is fixed`);
    sources = new Sources([], false);
  }
  const md5 = c.md5;
  if (typeof md5 === 'object' && md5 !== null) {
    for (const [file, want] of Object.entries(md5 as Record<string, unknown>)) {
      const i = (c.sources as unknown[] | undefined)?.indexOf(file) ?? -1;
      const path = i >= 0 ? files[i]! : resolve(file);
      if (broken !== null) continue;
      let bytes: Buffer;
      try {
        bytes = readFileSync(path);
      } catch (err) {
        throw new Error(`${where}: "${ns}" md5 names ${file}, which cannot be read: ${(err as Error).message}`);
      }
      const have = createHash('md5').update(bytes).digest('hex');
      if (have !== want) throw new Error(`${where}: "${ns}" wrong checksum for source ${file}: have ${have}, want ${String(want)}`);
    }
  }
  const vm = new LuaVm({ allowOpenLibs: c.allow_open_libs === true, label });
  const cfg: LuaConfig = { vm, pre: null, post: null, skipNext: c.skip_next === true, sources, sourcesRef: null, label, broken, reloadError: null, limitMs, http: scriptHttpClient(limitMs) };
  try {
    if (files.length > 0) loadSources(cfg);
    if (typeof c.pre === 'string' && c.pre.trim() !== '') cfg.pre = vm.compile(c.pre, 'pre-script');
    if (typeof c.post === 'string' && c.post.trim() !== '') cfg.post = vm.compile(c.post, 'post-script');
  } catch (err) {
    throw new Error(`${where}: "${ns}": ${(err as Error).message}`);
  }
  return cfg;
}

/** Compiles the sources and runs them once in a scratch environment (to fail at start-up/reload). */
function loadSources(cfg: LuaConfig): void {
  const vm = cfg.vm;
  const ref = vm.compile(cfg.sources.read(), cfg.sources.files.length === 1 ? cfg.sources.files[0]! : 'sources');
  const env = vm.newEnv();
  const err = vm.runNow(ref, NO_SCRIPT_OBJECTS, 1000, env);
  vm.releaseEnv(env);
  if (err !== null) {
    vm.unref(ref);
    throw err;
  }
  if (cfg.sourcesRef !== null) vm.unref(cfg.sourcesRef);
  cfg.sourcesRef = ref;
}

const NO_SCRIPT_OBJECTS = { request: null, response: null };

/**
 * Starts one request's run through a modifier: a fresh environment with the sources run in it.
 * Throws (before anything is called) when the modifier cannot run.
 */
function begin(cfg: LuaConfig): number {
  if (cfg.broken !== null) throw new Error(cfg.broken);
  if (cfg.sources.changed()) {
    try {
      loadSources(cfg);
      cfg.reloadError = null;
    } catch (err) {
      cfg.reloadError = `lua: reloading ${cfg.sources.files.join(', ')}: ${(err as Error).message}`;
    }
  }
  if (cfg.reloadError !== null) throw new Error(cfg.reloadError);
  const env = cfg.vm.newEnv();
  if (cfg.sourcesRef !== null) {
    try {
      scriptOutcome(cfg.vm.runNow(cfg.sourcesRef, NO_SCRIPT_OBJECTS, cfg.limitMs, env));
    } catch (err) {
      cfg.vm.releaseEnv(env);
      throw err;
    }
  }
  return env;
}

/** Statuses custom_error may set: a real status line, and one that may carry a body. */
function usableStatus(s: number): boolean {
  return s >= 200 && s <= 599 && s !== 204 && s !== 205 && s !== 304;
}

/**
 * Runs one script; a script error becomes the request's error (custom_error keeps its status).
 * A promise when the script waits on an HTTP call (`http_response.new`).
 */
function runScript(cfg: LuaConfig, ref: number, request: ScriptObject | null, response: ScriptObject | null, env: number): void | Promise<void> {
  const r = cfg.vm.run(ref, { request, response }, cfg.limitMs, env, cfg.http);
  if (r instanceof Promise) return r.then(scriptOutcome);
  scriptOutcome(r);
}

function scriptOutcome(err: Error | null): void {
  if (err === null) return;
  if (err instanceof ScriptHttpError && usableStatus(err.status)) {
    throw new StatusError(err.message, err.status, err.message, err.contentType, true);
  }
  throw new Error(err.message);
}

/** Runs `f` and gives the request's environment back once it settled, at once when it is synchronous. */
function releasing<T>(vm: LuaVm, env: number, f: () => T | Promise<T>): T | Promise<T> {
  let v: T | Promise<T>;
  try {
    v = f();
  } catch (err) {
    vm.releaseEnv(env);
    throw err;
  }
  if (!(v instanceof Promise)) {
    vm.releaseEnv(env);
    return v;
  }
  return v.then(
    (x) => {
      vm.releaseEnv(env);
      return x;
    },
    (err: Error) => {
      vm.releaseEnv(env);
      throw err;
    },
  );
}

/** `then` for a value that is a promise only sometimes (a script that made an HTTP call). */
function after<T, U>(v: T | Promise<T>, f: (v: T) => U | Promise<U>): U | Promise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}

function headerMapFrom(h: Headers): HeaderMap {
  const m: HeaderMap = new Map();
  for (const k in h) {
    const v = h[k]!;
    m.set(k, Array.isArray(v) ? v.slice() : [v]);
  }
  return m;
}

function headersFrom(m: HeaderMap): Headers {
  const out: Headers = {};
  for (const [k, v] of m) {
    if (HOP_BY_HOP.has(k.toLowerCase()) || v.length === 0) continue;
    out[k] = v.length === 1 ? v[0]! : v;
  }
  return out;
}

const NO_BYTES = Buffer.alloc(0);

function bodyBytes(b: unknown): Buffer {
  return Buffer.isBuffer(b) ? b : typeof b === 'string' ? Buffer.from(b) : b instanceof Uint8Array ? Buffer.from(b) : NO_BYTES;
}

function luaParams(names: readonly string[], values: readonly string[]): Record<string, string> {
  const p: Record<string, string> = Object.create(null);
  for (let i = 0; i < names.length; i++) {
    const n = names[i]!;
    p[n.length > 0 ? n[0]!.toUpperCase() + n.slice(1) : n] = values[i] ?? '';
  }
  return p;
}

// ---- backend level ----

/**
 * lua-backend around one backend call: `pre` rewrites the built request, `finish` runs `post` on
 * the decoded response, `release` ends a call that failed in between. `pre` and `post` of one call
 * share an environment (kept by the request object).
 */
export interface BackendLua {
  /** The request `pre` edited (a promise when the script made an HTTP call). */
  pre(out: OutboundRequest): OutboundRequest | Promise<OutboundRequest>;
  finish(resp: ProxyResponse, out: OutboundRequest): ProxyResponse | Promise<ProxyResponse>;
  release(out: OutboundRequest): void;
  readonly hasPost: boolean;
  readonly skipNext: boolean;
}

export function compileBackendLua(
  extra: Readonly<Record<string, unknown>>, where: string, urlPattern: string, timeoutMs: number, log: LuaLog,
): BackendLua | null {
  const cfg = compile(extra, LUA_BACKEND, where, `[BACKEND: ${urlPattern}][Lua]`, log, timeoutMs);
  if (cfg === null) return null;
  const preRef = cfg.pre;
  const postRef = cfg.post;
  const vm = cfg.vm;
  const envs = new WeakMap<OutboundRequest, number>();
  const rewrite = (out: OutboundRequest, ref: number, env: number): OutboundRequest | Promise<OutboundRequest> => {
    const q = out.path.indexOf('?');
    const p = out.params;
    const r = new ScriptRequest(
      out.method, q < 0 ? out.path : out.path.slice(0, q), q < 0 ? '' : out.path.slice(q + 1), out.url,
      luaParams(Object.keys(p), Object.values(p)), headerMapFrom(out.headers), bodyBytes(out.body),
    );
    return after(runScript(cfg, ref, r, null, env), () => {
      out.method = r.method;
      out.url = r.url;
      if (r.bodyChanged) {
        r.headers.delete('Content-Length'); // the new body's length is computed when it is sent
        out.body = r.body;
      }
      out.headers = headersFrom(r.headers);
      return out.urlChanged() ? out.rebased() : out;
    });
  };
  return {
    skipNext: cfg.skipNext,
    hasPost: postRef !== null,
    pre(out) {
      const env = begin(cfg);
      const keep = (sent: OutboundRequest) => {
        if (postRef !== null) envs.set(sent, env);
        else vm.releaseEnv(env);
        return sent;
      };
      let sent: OutboundRequest | Promise<OutboundRequest>;
      try {
        sent = preRef !== null ? rewrite(out, preRef, env) : out;
      } catch (err) {
        vm.releaseEnv(env);
        throw err;
      }
      if (!(sent instanceof Promise)) return keep(sent);
      return sent.then(keep, (err: Error) => {
        vm.releaseEnv(env);
        throw err;
      });
    },
    finish(resp, out) {
      const env = envs.get(out);
      if (env === undefined) return resp;
      envs.delete(out);
      const r = new ScriptResponse(resp.data, resp.isComplete, 200, resp.headers !== undefined ? headerMapFrom(resp.headers) : new Map());
      const apply = () => {
        resp.isComplete = r.isComplete;
        if (r.headersChanged) resp.headers = headersFrom(r.headers);
        return resp;
      };
      return releasing(vm, env, () => after(runScript(cfg, postRef!, null, r, env), apply));
    },
    release(out) {
      const env = envs.get(out);
      if (env === undefined) return;
      envs.delete(out);
      vm.releaseEnv(env);
    },
  };
}

// ---- endpoint level ----

export type ProxyFn = (req: ProxyRequest) => Promise<ProxyResponse>;

export function wrapProxyLua(
  next: ProxyFn, extra: Readonly<Record<string, unknown>>, where: string, endpoint: string, timeoutMs: number, log: LuaLog,
): ProxyFn {
  const cfg = compile(extra, LUA_PROXY, where, `[ENDPOINT: ${endpoint}][Lua]`, log, timeoutMs);
  if (cfg === null) return next;
  const preRef = cfg.pre;
  const postRef = cfg.post;
  const skip = cfg.skipNext;
  const vm = cfg.vm;
  const pre = (req: ProxyRequest, env: number): ProxyRequest | Promise<ProxyRequest> => {
    if (preRef === null) return req;
    const r = new ScriptRequest(req.method, req.client.path, req.query, '', luaParams(req.paramNames, req.params), new Map(req.client.headers), bodyBytes(req.body));
    for (const [k, v] of r.headers) r.headers.set(k, v.slice());
    return after(runScript(cfg, preRef, r, null, env), () => preDone(req, r));
  };
  const preDone = (req: ProxyRequest, r: ScriptRequest): ProxyRequest => {
    if (r.bodyChanged) r.headers.delete('Content-Length');
    const params = req.paramNames.map((n, i) => r.params[n.length > 0 ? n[0]!.toUpperCase() + n.slice(1) : n] ?? req.params[i]!);
    const headers: HeaderMap = new Map();
    for (const [k, v] of r.headers) if (!HOP_BY_HOP.has(k.toLowerCase())) headers.set(k, v);
    const client = { ...req.client, headers };
    const body = r.bodyChanged ? r.body : req.body;
    return new ProxyRequest(params, req.paramNames, r.query, client, body, req.scope, r.method, req.extra);
  };
  const post = (resp: ProxyResponse, env: number): ProxyResponse | Promise<ProxyResponse> => {
    // As KrakenD: post runs only when the call returned no error (a partial merge carries one).
    if (postRef === null || resp.errors !== null) return resp;
    const r = new ScriptResponse(resp.data, resp.isComplete, 200, resp.headers !== undefined ? headerMapFrom(resp.headers) : new Map());
    return after(runScript(cfg, postRef, null, r, env), () => {
      resp.isComplete = r.isComplete;
      if (r.headersChanged) resp.headers = headersFrom(r.headers);
      return resp;
    });
  };
  return (req) => {
    // One environment per request, shared by its pre and post; nothing is called when it fails.
    let env: number;
    try {
      env = begin(cfg);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    let sub: ProxyRequest | Promise<ProxyRequest>;
    try {
      sub = pre(req, env);
    } catch (err) {
      vm.releaseEnv(env);
      return Promise.reject(err as Error);
    }
    const call = (s: ProxyRequest) => (skip ? Promise.resolve<ProxyResponse>({ data: Object.create(null), isComplete: false, errors: null }) : next(s));
    const p = sub instanceof Promise ? sub.then(call) : call(sub);
    return p.then(
      (r) => releasing(vm, env, () => post(r, env)),
      (err: Error) => {
        vm.releaseEnv(env);
        throw err;
      },
    );
  };
}
