/**
 * One Lua state per configured modifier (fengari: Lua 5.3 in JavaScript, synchronous).
 *
 * KrakenD (krakend-lua on gopher-lua) builds a fresh state per request and re-runs the `sources`
 * each time. gw builds the state once at start-up: sources run once, `pre`/`post` are compiled
 * once, and a request only pays for the call itself. Each run is a coroutine (a Lua thread, reused
 * once it finishes): it runs synchronously to its end unless it calls `http_response.new`, which
 * yields while gw makes the HTTP call and resumes it with the answer, so a script waiting on the
 * network never blocks the worker. Runs interleave only at those calls. Each request gets its own environment table
 * (`_ENV`, falling back to the shared globals): a global that `pre` sets is seen by that request's
 * `post` and by no other request, as with KrakenD's state per request. Functions defined in `sources`
 * keep the shared globals (documented in docs/lua.md).
 *
 * The KrakenD script API is reproduced on top: `request.load()`, `response.load()`, `luaTable`,
 * `luaList`, `luaNil`, `json`, `custom_error`, `http_response`. Objects handed to scripts are JS objects pushed as
 * light userdata; one metatable dispatches their methods by class.
 */
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { JsFunction, LuaState } from 'fengari';
import { validHeaderName, validHeaderValue } from '../proxy/request.js';

type Fengari = typeof import('fengari');

// fengari is loaded only by configs that use Lua (`loadLua()`, awaited by the gateway before it
// builds any modifier): a gateway without scripts does not pay for it at start-up.
export let lua: Fengari['lua'];
let lauxlib: Fengari['lauxlib'];
let lualib: Fengari['lualib'];
let to_luastring: Fengari['to_luastring'];

export async function loadLua(): Promise<void> {
  if (lua !== undefined) return;
  patchPcallk();
  const f = ((await import('fengari')) as { default: Fengari }).default;
  ({ lua, lauxlib, lualib, to_luastring } = f);
}

/**
 * fengari 0.1.5 bug: `lua_pcallk` in a coroutine saves `allowhook` with `callstatus &= ~OAH | v`
 * (C's setoah is `(st & ~OAH) | v`), so the bit is never set, and a `pcall` that catches an error
 * inside a coroutine switches hooks off for the rest of the run — and with them gw's time limit
 * (`pcall(error) while true do end` would hold the worker for ever). Setting the bit before the
 * call makes fengari's `&=` keep it. Must run before fengari's lua.js copies the function, i.e.
 * before fengari is first loaded.
 */
function patchPcallk(): void {
  const require = createRequire(import.meta.url);
  const lapi = require('fengari/src/lapi.js') as { lua_pcallk: (...a: unknown[]) => number; __gwPatched?: boolean };
  if (lapi.__gwPatched === true) return;
  const CIST_OAH = (require('fengari/src/lstate.js') as { CIST_OAH: number }).CIST_OAH;
  const orig = lapi.lua_pcallk;
  lapi.lua_pcallk = function (L: { nny: number; allowhook: number; ci: { callstatus: number } }, ...rest: unknown[]) {
    if (L.nny === 0 && L.allowhook) L.ci.callstatus |= CIST_OAH;
    return orig(L, ...rest);
  } as (...a: unknown[]) => number;
  lapi.__gwPatched = true;
  if (require.cache[require.resolve('fengari/src/lua.js')] !== undefined) {
    throw new Error('fengari was loaded before gw could patch it (core/lua/vm.ts loadLua)');
  }
}

const S = (s: string) => to_luastring(s, true);

/** A JS value a script handles as userdata; `methods` are what `obj:name(...)` calls. */
export interface ScriptObject {
  readonly methods: Readonly<Record<string, JsFunction>>;
}

export class LuaTableRef implements ScriptObject {
  constructor(readonly data: Record<string, unknown>) {}
  get methods() {
    return TABLE_METHODS;
  }
}

export class LuaListRef implements ScriptObject {
  constructor(readonly data: unknown[]) {}
  get methods() {
    return LIST_METHODS;
  }
}

/** `luaNil.new()`: a JSON null a script can store (plain Lua nil deletes). */
export const LUA_NIL: ScriptObject = { methods: {} };

/** `custom_error(msg, code, content_type)`: ends the request with that status and body. */
export class ScriptHttpError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly contentType: string | null,
  ) {
    super(message);
    this.name = 'ScriptHttpError';
  }
}

/** A script's HTTP call (`http_response.new(url, method, body, headers)`). */
export interface HttpCall {
  readonly url: string;
  readonly method: string;
  readonly body: Buffer | null;
  readonly headers: readonly (readonly [string, string])[];
}

/** Makes a script's HTTP call; rejects with an Error whose message the script sees. */
export type HttpCaller = (call: HttpCall) => Promise<ScriptHttpAnswer>;

/** What `http_response.new` returns: `statusCode()`, `headers(name)`, `body()`, `close()`. */
export class ScriptHttpAnswer implements ScriptObject {
  constructor(
    readonly status: number,
    /** Lower-case names. */
    readonly headers: Readonly<Record<string, readonly string[]>>,
    readonly body: Buffer,
  ) {}
  get methods() {
    return HTTP_ANSWER_METHODS;
  }
}

/** A failed call, handed to the waiting script, which raises it as a Lua error. */
class HttpCallFailure {
  constructor(readonly message: string) {}
}

// ---- conversions ----

export function pushValue(L: LuaState, v: unknown): void {
  switch (typeof v) {
    case 'string':
      lua.lua_pushstring(L, to_luastring(v));
      return;
    case 'number':
      if (Number.isSafeInteger(v)) lua.lua_pushinteger(L, v);
      else lua.lua_pushnumber(L, v);
      return;
    case 'boolean':
      lua.lua_pushboolean(L, v);
      return;
    case 'object':
      if (v === null) lua.lua_pushlightuserdata(L, LUA_NIL);
      else if (Array.isArray(v)) lua.lua_pushlightuserdata(L, new LuaListRef(v));
      else lua.lua_pushlightuserdata(L, new LuaTableRef(v as Record<string, unknown>));
      return;
    default:
      lua.lua_pushnil(L);
  }
}

/** Most table entries one conversion may copy (a `t = {a = t, b = t}` is exponential otherwise). */
const MAX_NODES = 100_000;

/**
 * A Lua value as JSON-able data. A Lua table becomes an object whose keys are the table's keys as
 * text — `{ "a", "b" }` is `{"1":"a","2":"b"}` — as KrakenD converts a table set into response
 * data (its lua_1 conformance spec); lists are made with `luaList.new()`. With `arrays`
 * (`json.marshal`), a table with keys 1..n becomes an array, as a JSON encoder writes it.
 */
export function toValue(L: LuaState, i: number, arrays = false): unknown {
  const budget = { left: MAX_NODES };
  return convert(L, i, 0, budget, arrays);
}

function convert(L: LuaState, i: number, depth: number, budget: { left: number }, arrays: boolean): unknown {
  switch (lua.lua_type(L, i)) {
    case lua.LUA_TSTRING:
      return lua.lua_tojsstring(L, i);
    case lua.LUA_TNUMBER:
      return lua.lua_tonumber(L, i);
    case lua.LUA_TBOOLEAN:
      return lua.lua_toboolean(L, i);
    case lua.LUA_TLIGHTUSERDATA: {
      const u = lua.lua_touserdata(L, i);
      if (u === LUA_NIL) return null;
      if (u instanceof LuaTableRef || u instanceof LuaListRef) return u.data;
      return undefined;
    }
    case lua.LUA_TTABLE: {
      if (depth > 64) throw new Error('table nested too deep');
      lauxlib.luaL_checkstack(L, 4, S('table conversion'));
      const idx = i < 0 ? lua.lua_gettop(L) + i + 1 : i;
      const obj: Record<string, unknown> = Object.create(null);
      const seq: unknown[] = [];
      let isSeq = true;
      lua.lua_pushnil(L);
      while (lua.lua_next(L, idx) !== 0) {
        if (--budget.left < 0) throw new Error(`table larger than ${MAX_NODES} entries`);
        const v = convert(L, -1, depth + 1, budget, arrays);
        lua.lua_pop(L, 1);
        let key: string;
        const kt = lua.lua_type(L, -1);
        if (kt === lua.LUA_TNUMBER) {
          const n = lua.lua_tonumber(L, -1);
          key = String(n);
          if (Number.isInteger(n) && n >= 1) seq[n - 1] = v;
          else isSeq = false;
        } else {
          // lua_tojsstring would convert the key in place and break lua_next; booleans print as text.
          key = kt === lua.LUA_TSTRING ? lua.lua_tojsstring(L, -1) : kt === lua.LUA_TBOOLEAN ? String(lua.lua_toboolean(L, -1)) : typeName(L, -1);
          isSeq = false;
        }
        obj[key] = v;
      }
      if (arrays && isSeq && seq.length > 0 && !seq.includes(undefined)) return seq;
      return obj;
    }
    default:
      return undefined;
  }
}

function typeName(L: LuaState, i: number): string {
  const s = lauxlib.luaL_tolstring(L, i);
  lua.lua_pop(L, 1);
  return new TextDecoder().decode(s);
}

/** An argument as bytes (bodies are binary-safe, as Go strings are). */
export function argBytes(L: LuaState, i: number): Buffer {
  const t = lua.lua_type(L, i);
  if (t === lua.LUA_TSTRING) return Buffer.from(lua.lua_tolstring(L, i));
  return Buffer.from(argString(L, i));
}

/** An argument as text, the way gopher-lua's `String()` gives it (42, not 42.0). */
export function argString(L: LuaState, i: number): string {
  const t = lua.lua_type(L, i);
  if (t === lua.LUA_TSTRING) return lua.lua_tojsstring(L, i);
  if (t === lua.LUA_TNUMBER) {
    const n = lua.lua_tonumber(L, i);
    return Number.isInteger(n) ? String(n) : lua.lua_tojsstring(L, i);
  }
  if (t === lua.LUA_TNIL) return '';
  const s = lauxlib.luaL_tolstring(L, i);
  lua.lua_pop(L, 1);
  return new TextDecoder().decode(s);
}

export function isNilArg(L: LuaState, i: number): boolean {
  const t = lua.lua_type(L, i);
  return t === lua.LUA_TNIL || (t === lua.LUA_TLIGHTUSERDATA && lua.lua_touserdata(L, i) === LUA_NIL);
}

/** The userdata argument `i` as an instance of `cls`, or a script error naming what was expected. */
export function self<T>(L: LuaState, cls: abstract new (...a: never[]) => T, what: string): T {
  const u = lua.lua_touserdata(L, 1);
  if (!(u instanceof cls)) throw new Error(`${what} expected`);
  return u;
}

export function pushString(L: LuaState, s: string): number {
  lua.lua_pushstring(L, to_luastring(s));
  return 1;
}

// ---- luaTable / luaList ----

const TABLE_METHODS: Record<string, JsFunction> = {
  get(L) {
    const t = self(L, LuaTableRef, 'luaTable');
    const k = argString(L, 2);
    if (!Object.prototype.hasOwnProperty.call(t.data, k)) return 0;
    pushValue(L, t.data[k]);
    return 1;
  },
  set(L) {
    const t = self(L, LuaTableRef, 'luaTable');
    if (lua.lua_gettop(L) !== 3) throw new Error('need arguments');
    const v = toValue(L, 3);
    if (v !== undefined) defineKey(t.data, argString(L, 2), v);
    return 0;
  },
  len(L) {
    lua.lua_pushinteger(L, Object.keys(self(L, LuaTableRef, 'luaTable').data).length);
    return 1;
  },
  del(L) {
    const t = self(L, LuaTableRef, 'luaTable');
    delete t.data[argString(L, 2)];
    return 0;
  },
  keys(L) {
    lua.lua_pushlightuserdata(L, new LuaListRef(Object.keys(self(L, LuaTableRef, 'luaTable').data).sort()));
    return 1;
  },
  keyExists(L) {
    const t = self(L, LuaTableRef, 'luaTable');
    lua.lua_pushboolean(L, Object.prototype.hasOwnProperty.call(t.data, argString(L, 2)));
    return 1;
  },
};

/** Lists are 0-based, as in KrakenD. */
const LIST_METHODS: Record<string, JsFunction> = {
  get(L) {
    const l = self(L, LuaListRef, 'luaList');
    const i = Math.trunc(lua.lua_tonumber(L, 2));
    if (!(i >= 0) || i >= l.data.length) return 0;
    pushValue(L, l.data[i]);
    return 1;
  },
  set(L) {
    const l = self(L, LuaListRef, 'luaList');
    if (lua.lua_gettop(L) !== 3) throw new Error('need arguments');
    // As KrakenD: the index is truncated, a negative one ignored, a list grows (with nulls) to it.
    const i = Math.trunc(lua.lua_tonumber(L, 2));
    if (!(i >= 0)) return 0;
    if (i > 1_000_000) throw new Error(`index ${i} too large`);
    const v = toValue(L, 3);
    while (l.data.length < i) l.data.push(null);
    l.data[i] = v === undefined ? null : v;
    return 0;
  },
  len(L) {
    lua.lua_pushinteger(L, self(L, LuaListRef, 'luaList').data.length);
    return 1;
  },
  del(L) {
    const l = self(L, LuaListRef, 'luaList');
    const i = Math.trunc(lua.lua_tonumber(L, 2));
    if (i >= 0 && i < l.data.length) l.data.splice(i, 1);
    return 0;
  },
};

const HTTP_ANSWER_METHODS: Record<string, JsFunction> = {
  statusCode(L) {
    lua.lua_pushinteger(L, self(L, ScriptHttpAnswer, 'http_response').status);
    return 1;
  },
  /** The first value of a header ('' when absent), as Go's Header.Get. */
  headers(L) {
    const a = self(L, ScriptHttpAnswer, 'http_response');
    return pushString(L, a.headers[argString(L, 2).toLowerCase()]?.[0] ?? '');
  },
  body(L) {
    lua.lua_pushstring(L, self(L, ScriptHttpAnswer, 'http_response').body);
    return 1;
  },
  close() {
    return 0;
  },
};

/** Sets an own key even when it is `__proto__` (the data objects come from JSON.parse). */
function defineKey(o: Record<string, unknown>, k: string, v: unknown): void {
  if (k === '__proto__') Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}

// ---- the state ----

export interface VmOptions {
  /** `allow_open_libs`: the whole standard library (io, os, package, debug...). */
  allowOpenLibs: boolean;
  /** Where log lines and errors say the script lives (`[BACKEND: /x][Lua]`). */
  label: string;
}

/** What `request.load()` / `response.load()` return during one run. */
export interface RunBindings {
  request: ScriptObject | null;
  response: ScriptObject | null;
}

/** Steps between two checks of the run's time limit. */
const HOOK_EVERY = 10_000;

/** A Lua thread a run executes in, anchored in the registry. */
interface Thread {
  readonly L: LuaState;
  readonly ref: number;
}

/** Threads kept for reuse (a finished thread is clean); more are created when runs wait on calls. */
const SPARE_THREADS = 16;

export class LuaVm {
  private readonly L: LuaState;
  private current: RunBindings = { request: null, response: null };
  private deadline = 0;
  /** How the running script's `http_response.new` is served; null: not here (sources loading). */
  private http: HttpCaller | null = null;
  /** The call the running script yielded for. */
  private pending: HttpCall | null = null;
  private readonly spare: Thread[] = [];
  /** Registry ref of `{ __index = _G }`, the metatable of per-request environments. */
  private readonly envMeta: number;

  constructor(opts: VmOptions) {
    const L = lauxlib.luaL_newstate();
    this.L = L;
    // A JS exception inside a binding becomes a Lua error (our error objects pass through).
    lua.lua_atnativeerror(L, (L) => {
      const e = lua.lua_touserdata(L, -1);
      if (e instanceof ScriptHttpError) lua.lua_pushlightuserdata(L, e);
      else pushString(L, e instanceof Error ? e.message : String(e));
      return 1;
    });
    openLibs(L, opts.allowOpenLibs);
    // One metatable for every light userdata: `obj:name()` looks `name` up in obj's class methods.
    lua.lua_pushlightuserdata(L, LUA_NIL);
    lua.lua_newtable(L);
    lua.lua_pushjsfunction(L, (L) => {
      const o = lua.lua_touserdata(L, 1) as ScriptObject | undefined;
      const fn = o?.methods?.[argString(L, 2)];
      if (fn === undefined) return 0;
      lua.lua_pushjsfunction(L, fn);
      return 1;
    });
    lua.lua_setfield(L, -2, S('__index'));
    lua.lua_pushjsfunction(L, (L) => {
      const o = lua.lua_touserdata(L, 1);
      return pushString(L, o === LUA_NIL ? 'nil' : o instanceof LuaTableRef ? 'luaTable' : o instanceof LuaListRef ? 'luaList' : 'userdata');
    });
    lua.lua_setfield(L, -2, S('__tostring'));
    lua.lua_setmetatable(L, -2);
    lua.lua_pop(L, 1);

    this.table('request', { load: (L) => this.pushCurrent(L, this.current.request, 'request') });
    this.table('response', { load: (L) => this.pushCurrent(L, this.current.response, 'response') });
    this.table('luaTable', {
      new: (L) => {
        lua.lua_pushlightuserdata(L, new LuaTableRef(Object.create(null)));
        return 1;
      },
    });
    this.table('luaList', {
      new: (L) => {
        lua.lua_pushlightuserdata(L, new LuaListRef([]));
        return 1;
      },
    });
    this.table('luaNil', {
      new: (L) => {
        lua.lua_pushlightuserdata(L, LUA_NIL);
        return 1;
      },
    });
    this.table('json', {
      unmarshal: (L) => {
        pushValue(L, JSON.parse(argString(L, 1)));
        return 1;
      },
      marshal: (L) => pushString(L, JSON.stringify(toValue(L, 1, true) ?? null, null, '\t')),
    });
    this.table('http_response', {
      new: (L) => {
        if (this.http === null) throw new Error('http_response.new cannot run while the sources load');
        const n = lua.lua_gettop(L);
        if (n === 0) throw new Error('need arguments');
        const url = argString(L, 1);
        if (!/^https?:\/\/[^\s]+$/i.test(url)) throw new Error(`http_response.new: ${JSON.stringify(url)} is not an http(s) URL`);
        const method = n >= 2 && !isNilArg(L, 2) ? argString(L, 2).toUpperCase() : 'GET';
        if (!/^[A-Z]+$/.test(method)) throw new Error(`http_response.new: ${JSON.stringify(method)} is not a method`);
        const body = n >= 3 && !isNilArg(L, 3) ? argBytes(L, 3) : null;
        const headers: [string, string][] = [];
        if (n >= 4 && lua.lua_type(L, 4) === lua.LUA_TTABLE) {
          lua.lua_pushnil(L);
          while (lua.lua_next(L, 4) !== 0) {
            const k = argString(L, -2);
            const v = argString(L, -1);
            lua.lua_pop(L, 1);
            if (!validHeaderName(k) || !validHeaderValue(v)) throw new Error(`http_response.new: invalid header ${JSON.stringify(k)}`);
            headers.push([k, v]);
          }
        }
        this.pending = { url, method, body, headers };
        return lua.lua_yieldk(L, 0, 0, afterCall);
      },
    });
    this.func('custom_error', (L) => {
      const n = lua.lua_gettop(L);
      if (n === 0) throw new Error('need arguments');
      const msg = argString(L, 1);
      const code = n >= 2 ? Math.trunc(lua.lua_tonumber(L, 2)) : -1;
      const ct = n >= 3 ? argString(L, 3) : null;
      if (ct !== null && !validHeaderValue(ct)) throw new Error('custom_error: invalid content type');
      lua.lua_pushlightuserdata(L, new ScriptHttpError(msg, code, ct));
      return lua.lua_error(L);
    });
    this.func('print', (L) => {
      const parts: string[] = [];
      for (let i = 1; i <= lua.lua_gettop(L); i++) parts.push(argString(L, i));
      process.stdout.write(`${opts.label} ${parts.join('\t')}\n`);
      return 0;
    });
    lua.lua_newtable(L);
    lua.lua_pushglobaltable(L);
    lua.lua_setfield(L, -2, S('__index'));
    this.envMeta = lauxlib.luaL_ref(L, lua.LUA_REGISTRYINDEX);
    lua.lua_sethook(L, this.hook, lua.LUA_MASKCOUNT, HOOK_EVERY);
    if (opts.allowOpenLibs) {
      // debug.sethook would let a script remove its own time limit.
      const ref = this.compile('debug.sethook = function() error("debug.sethook is disabled in gw", 2) end', 'gw');
      this.runNow(ref, NO_BINDINGS, 1000);
    }
  }

  /**
   * The time limit. Past the deadline it fires on every instruction, so an error a script catches
   * with pcall is raised again at once and the run unwinds completely.
   */
  private readonly hook = (L: LuaState): void => {
    if (Date.now() <= this.deadline) return;
    lua.lua_sethook(L, this.hook, lua.LUA_MASKCOUNT, 1);
    lauxlib.luaL_error(L, S('script ran past its time limit'));
  };

  private pushCurrent(L: LuaState, o: ScriptObject | null, what: string): number {
    if (o === null) throw new Error(`${what}.load() is not available here`);
    lua.lua_pushlightuserdata(L, o);
    return 1;
  }

  private table(name: string, fns: Record<string, JsFunction>): void {
    const L = this.L;
    lua.lua_newtable(L);
    for (const k of Object.keys(fns)) {
      lua.lua_pushjsfunction(L, fns[k]!);
      lua.lua_setfield(L, -2, S(k));
    }
    lua.lua_setglobal(L, S(name));
  }

  private func(name: string, fn: JsFunction): void {
    lua.lua_pushjsfunction(this.L, fn);
    lua.lua_setglobal(this.L, S(name));
  }

  /** Compiles a chunk; a syntax error is thrown with the chunk's name. */
  compile(code: string, name: string): number {
    const L = this.L;
    if (lauxlib.luaL_loadbuffer(L, to_luastring(code), null, to_luastring(name)) !== lua.LUA_OK) {
      const msg = lua.lua_tojsstring(L, -1);
      lua.lua_settop(L, 0);
      throw new Error(msg);
    }
    return lauxlib.luaL_ref(L, lua.LUA_REGISTRYINDEX);
  }

  /** A fresh environment for one request's scripts; give it back with {@link releaseEnv}. */
  newEnv(): number {
    const L = this.L;
    lua.lua_newtable(L);
    lua.lua_rawgeti(L, lua.LUA_REGISTRYINDEX, this.envMeta);
    lua.lua_setmetatable(L, -2);
    return lauxlib.luaL_ref(L, lua.LUA_REGISTRYINDEX);
  }

  /** Drops a compiled chunk. */
  unref(ref: number): void {
    lauxlib.luaL_unref(this.L, lua.LUA_REGISTRYINDEX, ref);
  }

  releaseEnv(env: number): void {
    lauxlib.luaL_unref(this.L, lua.LUA_REGISTRYINDEX, env);
  }

  /**
   * Runs a compiled chunk with these bindings, in environment `env` (0: the shared globals, for
   * `sources`); returns the script's error, if any. Synchronous unless the script makes an HTTP
   * call through `http` (then a promise of the same); with `http` null it always is.
   */
  run(ref: number, bindings: RunBindings, limitMs: number, env = 0, http: HttpCaller | null = null): Error | null | Promise<Error | null> {
    const th = this.spare.pop() ?? this.newThread();
    const T = th.L;
    lua.lua_rawgeti(T, lua.LUA_REGISTRYINDEX, ref);
    if (env !== 0) {
      // A main chunk's first upvalue is its _ENV.
      lua.lua_rawgeti(T, lua.LUA_REGISTRYINDEX, env);
      lua.lua_setupvalue(T, -2, 1);
    }
    return this.resume(th, bindings, limitMs, 0, http);
  }

  /** `run` for callers that cannot wait: a script that makes an HTTP call fails instead. */
  runNow(ref: number, bindings: RunBindings, limitMs: number, env = 0): Error | null {
    return this.run(ref, bindings, limitMs, env, null) as Error | null;
  }

  private newThread(): Thread {
    const T = lua.lua_newthread(this.L);
    return { L: T, ref: lauxlib.luaL_ref(this.L, lua.LUA_REGISTRYINDEX) };
  }

  private resume(th: Thread, bindings: RunBindings, limitMs: number, nargs: number, http: HttpCaller | null): Error | null | Promise<Error | null> {
    const T = th.L;
    this.current = bindings;
    this.http = http;
    this.pending = null;
    const t0 = Date.now();
    this.deadline = t0 + limitMs;
    lua.lua_sethook(T, this.hook, lua.LUA_MASKCOUNT, HOOK_EVERY);
    const status = lua.lua_resume(T, null, nargs);
    this.current = NO_BINDINGS;
    this.http = null;
    if (status === lua.LUA_YIELD) {
      const call = this.pending;
      this.pending = null;
      if (call === null || http === null) {
        // coroutine.yield at the top of the script (allow_open_libs): nothing to resume it with.
        this.drop(th);
        return new Error('attempt to yield from outside a coroutine');
      }
      // The time limit counts the script's own running time, not the wait.
      const left = Math.max(1, limitMs - (Date.now() - t0));
      return http(call).then(
        (answer) => {
          lua.lua_pushlightuserdata(T, answer);
          return this.resume(th, bindings, left, 1, http);
        },
        (err: Error) => {
          lua.lua_pushlightuserdata(T, new HttpCallFailure(err.message));
          return this.resume(th, bindings, left, 1, http);
        },
      );
    }
    if (status === lua.LUA_OK) {
      lua.lua_settop(T, 0);
      if (this.spare.length < SPARE_THREADS) this.spare.push(th);
      else this.drop(th);
      return null;
    }
    const t = lua.lua_type(T, -1);
    const u = t === lua.LUA_TLIGHTUSERDATA ? lua.lua_touserdata(T, -1) : null;
    const err = u instanceof ScriptHttpError ? u : new Error(t === lua.LUA_TSTRING || t === lua.LUA_TNUMBER ? lua.lua_tojsstring(T, -1) : 'lua error');
    this.drop(th); // a thread that raised an error is dead
    return err;
  }

  private drop(th: Thread): void {
    lauxlib.luaL_unref(this.L, lua.LUA_REGISTRYINDEX, th.ref);
  }
}

/** Where `http_response.new` continues once resumed: the answer, or the call's error raised in the script. */
function afterCall(L: LuaState): number {
  const v = lua.lua_touserdata(L, -1);
  if (v instanceof HttpCallFailure) {
    lua.lua_pop(L, 1);
    pushString(L, v.message);
    return lua.lua_error(L);
  }
  return 1;
}

const NO_BINDINGS: RunBindings = { request: null, response: null };

function openLibs(L: LuaState, all: boolean): void {
  const libs: [string, JsFunction][] = [
    ['_G', lualib.luaopen_base],
    ['string', lualib.luaopen_string],
    ['table', lualib.luaopen_table],
    ['math', lualib.luaopen_math],
    ['utf8', lualib.luaopen_utf8],
  ];
  if (all) {
    // Everything KrakenD's allow_open_libs gives, except fengari's JS bridge (that would hand
    // scripts the whole Node process).
    const l = lualib as unknown as Record<string, JsFunction>;
    for (const n of ['package', 'coroutine', 'io', 'os', 'debug']) libs.push([n, l['luaopen_' + n]!]);
  }
  for (const [name, open] of libs) {
    lauxlib.luaL_requiref(L, S(name), open, 1);
    lua.lua_pop(L, 1);
  }
  if (!all) {
    // The base library without the functions that read files or load code.
    for (const n of ['dofile', 'loadfile', 'load', 'collectgarbage']) {
      lua.lua_pushnil(L);
      lua.lua_setglobal(L, S(n));
    }
  }
}

/** Source files: read at start-up; with `live`, re-read when their mtime changes. */
export class Sources {
  private stamps: number[];
  constructor(
    readonly files: readonly string[],
    readonly live: boolean,
  ) {
    this.stamps = files.map((f) => statSync(f).mtimeMs);
  }

  read(): string {
    return this.files.map((f) => readFileSync(f, 'utf8')).join('\n');
  }

  /** True when a live source changed since the last call. */
  changed(): boolean {
    if (!this.live) return false;
    let changed = false;
    for (let i = 0; i < this.files.length; i++) {
      let m: number;
      try {
        m = statSync(this.files[i]!).mtimeMs;
      } catch {
        continue; // a file being replaced: keep the loaded version
      }
      if (m !== this.stamps[i]) {
        this.stamps[i] = m;
        changed = true;
      }
    }
    return changed;
  }
}
