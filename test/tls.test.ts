// Service-level `tls` (defect 18): gw serves HTTPS with uWS's SSLApp, honours what it can of
// KrakenD's keys and refuses to start on what it cannot. Certificates are made here with the
// openssl CLI; clients are real node:tls clients with a custom CA. The handshake checks run on
// every uWS build that loads here (the TLS 1.2 refusal relies on BoringSSL's cipher selection).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { GW_BIN, HOST, ROOT, runCli, startGateway, writeConfig, type Gateway } from './helpers/gw.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-tls-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const f = (n: string) => path.join(dir, n);

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}
/** A CA, an RSA certificate for a.test (+ localhost) and an ECDSA one for b.test and *.w.test. */
function makeCerts(): void {
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=gw test CA');
  const sign = (name: string, newkey: string[], san: string) => {
    openssl('req', '-newkey', ...newkey, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    fs.writeFileSync(f(`${name}.ext`), `subjectAltName=${san}\n`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`);
  };
  sign('a.test', ['rsa:2048'], 'DNS:a.test,DNS:localhost,IP:127.0.0.1');
  sign('b.test', ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'DNS:b.test,DNS:*.w.test');
  sign('c.test', ['rsa:2048'], 'DNS:c.test,DNS:b.test');
}
makeCerts();
const CA = fs.readFileSync(f('ca.crt'));

interface Hs {
  ok: boolean;
  protocol?: string | null;
  cipher?: string;
  cn?: string;
  status?: number;
  body?: string;
  error?: string;
}

/** A TLS handshake and one GET over it. */
function tlsGet(port: number, { reqPath, ...o }: tls.ConnectionOptions & { reqPath?: string } = {}): Promise<Hs> {
  return new Promise((resolve) => {
    let s: tls.TLSSocket;
    try {
      s = tls.connect({ host: HOST, port, ca: CA, servername: 'a.test', ...o });
    } catch (err) {
      resolve({ ok: false, error: (err as NodeJS.ErrnoException).code ?? String(err) });
      return;
    }
    const t = setTimeout(() => {
      s.destroy();
      resolve({ ok: false, error: 'timeout' });
    }, 8000);
    s.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(t);
      resolve({ ok: false, error: err.code ?? err.message });
    });
    s.on('secureConnect', () => {
      const info = { protocol: s.getProtocol(), cipher: s.getCipher().standardName, cn: (s.getPeerCertificate().subject as { CN?: string } | undefined)?.CN };
      s.write(`GET ${reqPath ?? '/__health'} HTTP/1.1\r\nHost: ${o.servername || 'a.test'}\r\nConnection: close\r\n\r\n`);
      let d = '';
      s.setEncoding('latin1');
      s.on('data', (x: string) => (d += x));
      s.on('end', () => {
        clearTimeout(t);
        const m = /^HTTP\/1\.1 (\d{3})/.exec(d);
        resolve({ ok: true, ...info, status: m ? Number(m[1]) : undefined, body: d.slice(d.indexOf('\r\n\r\n') + 4) });
      });
    });
  });
}

/** Loads the binding as gw would (GW_UWS=<build>) in a child: whether it loads here. */
function loads(build: string): Promise<boolean> {
  const loader = path.join(path.dirname(GW_BIN), '..', 'core', 'router', 'uws.js');
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['-e', `import(${JSON.stringify(loader)}).then((m) => m.loadUws())`], { cwd: ROOT, env: { ...process.env, GW_UWS: build }, stdio: 'ignore' });
    p.on('exit', (c) => resolve(c === 0));
  });
}
const builds = (await Promise.all(['btc-vision', 'trufflesuite', 'official'].map(async (b) => ((await loads(b)) ? b : null)))).filter((b): b is string => b !== null);

const endpoints = [{ endpoint: '/hello', backend: [{ host: ['http://127.0.0.1:19'], url_pattern: '/x' }], extra_config: { proxy: { static: { strategy: 'always', data: { hello: 'tls' } } } } }];

function start(tlsCfg: unknown, build: string): Promise<Gateway> {
  return startGateway({ version: 3, tls: tlsCfg, endpoints }, { args: ['--workers', '1'], env: { GW_UWS: build }, readyCheck: 'tcp' });
}

for (const build of builds) {
  describe(`TLS on ${build}`, () => {
    let strict: Gateway; // defaults: min TLS13, keys[] with SNI, legacy pair last
    let legacy: Gateway; // min TLS12, cipher_suites
    before(async () => {
      [strict, legacy] = await Promise.all([
        start({ keys: [{ public_key: f('a.test.crt'), private_key: f('a.test.key') }, { public_key: f('b.test.crt'), private_key: f('b.test.key') }], public_key: f('c.test.crt'), private_key: f('c.test.key') }, build),
        start({ public_key: f('a.test.crt'), private_key: f('a.test.key'), min_version: 'TLS12', cipher_suites: [49199, 52392, 4865] }, build),
      ]);
    });
    after(async () => {
      await strict?.stop();
      await legacy?.stop();
    });

    it('serves HTTPS: TLS 1.3 with the configured certificate, routes answered, and says so in the log', async () => {
      const r = await tlsGet(strict.port, { reqPath: '/hello' });
      assert.equal(r.ok, true, r.error);
      assert.equal(r.protocol, 'TLSv1.3');
      assert.equal(r.cn, 'a.test');
      assert.equal(r.status, 200);
      assert.equal(r.body, '{"hello":"tls"}');
      assert.match(strict.output(), /Serving TLS \(min TLS 1\.3, default certificate tls\.keys\[0\]/);
    });

    it('does not serve plain HTTP on a TLS port', async () => {
      const got = await new Promise<string>((resolve) => {
        const s = net.connect(strict.port, HOST, () => s.write('GET /__health HTTP/1.1\r\nHost: a\r\n\r\n'));
        let d = '';
        s.setEncoding('latin1');
        s.on('data', (x: string) => (d += x));
        s.on('error', () => {});
        s.on('close', () => resolve(d));
        setTimeout(() => s.destroy(), 5000);
      });
      assert.doesNotMatch(got, /^HTTP\/1\.1 200/);
    });

    it('min_version TLS13 (the default): a TLS 1.2 client is refused in the handshake', async () => {
      const r = await tlsGet(strict.port, { maxVersion: 'TLSv1.2' });
      assert.equal(r.ok, false);
      assert.match(r.error!, /HANDSHAKE_FAILURE|ALERT/);
      // Even one offering PSK suites (the list the listener is given) cannot negotiate one.
      const psk = await tlsGet(strict.port, { maxVersion: 'TLSv1.2', ciphers: 'PSK-AES128-CBC-SHA:ECDHE-RSA-AES128-GCM-SHA256', pskCallback: () => ({ psk: Buffer.alloc(16), identity: 'gw' }) });
      assert.equal(psk.ok, false);
    });

    it('min_version TLS12: a TLS 1.2 client is accepted, with a suite from cipher_suites', async () => {
      const r = await tlsGet(legacy.port, { maxVersion: 'TLSv1.2' });
      assert.equal(r.ok, true, r.error);
      assert.equal(r.protocol, 'TLSv1.2');
      assert.ok(['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256'].includes(r.cipher!), r.cipher);
      assert.equal(r.status, 200);
      const v13 = await tlsGet(legacy.port);
      assert.equal(v13.protocol, 'TLSv1.3');
    });

    it('cipher_suites: a TLS 1.2 suite not listed is refused, a listed one is used', async () => {
      const refused = await tlsGet(legacy.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES256-GCM-SHA384' });
      assert.equal(refused.ok, false);
      const chacha = await tlsGet(legacy.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-CHACHA20-POLY1305' });
      assert.equal(chacha.cipher, 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256');
    });

    it('keys[]: SNI picks the certificate naming the server (wildcards too); the first pair is the default', async () => {
      const b = await tlsGet(strict.port, { servername: 'b.test', reqPath: '/hello' });
      assert.equal(b.cn, 'b.test');
      assert.equal(b.status, 200, 'routes are served under an SNI name too');
      assert.equal(b.body, '{"hello":"tls"}');
      const w = await tlsGet(strict.port, { servername: 'x.w.test' });
      assert.equal(w.cn, 'b.test');
      assert.equal(w.status, 200);
      const c = await tlsGet(strict.port, { servername: 'c.test' });
      assert.equal(c.cn, 'c.test', 'the legacy public_key/private_key pair is appended after keys');
      const unknown = await tlsGet(strict.port, { servername: 'nobody.test', checkServerIdentity: () => undefined });
      assert.equal(unknown.cn, 'a.test');
      const none = await tlsGet(strict.port, { servername: '', checkServerIdentity: () => undefined });
      assert.equal(none.cn, 'a.test');
    });
  });
}

describe('tls settings', { concurrency: 4 }, () => {
  it('disabled: true serves plain HTTP', async () => {
    const gw = await startGateway({ version: 3, tls: { disabled: true, public_key: '/nonexistent.pem', private_key: '/nonexistent.key' }, endpoints }, { args: ['--workers', '1'] });
    try {
      const r = await fetch(`${gw.url}/hello`);
      assert.equal(r.status, 200);
      assert.doesNotMatch(gw.output(), /Serving TLS/);
    } finally {
      await gw.stop();
    }
  });

  const pair = { public_key: f('a.test.crt'), private_key: f('a.test.key') };
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['max_version below TLS13', { ...pair, max_version: 'TLS12' }, /tls\.max_version TLS12: .*cannot switch TLS 1\.3 off/],
    ['min_version below TLS12', { ...pair, min_version: 'TLS10' }, /tls\.min_version TLS10: .*TLS 1\.2 and TLS 1\.3 only/],
    ['an unknown version', { ...pair, min_version: 'TLS1.2' }, /tls\.min_version: unknown version "TLS1\.2"/],
    ['enable_mtls (uSockets cannot require a client certificate)', { ...pair, enable_mtls: true, ca_certs: [f('ca.crt')] }, /tls\.enable_mtls: .*cannot require one/],
    ['curve_preferences', { ...pair, min_version: 'TLS12', curve_preferences: [23] }, /tls\.curve_preferences: /],
    ['a cipher suite BoringSSL lacks', { ...pair, min_version: 'TLS12', cipher_suites: [49199, 5] }, /tls\.cipher_suites: 5 \(0x0005 TLS_RSA_WITH_RC4_128_SHA\) is not available/],
    ['an unknown cipher suite', { ...pair, min_version: 'TLS12', cipher_suites: [1234] }, /tls\.cipher_suites: 1234 \(0x04d2\) is not a cipher suite gw knows/],
    ['a missing certificate file, named', { keys: [{ public_key: f('missing.crt'), private_key: f('a.test.key') }] }, new RegExp(`tls\\.keys\\[0\\]\\.public_key: cannot read ${f('missing.crt').replace(/[.]/g, '\\.')}: no such file`)],
    ['a key that is not PEM', { keys: [{ public_key: f('a.test.crt'), private_key: f('a.test.ext') }] }, /tls\.keys\[0\]\.private_key: .*a\.test\.ext is not an unencrypted PEM private key/],
    ['a key of another certificate', { keys: [pair, { public_key: f('b.test.crt'), private_key: f('a.test.key') }] }, /tls\.keys\[1\]: the private key .*a\.test\.key does not belong to the certificate .*b\.test\.crt/],
    ['no key pair', { min_version: 'TLS13' }, /tls: public key not defined/],
    ['a pair without its private key', { public_key: f('a.test.crt') }, /tls\.private_key: private key not defined/],
  ];
  for (const [what, tlsCfg, expect] of cases) {
    it(`start-up error (gw check and gw run): ${what}`, async () => {
      const file = writeConfig({ version: 3, tls: tlsCfg, endpoints });
      const [check, run] = await Promise.all([
        runCli(['check', '-c', file], { timeoutMs: 15_000 }),
        runCli(['run', '-c', file, '--workers', '1'], { timeoutMs: 15_000 }),
      ]);
      for (const r of [check, run]) {
        assert.notEqual(r.code, 0, r.output);
        assert.equal(r.timedOut, false);
        assert.match(r.output, expect);
        assert.doesNotMatch(r.output, /Listening on port/);
      }
    });
  }
});
