/**
 * The client plugins gw has without a plugin folder, like KrakenD's built-ins:
 *  - `no-redirect` (KrakenD CE): the backend's redirects come back as they are.
 *  - `static-filesystem` (KrakenD Enterprise): the backend is a folder on disk.
 *
 * `resolveClientPlugin` (core/plugin/client.ts) looks a backend's `plugin/http-client` name up in
 * the plugin folder's registry first and falls back to these; a folder plugin registering one of
 * these names replaces the built-in.
 */
import type { ClientFactory } from '../types.js';
import { NO_REDIRECT, noRedirectFactory } from './no-redirect.js';
import { STATIC_FILESYSTEM, staticFilesystemFactory } from './static-filesystem.js';

/** What the registry calls the file of a built-in (in log lines and errors). */
export const BUILTIN_FILE = '<built-in>';

export interface BuiltinClient {
  readonly factory: ClientFactory;
  readonly file: typeof BUILTIN_FILE;
}

const CLIENTS: ReadonlyMap<string, BuiltinClient> = new Map([
  [NO_REDIRECT, { factory: noRedirectFactory, file: BUILTIN_FILE }],
  [STATIC_FILESYSTEM, { factory: staticFilesystemFactory, file: BUILTIN_FILE }],
]);

/** The built-in client plugin registered under `name`, if any. */
export function builtinClient(name: string): BuiltinClient | undefined {
  return CLIENTS.get(name);
}

/** Names of the built-in client plugins, sorted. */
export const BUILTIN_CLIENT_NAMES: readonly string[] = [...CLIENTS.keys()].sort();

export { directOf } from './direct.js';
