'use strict';
// The origin of the bench's peers phase (bench/suites/peers.ts): a fast uWebSockets.js server,
// single thread, 127.0.0.1 only, so the proxies in front of it are what gets measured.
// Adapted from the perf lab's backend.js (/tmp/gw-perf-lab, shared/perf-lab):
//   GET /json   a fixed 1 KiB JSON body
//   GET /json2  a second, different 1 KiB JSON body (the aggregation rows merge /json and /json2)
//   GET /big    a fixed 64 KiB body (application/octet-stream)
// Usage: node bench/peers/origin.cjs [port]   (0, the default, picks a free port)
// Prints "LISTENING <port>" once it accepts connections.
const uWS = require('@trufflesuite/uws-js-unofficial');

const PORT = Number(process.argv[2] || 0);

function makeJson(seed) {
  const items = [];
  for (let i = 0; items.length < 9; i++) {
    items.push({ id: seed * 100 + i, name: `item-${seed}-${i}`, price: 9.99 + i, tags: ['alpha', 'beta', 'gamma'], active: i % 2 === 0 });
  }
  const doc = { service: `catalog-${seed}`, version: '1.4.2', generatedAt: '2024-01-01T00:00:00Z', count: items.length, items };
  let s = JSON.stringify(doc);
  // Padded to exactly 1024 bytes with a filler field.
  const pad = 1024 - Buffer.byteLength(s) - ',"pad":""'.length;
  if (pad > 0) s = s.slice(0, -1) + ',"pad":"' + 'x'.repeat(pad) + '"}';
  return Buffer.from(s);
}

const JSON1 = makeJson(1);
const JSON2 = makeJson(2);
const BIG = Buffer.alloc(64 * 1024, 'abcdefghijklmnopqrstuvwxyz0123456789');

uWS
  .App()
  .get('/json', (res) => {
    res.cork(() => res.writeHeader('content-type', 'application/json').end(JSON1));
  })
  .get('/json2', (res) => {
    res.cork(() => res.writeHeader('content-type', 'application/json').end(JSON2));
  })
  .get('/big', (res) => {
    res.cork(() => res.writeHeader('content-type', 'application/octet-stream').end(BIG));
  })
  .any('/*', (res) => {
    res.cork(() => res.writeStatus('404 Not Found').end('not found'));
  })
  .listen('127.0.0.1', PORT, (token) => {
    if (!token) {
      console.error(`origin: cannot listen on 127.0.0.1:${PORT}`);
      process.exit(1);
    }
    console.log(`LISTENING ${uWS.us_socket_local_port(token)} (json=${JSON1.length}B, json2=${JSON2.length}B, big=${BIG.length}B)`);
  });

// Ended by the bench with SIGTERM (the default action ends the process; nothing to flush).
