/**
 * Content-Type by file extension for the `static-filesystem` client.
 *
 * A built-in table rather than a dependency: KrakenD's plugin uses Go's `mime.TypeByExtension`,
 * whose own table holds 17 web types (the entries marked "Go" below, with Go's values) and which
 * otherwise reads the host's /etc/mime.types — so what KrakenD answers for anything else depends on
 * the machine. A static backend serves mock data and web assets; the common types of those, fixed
 * here, answer the same on every machine, with nothing added to the gateway's dependencies. An
 * unknown extension is `application/octet-stream` (Go would sniff the first 512 bytes; gw does not
 * guess).
 */
import path from 'node:path';

const TYPES: ReadonlyMap<string, string> = new Map([
  // Go's builtin table (mime/type.go), same values.
  ['.avif', 'image/avif'],
  ['.css', 'text/css; charset=utf-8'],
  ['.gif', 'image/gif'],
  ['.htm', 'text/html; charset=utf-8'],
  ['.html', 'text/html; charset=utf-8'],
  ['.jpeg', 'image/jpeg'],
  ['.jpg', 'image/jpeg'],
  ['.js', 'text/javascript; charset=utf-8'],
  ['.json', 'application/json'],
  ['.mjs', 'text/javascript; charset=utf-8'],
  ['.pdf', 'application/pdf'],
  ['.png', 'image/png'],
  ['.svg', 'image/svg+xml'],
  ['.wasm', 'application/wasm'],
  ['.webp', 'image/webp'],
  ['.xml', 'text/xml; charset=utf-8'],
  // Text and data.
  ['.txt', 'text/plain; charset=utf-8'],
  ['.text', 'text/plain; charset=utf-8'],
  ['.csv', 'text/csv; charset=utf-8'],
  ['.tsv', 'text/tab-separated-values; charset=utf-8'],
  ['.md', 'text/markdown; charset=utf-8'],
  ['.ics', 'text/calendar; charset=utf-8'],
  ['.xhtml', 'application/xhtml+xml'],
  ['.map', 'application/json'],
  ['.jsonld', 'application/ld+json'],
  ['.geojson', 'application/geo+json'],
  ['.webmanifest', 'application/manifest+json'],
  ['.yaml', 'application/yaml'],
  ['.yml', 'application/yaml'],
  ['.rss', 'application/rss+xml'],
  ['.atom', 'application/atom+xml'],
  ['.proto', 'text/plain; charset=utf-8'],
  // Images.
  ['.apng', 'image/apng'],
  ['.bmp', 'image/bmp'],
  ['.ico', 'image/vnd.microsoft.icon'],
  ['.tif', 'image/tiff'],
  ['.tiff', 'image/tiff'],
  // Fonts.
  ['.woff', 'font/woff'],
  ['.woff2', 'font/woff2'],
  ['.ttf', 'font/ttf'],
  ['.otf', 'font/otf'],
  // Audio and video.
  ['.mp3', 'audio/mpeg'],
  ['.ogg', 'audio/ogg'],
  ['.oga', 'audio/ogg'],
  ['.wav', 'audio/wav'],
  ['.weba', 'audio/webm'],
  ['.mp4', 'video/mp4'],
  ['.webm', 'video/webm'],
  ['.ogv', 'video/ogg'],
  // Archives and binaries.
  ['.zip', 'application/zip'],
  ['.gz', 'application/gzip'],
  ['.tar', 'application/x-tar'],
  ['.bin', 'application/octet-stream'],
]);

export const DEFAULT_TYPE = 'application/octet-stream';

/** The Content-Type for a file name (the extension compared without case, as Go's lookup falls back to lower case). */
export function contentType(file: string): string {
  const ext = path.extname(file);
  if (ext === '') return DEFAULT_TYPE;
  return TYPES.get(ext) ?? TYPES.get(ext.toLowerCase()) ?? DEFAULT_TYPE;
}
