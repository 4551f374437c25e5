// An answer written while the client's body is still arriving (issue 10, found by the fuzzer):
//  - uWS re-arms a connection's idle timeout only when a response ends, so after gw answered early
//    (a refused backend, a guard's 401) a client that sends the rest of its body and goes quiet held
//    the connection for ever (60 of 60 still open after 60 s);
//  - when the rest of such an upload is malformed, uWS 20.57 writes its own 400 page into the
//    answer gw is streaming: with a Content-Length answer the client read the page as the tail of a
//    complete body.
// gw now ends the connection with such an answer (chunked when streamed), as Go, nginx and Envoy do.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { type Gateway, HOST, freePort, startGateway, tempDir } from '../helpers/gw.ts';
import { assertSurvived, workerPids } from './harness.ts';

let early: http.Server;
let earlyUrl: string;
let quick: http.Server;
let gw: Gateway;
let pids: number[];

before(async () => {
  // Answers 200 with Content-Length 1000 at once, sends 950 bytes, and holds: never reads the body.
  early = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': '1000' });
    res.write(Buffer.alloc(950, 'd'));
  });
  await new Promise<void>((r) => early.listen(0, HOST, () => r()));
  earlyUrl = `http://${HOST}:${(early.address() as net.AddressInfo).port}`;
  // Answers a whole small body at once, without reading the request body.
  quick = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '5' });
    res.end('hello');
  });
  await new Promise<void>((r) => quick.listen(0, HOST, () => r()));
  const quickUrl = `http://${HOST}:${(quick.address() as net.AddressInfo).port}`;
  const down = `http://${HOST}:${await freePort()}`;
  const jwks = path.join(tempDir(), 'early-answer-jwks.json');
  fs.writeFileSync(jwks, JSON.stringify({ keys: [{ kty: 'oct', kid: 'k1', alg: 'HS256', k: Buffer.from('secret-secret-secret-secret-32by').toString('base64url') }] }));
  gw = await startGateway({
    version: 3,
    endpoints: [
      { endpoint: '/down', method: 'POST', output_encoding: 'no-op', backend: [{ host: [down], url_pattern: '/x', encoding: 'no-op' }] },
      { endpoint: '/down-json', method: 'POST', backend: [{ host: [down], url_pattern: '/x' }] },
      {
        endpoint: '/jwt',
        method: 'POST',
        extra_config: { 'auth/validator': { alg: 'HS256', jwk_local_path: jwks } },
        backend: [{ host: [down], url_pattern: '/x' }],
      },
      { endpoint: '/early', method: 'POST', timeout: '5s', output_encoding: 'no-op', backend: [{ host: [earlyUrl], url_pattern: '/x', encoding: 'no-op' }] },
      { endpoint: '/quick', method: 'POST', timeout: '5s', output_encoding: 'no-op', backend: [{ host: [quickUrl], url_pattern: '/x', encoding: 'no-op' }] },
    ],
  });
  pids = workerPids(gw);
});

after(async () => {
  await gw?.stop('SIGKILL');
  early?.closeAllConnections();
  early?.close();
  quick?.closeAllConnections();
  quick?.close();
});

interface Seen {
  text: string;
  closedAfterMs: number | null;
}

/** Sends `head`, then `rest` after `delayMs`, then nothing; reports what came back and when the connection closed. */
function partialUpload(head: string, rest: string, delayMs: number, waitMs: number): Promise<Seen> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port: gw.port });
    const chunks: Buffer[] = [];
    let closedAt: number | null = null;
    let t0 = 0;
    s.on('connect', () => {
      s.write(head);
      setTimeout(() => {
        t0 = Date.now();
        if (!s.destroyed) s.write(rest);
      }, delayMs);
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      closedAt = Date.now();
      finish();
    });
    const timer = setTimeout(() => finish(), waitMs);
    let done = false;
    function finish() {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closedAfterMs: closedAt === null ? null : closedAt - t0 });
    }
  });
}

describe('an answer written while the client body is still arriving', () => {
  for (const path of ['/down', '/down-json', '/jwt']) {
    test(`${path}: answered early, the rest of the body arrives, the client goes quiet → the connection is closed`, async () => {
      const r = await partialUpload(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{`, '}', 300, 8000);
      assert.match(r.text, /^HTTP\/1\.1 (500|401) /, r.text);
      assert.match(r.text, /\r\nConnection: close\r\n/i, r.text);
      assert.notEqual(r.closedAfterMs, null, `connection still open 8 s later: ${JSON.stringify(r.text)}`);
    });
  }

  test('a streamed answer whose upload turns malformed: never a complete body with uWS\'s error page in it', async () => {
    const r = await partialUpload('POST /early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', 'zz\r\n', 600, 5000);
    const head = r.text.slice(0, r.text.indexOf('\r\n\r\n'));
    assert.match(head, /^HTTP\/1\.1 200 /, r.text.slice(0, 300));
    // The answer is chunked: whatever uWS writes into it breaks the framing; a Content-Length
    // answer would let 950 + 50 bytes of a 400 page pass as the 1000-byte body.
    assert.match(head, /\r\nTransfer-Encoding: chunked/i, head);
    assert.doesNotMatch(head, /\r\nContent-Length:/i, head);
    assert.doesNotMatch(r.text, /\r\n0\r\n\r\n$/, 'a terminated chunked body');
    assert.notEqual(r.closedAfterMs, null, 'the connection is closed');
  });

  test('a streamed answer complete before the upload: it ends once the rest arrives, intact, and the connection serves on', async () => {
    const r = await partialUpload('POST /quick HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello', 'world GET /__health HTTP/1.1\r\nHost: x\r\n\r\n'.replace('world ', 'world'), 400, 2000);
    // One chunked answer (no stray header text inside it), then the next request's answer.
    assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n/);
    const first = r.text.slice(0, r.text.indexOf('HTTP/1.1', 10));
    assert.match(first, /Transfer-Encoding: chunked\r\n/i);
    assert.match(first, /\r\n\r\n5\r\nhello\r\n0\r\n\r\n$/, JSON.stringify(first));
    assert.match(r.text.slice(first.length), /^HTTP\/1\.1 200 OK\r\n[\s\S]*"status":"ok"/);
  });

  test('a streamed answer complete before the upload, and the client never sends the rest: cut within a bound', async () => {
    const r = await partialUpload('POST /quick HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello', '', 400, 6000);
    assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.notEqual(r.closedAfterMs, null, `connection still open 6 s later: ${JSON.stringify(r.text)}`);
  });

  test('the gateway lives', async () => {
    await assertSurvived(gw, pids);
  });
});
