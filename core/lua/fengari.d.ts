// The slice of fengari's C-like API that core/lua uses (fengari ships no types).
declare module 'fengari' {
  export type LuaState = { readonly __luaState: unique symbol };
  export type LuaString = Uint8Array;
  export type JsFunction = (L: LuaState) => number;

  export const lua: {
    LUA_OK: number;
    LUA_YIELD: number;
    LUA_REGISTRYINDEX: number;
    LUA_MULTRET: number;
    LUA_TNIL: number;
    LUA_TBOOLEAN: number;
    LUA_TLIGHTUSERDATA: number;
    LUA_TNUMBER: number;
    LUA_TSTRING: number;
    LUA_TTABLE: number;
    LUA_TFUNCTION: number;
    LUA_MASKCOUNT: number;
    lua_atnativeerror(L: LuaState, f: JsFunction): void;
    lua_gettop(L: LuaState): number;
    lua_settop(L: LuaState, n: number): void;
    lua_pop(L: LuaState, n: number): void;
    lua_type(L: LuaState, i: number): number;
    lua_isinteger(L: LuaState, i: number): boolean;
    lua_tojsstring(L: LuaState, i: number): string;
    lua_tolstring(L: LuaState, i: number): LuaString;
    lua_tonumber(L: LuaState, i: number): number;
    lua_toboolean(L: LuaState, i: number): boolean;
    lua_touserdata(L: LuaState, i: number): unknown;
    lua_pushnil(L: LuaState): void;
    lua_pushnumber(L: LuaState, n: number): void;
    lua_pushinteger(L: LuaState, n: number): void;
    lua_pushboolean(L: LuaState, b: boolean): void;
    lua_pushstring(L: LuaState, s: LuaString): void;
    lua_pushlightuserdata(L: LuaState, p: unknown): void;
    lua_pushjsfunction(L: LuaState, f: JsFunction): void;
    lua_pushvalue(L: LuaState, i: number): void;
    lua_newtable(L: LuaState): void;
    lua_setfield(L: LuaState, i: number, k: LuaString): void;
    lua_getfield(L: LuaState, i: number, k: LuaString): number;
    lua_setglobal(L: LuaState, k: LuaString): void;
    lua_getglobal(L: LuaState, k: LuaString): number;
    lua_rawgeti(L: LuaState, i: number, n: number): number;
    lua_rawseti(L: LuaState, i: number, n: number): void;
    lua_rawlen(L: LuaState, i: number): number;
    lua_next(L: LuaState, i: number): number;
    lua_setmetatable(L: LuaState, i: number): void;
    lua_pcall(L: LuaState, nargs: number, nresults: number, errfunc: number): number;
    lua_newthread(L: LuaState): LuaState;
    lua_resume(L: LuaState, from: LuaState | null, nargs: number): number;
    lua_yieldk(L: LuaState, nresults: number, ctx: number, k: ((L: LuaState, status: number, ctx: number) => number) | null): never;
    lua_error(L: LuaState): never;
    lua_setupvalue(L: LuaState, funcindex: number, n: number): LuaString | null;
    lua_pushglobaltable(L: LuaState): void;
    lua_sethook(L: LuaState, f: ((L: LuaState, ar: unknown) => void) | null, mask: number, count: number): void;
  };
  export const lauxlib: {
    luaL_newstate(): LuaState;
    luaL_loadbuffer(L: LuaState, s: LuaString, sz: number | null, name: LuaString): number;
    luaL_ref(L: LuaState, t: number): number;
    luaL_unref(L: LuaState, t: number, ref: number): void;
    luaL_tolstring(L: LuaState, i: number): LuaString;
    luaL_error(L: LuaState, fmt: LuaString): never;
    luaL_checkstack(L: LuaState, n: number, msg: LuaString | null): void;
    luaL_requiref(L: LuaState, name: LuaString, f: JsFunction, glb: number): void;
  };
  export const lualib: {
    luaL_openlibs(L: LuaState): void;
    luaopen_base: JsFunction;
    luaopen_string: JsFunction;
    luaopen_table: JsFunction;
    luaopen_math: JsFunction;
    luaopen_utf8: JsFunction;
  };
  export function to_luastring(s: string, cache?: boolean): LuaString;
}
