/**
 * The HTTP calls Lua scripts make (`http_response.new`, krakend-lua's helper on Go's default
 * client): redirects followed (up to 10, as Go), each call bounded by the endpoint's timeout and
 * its answer by {@link MAX_BODY}. One undici agent per worker, made when a script first calls.
 */
import { Agent, interceptors, type Dispatcher } from 'undici';
import { ScriptHttpAnswer, type HttpCall, type HttpCaller } from './vm.js';

/** Largest answer body a script may read. */
const MAX_BODY = 16 * 1024 * 1024;

let agent: Dispatcher | null = null;

function dispatcher(): Dispatcher {
  return (agent ??= new Agent({ connections: 64, keepAliveTimeout: 4000 }).compose(interceptors.redirect({ maxRedirections: 10 })));
}

/** A caller whose calls take at most `timeoutMs` (headers and body). */
export function scriptHttpClient(timeoutMs: number): HttpCaller {
  return async (call: HttpCall) => {
    const u = new URL(call.url);
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of call.headers) {
      const prev = headers[k];
      headers[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
    const signal = AbortSignal.timeout(timeoutMs);
    let res: Dispatcher.ResponseData;
    try {
      res = await dispatcher().request({
        origin: u.origin,
        path: u.pathname + u.search,
        method: call.method as Dispatcher.HttpMethod,
        headers,
        body: call.body,
        signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      throw new Error(`${call.method} "${call.url}": ${signal.aborted ? `no answer within ${timeoutMs} ms` : (err as Error).message}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const c of res.body) {
        size += (c as Buffer).length;
        if (size > MAX_BODY) {
          res.body.destroy();
          throw new Error(`the answer is larger than ${MAX_BODY} bytes`);
        }
        chunks.push(c as Buffer);
      }
    } catch (err) {
      throw new Error(`${call.method} "${call.url}": reading the answer: ${signal.aborted ? `not complete within ${timeoutMs} ms` : (err as Error).message}`);
    }
    const h: Record<string, string[]> = Object.create(null);
    for (const [k, v] of Object.entries(res.headers)) {
      if (v === undefined) continue;
      h[k.toLowerCase()] = Array.isArray(v) ? v : [v];
    }
    return new ScriptHttpAnswer(res.statusCode, h, Buffer.concat(chunks));
  };
}
