/**
 * The bench's loopback backend: a node:http server on 127.0.0.1 answering fixed, precomputed
 * bodies as fast as node:http allows. Run as a child process by the end-to-end suite (so its CPU
 * is kept apart from the load generator's); prints `LISTENING <port>` on stdout when ready.
 *
 *   GET /1k    1024 bytes, text/plain
 *   GET /64k   65536 bytes, text/plain
 *   GET /json  a small JSON object (~250 bytes), application/json
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { BODY_1K, BODY_64K, BODY_JSON } from './lib/payloads.js';

const routes: Record<string, { body: Buffer; headers: http.OutgoingHttpHeaders }> = {
  '/1k': { body: BODY_1K, headers: { 'content-type': 'text/plain', 'content-length': BODY_1K.length } },
  '/64k': { body: BODY_64K, headers: { 'content-type': 'text/plain', 'content-length': BODY_64K.length } },
  '/json': { body: BODY_JSON, headers: { 'content-type': 'application/json', 'content-length': BODY_JSON.length } },
};

function main(): void {
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const q = req.url!.indexOf('?');
    const route = routes[q === -1 ? req.url! : req.url!.slice(0, q)];
    if (route === undefined) {
      res.writeHead(404, { 'content-length': 0 });
      res.end();
      return;
    }
    res.writeHead(200, route.headers);
    res.end(route.body);
  });
  server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
    process.stdout.write(`LISTENING ${(server.address() as AddressInfo).port}\n`);
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
