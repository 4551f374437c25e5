/**
 * Creates the uWS app a gateway listens with: `App` for plain HTTP, `SSLApp` for `tls`
 * (config/tls.ts says what each KrakenD key becomes). With several key pairs, each later pair's
 * DNS names are SNI server names with their own SSL context; uWS keeps one router per server
 * name, so the routes are registered once per name too (`register`).
 */
import type { TlsKeyPair, TlsOptions } from '../config/tls.js';
import { sniTable } from '../config/tls.js';
import type { AppOptions, TemplatedApp, UwsModule } from './uws.js';

function sslOptions(p: TlsKeyPair, tls: TlsOptions): AppOptions {
  return { cert_file_name: p.certFile, key_file_name: p.keyFile, ssl_ciphers: tls.ciphers };
}

/** Returns the app with every route registered, and a one-line description for the log. */
export function createApp(uws: UwsModule, tls: TlsOptions | null, register: (app: TemplatedApp) => void): { app: TemplatedApp; describe: string } {
  if (tls === null) {
    const app = uws.App();
    register(app);
    return { app, describe: 'plain HTTP' };
  }
  const first = tls.pairs[0]!;
  let app: TemplatedApp;
  try {
    app = uws.SSLApp(sslOptions(first, tls));
  } catch (err) {
    throw new Error(`${first.where}: uWS could not build a TLS context from ${first.certFile} and ${first.keyFile} (${(err as Error).message})`);
  }
  register(app);
  const sni = sniTable(tls);
  for (const [name, p] of sni) {
    try {
      app.addServerName(name, sslOptions(p, tls));
    } catch (err) {
      throw new Error(`${p.where}: uWS could not build a TLS context for server name ${name} (${(err as Error).message})`);
    }
    // Routes registered after domain() go to that server name's router.
    app.domain(name);
    register(app);
  }
  const names = sni.size > 0 ? `, SNI: ${[...sni].map(([n, p]) => `${n} → ${p.where}`).join(', ')}` : '';
  return { app, describe: `TLS (min ${tls.minVersion === 'TLS13' ? 'TLS 1.3' : 'TLS 1.2'}, default certificate ${first.where}${names})` };
}
