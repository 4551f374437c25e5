/**
 * An endpoint's request stages, compiled once at start-up into one chain — lura's handler
 * decorators, Envoy's filter chain. Each stage either passes the exchange on (`next(x)`) or ends
 * it (`x.refuse()`, `x.fail()`); the last link is the pipe (no-op stream or decoding proxy).
 * A stage that is not configured is not in the chain: an endpoint without guards runs its pipe
 * directly from the uWS handler.
 *
 * uWS's HttpRequest dies when the handler returns, so a stage reads what it needs from it in
 * `capture` (synchronously, before the first stage runs) into fixed fields of the exchange.
 * Every link checks that the exchange is still open and turns a throw into `x.crashed()`, so a
 * stage written tomorrow (rate limits, server plugins, telemetry) cannot leak a request or take
 * the worker down by forgetting a failure path.
 */
import type { JWTPayload } from 'jose';
import { AuthError, claim, claimText, type JwtValidator } from '../auth/jwt.js';
import type { BackendResponse } from '../plugin/types.js';
import { modifyEndpointRequest, modifyStreamed, type Modifiers } from '../plugin/modifier.js';
import type { BackendPipe } from '../proxy/backend.js';
import type { AllowList } from '../config/types.js';
import { ProxyRequest, withBackend, type OutboundRequest, type Proxy, type ProxyResponse } from '../proxy/types.js';
import { jwtActivation, runChecks, type CelChecks } from '../validation/cel.js';
import type { BotCheck } from '../validation/guards.js';
import type { RequestChecks } from '../validation/request.js';
import { ipKey, RateLimitError, type RouterLimit } from '../qos/ratelimit.js';
import { ALLOW, DENY } from '../qos/limiter.js';
import { OPEN, type Exchange } from './exchange.js';
import type { HttpRequest } from './uws.js';

export type Next = (x: Exchange) => void;

export interface Stage {
  /** For logs and docs. */
  readonly name: string;
  /** Reads, synchronously, what `run` needs from the live request. */
  readonly capture?: (req: HttpRequest, x: Exchange) => void;
  /** Passes the exchange on with `next(x)` or ends it; may finish asynchronously. */
  readonly run: (x: Exchange, next: Next) => void;
}

export interface Chain {
  /** Every stage's capture, as one call (null when no stage needs the request). */
  readonly capture: ((req: HttpRequest, x: Exchange) => void) | null;
  readonly start: Next;
}

export function compileChain(stages: readonly Stage[], pipe: Next): Chain {
  let next = link(pipe);
  for (let i = stages.length - 1; i >= 0; i--) {
    const run = stages[i]!.run;
    const after = next;
    next = link((x) => run(x, after));
  }
  const captures = stages.flatMap((s) => (s.capture === undefined ? [] : [s.capture]));
  let capture: Chain['capture'] = null;
  if (captures.length === 1) capture = captures[0]!;
  else if (captures.length > 1) {
    capture = (req, x) => {
      for (let i = 0; i < captures.length; i++) captures[i]!(req, x);
    };
  }
  return { capture, start: next };
}

/** A step that only runs on an open exchange and cannot throw past it. */
function link(step: Next): Next {
  return (x) => {
    if (x.state !== OPEN || x.aborted) return;
    try {
      step(x);
    } catch (err) {
      x.crashed(err as Error);
    }
  };
}

// ---- guards ----

/** `security/bot-detector`: 403 before anything is read or forwarded. */
export function botStage(bot: BotCheck): Stage {
  return {
    name: 'BotDetector',
    capture: (req, x) => {
      x.userAgent = req.getHeader('user-agent');
    },
    run: (x, next) => {
      if (bot(x.userAgent)) x.refuse(new AuthError(403, 'bot detected'), 'BotDetector');
      else next(x);
    },
  };
}

const LIMITED_CLIENT = new RateLimitError(429);
const LIMITED_ALL = new RateLimitError(503);

/**
 * `qos/ratelimit/router` (and the service / Redis variants): the client's bucket (429), then the
 * shared one (503), as krakend-ratelimit. A bucket whose tokens come from another process may
 * answer later (limiter.ts); a local one answers at once and nothing is allocated.
 */
export function rateLimitStage(limit: RouterLimit): Stage {
  const { global, client, strategy, header, param } = limit;
  const takeGlobal = (x: Exchange, next: Next): void => {
    if (global === null) return next(x);
    const v = global.take('');
    if (v === ALLOW) next(x);
    else if (v === DENY) x.refuse(LIMITED_ALL, 'Ratelimit');
    else global.wait('', (ok) => (ok ? next(x) : x.refuse(LIMITED_ALL, 'Ratelimit')));
  };
  if (client === null) return { name: 'Ratelimit', run: takeGlobal };
  const keyOf = (x: Exchange): string =>
    strategy === 'ip' ? ipKey(x.limitKey, x.ip) : strategy === 'param' ? (param < 0 ? '' : x.preq.params[param]!) : x.limitKey;
  return {
    name: 'Ratelimit',
    capture: strategy === 'header' || (strategy === 'ip' && header !== '')
      ? (req, x) => {
          x.limitKey = req.getHeader(header);
        }
      : undefined,
    run: (x, next) => {
      const key = keyOf(x);
      if (key === '') return x.refuse(LIMITED_CLIENT, 'Ratelimit'); // KrakenD: no key, no pass
      const v = client.take(key);
      if (v === ALLOW) takeGlobal(x, next);
      else if (v === DENY) x.refuse(LIMITED_CLIENT, 'Ratelimit');
      else {
        client.wait(key, (ok) => {
          if (x.state !== OPEN || x.aborted) return; // gone while waiting: no shared token spent for it
          if (ok) takeGlobal(x, next);
          else x.refuse(LIMITED_CLIENT, 'Ratelimit');
        });
      }
    },
  };
}

/** `auth/validator`: nothing is read or forwarded before the token is accepted. */
export function jwtStage(jwt: JwtValidator, cel: CelChecks | null): Stage {
  const celJwt = cel !== null && cel.jwt.length > 0 ? cel.jwt : null;
  const accepted = (x: Exchange, claims: JWTPayload, next: Next): void => {
    if (x.state !== OPEN || x.aborted) return;
    if (celJwt !== null) {
      try {
        runChecks(celJwt, jwtActivation(claims));
      } catch (err) {
        x.refuse(new AuthError(401, (err as Error).message), 'CEL');
        return;
      }
    }
    x.preq = withClaims(x.preq, claims, jwt);
    next(x);
  };
  return {
    name: 'JWTValidator',
    capture: (req, x) => {
      x.token = req.getHeader(jwt.header);
      x.cookie = req.getHeader('cookie'); // the token may be in a cookie (default access_token)
    },
    run: (x, next) => {
      jwt.validate(x.token, x.cookie).then(
        (claims) => {
          try {
            accepted(x, claims, next);
          } catch (err) {
            x.crashed(err as Error);
          }
        },
        (err: Error) => x.refuse(err, 'JWTValidator'),
      );
    },
  };
}

/**
 * Reads the whole client body before the pipe runs (several backends share one copy; scripts and
 * a body schema need it whole; a length-less upload under `max_payload` is read — bounded — before
 * anything is forwarded, so an oversized one never reaches a backend). The size limit is enforced
 * by the body itself (413).
 */
export function readBodyStage(always: boolean): Stage {
  return {
    name: 'ReadBody',
    run: (x, next) => {
      const body = x.body;
      if (body === null || (!always && body.lengthKnown)) {
        next(x);
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      body.on('data', (c: Buffer) => {
        chunks.push(c);
        size += c.length;
      });
      body.once('end', () => {
        x.preq.body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
        next(x);
      });
      body.once('error', (err: Error) => x.fail(err));
    },
  };
}

/** `validation/json-schema` on the buffered body and the request `validation/cel` checks. */
export function checksStage(checks: RequestChecks): Stage {
  return {
    name: 'RequestChecks',
    run: (x, next) => {
      try {
        checks(x.preq);
      } catch (err) {
        x.fail(err as Error);
        return;
      }
      next(x);
    },
  };
}

// ---- the pipe (last link) ----

/**
 * No-op: the backend's answer is streamed to the client untouched (exchange.ts `stream`). With gw's
 * own client the call runs in receiver mode: the exchange gets the head synchronously from undici's
 * parser and attaches the client sink before the first body chunk; a client plugin's answer comes
 * through its promise.
 */
export function noopPipe(pipe: BackendPipe, mods: Modifiers | null = null, endpointQuery: AllowList = []): Next {
  if (mods !== null) return modifiedNoopPipe(pipe, mods, endpointQuery);
  const direct = pipe.direct;
  const pattern = pipe.config.urlPattern;
  const send = (x: Exchange, out: OutboundRequest): void => {
    x.out = out;
    if (x.rt.noopMetrics !== null) x.tb = performance.now();
    if (direct !== null) {
      x.call = direct(out, x);
      return;
    }
    pipe.client(out).then(
      (r) => streamSafely(x, r),
      (err: Error) => failSafely(x, withBackend(err, out, pattern)),
    );
  };
  return (x) => {
    let out;
    try {
      out = pipe.buildOutbound(x.preq);
    } catch (err) {
      x.fail(err as Error);
      return;
    }
    if (!(out instanceof Promise)) {
      send(x, out);
      return;
    }
    // A lua-backend pre script waited on an HTTP call: the client may have gone meanwhile.
    out.then(
      (o) => {
        if (x.state !== OPEN || x.aborted) return;
        try {
          send(x, o);
        } catch (err) {
          x.crashed(err as Error);
        }
      },
      (err: Error) => failSafely(x, err),
    );
  };
}

/**
 * A no-op endpoint with endpoint-level modifier plugins: the request modifiers change what the
 * backend request is built from, the response modifiers see the streamed answer (io, status,
 * headers) before it goes out.
 */
function modifiedNoopPipe(pipe: BackendPipe, mods: Modifiers, endpointQuery: AllowList): Next {
  const pre = modifyEndpointRequest(mods, endpointQuery)!;
  return (x) => {
    pre(x.preq)
      .then(({ req, wrapper }) => {
        if (x.state !== OPEN) throw x.reason ?? new Error('the request ended');
        const built = pipe.buildOutbound(req);
        return built instanceof Promise ? built.then((out) => ({ out, wrapper })) : { out: built, wrapper };
      })
      .then(({ out, wrapper }) => {
        if (x.state !== OPEN) throw x.reason ?? new Error('the request ended');
        x.out = out;
        if (x.rt.noopMetrics !== null) x.tb = performance.now();
        return pipe.client(out).then(
          (r) => modifyStreamed(mods, r, wrapper, x.trace),
          (err: Error) => {
            throw withBackend(err, out, pipe.config.urlPattern);
          },
        );
      })
      .then(
        (r) => streamSafely(x, r),
        (err: Error) => failSafely(x, err),
      );
  };
}

/** Decoding encodings: the composed proxy's merged data, rendered once. */
export function proxyPipe(proxy: Proxy): Next {
  return (x) => {
    proxy(x.preq).then(
      (r) => answerSafely(x, r),
      (err: Error) => failSafely(x, err),
    );
  };
}

// A throw while answering (a plugin's odd header, a response nested too deep to serialise...)
// must end that request, never reach the process as an unhandled rejection.
function streamSafely(x: Exchange, r: BackendResponse): void {
  try {
    x.stream(r);
  } catch (err) {
    x.crashed(err as Error);
  }
}

function answerSafely(x: Exchange, r: ProxyResponse): void {
  try {
    x.answer(r);
  } catch (err) {
    x.crashed(err as Error);
  }
}

function failSafely(x: Exchange, e: Error): void {
  try {
    x.fail(e);
  } catch (err) {
    x.crashed(err as Error);
  }
}

/** A header value as UTF-8 bytes on the wire (Go sends UTF-8; undici writes strings as Latin-1). */
function utf8Header(s: string): string {
  return /[^\x00-\x7f]/.test(s) ? Buffer.from(s, 'utf8').toString('latin1') : s;
}

/** The request with the accepted token's claims: `{JWT.x}` values and `propagate_claims` headers. */
function withClaims(p: ProxyRequest, claims: JWTPayload, jwt: JwtValidator): ProxyRequest {
  let extra = p.extra;
  if (jwt.placeholders.length > 0) {
    const e: Record<string, string> = Object.create(null);
    for (const name of jwt.placeholders) e[name] = claimText(claim(claims, name.slice(4)));
    extra = e;
  }
  let client = p.client;
  if (jwt.propagate.length > 0) {
    const headers = new Map(client.headers);
    for (const [c, h] of jwt.propagate) {
      const v = claim(claims, c);
      // The claim always wins over what the client sent under that name.
      if (v === undefined) headers.delete(h);
      else headers.set(h, [utf8Header(claimText(v))]);
    }
    client = { ...client, headers };
  }
  return new ProxyRequest(p.params, p.paramNames, p.query, client, p.body, p.scope, p.method, extra);
}
