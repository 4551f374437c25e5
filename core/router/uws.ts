/**
 * The only module that loads uWebSockets.js. Candidates are tried in order and the first
 * native build that loads wins; a pure-JS fallback is never accepted.
 *
 *  1. `official`     `uWebSockets.js`, installed from its git repository (not on npm)
 *  2. `btc-vision`   `@btc-vision/uwebsockets.js` 20.57 (npm repackaging of the official binaries;
 *                    a dependency). Built on glibc 2.38: on an older glibc (≥ 2.36) it is loaded
 *                    through a patched copy (uws-compat.ts, uws-elf.ts); so is `official`.
 *  3. `trufflesuite` `@trufflesuite/uws-js-unofficial` 20.30 (a dependency); its native binary is
 *                    loaded directly, bypassing its JS fallback. Last: it has HTTP/1 parser flaws
 *                    the newer builds fixed (README, "uWebSockets.js").
 *
 * GW_UWS=official|btc-vision|trufflesuite forces one candidate (an error if it cannot load), so
 * CI can run gw on every build it may load. Each candidate's native file is opened with RTLD_NOW:
 * a symbol that cannot be bound fails the load, not the first request that needs it.
 */
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type * as UWS from '@trufflesuite/uws-js-unofficial';
import { isGlibcVersionError, loadPatched } from './uws-compat.js';

export type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket, RecognizedString, AppOptions } from '@trufflesuite/uws-js-unofficial';
export type UwsModule = typeof UWS;

export type UwsBuildId = 'official' | 'btc-vision' | 'trufflesuite';

export interface UwsBinding {
  readonly uws: UwsModule;
  readonly id: UwsBuildId;
  /**
   * Which build loaded and how, e.g. `@btc-vision/uwebsockets.js 20.57.0 (uws_linux_x64_115.node,
   * glibc 2.36 compat: __isoc23_strtol→strtol, …)`.
   */
  readonly name: string;
}

const require = createRequire(import.meta.url);

interface Candidate {
  id: UwsBuildId;
  pkg: string;
  /** The native file inside the package directory. */
  file(dir: string): string;
}

function nativeFile(): string {
  return `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
}

export const CANDIDATES: readonly Candidate[] = [
  { id: 'official', pkg: 'uWebSockets.js', file: (dir) => path.join(dir, nativeFile()) },
  { id: 'btc-vision', pkg: '@btc-vision/uwebsockets.js', file: (dir) => path.join(dir, nativeFile()) },
  { id: 'trufflesuite', pkg: '@trufflesuite/uws-js-unofficial', file: (dir) => path.join(dir, 'binaries', nativeFile()) },
];

/** A real native build exports SSLApp and the listen-socket helpers; the JS fallbacks do not. */
function isNative(m: unknown): m is UwsModule {
  const u = m as Partial<UwsModule> | null;
  return !!u && typeof u.App === 'function' && typeof u.SSLApp === 'function' &&
    typeof u.us_listen_socket_close === 'function' && typeof u.us_socket_local_port === 'function';
}

export class UwsLoadError extends Error {
  constructor(readonly failures: ReadonlyArray<{ name: string; reason: string }>, forced?: string) {
    super(
      (forced ? `GW_UWS=${forced}: that uWebSockets.js build could not be loaded:\n` : 'no native uWebSockets.js build could be loaded:\n') +
        failures.map((f) => `  - ${f.name}: ${f.reason}`).join('\n') +
        (forced ? '' : `\nInstall one of them, for example: npm install @btc-vision/uwebsockets.js@20.57.0 ` +
          `(Node 20/22/24/25, Linux x64/arm64 with glibc >= 2.36, macOS, Windows), ` +
          `or the official build: npm install uNetworking/uWebSockets.js#v20.57.0 (needs ${nativeFile()} for this platform).`),
    );
    this.name = 'UwsLoadError';
  }
}

function dlopenNow(file: string): unknown {
  const mod = { exports: {} as unknown };
  process.dlopen(mod as never, file, os.constants.dlopen.RTLD_NOW);
  return mod.exports;
}

/** Loads one candidate; throws with the reason it cannot be used. */
function loadCandidate(c: Candidate): UwsBinding {
  // Found on Node's search path by folder: a package's "exports" may not expose package.json.
  const dir = (require.resolve.paths(c.pkg) ?? []).map((p) => path.join(p, c.pkg)).find((d) => fs.existsSync(path.join(d, 'package.json')));
  if (dir === undefined) throw new Error('not installed');
  let version = '';
  try {
    version = String((JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version?: unknown }).version ?? '');
  } catch {
    /* the version is only for the log */
  }
  const file = c.file(dir);
  if (!fs.existsSync(file)) throw new Error(`no ${nativeFile()} in ${dir} (this build does not support Node ${process.versions.node} on ${process.platform}-${process.arch})`);
  let m: unknown;
  let how = '';
  try {
    m = dlopenNow(file);
  } catch (err) {
    const msg = firstLine((err as Error).message);
    if (!isGlibcVersionError(msg)) throw new Error(msg);
    try {
      const p = loadPatched(file);
      m = p.exports;
      how = `, ${p.description}`;
    } catch (err2) {
      throw new Error(`${msg.replace(file, path.basename(file))}; ${firstLine((err2 as Error).message)}`);
    }
  }
  if (!isNative(m)) throw new Error('loaded, but it is not a native build (no SSLApp)');
  return { uws: m, id: c.id, name: `${c.pkg}${version ? ` ${version}` : ''} (${path.basename(file)}${how})` };
}

let cached: UwsBinding | undefined;

/** The header-block size uWS accepts when neither the operator nor the config asks for more. */
export const DEFAULT_HEADER_BLOCK = 64 * 1024;

export interface LoadOptions {
  /**
   * Largest request head (request line + header fields) the listener must accept, so that gw's
   * own limits (max_header_bytes → 431, max_url_length → 414) decide, not the parser's. The
   * 20.5x builds read UWS_HTTP_MAX_HEADERS_SIZE once, when the binary is loaded, and default to
   * 4 KB (a 5 KB cookie header got 431); gw sets it unless the operator did.
   */
  minHeaderBlock?: number;
}

/** Resolves the binding once per process (each worker resolves its own). */
export function loadUws(opts: LoadOptions = {}): UwsBinding {
  if (cached) return cached;
  if (process.env.UWS_HTTP_MAX_HEADERS_SIZE === undefined) {
    process.env.UWS_HTTP_MAX_HEADERS_SIZE = String(Math.max(DEFAULT_HEADER_BLOCK, opts.minHeaderBlock ?? 0));
  }
  const forced = process.env.GW_UWS?.trim() || undefined;
  let list: readonly Candidate[] = CANDIDATES;
  if (forced !== undefined) {
    const c = CANDIDATES.find((x) => x.id === forced);
    if (!c) throw new Error(`GW_UWS=${forced}: unknown uWebSockets.js build (use one of ${CANDIDATES.map((x) => x.id).join(', ')})`);
    list = [c];
  }
  const failures: { name: string; reason: string }[] = [];
  for (const c of list) {
    try {
      cached = loadCandidate(c);
      return cached;
    } catch (err) {
      failures.push({ name: c.pkg, reason: (err as Error).message });
    }
  }
  throw new UwsLoadError(failures, forced);
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i === -1 ? s : s.slice(0, i);
}
