/**
 * The service-level `tls` object (KrakenD/lura `config.TLS`) → what gw's listener does with it.
 *
 * gw serves TLS with uWS's SSLApp (uSockets on BoringSSL), whose only knobs are a key pair, a CA
 * file, DH parameters and an OpenSSL cipher string. Every KrakenD key is either honoured or a
 * start-up error naming it — never silently ignored:
 *
 * | key | KrakenD (Go crypto/tls) | gw |
 * |---|---|---|
 * | `disabled` | plain HTTP | plain HTTP |
 * | `public_key`/`private_key`, `keys[]` | certificates; the pair is appended to `keys` | same; the first is the default certificate, each later one is picked by SNI for the DNS names of its certificate (first one wins, as Go) |
 * | `min_version` | default TLS13 | TLS13 (default): TLS ≤ 1.2 handshakes are refused by offering only a cipher no TLS 1.2 client can use (a PSK suite with no PSK configured; BoringSSL's TLS 1.3 suites are not configurable); TLS12: accepted; SSL3.0/TLS10/TLS11: error (uSockets' floor is TLS 1.2) |
 * | `max_version` | default TLS13 | TLS13 only; anything lower is an error (uSockets cannot switch TLS 1.3 off) |
 * | `cipher_suites` | Go suite IDs, TLS ≤ 1.2 only; default the six ECDHE AES-GCM/ChaCha20 suites | the same IDs mapped to BoringSSL names; an ID BoringSSL lacks here is an error; 4865–4867 (TLS 1.3) accepted, as Go (always on) |
 * | `prefer_server_cipher_suites` | ignored by Go since 1.17 | ignored |
 * | `curve_preferences` | curves | error: uWS cannot choose curves (when unset, BoringSSL's defaults apply, X25519 included) |
 * | `enable_mtls` (+ `ca_certs`, `disable_system_ca_pool`) | RequireAndVerifyClientCert | error: uSockets verifies a client certificate that is sent but cannot require one, so a client without any would be let in; `ca_certs`/`disable_system_ca_pool` alone are ignored, as KrakenD ignores them without `enable_mtls` |
 *
 * Files are read and checked here (certificate parses, key parses, key matches certificate), so
 * `gw check` and `gw run` name a bad file before anything listens.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export interface TlsKeyPair {
  /** Absolute paths, as uWS reads them itself. */
  readonly certFile: string;
  readonly keyFile: string;
  /** DNS names of the certificate (subjectAltName), lower-case; `*.example.com` kept as is. */
  readonly names: readonly string[];
  /** Config path of the pair, for messages (`tls.keys[1]`). */
  readonly where: string;
}

export interface TlsOptions {
  /** `[0]` is the default certificate (no SNI, or an SNI no other certificate names). */
  readonly pairs: readonly TlsKeyPair[];
  /** OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are always on). */
  readonly ciphers: string;
  readonly minVersion: 'TLS12' | 'TLS13';
}

/** Go's cipher-suite IDs (crypto/tls) → BoringSSL names, for the suites these builds negotiate. */
const SUITES: ReadonlyMap<number, { go: string; ssl: string | null }> = new Map([
  [0x0005, { go: 'TLS_RSA_WITH_RC4_128_SHA', ssl: null }],
  [0x000a, { go: 'TLS_RSA_WITH_3DES_EDE_CBC_SHA', ssl: null }],
  [0x002f, { go: 'TLS_RSA_WITH_AES_128_CBC_SHA', ssl: 'AES128-SHA' }],
  [0x0035, { go: 'TLS_RSA_WITH_AES_256_CBC_SHA', ssl: 'AES256-SHA' }],
  [0x003c, { go: 'TLS_RSA_WITH_AES_128_CBC_SHA256', ssl: null }],
  [0x009c, { go: 'TLS_RSA_WITH_AES_128_GCM_SHA256', ssl: 'AES128-GCM-SHA256' }],
  [0x009d, { go: 'TLS_RSA_WITH_AES_256_GCM_SHA384', ssl: 'AES256-GCM-SHA384' }],
  [0xc007, { go: 'TLS_ECDHE_ECDSA_WITH_RC4_128_SHA', ssl: null }],
  [0xc009, { go: 'TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA', ssl: 'ECDHE-ECDSA-AES128-SHA' }],
  [0xc00a, { go: 'TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA', ssl: 'ECDHE-ECDSA-AES256-SHA' }],
  [0xc011, { go: 'TLS_ECDHE_RSA_WITH_RC4_128_SHA', ssl: null }],
  [0xc012, { go: 'TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA', ssl: null }],
  [0xc013, { go: 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA', ssl: 'ECDHE-RSA-AES128-SHA' }],
  [0xc014, { go: 'TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA', ssl: 'ECDHE-RSA-AES256-SHA' }],
  [0xc023, { go: 'TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256', ssl: null }],
  // Present in the 20.57 builds only, not in trufflesuite's: refused, so a config means the same on every build.
  [0xc027, { go: 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256', ssl: null }],
  [0xc02f, { go: 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', ssl: 'ECDHE-RSA-AES128-GCM-SHA256' }],
  [0xc02b, { go: 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', ssl: 'ECDHE-ECDSA-AES128-GCM-SHA256' }],
  [0xc030, { go: 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384', ssl: 'ECDHE-RSA-AES256-GCM-SHA384' }],
  [0xc02c, { go: 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384', ssl: 'ECDHE-ECDSA-AES256-GCM-SHA384' }],
  [0xcca8, { go: 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256', ssl: 'ECDHE-RSA-CHACHA20-POLY1305' }],
  [0xcca9, { go: 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256', ssl: 'ECDHE-ECDSA-CHACHA20-POLY1305' }],
]);
/** TLS 1.3 suites: not configurable in Go nor in BoringSSL; listing them changes nothing. */
const TLS13_SUITES: ReadonlySet<number> = new Set([0x1301, 0x1302, 0x1303]);
/** lura's default `CipherSuites` (TLS 1.2). */
const DEFAULT_SUITES = [0xc02f, 0xc02b, 0xc030, 0xc02c, 0xcca8, 0xcca9];
/**
 * With min_version TLS13: a TLS ≤ 1.2 handshake can only pick from this list, and a PSK suite is
 * never chosen without a PSK callback (uSockets sets none), so every such handshake fails with
 * handshake_failure while TLS 1.3 is untouched (checked with real handshakes in test/tls.test.ts).
 */
const NO_TLS12 = 'PSK-AES128-CBC-SHA';

const VERSIONS = ['SSL3.0', 'TLS10', 'TLS11', 'TLS12', 'TLS13'];
const KNOWN_KEYS = new Set([
  'public_key', 'private_key', 'keys', 'min_version', 'max_version', 'cipher_suites', 'curve_preferences',
  'prefer_server_cipher_suites', 'disabled', 'enable_mtls', 'ca_certs', 'disable_system_ca_pool',
]);

type Fail = (message: string) => Error;

/**
 * `raw` is the `tls` value of the file. Returns null for plain HTTP (absent, null, `disabled`).
 * `fail` builds the error thrown (a ConfigError); `warnings` collects ignored keys.
 */
export function parseTls(raw: unknown, fail: Fail, warnings: string[], cwd = process.cwd()): TlsOptions | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw fail('tls: want an object');
  const t = raw as Record<string, unknown>;
  if (t.disabled === true) return null;
  for (const k of Object.keys(t)) {
    if (!KNOWN_KEYS.has(k) && !/^[@$_#]/.test(k)) warnings.push(`tls.${k} is not a KrakenD tls key; ignored`);
  }

  const min = t.min_version ?? 'TLS13';
  if (typeof min !== 'string' || !VERSIONS.includes(min)) throw fail(`tls.min_version: unknown version ${JSON.stringify(min)} (one of ${VERSIONS.join(', ')})`);
  if (min !== 'TLS12' && min !== 'TLS13') {
    throw fail(`tls.min_version ${min}: gw's listener (uWS/uSockets) accepts TLS 1.2 and TLS 1.3 only; set "TLS12" or "TLS13"`);
  }
  const max = t.max_version ?? 'TLS13';
  if (typeof max !== 'string' || !VERSIONS.includes(max)) throw fail(`tls.max_version: unknown version ${JSON.stringify(max)} (one of ${VERSIONS.join(', ')})`);
  if (max !== 'TLS13') throw fail(`tls.max_version ${max}: gw's listener (uWS/uSockets) cannot switch TLS 1.3 off; remove max_version or set "TLS13"`);

  if (Array.isArray(t.curve_preferences) && t.curve_preferences.length > 0) {
    throw fail('tls.curve_preferences: gw\'s listener (uWS/uSockets) offers no way to choose the key-exchange curves; remove the key');
  }
  if (t.enable_mtls === true) {
    throw fail(
      'tls.enable_mtls: gw\'s listener (uWS/uSockets) verifies a client certificate that is sent but cannot require one, ' +
        'so clients without a certificate would be let in; gw does not start rather than serve that (terminate mTLS in front of gw)',
    );
  }
  if (t.enable_mtls !== undefined && typeof t.enable_mtls !== 'boolean') throw fail('tls.enable_mtls: want a boolean');

  let ciphers: string;
  if (min === 'TLS13') {
    ciphers = NO_TLS12;
  } else {
    let ids: number[] = DEFAULT_SUITES;
    if (t.cipher_suites !== undefined) {
      if (!Array.isArray(t.cipher_suites) || t.cipher_suites.some((x) => !Number.isInteger(x))) throw fail('tls.cipher_suites: want a list of cipher-suite IDs (integers, e.g. 49199)');
      ids = (t.cipher_suites as number[]).filter((id) => !TLS13_SUITES.has(id));
      if (ids.length === 0 && t.cipher_suites.length > 0) {
        throw fail('tls.cipher_suites: only TLS 1.3 suites are listed, so no TLS 1.2 handshake could succeed; set min_version "TLS13" instead');
      }
      if (ids.length === 0) ids = DEFAULT_SUITES;
    }
    const names: string[] = [];
    for (const id of ids) {
      const s = SUITES.get(id);
      const label = `${id} (0x${id.toString(16).padStart(4, '0')}${s ? ` ${s.go}` : ''})`;
      if (!s) throw fail(`tls.cipher_suites: ${label} is not a cipher suite gw knows`);
      if (!s.ssl) throw fail(`tls.cipher_suites: ${label} is not available in gw's TLS library (BoringSSL in uWS)`);
      names.push(s.ssl);
    }
    ciphers = names.join(':');
  }

  const list: { pub: unknown; priv: unknown; where: string }[] = [];
  if (t.keys !== undefined) {
    if (!Array.isArray(t.keys)) throw fail('tls.keys: want a list of {"public_key", "private_key"}');
    t.keys.forEach((k, i) => {
      const o = (typeof k === 'object' && k !== null ? k : {}) as Record<string, unknown>;
      list.push({ pub: o.public_key, priv: o.private_key, where: `tls.keys[${i}]` });
    });
  }
  // lura appends the single pair after `keys`.
  if ((t.public_key ?? '') !== '' || (t.private_key ?? '') !== '') list.push({ pub: t.public_key, priv: t.private_key, where: 'tls' });
  if (list.length === 0) throw fail('tls: public key not defined (set "keys": [{"public_key", "private_key"}], or "disabled": true)');

  const pairs: TlsKeyPair[] = [];
  for (const { pub, priv, where } of list) {
    if (typeof pub !== 'string' || pub === '') throw fail(`${where}.public_key: public key not defined`);
    if (typeof priv !== 'string' || priv === '') throw fail(`${where}.private_key: private key not defined`);
    const certFile = path.resolve(cwd, pub);
    const keyFile = path.resolve(cwd, priv);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(readFile(certFile, `${where}.public_key`, fail));
    } catch (err) {
      if ((err as Error).message.startsWith(`${where}.`)) throw err;
      throw fail(`${where}.public_key: ${certFile} is not a PEM certificate (${(err as Error).message})`);
    }
    let key: KeyObject;
    try {
      key = createPrivateKey(readFile(keyFile, `${where}.private_key`, fail));
    } catch (err) {
      if ((err as Error).message.startsWith(`${where}.`)) throw err;
      throw fail(`${where}.private_key: ${keyFile} is not an unencrypted PEM private key (${(err as Error).message})`);
    }
    if (!cert.checkPrivateKey(key)) throw fail(`${where}: the private key ${keyFile} does not belong to the certificate ${certFile}`);
    pairs.push({ certFile, keyFile, names: dnsNames(cert), where });
  }
  return { pairs, ciphers, minVersion: min };
}

function readFile(file: string, where: string, fail: Fail): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw fail(`${where}: cannot read ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message}`);
  }
}

/** The DNS names a certificate is valid for (Go matches SANs only, never the CN). */
function dnsNames(cert: X509Certificate): string[] {
  const san = cert.subjectAltName ?? '';
  const out: string[] = [];
  for (const part of san.split(/,\s*/)) {
    if (part.startsWith('DNS:')) out.push(part.slice(4).toLowerCase());
  }
  return out;
}

/**
 * SNI names → the pair serving them: each name goes to the first pair that has it (as Go's
 * `getCertificate` picks the first certificate that supports the client hello); names of the
 * default pair need no entry.
 */
export function sniTable(tls: TlsOptions): Map<string, TlsKeyPair> {
  const claimed = new Set(tls.pairs[0]!.names);
  const out = new Map<string, TlsKeyPair>();
  for (const p of tls.pairs.slice(1)) {
    for (const n of p.names) {
      if (claimed.has(n)) continue;
      claimed.add(n);
      out.set(n, p);
    }
  }
  return out;
}
