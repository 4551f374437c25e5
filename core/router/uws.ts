/**
 * The only module that loads uWebSockets.js. Candidates are tried in order and the first
 * native build that loads wins; a pure-JS fallback is never accepted.
 *
 *  1. `uWebSockets.js`                 the official build, installed from its git repo
 *  2. `@btc-vision/uwebsockets.js`     npm repackaging (needs glibc >= 2.38)
 *  3. `@trufflesuite/uws-js-unofficial` npm repackaging; its native binary is required
 *     directly (`binaries/uws_<platform>_<arch>_<abi>.node`), bypassing its JS fallback.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as UWS from '@trufflesuite/uws-js-unofficial';

export type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket, RecognizedString } from '@trufflesuite/uws-js-unofficial';
export type UwsModule = typeof UWS;

export interface UwsBinding {
  readonly uws: UwsModule;
  /** Which candidate loaded, e.g. `@trufflesuite/uws-js-unofficial (uws_linux_x64_115.node)`. */
  readonly name: string;
}

const require = createRequire(import.meta.url);

interface Candidate {
  name: string;
  load(): unknown;
}

function nativeFile(): string {
  return `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
}

const candidates: Candidate[] = [
  { name: 'uWebSockets.js', load: () => require('uWebSockets.js') },
  { name: '@btc-vision/uwebsockets.js', load: () => require('@btc-vision/uwebsockets.js') },
  {
    name: '@trufflesuite/uws-js-unofficial',
    load: () => {
      const pkg = require.resolve('@trufflesuite/uws-js-unofficial/package.json');
      return require(path.join(path.dirname(pkg), 'binaries', nativeFile()));
    },
  },
];

/** A real native build exports SSLApp and the listen-socket helpers; the JS fallbacks do not. */
function isNative(m: unknown): m is UwsModule {
  const u = m as Partial<UwsModule> | null;
  return !!u && typeof u.App === 'function' && typeof u.SSLApp === 'function' &&
    typeof u.us_listen_socket_close === 'function' && typeof u.us_socket_local_port === 'function';
}

export class UwsLoadError extends Error {
  constructor(readonly failures: ReadonlyArray<{ name: string; reason: string }>) {
    super(
      'no native uWebSockets.js build could be loaded:\n' +
        failures.map((f) => `  - ${f.name}: ${f.reason}`).join('\n') +
        `\nInstall one of them, for example: npm install @trufflesuite/uws-js-unofficial@20.30.0-unofficial.0 ` +
        `(Node 16-20, glibc >= 2.34), or the official build: npm install uNetworking/uWebSockets.js#v20.51.0 ` +
        `(needs ${nativeFile()} for this platform).`,
    );
    this.name = 'UwsLoadError';
  }
}

let cached: UwsBinding | undefined;

/** Resolves the binding once per process (each worker thread resolves its own). */
export function loadUws(): UwsBinding {
  if (cached) return cached;
  const failures: { name: string; reason: string }[] = [];
  // Silence uWS's own startup banner while probing.
  for (const c of candidates) {
    try {
      const m = c.load();
      if (!isNative(m)) {
        failures.push({ name: c.name, reason: 'loaded, but it is not a native build (no SSLApp)' });
        continue;
      }
      const name = c.name === '@trufflesuite/uws-js-unofficial' ? `${c.name} (${nativeFile()})` : c.name;
      cached = { uws: m, name };
      return cached;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const reason = e.code === 'MODULE_NOT_FOUND' ? 'not installed' : firstLine(e.message);
      failures.push({ name: c.name, reason });
    }
  }
  throw new UwsLoadError(failures);
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i === -1 ? s : s.slice(0, i);
}
