/**
 * The reference proxy: what a minimal Node reverse proxy looks like (node:http server + one
 * keep-alive undici Pool), forwarding every request as is and streaming the status, headers and
 * body back ("no-op" style). The bench runs it as a child process next to gw and measures it the
 * same way, so gw is compared with a plain Node proxy on the same machine at the same moment.
 *
 *   node --import tsx bench/reference-proxy.ts --target http://127.0.0.1:PORT [--port 0]
 *
 * Prints `LISTENING <port>` on stdout when ready. Binds 127.0.0.1 only.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream';
import { Pool } from 'undici';

const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'host', 'proxy-authenticate', 'proxy-authorization',
]);

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i !== -1 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}

function filter(h: http.IncomingHttpHeaders | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k in h) {
    const v = h[k];
    if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  }
  return out;
}

function main(): void {
  const target = arg('--target', '');
  if (!target) {
    console.error('usage: reference-proxy.ts --target http://127.0.0.1:PORT [--port N]');
    process.exit(2);
  }
  const pool = new Pool(target, { connections: 256, pipelining: 1, keepAliveTimeout: 60_000 });
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const headers = filter(req.headers);
    headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
    pool.request({ method: req.method as 'GET', path: req.url!, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req }).then(
      (up) => {
        res.writeHead(up.statusCode, filter(up.headers));
        pipeline(up.body, res, () => {});
      },
      (err: Error) => {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(err.message);
      },
    );
  });
  server.listen(Number(arg('--port', '0')), '127.0.0.1', () => {
    process.stdout.write(`LISTENING ${(server.address() as AddressInfo).port}\n`);
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    void pool.destroy().finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
