/**
 * `no-redirect`: KrakenD's built-in client plugin that returns a backend's redirects as they are
 * instead of following them (Go: an http.Client whose CheckRedirect returns ErrUseLastResponse).
 *
 *   "extra_config": { "plugin/http-client": { "name": "no-redirect" } }
 *
 * It has no settings. The call goes through gw's pooled client as usual; only its redirect
 * following is off for this request (transport `keepRedirects`), so the 3xx, its Location and its
 * body come back untouched and stream zero-copy like any other answer. On a no-op endpoint the
 * client gets the 3xx; on a decoding endpoint the usual status check applies (a 3xx is not a
 * success: 500, or the status with `return_error_code`).
 */
import { keepRedirects } from '../../transport/client.js';
import type { ClientFactory } from '../types.js';
import { withDirect } from './direct.js';

export const NO_REDIRECT = 'no-redirect';

export const noRedirectFactory: ClientFactory = () =>
  withDirect(
    (req, next) => {
      keepRedirects(req.headers);
      return next();
    },
    (next) => (r) => {
      keepRedirects(r.headers);
      return next(r);
    },
  );
