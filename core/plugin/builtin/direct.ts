/**
 * What the built-in client plugins share with `pluginClient` (core/plugin/client.ts).
 *
 * A built-in's handler is an ordinary {@link ClientHandler} (so it works wherever a handler does),
 * and it may also carry a {@link DIRECT_CLIENT} factory: the backend's client built straight on
 * gw's own, without the wrapper a third-party plugin gets. The wrapper checks a plugin's answers,
 * turns a handler's throw into a plugin error and re-shapes gw's raw response heads into plain
 * objects; a built-in's answers are well-formed by construction, and its failures must keep the
 * meaning the default client gives them (a timeout is a timeout, not a plugin error).
 */
import type { Client } from '../../proxy/backend.js';
import type { ClientHandler } from '../types.js';

export const DIRECT_CLIENT: unique symbol = Symbol('gw.builtin.directClient');

/** Builds the backend's client on `next`, gw's pooled client for that backend. */
export type DirectFactory = (next: Client) => Client;

export type BuiltinHandler = ClientHandler & { [DIRECT_CLIENT]?: DirectFactory };

/** A handler with its direct form attached. */
export function withDirect(handler: ClientHandler, direct: DirectFactory): BuiltinHandler {
  const h = handler as BuiltinHandler;
  h[DIRECT_CLIENT] = direct;
  return h;
}

/** The direct form of a built-in handler, or undefined for any other handler. */
export function directOf(handler: ClientHandler): DirectFactory | undefined {
  return (handler as BuiltinHandler)[DIRECT_CLIENT];
}
