/**
 * `static-filesystem`: a backend answered from a folder on disk instead of a remote server
 * (KrakenD Enterprise's static-filesystem plugin used as an HTTP client, now `backend/static-filesystem`).
 *
 *   "extra_config": { "plugin/http-client": {
 *     "name": "static-filesystem",
 *     "static-filesystem": { "path": "./static/", "prefix": "/assets" } } }
 *
 * Settings (checked at start-up; any problem stops `gw run` and `gw check`, naming the backend):
 *  - `path` (required): the folder, absolute or relative to the working directory. It must exist
 *    and be a directory; it is resolved once (realpath) and every file served must lie inside it.
 *  - `prefix` (optional): removed from the start of the backend path before the file is looked up
 *    (a path that does not start with it, at a segment boundary, is 404).
 *  - `directory_listing`: only `false` (the default) is supported.
 *
 * Per request, the backend path (the url_pattern after substitution; the query is ignored) is cut
 * into segments, each percent-decoded once. A segment that decodes to `..`, or holds `/`, `\`, NUL
 * or another control character, is refused with 400 before the disk is touched; `.` and empty
 * segments are dropped (Go's path.Clean). The file is then resolved with realpath and must lie in the
 * folder (a symlink leading out of it is 404), be a regular file (FIFOs, devices and sockets are
 * 404), or be a directory holding an `index.html`, which is served. Anything else is 404.
 * Only GET and HEAD (405 otherwise, with `Allow`).
 *
 * The answer: 200 with Content-Type (by extension, ./mime.ts), Content-Length and Last-Modified.
 * HEAD has no body. A GET body is opened only when somebody reads it (an answer dropped unread
 * holds no file descriptor) and is streamed from the file through gw's zero-copy path (an
 * UpstreamBody: backpressure from the client socket pauses the file read, nothing is read whole).
 * When it is opened, the file is checked again — same inode as announced, a regular file, opened
 * without following a symlink as the last component, and on Linux the kernel's own path of the open
 * descriptor inside the folder — so swapping a path component for a symlink after the check gains
 * nothing: the transfer fails instead.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UpstreamBody, type FlowControl } from '../../transport/body.js';
import type { BackendResponse, ClientFactory, PluginLogger } from '../types.js';
import { withDirect } from './direct.js';
import { contentType } from './mime.js';

export const STATIC_FILESYSTEM = 'static-filesystem';

const SETTINGS = ['path', 'prefix', 'directory_listing'];
/** KrakenD's schemas let keys starting with these characters through (comments, annotations). */
const IGNORED_KEY = /^[@$_#]/;
const STREAM_CHUNK = 64 * 1024;
const OPEN_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NOFOLLOW ?? 0) | (fs.constants.O_NONBLOCK ?? 0);

export interface StaticSettings {
  /** The folder, resolved (realpath). */
  readonly root: string;
  /** Decoded segments removed from the start of each backend path. */
  readonly prefix: readonly string[];
}

const key = (k: string) => `"${STATIC_FILESYSTEM}"."${k}"`;

/** Reads and checks the backend's `"static-filesystem"` object. Throws an Error naming the key. */
export function staticSettings(extra: Record<string, unknown>, cwd: string = process.cwd()): StaticSettings {
  const own = extra[STATIC_FILESYSTEM];
  if (own === undefined) {
    throw new Error(`missing "${STATIC_FILESYSTEM}": {"path": "<folder>"} next to "name" (the folder to serve)`);
  }
  if (own === null || typeof own !== 'object' || Array.isArray(own)) {
    throw new Error(`"${STATIC_FILESYSTEM}" must be an object ({"path": "<folder>"}), not ${own === null ? 'null' : Array.isArray(own) ? 'an array' : typeof own}`);
  }
  const cfg = own as Record<string, unknown>;
  for (const k of Object.keys(cfg)) {
    if (SETTINGS.includes(k) || IGNORED_KEY.test(k)) continue;
    const hint = k === 'skip' ? ': it belongs to the server (plugin/http-server) form of the plugin' : '';
    throw new Error(`${key(k)} is not a setting of the static-filesystem client (it takes ${SETTINGS.join(', ')})${hint}`);
  }

  const dir = cfg.path;
  if (dir === undefined) throw new Error(`${key('path')} is required: the folder to serve (e.g. "./static/")`);
  if (typeof dir !== 'string' || dir === '') {
    throw new Error(`${key('path')} must be a non-empty string (the folder to serve), not ${JSON.stringify(dir)}`);
  }
  if (dir.includes('\0')) throw new Error(`${key('path')} holds a NUL character`);
  const abs = path.resolve(cwd, dir);
  let root: string;
  try {
    root = fs.realpathSync(abs);
  } catch (e) {
    throw new Error(`${key('path')} ${JSON.stringify(dir)} (${abs}): ${fsReason(e)}`);
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
    if (st.isDirectory()) fs.accessSync(root, fs.constants.R_OK | fs.constants.X_OK);
  } catch (e) {
    throw new Error(`${key('path')} ${JSON.stringify(dir)} (${root}): ${fsReason(e)}`);
  }
  if (!st.isDirectory()) throw new Error(`${key('path')} ${JSON.stringify(dir)} (${root}) is not a directory`);

  let prefix: string[] = [];
  const p = cfg.prefix;
  if (p !== undefined) {
    if (typeof p !== 'string') throw new Error(`${key('prefix')} must be a string starting with "/", not ${JSON.stringify(p)}`);
    if (p !== '' && !p.startsWith('/')) throw new Error(`${key('prefix')} ${JSON.stringify(p)} must start with "/"`);
    const segs = segments(p);
    if (segs === null) throw new Error(`${key('prefix')} ${JSON.stringify(p)} holds a ".." segment, a bad %-escape or a control character`);
    prefix = segs;
  }

  const listing = cfg.directory_listing;
  if (listing !== undefined && typeof listing !== 'boolean') {
    throw new Error(`${key('directory_listing')} must be a boolean, not ${JSON.stringify(listing)}`);
  }
  if (listing === true) {
    throw new Error(`${key('directory_listing')}: true is not supported by gw (a folder answers its index.html, else 404); remove it or set it to false`);
  }
  return { root, prefix };
}

function fsReason(e: unknown): string {
  switch ((e as NodeJS.ErrnoException)?.code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'ENOTDIR':
      return 'a component of the path is not a directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ELOOP':
      return 'too many levels of symbolic links';
    default:
      return (e as Error)?.message ?? String(e);
  }
}

/**
 * The decoded segments of a path (percent-encoded, without the query), or null when a segment is
 * not acceptable: a bad escape, `..`, or a character that would change how the file system reads
 * the name (`/`, `\`, NUL and the other control characters). `.` and empty segments are dropped.
 */
export function segments(raw: string): string[] | null {
  const out: string[] = [];
  let start = 0;
  const n = raw.length;
  while (start <= n) {
    let end = raw.indexOf('/', start);
    if (end < 0) end = n;
    const part = raw.slice(start, end);
    start = end + 1;
    if (part === '') continue;
    let seg = part;
    if (part.indexOf('%') !== -1) {
      try {
        seg = decodeURIComponent(part);
      } catch {
        return null;
      }
    }
    if (seg === '.') continue;
    if (seg === '..') return null;
    for (let i = 0; i < seg.length; i++) {
      const c = seg.charCodeAt(i);
      if (c < 0x20 || c === 0x7f || c === 0x2f || c === 0x5c) return null;
    }
    out.push(seg);
  }
  return out;
}

/** The path of a URL as sent (still percent-encoded), without query or fragment. */
export function urlPath(url: string): string {
  const scheme = url.indexOf('://');
  let from = 0;
  if (scheme !== -1 && scheme < url.search(/[/?#]/)) {
    from = url.indexOf('/', scheme + 3);
    if (from === -1) return '/';
  }
  let end = url.length;
  const q = url.indexOf('?', from);
  if (q !== -1) end = q;
  const h = url.indexOf('#', from);
  if (h !== -1 && h < end) end = h;
  return url.slice(from, end);
}

const TEXT_HEADERS = { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' };

/** Go's http.Error answers (net/http/fs.go texts). */
function textAnswer(status: number, text: string, head: boolean, extra?: Record<string, string>): BackendResponse {
  return {
    status,
    headers: { ...TEXT_HEADERS, 'content-length': String(Buffer.byteLength(text)), ...extra },
    body: head ? null : text,
  };
}

const NOT_FOUND = '404 page not found\n';

/** Maps a file system error to Go's FileServer answer (toHTTPError). */
function errorAnswer(e: unknown, head: boolean, log: PluginLogger): BackendResponse {
  switch ((e as NodeJS.ErrnoException)?.code) {
    case 'ENOENT':
    case 'ENOTDIR':
    case 'ELOOP':
    case 'ENAMETOOLONG':
      return textAnswer(404, NOT_FOUND, head);
    case 'EACCES':
    case 'EPERM':
      return textAnswer(403, '403 Forbidden\n', head);
    default:
      log.error(`reading a file failed: ${(e as Error)?.message ?? String(e)}`);
      return textAnswer(500, '500 Internal Server Error\n', head);
  }
}

export const staticFilesystemFactory: ClientFactory = (ctx, extra) => {
  const { root, prefix } = staticSettings(extra);
  const rootDir = root.endsWith(path.sep) ? root : root + path.sep;
  const inside = (p: string) => p === root || p.startsWith(rootDir);
  const log = ctx.logger;

  /** The file a set of segments names, resolved inside the folder, or the answer to give instead. */
  const locate = async (segs: string[], head: boolean): Promise<{ file: string; st: fs.Stats } | BackendResponse> => {
    let file: string;
    let st: fs.Stats;
    try {
      file = await fs.promises.realpath(path.join(root, ...segs));
      if (!inside(file)) {
        log.debug(`refused ${JSON.stringify('/' + segs.join('/'))}: it resolves outside the folder`);
        return textAnswer(404, NOT_FOUND, head);
      }
      st = await fs.promises.stat(file);
      if (st.isDirectory()) {
        file = await fs.promises.realpath(path.join(file, 'index.html'));
        if (!inside(file)) return textAnswer(404, NOT_FOUND, head);
        st = await fs.promises.stat(file);
      }
    } catch (e) {
      return errorAnswer(e, head, log);
    }
    // FIFOs, sockets and devices are not files to serve (a FIFO would block the read).
    if (!st.isFile()) return textAnswer(404, NOT_FOUND, head);
    return { file, st };
  };

  const serve = async (method: string, url: string): Promise<BackendResponse> => {
    const head = method === 'HEAD';
    if (method !== 'GET' && !head) {
      return textAnswer(405, '405 method not allowed\n', false, { allow: 'GET, HEAD' });
    }
    let segs = segments(urlPath(url));
    if (segs === null) return textAnswer(400, 'invalid URL path\n', head);
    if (prefix.length > 0) {
      for (let i = 0; i < prefix.length; i++) {
        if (segs[i] !== prefix[i]) return textAnswer(404, NOT_FOUND, head);
      }
      segs = segs.slice(prefix.length);
    }
    const found = await locate(segs, head);
    if (!('file' in found)) return found;
    const { file, st } = found;
    const headers = {
      'content-type': contentType(file),
      'content-length': String(st.size),
      'last-modified': st.mtime.toUTCString(),
    };
    if (head) return { status: 200, headers, body: null };
    if (st.size === 0) return { status: 200, headers, body: '' };
    return { status: 200, headers, body: new FileSource(file, st, inside).body };
  };

  return withDirect(
    (req) => serve(req.method, req.url),
    () => (r) => serve(r.method, r.url),
  );
};

/**
 * Feeds a file into an UpstreamBody, the body type gw streams zero-copy: opened on the first
 * `resume()` (the consumer attached), paused and resumed by the consumer's backpressure, closed on
 * end, error or abort.
 */
class FileSource implements FlowControl {
  readonly body: UpstreamBody;
  private stream: fs.ReadStream | null = null;
  private started = false;
  private paused = false;
  private aborted = false;

  constructor(
    private readonly file: string,
    private readonly st: fs.Stats,
    private readonly inside: (p: string) => boolean,
  ) {
    this.body = new UpstreamBody(this, st.size);
  }

  pause(): void {
    this.paused = true;
    this.stream?.pause();
  }

  resume(): void {
    this.paused = false;
    if (!this.started) {
      this.started = true;
      this.open();
      return;
    }
    this.stream?.resume();
  }

  abort(_reason: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.stream?.destroy();
  }

  private open(): void {
    fs.open(this.file, OPEN_FLAGS, (err, fd) => {
      if (err) return this.body.fail(err);
      fs.fstat(fd, (err2, now) => {
        if (err2 || !now.isFile() || now.ino !== this.st.ino || now.dev !== this.st.dev) {
          return this.refuse(fd, err2 ?? new Error(`${this.file} changed between its lookup and its read`));
        }
        openedPath(fd, (real) => {
          if (real !== null && !this.inside(real)) return this.refuse(fd, new Error(`${this.file} now resolves outside the folder`));
          if (this.aborted) return void fs.close(fd, ignore);
          const s = fs.createReadStream(this.file, { fd, start: 0, end: this.st.size - 1, highWaterMark: STREAM_CHUNK, autoClose: true });
          this.stream = s;
          s.on('data', (chunk) => this.body.push(chunk as Buffer));
          s.on('end', () => this.body.end());
          s.on('error', (e) => this.body.fail(e));
          if (this.paused) s.pause();
        });
      });
    });
  }

  private refuse(fd: number, err: Error): void {
    fs.close(fd, ignore);
    this.body.fail(err);
  }
}

function ignore(): void {}

/** Where the kernel says an open descriptor leads (Linux /proc), or null where that cannot be asked. */
function openedPath(fd: number, cb: (p: string | null) => void): void {
  if (process.platform !== 'linux') return cb(null);
  fs.readlink(`/proc/self/fd/${fd}`, (err, p) => cb(err ? null : p));
}
