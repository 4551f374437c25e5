/**
 * Decompression of backend bodies with a bound on the *decoded* size: a few hundred KB of gzip
 * can inflate to gigabytes, so a limit on the compressed input alone bounds nothing.
 *  - `decodeLimited(buf, encoding, limit)`: whole buffers (decoding encodings), zlib's
 *    `maxOutputLength` stops inflating as soon as the output passes the limit.
 *  - `gunzipLimited(source, limit)`: a streamed gunzip (the no-op path when gw added
 *    Accept-Encoding itself) that errors past the limit, with errors of the source forwarded to the
 *    consumer (`source.pipe(gunzip)` does not forward them) and the source destroyed when the
 *    consumer stops early or the output is too large.
 */
import { constants } from 'node:buffer';
import { pipeline, Transform, type Readable } from 'node:stream';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

const gunzip = promisify(zlib.gunzip);
const inflate = promisify(zlib.inflate);
const brotli = promisify(zlib.brotliDecompress);
const MAX_BUFFER = constants.MAX_LENGTH;

/** The decoded body passed `limit`: the backend fails like any other backend failure. */
export class DecodedTooLargeError extends Error {
  readonly code = 'DECODED_TOO_LARGE';
  constructor(encoding: string, limit: number) {
    super(`${encoding} response body decodes to more than ${limit} bytes (gw's limit for a decoded backend body)`);
    this.name = 'DecodedTooLargeError';
  }
}

/**
 * Decodes a whole `Content-Encoding` body (`gzip`, `x-gzip`, `deflate`, `br`; anything else is an
 * error naming it) into at most `limit` bytes.
 */
export async function decodeLimited(buf: Buffer, encoding: string, limit: number): Promise<Buffer> {
  const enc = encoding.toLowerCase();
  const opts = { maxOutputLength: Math.min(limit, MAX_BUFFER) };
  try {
    switch (enc) {
      case 'gzip':
      case 'x-gzip':
        return await gunzip(buf, opts);
      case 'deflate':
        return await inflate(buf, opts);
      case 'br':
        return await brotli(buf, opts);
    }
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw new DecodedTooLargeError(enc, limit);
    throw err;
  }
  throw new Error(`unsupported Content-Encoding ${encoding}`);
}

/**
 * A gunzip of `source` that yields at most `limit` decoded bytes: past it, and on any error of the
 * source or of the gzip data, the returned stream errors (and `source` is destroyed, which aborts
 * a backend transfer). Destroying the returned stream (a consumer that leaves) destroys `source`.
 */
export function gunzipLimited(source: Readable, limit = Infinity): Readable {
  let out = 0;
  const bound = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      out += chunk.length;
      if (out > limit) cb(new DecodedTooLargeError('gzip', limit));
      else cb(null, chunk);
    },
  });
  // The callback receives the first error; the consumer gets it from `bound` (destroyed with it).
  return pipeline(source, zlib.createGunzip(), bound, noop);
}

function noop(): void {}
