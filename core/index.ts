/** gw's public API: embed the gateway, or import the plugin types. */
export { buildGateway, type Gateway, type GatewayOptions } from './gateway.js';
export { loadConfig, normaliseConfig, ConfigError } from './config/load.js';
export type * from './config/types.js';
export { createLogger, type Logger } from './log.js';
export type * from './plugin/types.js';
export { GW_VERSION, KRAKEND_COMPAT_VERSION } from './version.js';
