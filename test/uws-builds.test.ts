// Every uWebSockets.js build gw may load (GW_UWS=official|btc-vision|trufflesuite), each started
// for real and probed over raw sockets with what its HTTP/1 parser gets wrong or right. Builds
// that do not load on this machine are skipped with the loader's reason. The expectations are the
// README's per-build table: a change in a build's behaviour fails here, so the docs stay true.
// Every probe is bounded (answered, or closed, within a limit); the probes of all builds run in
// parallel, so the file takes about as long as the slowest close (btc-vision's bare CR, ~32 s).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { GW_BIN, HOST, ROOT, runCli, startBackend, startGateway, type Backend, type Gateway } from './helpers/gw.js';
import { Elf, libcDefs, patchIsoc23 } from '../core/router/uws-elf.js';

type Build = 'official' | 'btc-vision' | 'trufflesuite';
const BUILDS: Build[] = ['official', 'btc-vision', 'trufflesuite'];

/** Loads the binding as gw would (GW_UWS=<build>) in a child: the loaded name, or the reason. */
function detect(build: Build): Promise<{ ok: boolean; text: string }> {
  const loader = path.join(path.dirname(GW_BIN), '..', 'core', 'router', 'uws.js');
  const code = `import(${JSON.stringify(loader)}).then((m) => { try { console.log(m.loadUws().name); } catch (e) { console.log(e.message); process.exitCode = 3; } })`;
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['-e', code], { cwd: ROOT, env: { ...process.env, GW_UWS: build }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout!.on('data', (d) => (out += d));
    p.stderr!.on('data', (d) => (out += d));
    p.on('exit', (c) => resolve({ ok: c === 0, text: out.trim() }));
  });
}

interface Probe {
  /** ms to the first response byte, or null. */
  firstByteMs: number | null;
  /** ms to the close (either side), or null if still open at the cap. */
  closedMs: number | null;
  data: string;
}

const CAP_MS = 45_000;

/**
 * Writes `bytes` on a fresh connection and records what comes back until close (or CAP_MS), or
 * until `settleMs` after the first response byte when the connection is expected to stay open.
 */
function probe(port: number, bytes: string, settleMs?: number): Promise<Probe> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const r: Probe = { firstByteMs: null, closedMs: null, data: '' };
    let byUs = false;
    const s = net.connect(port, HOST, () => s.write(bytes));
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      if (r.firstByteMs === null) {
        r.firstByteMs = Date.now() - t0;
        if (settleMs !== undefined) {
          setTimeout(() => {
            byUs = true;
            s.destroy();
          }, settleMs).unref();
        }
      }
      r.data += d;
    });
    s.on('error', () => {});
    const cap = setTimeout(() => {
      byUs = true;
      s.destroy();
      resolve(r);
    }, CAP_MS);
    s.on('close', () => {
      clearTimeout(cap);
      if (!byUs) r.closedMs = Date.now() - t0;
      resolve(r);
    });
  });
}

const H = 'Host: gw.test\r\n';
const PROBES = {
  control: `GET /g HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
  http10: `GET /g HTTP/1.0\r\n${H}\r\n`,
  hostless: 'GET /g HTTP/1.1\r\n\r\n',
  obsFold: `GET /g HTTP/1.1\r\n${H}X-A: a\r\n  folded\r\n\r\n`,
  nul: `GET /g HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`,
  bareLf: `GET /g HTTP/1.1\r\nHost: gw.test\nX-A: b\r\n\r\n`,
  bareLfLines: 'GET /g HTTP/1.1\nHost: gw.test\n\n',
  bareCr: `GET /g HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`,
  manyHeaders: `GET /g HTTP/1.1\r\n${H}${Array.from({ length: 120 }, (_, i) => `X-H${i}: v\r\n`).join('')}\r\n`,
  // A legal chunk extension, with a request pipelined behind the body.
  chunkExt: `POST /x HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\nGET /g HTTP/1.1\r\n${H}\r\n`,
  // Chunk data not followed by CRLF ("XX" where CRLF must be).
  chunkNoCrlf: `POST /x HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nhelXX3\r\nabc\r\n0\r\n\r\n`,
} as const;
type ProbeName = keyof typeof PROBES;

function statusOf(p: Probe): number | null {
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(p.data);
  return m ? Number(m[1]) : null;
}

/** Expectations per probe: an answer with a status, or a close without a single byte within `silentClose` ms. */
// An answer comes at once (gw's endpoint timeout is 1 s here); a silent close comes with uWS's
// idle timeout (10 s, checked every 4 s): generous bounds, never an unbounded wait.
const ANSWER_MS = 5_000;
const IDLE_CLOSE_MS = 18_000;

type Expect = { answer: number; closes: boolean } | { silentClose: number };
const NEW_PARSER: Record<ProbeName, Expect> = {
  control: { answer: 200, closes: true },
  http10: { answer: 505, closes: true },
  hostless: { answer: 400, closes: true },
  obsFold: { answer: 400, closes: true },
  nul: { answer: 400, closes: true },
  bareLf: { answer: 400, closes: true },
  // Bare LFs throughout: the request line does not parse as HTTP/1.1, so it is taken for 1.0.
  bareLfLines: { answer: 505, closes: true },
  // A bare CR inside a value: no answer, the connection is held ~30 s (measured 31.6 s) and closed.
  bareCr: { silentClose: 40_000 },
  manyHeaders: { answer: 431, closes: true },
  chunkExt: { answer: 500, closes: false },
  chunkNoCrlf: { answer: 200, closes: true },
};
const EXPECT: Record<Build, Record<ProbeName, Expect>> = {
  // The official build is expected to behave as the 20.57 sources btc-vision repackages.
  official: NEW_PARSER,
  'btc-vision': NEW_PARSER,
  trufflesuite: {
    control: { answer: 200, closes: true },
    http10: { silentClose: IDLE_CLOSE_MS },
    hostless: { silentClose: IDLE_CLOSE_MS },
    obsFold: { silentClose: IDLE_CLOSE_MS },
    nul: { silentClose: IDLE_CLOSE_MS },
    bareLf: { silentClose: IDLE_CLOSE_MS },
    bareLfLines: { silentClose: IDLE_CLOSE_MS },
    bareCr: { silentClose: IDLE_CLOSE_MS },
    manyHeaders: { silentClose: IDLE_CLOSE_MS },
    chunkExt: { answer: 500, closes: false },
    chunkNoCrlf: { answer: 200, closes: true },
  },
};


const detected = await Promise.all(BUILDS.map(async (b) => ({ build: b, ...(await detect(b)) })));

interface Run {
  gw: Gateway;
  backend: Backend;
  results: Record<ProbeName, Probe>;
}

async function runBuild(build: Build): Promise<Run> {
  const backend = await startBackend();
  const host = [backend.url];
  const gw = await startGateway(
    {
      version: 3,
      timeout: '1s',
      endpoints: [
        { endpoint: '/g', backend: [{ host, url_pattern: '/g' }] },
        { endpoint: '/x', method: 'POST', output_encoding: 'no-op', backend: [{ host, url_pattern: '/x', encoding: 'no-op' }] },
      ],
    },
    { args: ['--workers', '1'], env: { GW_UWS: build } },
  );
  const names = Object.keys(PROBES) as ProbeName[];
  // chunkExt stays open after its answer: 2 s is enough to see a second answer if there were one.
  const got = await Promise.all(names.map((n) => probe(gw.port, PROBES[n], n === 'chunkExt' ? 2000 : undefined)));
  const results = Object.fromEntries(names.map((n, i) => [n, got[i]!])) as Record<ProbeName, Probe>;
  return { gw, backend, results };
}

// Start every loadable build's probes now, so they all wait out their timeouts together.
const runs = new Map<Build, Promise<Run>>();
for (const d of detected) if (d.ok) runs.set(d.build, runBuild(d.build));
for (const r of runs.values()) r.catch(() => {});

for (const d of detected) {
  describe(`uWS build ${d.build}`, { skip: d.ok ? false : `does not load here: ${d.text.replace(/\s+/g, ' ')}` }, () => {
    let run: Run;
    before(async () => {
      run = await runs.get(d.build)!;
    });
    after(async () => {
      await run?.gw.stop();
      await run?.backend.close();
    });

    it('is the build gw logs it is using, and says how it was loaded', () => {
      const m = /\[SERVICE: uWS\] Using (.+)$/m.exec(run.gw.output());
      assert.ok(m, run.gw.output());
      assert.equal(m[1], d.text);
      if (d.build === 'btc-vision' && /compat/.test(d.text)) {
        assert.match(d.text, /glibc 2\.\d+ compat: .*__isoc23_strtol→strtol/);
      }
    });

    for (const name of Object.keys(PROBES) as ProbeName[]) {
      const exp = EXPECT[d.build][name];
      const what = 'silentClose' in exp ? `closed without an answer within ${exp.silentClose / 1000} s` : `answered ${exp.answer} within ${ANSWER_MS / 1000} s${exp.closes ? ', then closed' : ''}`;
      it(`${name}: ${what}`, () => {
        const p = run.results[name];
        const seen = `got ${JSON.stringify(p.data.slice(0, 200))} (first byte ${p.firstByteMs} ms, closed ${p.closedMs} ms)`;
        if ('silentClose' in exp) {
          assert.equal(p.data, '', seen);
          assert.ok(p.closedMs !== null && p.closedMs <= exp.silentClose, seen);
          return;
        }
        assert.equal(statusOf(p), exp.answer, seen);
        assert.ok(p.firstByteMs !== null && p.firstByteMs <= ANSWER_MS, seen);
        if (exp.closes) assert.ok(p.closedMs !== null && p.closedMs <= ANSWER_MS + 1000, seen);
      });
    }

    it('chunk extension: the size is misread, so the pipelined request is swallowed as body (documented risk)', () => {
      const p = run.results.chunkExt;
      // One answer only: gw's 500 once the never-ending body hits the endpoint timeout.
      assert.equal((p.data.match(/HTTP\/1\.1 /g) ?? []).length, 1, p.data);
      assert.match(p.data, /X-Krakend-Completed: false/);
      const body = run.backend.requests.find((r) => r.url === '/x' && r.body.includes('GET /g'));
      assert.equal(body, undefined, 'an aborted body is never completed at the backend');
    });

    it('chunk data without its CRLF is accepted: the backend receives "helabc" (documented risk)', () => {
      const rec = run.backend.requests.find((r) => r.url === '/x' && r.body.toString() === 'helabc');
      assert.ok(rec, JSON.stringify(run.backend.requests.map((r) => [r.url, r.body.toString()])));
    });
  });
}

describe('GW_UWS selection', () => {
  it('an unknown build name is a start-up error naming the choices', async () => {
    const r = await runCli(['run', '-c', path.join(ROOT, 'examples', 'hello.json'), '--workers', '1', '-p', '0'], { env: { GW_UWS: 'fastest' }, timeoutMs: 15_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /GW_UWS=fastest: unknown uWebSockets\.js build \(use one of official, btc-vision, trufflesuite\)/);
  });

  it('a forced build that does not load is a start-up error with its reason, not a fallback', async (t) => {
    const missing = detected.find((d) => !d.ok);
    if (!missing) return t.skip('every build loads here');
    const r = await runCli(['run', '-c', path.join(ROOT, 'examples', 'hello.json'), '--workers', '1', '-p', '0'], { env: { GW_UWS: missing.build }, timeoutMs: 15_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`GW_UWS=${missing.build}: that uWebSockets\\.js build could not be loaded`));
    assert.doesNotMatch(r.output, /Listening on port/);
  });
});

const btc = detected.find((d) => d.build === 'btc-vision')!;
const compat = btc.ok && /compat/.test(btc.text);

describe('glibc compat copy of btc-vision', { skip: compat ? false : 'btc-vision loads without the compat patch here (or not at all)' }, () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-uws-cache-'));
  after(() => fs.rmSync(base, { recursive: true, force: true }));
  const cfg = { version: 3, endpoints: [] };

  it('refuses a cache directory others can write to, naming it', async () => {
    const dir = path.join(base, 'open');
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o777);
    const r = await runCli(['run', '-c', path.join(ROOT, 'examples', 'hello.json'), '--workers', '1', '-p', '0'], { env: { GW_UWS: 'btc-vision', GW_UWS_CACHE: dir }, timeoutMs: 15_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is writable by others`));
    assert.deepEqual(fs.readdirSync(dir), [], 'nothing written there');
  });

  it('writes the patched copy once, and replaces a cached file that does not hold the expected bytes', async () => {
    const dir = path.join(base, 'own');
    const gw1 = await startGateway(cfg, { args: ['--workers', '1'], env: { GW_UWS: 'btc-vision', GW_UWS_CACHE: dir } });
    await gw1.stop();
    const files = fs.readdirSync(dir);
    assert.equal(files.length, 1, files.join());
    const file = path.join(dir, files[0]!);
    assert.equal((fs.statSync(dir).mode & 0o777).toString(8), '700');
    const good = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    assert.ok(files[0]!.includes(good.slice(0, 16)), 'the name carries the content hash');
    fs.writeFileSync(file, 'not a shared object');
    const gw2 = await startGateway(cfg, { args: ['--workers', '1'], env: { GW_UWS: 'btc-vision', GW_UWS_CACHE: dir } });
    await gw2.stop();
    assert.equal(createHash('sha256').update(fs.readFileSync(file)).digest('hex'), good);
    assert.deepEqual(fs.readdirSync(dir), files, 'no temporary file left behind');
  });
});

describe('ELF patch of the arm64 binary (pure transformation, checked by re-reading it)', () => {
  const file = path.join(ROOT, 'node_modules', '@btc-vision', 'uwebsockets.js', 'uws_linux_arm64_115.node');
  it('redirects __isoc23_strtol/strtoul to strtol/strtoul@GLIBC_2.17 and makes GLIBC_2.38 weak', { skip: fs.existsSync(file) ? false : 'binary not installed' }, () => {
    const buf = Buffer.from(fs.readFileSync(file));
    const before = new Elf(Buffer.from(buf));
    // An aarch64 glibc 2.36: every symbol gw's redirect targets is at the base version GLIBC_2.17.
    const versions = new Set(['GLIBC_2.17', 'GLIBC_2.18', 'GLIBC_2.25', 'GLIBC_2.27', 'GLIBC_2.32', 'GLIBC_2.33', 'GLIBC_2.34', 'GLIBC_2.35', 'GLIBC_2.36']);
    const symbols = new Map([['strtol', 'GLIBC_2.17'], ['strtoul', 'GLIBC_2.17'], ['__isoc99_sscanf', 'GLIBC_2.17']]);
    const r = patchIsoc23(buf, { symbols, versions });
    assert.deepEqual(r.redirects.map((x) => `${x.from}→${x.to}@${x.version}`).sort(), ['__isoc23_strtol→strtol@GLIBC_2.17', '__isoc23_strtoul→strtoul@GLIBC_2.17']);
    assert.deepEqual(r.versions, ['GLIBC_2.38 weak']);
    const after = new Elf(buf);
    const libc = after.verneed.find((v) => v.file === 'libc.so.6')!;
    const v = (i: number) => libc.aux.find((a) => a.index === (after.versym(i) & 0x7fff))?.name;
    for (const s of before.syms.filter((x) => x.name.startsWith('__isoc23_'))) {
      assert.equal(after.syms[s.index]!.name, s.name.slice('__isoc23_'.length));
      assert.equal(v(s.index), 'GLIBC_2.17');
    }
    assert.equal(after.syms.filter((s) => v(s.index) === 'GLIBC_2.38').length, 0, 'nothing needs GLIBC_2.38 any more');
    // Only the symbol names, version indexes and one vernaux flag changed: every other byte is the same.
    let changed = 0;
    const orig = fs.readFileSync(file);
    for (let i = 0; i < buf.length; i++) if (buf[i] !== orig[i]) changed++;
    assert.ok(changed > 0 && changed <= 16, `${changed} bytes changed`);
  });

  it('a libc that lacks the target refuses the patch with the reason', { skip: fs.existsSync(file) ? false : 'binary not installed' }, () => {
    const buf = Buffer.from(fs.readFileSync(file));
    assert.throws(() => patchIsoc23(buf, { symbols: new Map(), versions: new Set(['GLIBC_2.17']) }), /__isoc23_strtol: this libc does not define strtol/);
  });

  it('reads this machine\'s libc symbol versions', { skip: fs.existsSync('/lib/x86_64-linux-gnu/libc.so.6') ? false : 'no x86-64 glibc' }, () => {
    const d = libcDefs(fs.readFileSync('/lib/x86_64-linux-gnu/libc.so.6'));
    assert.equal(d.symbols.get('strtol'), 'GLIBC_2.2.5');
    assert.equal(d.symbols.get('__isoc99_sscanf'), 'GLIBC_2.7');
  });
});
