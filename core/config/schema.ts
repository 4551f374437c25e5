/**
 * JSON Schema (draft-07) for the part of KrakenD's v3 configuration that gw reads. Objects allow
 * extra keys (KrakenD's `run` ignores unknown keys); `lintSchema()` returns a copy that rejects
 * them, for `gw check --lint`. `extra_config` namespaces stay open in both.
 */
// One schema with two types (not anyOf): loose decoding then converts only a value that is neither.
const duration = {
  type: ['string', 'integer'],
  pattern: '^[-+]?(?:0|(?:(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$',
};
const stringList = { type: 'array', items: { type: 'string' } };
const extraConfig = { type: 'object' };

// url_pattern may be left out: it is then '' (lura's zero value), which routes to '/'.
const backend = {
  type: 'object',
  properties: {
    host: stringList,
    url_pattern: { type: 'string' },
    method: { type: 'string' },
    encoding: { type: 'string' },
    is_collection: { type: 'boolean' },
    target: { type: 'string' },
    allow: stringList,
    deny: stringList,
    mapping: { type: 'object', additionalProperties: { type: 'string' } },
    group: { type: 'string' },
    sd: { type: 'string', enum: ['static', 'dns', 'dns-shared'] },
    sd_scheme: { type: 'string' },
    disable_host_sanitize: { type: 'boolean' },
    input_headers: stringList,
    input_query_strings: stringList,
    extra_config: extraConfig,
  },
};

const endpoint = {
  type: 'object',
  required: ['endpoint'],
  properties: {
    endpoint: { type: 'string', minLength: 1 },
    method: { type: 'string' },
    backend: { type: 'array', items: backend },
    timeout: duration,
    cache_ttl: duration,
    concurrent_calls: { type: 'integer', minimum: 0 },
    output_encoding: { type: 'string' },
    input_headers: stringList,
    input_query_strings: stringList,
    extra_config: extraConfig,
  },
};

export const configSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  type: 'object',
  required: ['version'],
  properties: {
    $schema: { type: 'string' },
    version: { type: 'integer' },
    name: { type: 'string' },
    port: { type: 'integer', minimum: 0, maximum: 65535 },
    listen_ip: { type: 'string' },
    host: stringList,
    timeout: duration,
    cache_ttl: duration,
    output_encoding: { type: 'string' },
    debug_endpoint: { type: 'boolean' },
    echo_endpoint: { type: 'boolean' },
    disable_rest: { type: 'boolean' },
    plugin: {
      type: 'object',
      required: ['folder', 'pattern'],
      properties: { folder: { type: 'string' }, pattern: { type: 'string' } },
    },
    read_timeout: duration,
    write_timeout: duration,
    idle_timeout: duration,
    read_header_timeout: duration,
    max_header_bytes: { type: 'integer', minimum: 0 },
    max_idle_connections: { type: 'integer', minimum: 0 },
    max_idle_connections_per_host: { type: 'integer', minimum: 0 },
    idle_connection_timeout: duration,
    response_header_timeout: duration,
    expect_continue_timeout: duration,
    dialer_timeout: duration,
    dialer_keep_alive: duration,
    dialer_fallback_delay: duration,
    disable_keep_alives: { type: 'boolean' },
    disable_compression: { type: 'boolean' },
    max_shutdown_wait_time: duration,
    sequential_start: { type: 'boolean' },
    async_agent: { type: 'array' },
    tls: { type: ['object', 'null'] },
    client_tls: { type: 'object' },
    use_h2c: { type: 'boolean' },
    allow_insecure_connections: { type: 'boolean' },
    dns_cache_ttl: duration,
    extra_config: extraConfig,
    endpoints: { type: 'array', items: endpoint },
  },
} as const;

/** A copy of the schema in which root, endpoint, backend and plugin objects reject unknown keys. */
export function lintSchema(): object {
  const copy = structuredClone(configSchema) as Record<string, any>;
  // KrakenD's schema allows `@comment`-style keys (`^[@$_#]`) everywhere.
  const close = (o: Record<string, any>) => {
    o.patternProperties = { '^[@$_#]': {} };
    o.additionalProperties = false;
  };
  close(copy);
  close(copy.properties.plugin);
  close(copy.properties.endpoints.items);
  close(copy.properties.endpoints.items.properties.backend.items);
  return copy;
}
