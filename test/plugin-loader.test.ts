// Unit tests of the plugin loader, the plugin logger, `gw test-plugin` and the example plugins'
// handlers (spec §5.1, §4). Run: node --import tsx --test test/plugin-loader.test.ts
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import type { Logger } from '../core/log.js';
import { loadPlugins } from '../core/plugin/loader.js';
import { joinArgs, pluginLogger } from '../core/plugin/logger.js';
import type { BackendRequest, BackendResponse, ClientContext, ClientHandler, ClientRegisterer } from '../core/plugin/types.js';
import { goDuration, runTestPlugin } from '../cli/test-plugin.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// ---------------------------------------------------------------------------
// helpers

interface Line {
  level: number;
  msg: string;
}
const DEBUG = 20;
const INFO = 30;
const WARN = 40;
const CRITICAL = 55;

function capture(level = 'debug'): { logger: Logger; lines: Line[]; text(): string } {
  const lines: Line[] = [];
  const stream = { write: (s: string) => void lines.push(JSON.parse(s) as Line) };
  const logger = pino({ level, customLevels: { critical: 55 }, base: undefined }, stream) as unknown as Logger;
  return { logger, lines, text: () => lines.map((l) => `${l.level} ${l.msg}`).join('\n') };
}

const tmpRoots: string[] = [];
after(() => {
  for (const d of tmpRoots) fs.rmSync(d, { recursive: true, force: true });
});

/** A fresh temp folder with `files` written into it (ESM by default: it gets `"type": "module"`). */
function folder(files: Record<string, string>, esm = true): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-plugins-'));
  tmpRoots.push(dir);
  if (esm) fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

/** An ESM client plugin registering `names`, recording its calls in globalThis.__calls. */
function clientPlugin(names: string[], extra = ''): string {
  return `
    const calls = (globalThis.__calls ??= []);
    ${extra}
    export const ClientRegisterer = {
      registerClients(register) {
        ${JSON.stringify(names)}.forEach((n) => { calls.push('register ' + n); register(n, () => (req, next) => next()); });
      },
    };`;
}

const calls = (): string[] => ((globalThis as { __calls?: string[] }).__calls ??= []);
const resetCalls = () => void ((globalThis as { __calls?: string[] }).__calls = []);

const fakeCtx = (logger = capture().logger): ClientContext => ({
  endpoint: '/test/{id}',
  method: 'GET',
  backend: { index: 0, urlPattern: '/__debug/{id}', hosts: ['http://127.0.0.1:1'] },
  signal: new AbortController().signal,
  logger: pluginLogger(logger, 'test'),
});

function fakeReq(url: string, over: Partial<BackendRequest> = {}): BackendRequest {
  return {
    method: 'GET',
    url,
    headers: { 'User-Agent': 'KrakenD Version 2.13.8' },
    body: null,
    signal: new AbortController().signal,
    params: {},
    ...over,
  };
}

// ---------------------------------------------------------------------------
// loader

/** The loader's errors for the client kind (every file is also tried as a server and a modifier plugin). */
function clientErrors(res: { errors: { kind: string; file: string; error: string }[] }) {
  return res.errors.filter((e) => e.kind === 'client');
}

describe('loadPlugins', () => {
  test('all three kinds from one file, in KrakenD order; modifier flags and registerContext', async () => {
    const dir = folder({
      'all.js': `
        export const ClientRegisterer = { registerClients(r) { r('c1', () => () => null); } };
        export const HandlerRegisterer = { registerHandlers(r) { r('s1', (ctx, extra, next) => next); } };
        export const ModifierRegisterer = {
          registerContext(signal) { globalThis.__ctxSignal = signal; },
          registerModifiers(r) { r('req-only', () => (w) => w, true, false); r('resp-only', () => (w) => w, false, true); },
        };`,
      'bad-flags.js': `export const ModifierRegisterer = { registerModifiers(r) { r('m', () => null, 'yes', false); } };`,
    });
    const { logger, lines, text } = capture();
    const ac = new AbortController();
    const res = await loadPlugins({ folder: dir, pattern: '.js' }, logger, undefined, { signal: ac.signal });
    assert.deepEqual([res.registry.names('client'), res.registry.names('server'), res.registry.names('modifier')], [['c1'], ['s1'], ['req-only', 'resp-only']]);
    assert.deepEqual([res.registry.get('modifier', 'req-only')?.request, res.registry.get('modifier', 'req-only')?.response], [true, false]);
    assert.deepEqual([res.registry.get('modifier', 'resp-only')?.request, res.registry.get('modifier', 'resp-only')?.response], [false, true]);
    assert.equal((globalThis as { __ctxSignal?: AbortSignal }).__ctxSignal, ac.signal);
    const msgs = lines.map((l) => l.msg);
    const order = ['Executor', 'Handler', 'Modifier'].map((k) => msgs.indexOf(`[SERVICE: ${k} Plugin] Total plugins loaded: 1`));
    assert.ok(order.every((i, n) => i >= 0 && (n === 0 || i > order[n - 1]!)), text());
    assert.ok(lines.some((l) => l.level === WARN && /bad-flags\.js\): registering the plugin failed: .*both flags must be booleans/.test(l.msg)), text());
  });

  test('name order, pattern substring, only .js/.mjs/.cjs, Total plugins loaded', async () => {
    resetCalls();
    const dir = folder({
      'b-plugin.js': clientPlugin(['b']),
      'a-plugin.mjs': clientPlugin(['a']),
      'c-plugin.cjs': `module.exports = { ClientRegisterer: { registerClients(r) { (globalThis.__calls ??= []).push('register c'); r('c', () => () => ({ status: 200, headers: {}, body: null })); } } };`,
      'a-plugin.js.map': '{"version":3}',
      'plugin.d.ts': 'export {};',
      'notes-plugin.txt': 'hello',
      'zzz-other.js': clientPlugin(['zzz']),
    });
    const { logger, lines, text } = capture();
    const res = await loadPlugins({ folder: dir, pattern: 'plugin' }, logger);
    assert.deepEqual(res.registry.clientNames(), ['a', 'b', 'c']);
    assert.deepEqual(calls(), ['register a', 'register b', 'register c']);
    assert.equal(res.loaded, 3);
    assert.deepEqual(clientErrors(res), []);
    // Every file is tried as the other two kinds too: a missing symbol is a DEBUG line, not a warning.
    assert.ok(res.errors.every((e) => e.kind !== 'client' && / not found in plugin /.test(e.error)), JSON.stringify(res.errors));
    assert.equal(typeof res.registry.getClient('b')?.factory, 'function');
    assert.equal(res.registry.getClient('b')?.file, path.join(dir, 'b-plugin.js'));
    assert.equal(res.registry.getClient('zzz'), undefined);

    const msgs = lines.map((l) => l.msg);
    assert.equal(msgs[0], '[SERVICE: Plugin Loader] Starting loading process');
    assert.equal(lines[0]!.level, DEBUG);
    assert.equal(msgs.at(-1), '[SERVICE: Plugin Loader] Loading process completed');
    const total = lines.find((l) => l.msg === '[SERVICE: Executor Plugin] Total plugins loaded: 3');
    assert.ok(total, text());
    assert.equal(total.level, INFO);
    assert.ok(msgs.includes(`[SERVICE: Plugin Loader] skipping ${path.join(dir, 'a-plugin.js.map')}: not a JavaScript module (.js, .mjs, .cjs)`), text());
    assert.ok(!lines.some((l) => l.level >= WARN), text());
  });

  test('pattern ".js" skips the .js.map and .d.ts siblings and package.json', async () => {
    const dir = folder({ 'p.js': clientPlugin(['p1']), 'p.js.map': '{}', 'p.d.ts': 'export {}' });
    const { logger } = capture();
    const res = await loadPlugins({ folder: dir, pattern: '.js' }, logger);
    assert.deepEqual(res.registry.clientNames(), ['p1']);
    assert.deepEqual(clientErrors(res), []);
  });

  test('folder relative to baseDir; plugin #i and the symbol-not-found DEBUG line', async () => {
    const dir = folder({ '1-none.js': 'export const Other = 1;', '2-ok.js': clientPlugin(['ok']), '3-bad-type.js': 'export const ClientRegisterer = 42;', '4-no-method.js': 'export const ClientRegisterer = { foo() {} };' });
    const { logger, lines, text } = capture();
    const base = path.dirname(dir);
    const rel = `./${path.basename(dir)}/`;
    const res = await loadPlugins({ folder: rel, pattern: '.js' }, logger, base);
    assert.deepEqual(res.registry.clientNames(), ['ok']);
    assert.equal(res.loaded, 1);
    const f = (n: string) => path.join(rel, n); // Go's filepath.Join: "dir/1-none.js"
    assert.equal(f('1-none.js'), `${path.basename(dir)}/1-none.js`);
    const notFound = `[SERVICE: Executor Plugin] plugin #0 (${f('1-none.js')}): plugin: symbol ClientRegisterer not found in plugin 1-none`;
    const l = lines.find((x) => x.msg === notFound);
    assert.ok(l, text());
    assert.equal(l.level, DEBUG);
    const unknown = lines.filter((x) => x.msg.endsWith(': http-request-executor plugin loader: unknown type'));
    assert.deepEqual(
      unknown.map((x) => [x.level, x.msg]),
      [
        [DEBUG, `[SERVICE: Executor Plugin] plugin #2 (${f('3-bad-type.js')}): http-request-executor plugin loader: unknown type`],
        [DEBUG, `[SERVICE: Executor Plugin] plugin #3 (${f('4-no-method.js')}): http-request-executor plugin loader: unknown type`],
      ],
    );
    assert.deepEqual(
      clientErrors(res).map((e) => e.file),
      [f('1-none.js'), f('3-bad-type.js'), f('4-no-method.js')],
    );
  });

  test('a missing folder is logged at DEBUG and loading continues with 0 plugins', async () => {
    const { logger, lines, text } = capture();
    const res = await loadPlugins({ folder: './no-such-plugin-folder/', pattern: '.js' }, logger, os.tmpdir());
    assert.equal(res.loaded, 0);
    assert.deepEqual(res.registry.clientNames(), []);
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg]),
      [
        [DEBUG, '[SERVICE: Plugin Loader] Starting loading process'],
        [DEBUG, '[SERVICE: Executor Plugin] open ./no-such-plugin-folder/: no such file or directory'],
        [DEBUG, '[SERVICE: Handler Plugin] open ./no-such-plugin-folder/: no such file or directory'],
        [DEBUG, '[SERVICE: Modifier Plugin] open ./no-such-plugin-folder/: no such file or directory'],
        [DEBUG, '[SERVICE: Plugin Loader] Loading process completed'],
      ],
      text(),
    );
    assert.ok(!lines.some((l) => l.msg.includes('Total plugins loaded')));
  });

  test('a module that throws on import, or does not parse, is skipped with a WARNING; the rest load', async () => {
    const dir = folder({
      'a-throws.js': 'throw new Error("boom at import");',
      'b-syntax.js': 'export const = ;',
      'c-missing-dep.js': 'import "gw-no-such-package-xyz"; export const ClientRegisterer = {};',
      'd-good.js': clientPlugin(['good']),
    });
    const { logger, lines, text } = capture();
    const res = await loadPlugins({ folder: dir, pattern: '.js' }, logger);
    assert.deepEqual(res.registry.clientNames(), ['good']);
    assert.equal(res.loaded, 1);
    const warns = lines.filter((l) => l.level === WARN).map((l) => l.msg);
    assert.equal(warns.length, 3, text());
    assert.equal(warns[0], `[SERVICE: Executor Plugin] plugin #0 (${path.join(dir, 'a-throws.js')}): unable to import the module: boom at import`);
    assert.match(warns[1]!, /plugin #1 \(.*b-syntax\.js\): unable to import the module: SyntaxError/);
    assert.match(warns[2]!, /plugin #2 \(.*c-missing-dep\.js\): unable to import the module: .*gw-no-such-package-xyz/);
    assert.equal(clientErrors(res).length, 3);
    assert.ok(lines.some((l) => l.msg === '[SERVICE: Executor Plugin] Total plugins loaded: 1'));
  });

  test('registration that throws, rejects, times out or registers garbage is skipped, keeping nothing', async () => {
    const dir = folder({
      'a-sync.js': `export const ClientRegisterer = { registerClients(r) { r('a-partial', () => () => null); throw new Error('sync failure'); } };`,
      'b-async.js': `export const ClientRegisterer = { async registerClients(r) { await null; r('b-partial', () => () => null); throw new Error('async failure'); } };`,
      'c-slow.js': `export const ClientRegisterer = { registerClients(r) { return new Promise((res) => setTimeout(() => { r('c-late', () => () => null); res(); }, 400)); } };`,
      'd-bad-name.js': `export const ClientRegisterer = { registerClients(r) { r('', () => null); } };`,
      'e-bad-factory.js': `export const ClientRegisterer = { registerClients(r) { r('e', 'not a function'); } };`,
      'f-logger-throws.js': `export const ClientRegisterer = { registerLogger() { throw new Error('logger failure'); }, registerClients(r) { r('f', () => () => null); } };`,
      'g-async-ok.js': `export const ClientRegisterer = { async registerClients(r) { await new Promise((res) => setTimeout(res, 20)); r('g', () => () => null); } };`,
    });
    const { logger, lines, text } = capture();
    const res = await loadPlugins({ folder: dir, pattern: '.js' }, logger, undefined, { timeoutMs: 150 });
    assert.deepEqual(res.registry.clientNames(), ['g']);
    assert.equal(res.loaded, 1);
    const warns = lines.filter((l) => l.level === WARN).map((l) => l.msg);
    const errFor = (file: string) => warns.find((w) => w.includes(`(${path.join(dir, file)})`)) ?? `<nothing for ${file}>\n${text()}`;
    assert.match(errFor('a-sync.js'), /: registering the plugin failed: sync failure$/);
    assert.match(errFor('b-async.js'), /: registering the plugin failed: async failure$/);
    assert.match(errFor('c-slow.js'), /: registering the plugin failed: registerClients did not complete within 150ms$/);
    assert.match(errFor('d-bad-name.js'), /the name must be a non-empty string/);
    assert.match(errFor('e-bad-factory.js'), /the factory must be a function/);
    assert.match(errFor('f-logger-throws.js'), /logger failure/);
    assert.equal(clientErrors(res).length, 6);
    // The late registration of c-slow is ignored (and logged), not added to the registry.
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(res.registry.getClient('c-late'), undefined);
    assert.ok(lines.some((l) => l.level === WARN && l.msg.includes('register("c-late") called after the registration ended')), text());
  });

  test('Go-style capitalised names; registerLogger runs first with a [PLUGIN: name] logger', async () => {
    resetCalls();
    const dir = folder({
      'go-style.js': `
        const calls = (globalThis.__calls ??= []);
        let logger;
        export const ClientRegisterer = {
          name: 'my-go-port',
          RegisterLogger(l) { calls.push('logger'); logger = l; l.Debug?.('x'); l.debug('[PLUGIN: my-go-port] Logger loaded'); },
          RegisterClients(f) { calls.push('clients'); logger.info('registering', 2, 'clients', { a: 1 }); f('go1', () => () => null); f('go2', () => () => null); },
        };`,
      'unnamed.js': `
        export const ClientRegisterer = {
          registerLogger(l) { l.warning('hello from', 'unnamed'); l.fatal('not fatal'); },
          registerClients(r) { r('u', () => () => null); },
        };`,
    });
    const { logger, lines, text } = capture();
    const res = await loadPlugins({ folder: dir, pattern: '.js' }, logger);
    assert.deepEqual(res.registry.clientNames(), ['go1', 'go2', 'u']);
    assert.deepEqual(calls(), ['logger', 'clients']);
    const find = (msg: string) => lines.find((l) => l.msg === msg) ?? assert.fail(`no ${JSON.stringify(msg)} in\n${text()}`);
    assert.equal(find('[PLUGIN: my-go-port] Logger loaded').level, DEBUG); // not double-prefixed
    assert.equal(find('[PLUGIN: my-go-port] registering 2 clients { a: 1 }').level, INFO);
    assert.equal(find('[PLUGIN: unnamed] hello from unnamed').level, WARN); // file base name
    assert.equal(find('[PLUGIN: unnamed] not fatal').level, CRITICAL); // fatal logs, never exits
    assert.ok(lines.some((l) => l.msg === '[SERVICE: Executor Plugin] Total plugins loaded: 2'));
  });

  test('a default export carrying ClientRegisterer, and CommonJS module.exports', async () => {
    const dir = folder({
      'a.js': `export default { ClientRegisterer: { registerClients(r) { r('from-default', () => () => null); } } };`,
      'b.cjs': `exports.ClientRegisterer = { RegisterClients(r) { r('from-cjs', () => () => null); } };`,
    });
    const res = await loadPlugins({ folder: dir, pattern: '' }, capture().logger);
    assert.deepEqual(res.registry.clientNames(), ['from-default', 'from-cjs']);
  });

  test('a name registered twice: the first file wins, a WARNING names both files', async () => {
    const dir = folder({ 'a.js': clientPlugin(['dup', 'only-a']), 'b.js': clientPlugin(['dup']) });
    const { logger, lines, text } = capture();
    const res = await loadPlugins({ folder: dir, pattern: '.js' }, logger);
    assert.equal(res.registry.getClient('dup')?.file, path.join(dir, 'a.js'));
    assert.equal(res.loaded, 2);
    const w = lines.find((l) => l.level === WARN && l.msg.includes('"dup"'));
    assert.ok(w, text());
    assert.ok(w.msg.includes(path.join(dir, 'a.js')) && w.msg.includes(path.join(dir, 'b.js')), w.msg);
  });

  test('Go .so plugins get a WARNING that gw loads JavaScript modules', async () => {
    const dir = folder({ 'krakend-client-example.so': '\x7fELF' });
    const { logger, lines, text } = capture();
    const res = await loadPlugins({ folder: dir, pattern: '.so' }, logger);
    assert.equal(res.loaded, 0);
    const w = lines.find((l) => l.level === WARN);
    assert.ok(w, text());
    assert.match(w.msg, /^\[SERVICE: Plugin Loader\] gw loads JavaScript plugin modules .*not Go \.so plugins \(skipped: .*krakend-client-example\.so\)/);
    // Pattern .so with an empty folder still explains.
    const empty = capture();
    await loadPlugins({ folder: folder({}), pattern: '.so' }, empty.logger);
    assert.ok(empty.lines.some((l) => l.level === WARN && l.msg.includes('not Go .so plugins (pattern ".so")')), empty.text());
  });
});

// ---------------------------------------------------------------------------
// plugin logger

describe('pluginLogger', () => {
  test('joins like Println and maps levels', () => {
    assert.equal(joinArgs(['request:', '/x']), 'request: /x');
    assert.equal(joinArgs([1, true, null, undefined, new Error('e')]), '1 true null undefined e');
    assert.equal(joinArgs([]), '');
    const { logger, lines } = capture();
    const l = pluginLogger(logger, 'p');
    l.debug('d');
    l.info('i');
    l.warning('w');
    l.error('e');
    l.critical('c');
    l.fatal('f');
    assert.deepEqual(
      lines.map((x) => [x.level, x.msg]),
      [
        [20, '[PLUGIN: p] d'],
        [30, '[PLUGIN: p] i'],
        [40, '[PLUGIN: p] w'],
        [50, '[PLUGIN: p] e'],
        [55, '[PLUGIN: p] c'],
        [55, '[PLUGIN: p] f'],
      ],
    );
  });

  test('formats nothing when the level is off', () => {
    const { logger, lines } = capture('info');
    let touched = false;
    const v = { toString: () => ((touched = true), 'x') };
    pluginLogger(logger, 'p').debug(v);
    assert.equal(touched, false);
    assert.equal(lines.length, 0);
  });
});

// ---------------------------------------------------------------------------
// gw test-plugin

describe('runTestPlugin', () => {
  const run = async (files: string[], kinds: Parameters<typeof runTestPlugin>[1], cwd?: string) => {
    let out = '';
    const code = await runTestPlugin(files, kinds, { write: (s: string) => (out += s) }, { cwd });
    return { code, out };
  };

  test('usage errors', async () => {
    assert.deepEqual(await run([], { client: true }), { code: 1, out: 'At least one plugin is required.\n' });
    assert.deepEqual(await run(['x.js'], {}), { code: 1, out: 'You must declare the expected type of the plugin.\n' });
  });

  test('OK and KO lines, exit codes', async () => {
    const dir = folder({
      'good.js': clientPlugin(['one', 'two']),
      'none.js': 'export const X = 1;',
      'broken.js': 'throw new Error("kaboom");',
      'server.js': `export const HandlerRegisterer = { RegisterHandlers(f) { f('srv', () => null); } };`,
    });
    let r = await run(['good.js'], { client: true }, dir);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /^\[OK\] CLIENT\tone\n\[OK\] CLIENT\ttwo\n\[OK\] 1 tested plugin\(s\) in \d[\d.]*(ns|µs|ms|s)\n$/);

    r = await run(['good.js', 'none.js', 'broken.js', 'missing.js'], { client: true }, dir);
    assert.equal(r.code, 1);
    const lines = r.out.split('\n');
    assert.deepEqual(lines.slice(0, 5), [
      '[OK] CLIENT\tone',
      '[OK] CLIENT\ttwo',
      '[KO] CLIENT\tnone.js: The plugin does not contain a ClientRegisterer.',
      '[KO] CLIENT\tbroken.js: unable to import the module: kaboom',
      '[KO] Unable to open the plugin missing.js.',
    ]);
    assert.match(lines[5]!, /^\[KO\] 4 tested plugin\(s\) in \S+\.$/);
    assert.equal(lines[6], '3 plugin(s) failed.');

    // -s -m -c on one file: KrakenD's order server, modifier, client.
    r = await run([path.join(dir, 'server.js')], { client: true, server: true, modifier: true });
    assert.equal(r.code, 1);
    assert.deepEqual(r.out.split('\n').slice(0, 3), [
      '[OK] SERVER\tsrv',
      '[KO] MODIFIER\tserver.js: The plugin does not contain a ModifierRegisterer.',
      '[KO] CLIENT\tserver.js: The plugin does not contain a ClientRegisterer.',
    ]);
    r = await run(['good.js'], ['server'], dir);
    assert.match(r.out, /^\[KO\] SERVER\tgood\.js: The plugin does not contain a HandlerRegisterer\.\n/);
  });

  test('a .so file is reported as a Go plugin', async () => {
    const dir = folder({ 'x.so': '\x7fELF' });
    const r = await run(['x.so'], { client: true }, dir);
    assert.equal(r.code, 1);
    assert.match(r.out, /^\[KO\] CLIENT\tx\.so: gw loads JavaScript plugin modules \(\.js, \.mjs, \.cjs\), not Go \.so plugins\n/);
  });

  test('the example plugins pass (from source)', async () => {
    const r = await run(
      ['plugins/krakend-client-example/krakend-client-example.ts', 'plugins/http-client-auth/http-client-auth.ts'],
      { client: true },
      ROOT,
    );
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /^\[OK\] CLIENT\tkrakend-client-example\n\[OK\] CLIENT\thttp-client-auth\n\[OK\] 2 tested/);
  });

  test('goDuration prints like Go', () => {
    assert.equal(goDuration(0), '0s');
    assert.equal(goDuration(350), '350ns');
    assert.equal(goDuration(1_200), '1.2µs');
    assert.equal(goDuration(15_042_300), '15.0423ms');
    assert.equal(goDuration(1_500_000_000), '1.5s');
    assert.equal(goDuration(62_000_000_000), '1m2s');
    assert.equal(goDuration(3_600_000_000_000n), '1h0m0s');
  });
});

// ---------------------------------------------------------------------------
// example plugins (handlers called directly; the end-to-end tests run them inside gw)

async function registered(file: string): Promise<{ reg: ClientRegisterer; name: string; factory: Parameters<Parameters<NonNullable<ClientRegisterer['registerClients']>>[0]>[1] }> {
  const mod = (await import(path.join(ROOT, file))) as { ClientRegisterer: ClientRegisterer };
  const reg = mod.ClientRegisterer;
  reg.registerLogger?.(pluginLogger(capture().logger, reg.name ?? '?'));
  let out: { name: string; factory: never } | undefined;
  await reg.registerClients?.((name, factory) => void (out = { name, factory: factory as never }));
  assert.ok(out);
  return { reg, ...out };
}

const NEXT_RES: BackendResponse = { status: 200, headers: { 'content-type': 'application/json' }, body: '{"message":"pong"}' };

describe('krakend-client-example', () => {
  test('hijacks the configured path, delegates the rest untouched', async () => {
    const { name, factory } = await registered('plugins/krakend-client-example/krakend-client-example.ts');
    assert.equal(name, 'krakend-client-example');
    const extra = { name, 'krakend-client-example': { path: '/__debug/hijack-me' } };
    const h: ClientHandler = await factory(fakeCtx(), extra);
    let nextCalls = 0;
    const next = async () => (nextCalls++, NEXT_RES);

    const hj = await h(fakeReq('http://localhost:8080/__debug/hijack-me?x=1'), next);
    assert.equal(nextCalls, 0);
    assert.deepEqual(hj, { status: 200, headers: { 'Content-Type': 'application/json' }, body: '{"message":"/__debug/hijack-me"}' });

    for (const url of ['http://localhost:8080/__debug/normal', 'http://localhost:8080/__debug/hijack-me/x', 'http://localhost:8080/__debug/hijack-mee']) {
      assert.equal(await h(fakeReq(url), next), NEXT_RES, url); // the very same object: zero-copy
    }
    assert.equal(nextCalls, 3);
  });

  test('escapes the path and rejects a foreign name', async () => {
    const { factory } = await registered('plugins/krakend-client-example/krakend-client-example.ts');
    const h = await factory(fakeCtx(), { name: 'krakend-client-example', 'krakend-client-example': { path: '/a<b>&"\'' } });
    const r = (await h(fakeReq('http://h/a<b>&"\''), async () => NEXT_RES)) as BackendResponse;
    assert.equal(JSON.parse(r.body as string).message, '/a&lt;b&gt;&amp;&#34;&#39;');
    assert.throws(() => factory(fakeCtx(), { name: 'other' }), /unknown register other/);
    assert.throws(() => factory(fakeCtx(), {}), /wrong config/);
  });
});

describe('http-client-auth', () => {
  const file = 'plugins/http-client-auth/http-client-auth.ts';
  const reset = () => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });

  test('adds the header (canonical name) and returns next()\'s response untouched', async () => {
    const { name, factory } = await registered(file);
    const h = await factory(fakeCtx(), { name, 'http-client-auth': { header: 'x-api-key', value: 'k1' } });
    let seen: BackendRequest | undefined;
    const req = fakeReq('http://h/x', { headers: { 'X-Api-Key': 'from-client', Accept: '*/*' } });
    const res = await h(req, async (r) => ((seen = r), NEXT_RES));
    assert.equal(res, NEXT_RES);
    assert.deepEqual(seen?.headers, { 'X-Api-Key': 'k1', Accept: '*/*' });
  });

  test('value_env is read once at factory time; a missing variable is a factory error', async () => {
    const { name, factory } = await registered(file);
    process.env.GW_TEST_TOKEN = 'Bearer from-env';
    const h = await factory(fakeCtx(), { name, 'http-client-auth': { header: 'Authorization', value_env: 'GW_TEST_TOKEN' } });
    delete process.env.GW_TEST_TOKEN;
    let seen: BackendRequest | undefined;
    await h(fakeReq('http://h/x'), async (r) => ((seen = r), NEXT_RES));
    assert.equal(seen?.headers.Authorization, 'Bearer from-env');
    assert.throws(
      () => factory(fakeCtx(), { name, 'http-client-auth': { header: 'Authorization', value_env: 'GW_TEST_TOKEN' } }),
      /environment variable GW_TEST_TOKEN \(value_env\) is not set/,
    );
    assert.throws(() => factory(fakeCtx(), { name, 'http-client-auth': { value: 'x' } }), /"header" must be a valid header name/);
    assert.throws(() => factory(fakeCtx(), { name, 'http-client-auth': { header: 'A' } }), /"value" .* or "value_env" .* is required/);
  });

  test('retries once on a connection reset, only for idempotent body-less calls', async () => {
    const { name, factory } = await registered(file);
    const h = await factory(fakeCtx(), { name, 'http-client-auth': { header: 'Authorization', value: 'Bearer x' } });
    const flaky = (failures: number, err: () => unknown = reset) => {
      let n = 0;
      return { next: async () => (n++ < failures ? Promise.reject(err()) : NEXT_RES), count: () => n };
    };

    let f = flaky(1);
    assert.equal(await h(fakeReq('http://h/x'), f.next), NEXT_RES);
    assert.equal(f.count(), 2);

    f = flaky(2); // only once
    await assert.rejects(async () => h(fakeReq('http://h/x', { method: 'DELETE' }), f.next), /ECONNRESET/);
    assert.equal(f.count(), 2);

    f = flaky(1, () => Object.assign(new TypeError('fetch failed'), { cause: { code: 'UND_ERR_SOCKET' } }));
    assert.equal(await h(fakeReq('http://h/x', { method: 'HEAD' }), f.next), NEXT_RES);

    f = flaky(1); // POST: never retried
    await assert.rejects(async () => h(fakeReq('http://h/x', { method: 'POST' }), f.next), /ECONNRESET/);
    assert.equal(f.count(), 1);

    f = flaky(1); // PUT with a body: not retried (the body stream is spent)
    await assert.rejects(async () => h(fakeReq('http://h/x', { method: 'PUT', body: 'data' }), f.next), /ECONNRESET/);
    assert.equal(f.count(), 1);

    f = flaky(1, () => new Error('connect ECONNREFUSED')); // not a reset
    await assert.rejects(async () => h(fakeReq('http://h/x'), f.next), /ECONNREFUSED/);
    assert.equal(f.count(), 1);

    const ac = new AbortController();
    ac.abort();
    f = flaky(1); // client gone: no retry
    await assert.rejects(async () => h(fakeReq('http://h/x', { signal: ac.signal }), f.next), /ECONNRESET/);
    assert.equal(f.count(), 1);
  });
});
