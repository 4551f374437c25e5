/**
 * The request checks of an endpoint, compiled into one function: `validation/json-schema` on the
 * buffered body (400), then the request-phase `validation/cel` checks (500). They run in the
 * endpoint handler, or inside `modifier/lua-proxy` when the endpoint has one (KrakenD's order:
 * Lua → CEL → JSON schema), so what a script changes is checked too.
 */
import { paramKey } from '../config/load.js';
import type { EndpointConfig } from '../config/types.js';
import { compileHeaderBuilder, compileQueryFilter } from '../proxy/request.js';
import { StatusError, type ProxyRequest } from '../proxy/types.js';
import { requestActivation, runChecks, type CelChecks } from './cel.js';
import type { BodyCheck } from './guards.js';

export type RequestChecks = (preq: ProxyRequest) => void;

export function compileRequestChecks(ep: EndpointConfig, bodyCheck: BodyCheck | null, cel: CelChecks | null): RequestChecks | null {
  const celPre = cel !== null && cel.pre.length > 0 ? cel.pre : null;
  if (bodyCheck === null && celPre === null) return null;
  // The request as lura's endpoint handler builds it: allowed headers plus X-Forwarded-For/Host
  // and User-Agent (or X-Forwarded-Via), the query filtered by input_query_strings.
  const headersOf = compileHeaderBuilder(null, true);
  const queryOf = compileQueryFilter(ep.inputQueryStrings, null);
  return (preq) => {
    if (bodyCheck !== null) {
      const problem = bodyCheck(preq.body as Buffer | null);
      if (problem !== null) throw new StatusError(problem, 400, problem, null, true);
    }
    if (celPre !== null) {
      const params: Record<string, string> = Object.create(null);
      for (let i = 0; i < preq.paramNames.length; i++) params[paramKey(preq.paramNames[i]!)] = preq.params[i]!;
      const built = headersOf(preq.client);
      const headers: Record<string, string[]> = Object.create(null);
      for (const k in built) {
        const v = built[k]!;
        headers[k] = Array.isArray(v) ? v : [v];
      }
      runChecks(celPre, requestActivation(preq.method, preq.client.path, params, headers, queryOf(preq.query)));
    }
  };
}
