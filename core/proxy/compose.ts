/**
 * The endpoint proxy (lura's factory.go + CE proxy factory), composed once per endpoint, outer →
 * inner: signer (auth/signer) → Lua (modifier/lua-proxy) → shadow → static → [flatmap → merge (parallel or sequential), several backends only] →
 * per-backend stacks. Stages whose config is absent are not composed.
 */
import type { EndpointConfig } from '../config/types.js';
import type { BackendPipe } from './backend.js';
import { compileFlatmap, flatmapOps, setKey } from './flatmap.js';
import { wrapSigner } from '../auth/signer.js';
import { responseActivation, runChecks, type CelChecks } from '../validation/cel.js';
import type { RequestChecks } from '../validation/request.js';
import { wrapProxyLua, type LuaLog } from '../lua/modifier.js';
import { composeMerge, composeSequential } from './merge.js';
import { modifyProxy, type Modifiers } from '../plugin/modifier.js';
import { DeadlineError, Scope, type Proxy, type ProxyRequest, type ProxyResponse } from './types.js';

type Obj = Record<string, unknown>;

function proxyNs(extra: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const p = extra.proxy;
  return typeof p === 'object' && p !== null && !Array.isArray(p) ? (p as Record<string, unknown>) : {};
}

export function isShadow(p: BackendPipe): boolean {
  return proxyNs(p.config.extraConfig).shadow === true;
}

/**
 * The decoding proxy of an endpoint (null for no-op endpoints). `pipes` are the endpoint's
 * backends in config order.
 */
export function composeEndpointProxy(
  ep: EndpointConfig, pipes: readonly BackendPipe[], log: LuaLog, requestChecks: RequestChecks | null = null, celPost: CelChecks['post'] = [],
  mods: Modifiers | null = null,
): Proxy {
  const ns = proxyNs(ep.extraConfig);
  let normal = pipes.filter((p) => !isShadow(p));
  let shadows = pipes.filter(isShadow);
  if (normal.length === 0) {
    normal = pipes.slice();
    shadows = [];
  }
  const proxies = normal.map((p) => p.proxy!);
  let proxy: Proxy;
  if (proxies.length === 1) proxy = proxies[0]!;
  else {
    if (ns.sequential === true) {
      const propagated = Array.isArray(ns.sequential_propagated_params) ? ns.sequential_propagated_params.map(String) : [];
      proxy = composeSequential(proxies, normal.map((p) => p.config), ep.timeoutMs, propagated);
    } else {
      proxy = composeMerge(proxies, ep.timeoutMs);
    }
    const ops = flatmapOps(ep.extraConfig);
    if (ops !== null) proxy = withFlatmap(proxy, compileFlatmap(ops));
  }
  // lura's order: the plugin middleware wraps the backends (and the merge), the static one wraps it.
  if (mods !== null) proxy = modifyProxy(proxy, mods, ep.inputQueryStrings);
  const st = ns.static;
  if (typeof st === 'object' && st !== null && !Array.isArray(st)) {
    const data = (st as { data?: unknown }).data;
    if (typeof data === 'object' && data !== null && !Array.isArray(data)) {
      proxy = withStatic(proxy, data as Obj, String((st as { strategy?: unknown }).strategy ?? 'always'));
    }
  }
  if (shadows.length > 0) proxy = withShadows(proxy, shadows.map((p) => p.proxy!), ep.timeoutMs);
  // CEL response checks sit inside Lua (KrakenD: Lua → CEL → ...); its request checks run in the
  // endpoint handler, before the body is read by anything else.
  if (celPost.length > 0) proxy = withCelPost(proxy, celPost);
  if (requestChecks !== null) proxy = withRequestChecks(proxy, requestChecks);
  // Lua is the outermost stage of KrakenD's endpoint proxy; the signer (a router-level wrapper in
  // KrakenD) signs the final answer.
  proxy = wrapProxyLua(proxy, ep.extraConfig, `endpoint ${ep.path}`, ep.path, ep.timeoutMs, log);
  return wrapSigner(proxy, ep.extraConfig, `endpoint ${ep.path}`);
}

/** JSON schema and request CEL checks, here only when a lua-proxy script runs before them. */
function withRequestChecks(next: Proxy, checks: RequestChecks): Proxy {
  return (req) => {
    try {
      checks(req);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return next(req);
  };
}

/** Response CEL checks on the merged answer; skipped for a partial one, as KrakenD (it carries an error). */
function withCelPost(next: Proxy, checks: CelChecks['post']): Proxy {
  return (req) =>
    next(req).then((r) => {
      if (r.errors === null) runChecks(checks, responseActivation(r.data, r.isComplete, 200, {}));
      return r;
    });
}

function withFlatmap(next: Proxy, filter: (d: Obj) => Obj): Proxy {
  return (req) =>
    next(req).then((r) => {
      r.data = filter(r.data);
      return r;
    });
}

type Matcher = (r: ProxyResponse | null, failed: boolean) => boolean;

function staticMatcher(strategy: string): Matcher {
  switch (strategy) {
    case 'success':
      return (_r, failed) => !failed;
    case 'errored':
      return (_r, failed) => failed;
    case 'complete':
      return (r, failed) => !failed && r !== null && r.isComplete;
    case 'incomplete':
      return (r) => r === null || !r.isComplete;
    default:
      // `always`, and unknown strategies (lura falls back to always).
      return () => true;
  }
}

/** `extra_config.proxy.static`: merges fixed keys into the answer when the strategy matches. */
function withStatic(next: Proxy, data: Obj, strategy: string): Proxy {
  const match = staticMatcher(strategy);
  const keys = Object.keys(data);
  const addTo = (target: Obj) => {
    for (const k of keys) setKey(target, k, data[k]);
  };
  return (req) =>
    next(req).then(
      (r) => {
        if (!match(r, r.errors !== null)) return r;
        addTo(r.data);
        return r;
      },
      (err: Error) => {
        if (!match(null, true)) throw err;
        // No answer: a response made of the static data, still carrying the error (200, incomplete).
        const d: Obj = Object.create(null);
        addTo(d);
        const all = (err as { all?: Error[] }).all ?? [err];
        return { data: d, isComplete: false, errors: all };
      },
    );
}

/**
 * Shadow backends (lura's shadow.go): called with a copy of the request, detached from the
 * client's cancellation but bounded by the endpoint timeout; their answers are ignored.
 */
function withShadows(next: Proxy, shadows: readonly Proxy[], timeoutMs: number): Proxy {
  const fire = (req: ProxyRequest) => {
    const ac = new Scope();
    const timer = setTimeout(() => ac.cancel(new DeadlineError()), timeoutMs);
    const sub = req.derive(ac);
    let left = shadows.length;
    const end = () => {
      if (--left === 0) clearTimeout(timer);
    };
    for (const s of shadows) {
      try {
        s(sub).then(end, end);
      } catch {
        end();
      }
    }
  };
  return (req) => {
    fire(req);
    return next(req);
  };
}
