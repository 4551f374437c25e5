/** gw's own version and the KrakenD version whose behaviour it matches. */
export const GW_VERSION = '0.1.0';
/** Sent in `X-Krakend: Version <v>` and `User-Agent: KrakenD Version <v>`, like KrakenD does. */
export const KRAKEND_COMPAT_VERSION = '2.13.8';
export const VERSION_HEADER_VALUE = `Version ${KRAKEND_COMPAT_VERSION}`;
export const USER_AGENT = `KrakenD Version ${KRAKEND_COMPAT_VERSION}`;
