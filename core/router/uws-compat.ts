/**
 * Loads a uWebSockets.js binary built against glibc >= 2.38 on an older glibc, through a patched
 * copy of it (the patch and why it is safe: uws-elf.ts).
 *
 * Why a patched copy rather than a shim compiled on the machine: nothing to build, no compiler or
 * Node headers needed where gw runs (npm 11 does not even run dependencies' install scripts unless
 * approved), and the result binds to libc's own functions. The copy is made once per binary and
 * machine, never per request: at the first start-up that needs it, into a cache directory.
 *
 * Cache safety: the directory (GW_UWS_CACHE, else $XDG_CACHE_HOME/gw or ~/.cache/gw, else
 * <tmpdir>/gw-<uid>) must be a real directory owned by this user and writable by no one else, in a
 * parent no other user can rename it out of. The file name carries the SHA-256 of the patched
 * bytes, which are rebuilt in memory at every start (≈30 ms) and compared with the file before it
 * is loaded; a missing or different file is written to a temporary name (O_EXCL) and renamed over
 * it atomically, so concurrent workers starting together never see half a file.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ElfError, libcDefs, patchIsoc23, type LibcDefs, type Redirect } from './uws-elf.js';

/** Bump when the patch changes (part of the cached file's name). */
const PATCH_REV = 1;

export interface CompatLoad {
  exports: unknown;
  /** e.g. `glibc 2.36 compat: __isoc23_strtol→strtol, …` */
  description: string;
  /** The patched copy that was loaded. */
  file: string;
}

/** True when a dlopen error is about a glibc symbol version this libc lacks. */
export function isGlibcVersionError(message: string): boolean {
  return /version [`']GLIBC_[0-9.]+' not found/.test(message);
}

let libcCache: { path: string; defs: LibcDefs; version: string } | null | undefined;

/** The libc.so.6 this process runs on (from /proc/self/maps), with its symbol versions. */
export function hostLibc(): { path: string; defs: LibcDefs; version: string } | null {
  if (libcCache !== undefined) return libcCache;
  libcCache = null;
  let file: string | undefined;
  try {
    for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
      const p = line.slice(line.indexOf('/'));
      if (line.includes('/') && /\/libc\.so\.6$/.test(p)) {
        file = p;
        break;
      }
    }
  } catch {
    return null;
  }
  if (file === undefined) return null; // not glibc (musl, macOS, Windows)
  const defs = libcDefs(fs.readFileSync(file));
  let best = [0, 0, 0];
  for (const v of defs.versions) {
    const m = /^GLIBC_(\d+)\.(\d+)(?:\.(\d+))?$/.exec(v);
    if (!m) continue;
    const n = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
    if (n[0]! > best[0]! || (n[0] === best[0] && (n[1]! > best[1]! || (n[1] === best[1] && n[2]! > best[2]!)))) best = n;
  }
  libcCache = { path: file, defs, version: best[2] ? best.join('.') : `${best[0]}.${best[1]}` };
  return libcCache;
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** A directory only this user can write to (checked, not assumed), or the reason it is not. */
function ownedDir(dir: string): string | null {
  const uid = process.getuid?.();
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.lstatSync(dir);
    if (!st.isDirectory()) return `${dir} is not a directory`;
    if (uid !== undefined && st.uid !== uid) return `${dir} is owned by uid ${st.uid}, not ${uid}`;
    if ((st.mode & 0o022) !== 0) return `${dir} is writable by others (mode ${(st.mode & 0o777).toString(8)})`;
    const parent = fs.statSync(path.dirname(dir));
    const sticky = (parent.mode & 0o1000) !== 0;
    if ((parent.mode & 0o022) !== 0 && !sticky) return `${path.dirname(dir)} is writable by others and not sticky`;
    if (uid !== undefined && parent.uid !== uid && parent.uid !== 0 && !sticky) return `${path.dirname(dir)} is owned by another user`;
    fs.accessSync(dir, fs.constants.W_OK);
    return null;
  } catch (err) {
    return `${dir}: ${(err as Error).message}`;
  }
}

function cacheDirs(): string[] {
  if (process.env.GW_UWS_CACHE) return [path.resolve(process.env.GW_UWS_CACHE)];
  const out: string[] = [];
  const xdg = process.env.XDG_CACHE_HOME;
  if (xdg && path.isAbsolute(xdg)) out.push(path.join(xdg, 'gw'));
  try {
    out.push(path.join(os.homedir(), '.cache', 'gw'));
  } catch {
    /* no home directory */
  }
  out.push(path.join(os.tmpdir(), `gw-${process.getuid?.() ?? 'user'}`));
  return out;
}

/** Writes `bytes` as `file` unless it already holds exactly them; atomic for concurrent starters. */
function ensureFile(file: string, bytes: Buffer, digest: string): void {
  try {
    if (sha256(fs.readFileSync(file)) === digest) return;
  } catch {
    /* missing or unreadable: write it */
  }
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    fs.writeSync(fd, bytes);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  if (sha256(fs.readFileSync(file)) !== digest) throw new Error(`${file} does not hold what was written`);
}

/**
 * Patches a copy of `nativeFile` for this libc and loads it (RTLD_NOW: every symbol is bound at
 * load, so a binding that cannot be made fails here, not on first use). Throws with the reason.
 */
export function loadPatched(nativeFile: string): CompatLoad {
  const libc = hostLibc();
  if (libc === null) throw new Error('not running on glibc; no compat patch applies');
  const patched = Buffer.from(fs.readFileSync(nativeFile));
  let result: { redirects: Redirect[]; versions: string[] };
  try {
    result = patchIsoc23(patched, libc.defs);
  } catch (err) {
    if (err instanceof ElfError) throw new Error(`glibc ${libc.version} compat patch not possible: ${err.message}`);
    throw err;
  }
  const digest = sha256(patched);
  const name = `${path.basename(nativeFile, '.node')}.compat${PATCH_REV}.${digest.slice(0, 16)}.node`;
  const refused: string[] = [];
  let file: string | undefined;
  for (const dir of cacheDirs()) {
    const why = ownedDir(dir);
    if (why !== null) {
      refused.push(why);
      continue;
    }
    try {
      ensureFile(path.join(dir, name), patched, digest);
      file = path.join(dir, name);
      break;
    } catch (err) {
      refused.push(`${dir}: ${(err as Error).message}`);
    }
  }
  if (file === undefined) throw new Error(`no safe cache directory for the glibc compat copy (${refused.join('; ')}); set GW_UWS_CACHE`);
  const mod = { exports: {} as unknown };
  process.dlopen(mod as never, file, os.constants.dlopen.RTLD_NOW);
  const what = result.redirects.map((r) => `${r.from}→${r.to}`).join(', ');
  return { exports: mod.exports, description: `glibc ${libc.version} compat: ${what}`, file };
}
