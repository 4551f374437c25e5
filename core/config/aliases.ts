/**
 * KrakenD CE accepts both the short namespace names and the old import-path names in every
 * `extra_config`. gw normalises the old names to the short ones once, at load time.
 */
export const NAMESPACE_ALIASES: Readonly<Record<string, string>> = Object.freeze({
  'github_com/devopsfaith/krakend/transport/http/server/handler': 'plugin/http-server',
  'github.com/devopsfaith/krakend/transport/http/client/executor': 'plugin/http-client',
  'github.com/devopsfaith/krakend/proxy/plugin': 'plugin/req-resp-modifier',
  'github.com/devopsfaith/krakend/proxy': 'proxy',
  'github_com/luraproject/lura/router/gin': 'router',
  'github_com/devopsfaith/krakend/router/gin': 'router',
  'github.com/devopsfaith/krakend/http': 'backend/http',
  'github.com/devopsfaith/krakend-httpcache': 'qos/http-cache',
  'github.com/devopsfaith/krakend-circuitbreaker/gobreaker': 'qos/circuit-breaker',
  'github.com/devopsfaith/krakend-ratelimit/juju/router': 'qos/ratelimit/router',
  'github.com/devopsfaith/krakend-ratelimit/juju/proxy': 'qos/ratelimit/proxy',
  'github.com/devopsfaith/krakend-jose/validator': 'auth/validator',
  'github.com/devopsfaith/krakend-jose/signer': 'auth/signer',
  'github_com/devopsfaith/krakend-cors': 'security/cors',
  'github_com/devopsfaith/krakend-gologging': 'telemetry/logging',
  'github.com/devopsfaith/krakend-martian': 'modifier/martian',
  'github_com/devopsfaith/krakend-metrics': 'telemetry/metrics',
  'github.com/devopsfaith/krakend-lua/proxy': 'modifier/lua-proxy',
  'github.com/devopsfaith/krakend-lua/proxy/backend': 'modifier/lua-backend',
  'github_com/devopsfaith/krakend-lua/router': 'modifier/lua-endpoint',
  'github_com/devopsfaith/bloomfilter': 'auth/revoker',
  'github_com/devopsfaith/krakend-botdetector': 'security/bot-detector',
  'github_com/devopsfaith/krakend-httpsecure': 'security/http',
  'github.com/devopsfaith/krakend-jsonschema': 'validation/json-schema',
  'github.com/devopsfaith/krakend-cel': 'validation/cel',
});

/** Returns a new object whose keys use the short namespace names. */
export function normaliseNamespaces(extra: Readonly<Record<string, unknown>> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!extra) return out;
  for (const k of Object.keys(extra)) {
    const short = NAMESPACE_ALIASES[k] ?? k;
    // The short name wins when both spellings are present.
    if (short !== k && Object.prototype.hasOwnProperty.call(extra, short)) continue;
    out[short] = extra[k];
  }
  return out;
}
