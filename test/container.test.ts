// The container image (issue 15): no container runtime exists here, so this test runs the
// Dockerfile's own instructions — every FROM stage, WORKDIR, ENV, COPY, RUN, then ENTRYPOINT + CMD
// and the HEALTHCHECK command — in a temporary folder standing for each stage's filesystem, and
// checks that the gateway it starts answers /__health and that the health check passes.
// Absolute image paths (/src, /opt/gw, /etc/gw) are mapped into the stage's folder.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { freePort, req, sleep, tempDir } from './helpers/gw.ts';

const ROOT = path.resolve(import.meta.dirname, '..');

interface Step {
  op: string;
  args: string;
}

/** The Dockerfile's instructions (continuation lines joined, comments dropped). */
function parseDockerfile(text: string): Step[] {
  const steps: Step[] = [];
  let cur = '';
  for (const line of text.split('\n')) {
    if (cur === '' && /^\s*(#|$)/.test(line)) continue;
    cur += line.replace(/\\\s*$/, ' ');
    if (/\\\s*$/.test(line)) continue;
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(cur);
    assert.ok(m, `a Dockerfile line gw's test cannot read: ${cur}`);
    steps.push({ op: m[1]!, args: m[2]!.trim() });
    cur = '';
  }
  return steps;
}

interface Stage {
  root: string;
  cwd: string;
  env: Record<string, string>;
  user: string;
  entrypoint: string[];
  cmd: string[];
  health: string[];
  expose: string[];
}

/** Runs the Dockerfile's steps; returns the last stage. */
function build(dockerfile: string, base: string): Stage {
  const stages: Stage[] = [];
  const named = new Map<string, Stage>();
  let st: Stage | null = null;
  const inImage = (s: Stage, p: string) => path.join(s.root, path.isAbsolute(p) ? p : path.join(s.cwd, p));
  for (const { op, args } of parseDockerfile(dockerfile)) {
    if (op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)!;
      assert.match(m[1]!, /^node:20-/, 'the image runs on Node 20, as gw is tested');
      st = { root: path.join(base, `stage${stages.length}`), cwd: '/', env: {}, user: 'root', entrypoint: [], cmd: [], health: [], expose: [] };
      fs.mkdirSync(st.root, { recursive: true });
      stages.push(st);
      if (m[2] !== undefined) named.set(m[2], st);
      continue;
    }
    assert.ok(st !== null, `${op} before FROM`);
    switch (op) {
      case 'WORKDIR':
        st.cwd = path.posix.resolve(st.cwd, args);
        fs.mkdirSync(inImage(st, st.cwd), { recursive: true });
        break;
      case 'ENV':
        for (const m of args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) st.env[m[1]!] = m[2]!.replace(/^"|"$/g, '');
        break;
      case 'COPY': {
        const words = args.split(/\s+/);
        let from: string | null = null;
        if (words[0]!.startsWith('--from=')) from = words.shift()!.slice('--from='.length);
        const dest = words.pop()!;
        const srcRoot = from === null ? ROOT : named.get(from)!.root;
        for (const src of words) {
          const s = from === null ? path.join(srcRoot, src) : path.join(srcRoot, src);
          assert.ok(fs.existsSync(s), `COPY ${src}: not in the build context`);
          let d = inImage(st, dest);
          if (fs.statSync(s).isFile() && (dest.endsWith('/') || words.length > 1)) d = path.join(d, path.basename(src));
          fs.mkdirSync(fs.statSync(s).isFile() ? path.dirname(d) : d, { recursive: true });
          fs.cpSync(s, d, { recursive: true });
        }
        break;
      }
      case 'RUN': {
        const r = spawnSync('/bin/sh', ['-c', args], {
          cwd: inImage(st, st.cwd),
          env: { ...process.env, ...st.env, npm_config_prefer_offline: 'true', npm_config_loglevel: 'error' },
          encoding: 'utf8',
          timeout: 300_000,
        });
        assert.equal(r.status, 0, `RUN ${args}\n${r.stdout}\n${r.stderr}`);
        break;
      }
      case 'USER':
        st.user = args;
        break;
      case 'EXPOSE':
        st.expose.push(args);
        break;
      case 'HEALTHCHECK': {
        const m = /CMD\s+(\[.*\])$/.exec(args);
        assert.ok(m, 'HEALTHCHECK CMD in exec form');
        st.health = JSON.parse(m[1]!) as string[];
        break;
      }
      case 'ENTRYPOINT':
        st.entrypoint = JSON.parse(args) as string[];
        break;
      case 'CMD':
        st.cmd = JSON.parse(args) as string[];
        break;
      default:
        assert.fail(`Dockerfile instruction ${op}: the container test does not know how to run it`);
    }
  }
  assert.ok(st !== null);
  return st;
}

/** An absolute image path in a command, as a path in the stage's folder. */
const mapArg = (st: Stage, a: string) => (a.startsWith('/') && fs.existsSync(path.join(st.root, a)) ? path.join(st.root, a) : a);

describe('the container image (Dockerfile), its steps run in a temporary folder', () => {
  let proc: ReturnType<typeof spawn> | null = null;
  after(() => {
    proc?.kill('SIGKILL');
  });

  test('multi-stage build, production dependencies only, non-root user, config at /etc/gw/gw.json; it starts and /__health and the HEALTHCHECK pass', { timeout: 600_000 }, async () => {
    const st = build(fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'), tempDir());
    assert.notEqual(st.user, 'root', 'the gateway runs as a non-root user');
    assert.deepEqual(st.cmd, ['run', '-c', '/etc/gw/gw.json']);
    const app = path.join(st.root, 'opt/gw');
    assert.ok(fs.existsSync(path.join(app, 'dist/cli/gw.js')), 'dist/ came from the build stage');
    assert.ok(!fs.existsSync(path.join(app, 'node_modules/typescript')), 'no dev dependency in the runtime stage');
    assert.ok(!fs.existsSync(path.join(app, 'core')), 'no TypeScript sources in the runtime stage');
    assert.ok(fs.existsSync(path.join(st.root, 'etc/gw/gw.json')));

    const port = await freePort();
    const [cmd, ...rest] = [...st.entrypoint, ...st.cmd].map((a) => mapArg(st, a));
    assert.equal(cmd, 'node');
    // KRAKEND_PORT: the bundled config says 8080; the test takes a free port, as a user would.
    const env = { ...process.env, ...st.env, KRAKEND_PORT: String(port), HOME: path.join(st.root, 'home') };
    proc = spawn(process.execPath, rest, { cwd: path.join(st.root, st.cwd), env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout!.on('data', (d) => (out += d));
    proc.stderr!.on('data', (d) => (out += d));
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      await sleep(100);
      status = await req(port, '/__health').then((r) => r.status, () => 0);
    }
    assert.equal(status, 200, `/__health through the image's start command\n${out}`);
    assert.match(out, new RegExp(`KRAKEND_PORT overrides "port": ${port}`));
    const [hcmd, ...hargs] = st.health;
    assert.equal(hcmd, 'node');
    const hc = spawnSync(process.execPath, hargs, { env, encoding: 'utf8', timeout: 10_000 });
    assert.equal(hc.status, 0, `HEALTHCHECK exit status\n${hc.stderr}`);
    proc.kill('SIGTERM');
    await new Promise((r) => proc!.once('exit', r));
    proc = null;
    const down = spawnSync(process.execPath, hargs, { env, encoding: 'utf8', timeout: 10_000 });
    assert.equal(down.status, 1, 'the HEALTHCHECK fails once the gateway is gone');
  });
});
