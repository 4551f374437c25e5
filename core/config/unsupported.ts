/**
 * KrakenD namespaces gw does not implement yet. KrakenD ignores namespaces it does not know, and so
 * would a naive port; gw names each one at start-up instead (a `gw check` / `gw run` warning), and
 * for the ones that exist to REJECT requests (authentication, authorisation, validation, filters
 * that can answer on their own) it fails closed: the endpoint answers 500 rather than serve
 * requests KrakenD would have refused.
 */

/** Namespaces gw reads, and the levels it reads them at. */
const IMPLEMENTED: ReadonlyMap<string, readonly Level[]> = new Map<string, Level[]>([
  ['router', ['service', 'endpoint']],
  ['proxy', ['endpoint', 'backend']],
  ['backend/http', ['backend']],
  ['plugin/http-client', ['backend']],
  ['plugin/http-server', ['service']],
  ['plugin/req-resp-modifier', ['endpoint', 'backend']],
  ['telemetry/logging', ['service']],
  ['telemetry/opentelemetry', ['service']],
  ['telemetry/metrics', ['service']],
  ['gw/server', ['service']],
  ['modifier/lua-proxy', ['endpoint']],
  ['modifier/lua-backend', ['backend']],
  ['security/cors', ['service']],
  ['auth/validator', ['endpoint']],
  ['auth/signer', ['endpoint']],
  ['security/bot-detector', ['service', 'endpoint']],
  ['validation/json-schema', ['endpoint']],
  ['validation/cel', ['endpoint', 'backend']],
  ['qos/ratelimit/router', ['endpoint']],
  ['qos/ratelimit/router/redis', ['endpoint']],
  ['qos/ratelimit/service', ['service']],
  ['qos/ratelimit/service/redis', ['service']],
  ['qos/ratelimit/proxy', ['backend']],
  ['redis', ['service']],
  ['qos/circuit-breaker', ['backend']],
  ['qos/http-cache', ['backend']],
  ['modifier/martian', ['backend']],
]);

export type Level = 'service' | 'endpoint' | 'backend';

/**
 * Namespaces whose job is to refuse or rewrite requests, by what they do. Rate limits are not here:
 * skipping one costs capacity, not access, and failing a tenth of real configs' endpoints for it
 * would be worse than the warning.
 */
const ENFORCING: ReadonlyMap<string, string> = new Map([
  ['auth/basic', 'basic authentication'],
  ['auth/api-keys', 'API-key authentication'],
  ['security/policies', 'security policies'],
  ['modifier/lua-endpoint', 'a Lua endpoint script'],
]);

export interface Unsupported {
  /** Warnings to print (one per namespace and place). */
  readonly warnings: string[];
  /** Enforcing namespaces found, as `namespace (what it does)`. */
  readonly enforcing: string[];
}

/**
 * Checks one `extra_config`. `where` names the place (`endpoints[2] (/users)`). At the service
 * level enforcing namespaces only warn (they cannot be tied to one
 * endpoint, and failing every endpoint for a service-wide bot filter would be worse than a warning).
 */
export function checkNamespaces(extra: Readonly<Record<string, unknown>>, where: string, level: Level, out: Unsupported): void {
  for (const ns of Object.keys(extra)) {
    const levels = IMPLEMENTED.get(ns);
    if (levels !== undefined) {
      if (!levels.includes(level)) out.warnings.push(`${where}: "${ns}" is read at ${levels.join(' and ')} level only, as in KrakenD; ignored here`);
      continue;
    }
    if (ns.startsWith('gw/')) continue;
    const what = ENFORCING.get(ns);
    if (what !== undefined && level !== 'service') {
      out.enforcing.push(`"${ns}" (${what})`);
      out.warnings.push(
        `${where}: "${ns}" (${what}) is not implemented by gw; this endpoint answers 500 to every request rather than skip it`,
      );
    } else {
      out.warnings.push(`${where}: "${ns}" is not implemented by gw and is ignored`);
    }
  }
}
