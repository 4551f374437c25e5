// Logs an operator can read (issue 14): KrakenD's gin access log, the telemetry/logging formats
// (lura's basic line, default, logstash, custom), start-up warnings once per instance, and error
// lines that name the backend. Real gw processes, real loopback backends; lines read from stdout.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, req, runCli, sleep, startBackend, startGateway, tempDir, writeConfig } from './helpers/gw.ts';

let backend: Backend;
let downPort: number;
before(async () => {
  backend = await startBackend((rq, res) => {
    if (rq.url?.startsWith('/slow')) {
      setTimeout(() => {
        if (!res.destroyed) res.end('{}');
      }, 2000);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
  // A port nothing listens on: the backend that refuses connections.
  const probe = http.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  downPort = (probe.address() as { port: number }).port;
  await new Promise<void>((r) => probe.close(() => r()));
});
after(async () => {
  await backend?.close();
});

function config(extra: Record<string, unknown> = {}, router: Record<string, unknown> | null = null): Record<string, unknown> {
  const ns: Record<string, unknown> = { ...extra };
  if (router !== null) ns.router = router;
  return {
    version: 3,
    timeout: '300ms',
    extra_config: ns,
    endpoints: [
      { endpoint: '/ok', backend: [{ host: [backend.url], url_pattern: '/ok' }] },
      { endpoint: '/down', backend: [{ host: [`http://127.0.0.1:${downPort}`], url_pattern: '/refused' }] },
      { endpoint: '/slow', backend: [{ host: [backend.url], url_pattern: '/slow' }] },
      { endpoint: '/item/{id}', backend: [{ host: [backend.url], url_pattern: '/ok/{id}' }] },
      { endpoint: '/stream', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/ok', encoding: 'no-op' }] },
    ],
  };
}

/** Waits (bounded) until the output matches. */
async function waitFor(gw: Gateway, re: RegExp, ms = 3000): Promise<string> {
  const until = Date.now() + ms;
  for (;;) {
    const m = re.exec(gw.stdout());
    if (m !== null) return m[0];
    if (Date.now() > until) assert.fail(`no line matching ${re} within ${ms} ms; stdout:\n${gw.stdout().slice(-3000)}`);
    await sleep(25);
  }
}

const GIN = (status: number, method: string, path: string) =>
  new RegExp(`^\\[GIN\\] \\d{4}/\\d\\d/\\d\\d - \\d\\d:\\d\\d:\\d\\d \\| ${status} \\| +[0-9.]+(ns|µs|ms|s) \\| +127\\.0\\.0\\.1 \\| ${method.padEnd(7)}  "${path.replace(/[?/.]/g, '\\$&')}"$`, 'm');

describe('access log and basic log lines (no telemetry/logging), two workers', () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway(config({ 'telemetry/influx': { address: 'http://127.0.0.1:1' } }), { args: ['--workers', '2'] });
  });
  after(async () => {
    await gw?.stop();
  });

  test("without telemetry/logging the lines are lura's basic logger's: date time KRAKEND LEVEL: message", async () => {
    assert.match(gw.stdout(), /^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d KRAKEND INFO: Starting gw v/m);
    assert.match(gw.stdout(), /^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d KRAKEND INFO: \[SERVICE: Gin\] Listening on port: \d+$/m);
    assert.doesNotMatch(gw.stdout(), /"level":|"msg":/, 'no JSON lines unless asked for');
  });

  test('a start-up warning is printed once per instance, not once per worker', async () => {
    await gw.waitWorkers(2);
    const lines = gw.stdout().split('\n').filter((l) => l.includes('"telemetry/influx" is not implemented'));
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0]!, /KRAKEND WARNING: \[SERVICE: Config\] extra_config: "telemetry\/influx"/);
  });

  test('200, 404 (query kept) and a no-op stream each get one gin line with status, latency, client IP, method and path', async () => {
    assert.equal((await req(gw.port, '/ok')).status, 200);
    assert.equal((await req(gw.port, '/nowhere?x=1&y=%20')).status, 404);
    assert.equal((await req(gw.port, '/stream')).status, 200);
    await waitFor(gw, GIN(200, 'GET', '/ok'));
    await waitFor(gw, GIN(404, 'GET', '/nowhere?x=1&y=%20'));
    await waitFor(gw, GIN(200, 'GET', '/stream'));
  });

  test('a failed backend: 500 with its Error #01 line, and the error line names the backend', async () => {
    assert.equal((await req(gw.port, '/down')).status, 500);
    const line = await waitFor(gw, /^\[GIN\] .*\| 500 \|.*"\/down"\nError #01: Get "http:\/\/127\.0\.0\.1:\d+\/refused": connect ECONNREFUSED.*$/m);
    assert.match(line, /ECONNREFUSED/);
    await waitFor(gw, /KRAKEND ERROR: \[ENDPOINT: \/down\]\[BACKEND: \/refused\] Get "http:\/\/127\.0\.0\.1:\d+\/refused": connect ECONNREFUSED/);
  });

  test('a backend timeout: the error line says which backend timed out', async () => {
    assert.equal((await req(gw.port, '/slow')).status, 500);
    await waitFor(gw, /KRAKEND ERROR: \[ENDPOINT: \/slow\]\[BACKEND: \/slow\] .*(deadline|timeout)/i);
    await waitFor(gw, /^\[GIN\] .*\| 500 \|.*"\/slow"\nError #01: /m);
  });

  test('a very long target is cut in its line (a line always fits one atomic write)', async () => {
    const long = '/nowhere/' + 'a'.repeat(6000);
    assert.equal((await req(gw.port, long)).status, 404);
    const line = await waitFor(gw, /^\[GIN\] .*\| 404 \|.*"\/nowhere\/a+…\(cut\)"$/m);
    assert.ok(Buffer.byteLength(line) < 4096, `${Buffer.byteLength(line)} bytes`);
  });

  test('a target gin must quote (a quote, a backslash, raw UTF-8) and an unknown method are written as gin writes them', async () => {
    const net = await import('node:net');
    const raw = (line: string) =>
      new Promise<string>((resolve, reject) => {
        const s = net.connect(gw.port, '127.0.0.1', () => s.write(Buffer.from(`${line}\r\nHost: x\r\nConnection: close\r\n\r\n`, 'utf8')));
        let got = '';
        s.on('data', (d) => (got += d));
        s.on('close', () => resolve(got));
        s.on('error', reject);
      });
    assert.match(await raw('GET /nowhere?q=a"b\\c HTTP/1.1'), /^HTTP\/1\.1 404/);
    await waitFor(gw, /^\[GIN\] .*\| 404 \|.*\| GET      "\/nowhere\?q=a\\"b\\\\c"$/m);
    assert.match(await raw('GET /nowhere/é HTTP/1.1'), /^HTTP\/1\.1 404/);
    await waitFor(gw, /^\[GIN\] .*\| 404 \|.*\| GET      "\/nowhere\/é"$/m);
    assert.match(await raw('PURGE /ok HTTP/1.1'), /^HTTP\/1\.1 40[45]/);
    await waitFor(gw, /^\[GIN\] .*\| 40[45] \|.*\| PURGE    "\/ok"$/m);
  });

  test('/__health is logged unless skipped', async () => {
    assert.equal((await req(gw.port, '/__health')).status, 200);
    await waitFor(gw, GIN(200, 'GET', '/__health'));
  });

  test('a request refused at the edge (bad path parameter, 400) is logged too', async () => {
    const r = await req(gw.port, '/item/%2e%2e');
    assert.equal(r.status, 400);
    await waitFor(gw, GIN(400, 'GET', '/item/%2e%2e'));
  });
});

describe('telemetry/logging: default format with prefix, level, skip paths', () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway(
      config(
        { 'telemetry/logging': { level: 'WARNING', prefix: '[KRAKEND]', stdout: true, syslog: false }, 'telemetry/influx': {} },
        { logger_skip_paths: ['/__health', '/ok'] },
      ),
      { args: ['--workers', '1'] },
    );
  });
  after(async () => {
    await gw?.stop();
  });

  test("KrakenD's line: <prefix> 2006/01/02 - 15:04:05.000 ▶ LEVEL message; nothing under the level", async () => {
    await waitFor(gw, /^\[KRAKEND\] \d{4}\/\d\d\/\d\d - \d\d:\d\d:\d\d\.\d{3} ▶ WARNING \[SERVICE: Config\] extra_config: "telemetry\/influx"/m);
    assert.doesNotMatch(gw.stdout(), /▶ (INFO|DEBUG)/);
    assert.doesNotMatch(gw.stdout(), /\x1b\[/, 'no colours when stdout is not a terminal');
  });

  test('logger_skip_paths: exact paths are not logged, others are; the query does not matter', async () => {
    await req(gw.port, '/__health');
    await req(gw.port, '/ok?a=1');
    await req(gw.port, '/stream');
    await waitFor(gw, GIN(200, 'GET', '/stream'));
    await sleep(300);
    assert.doesNotMatch(gw.stdout(), /"\/__health"|"\/ok/);
  });

  test('an ERROR line keeps the format', async () => {
    await req(gw.port, '/down');
    await waitFor(gw, /^\[KRAKEND\] \d{4}\/\d\d\/\d\d - [\d:.]+ ▶ ERROR \[ENDPOINT: \/down\]\[BACKEND: /m);
  });
});

describe('telemetry/logging: logstash (JSON app lines and JSON access lines)', () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway(config({ 'telemetry/logging': { level: 'INFO', format: 'logstash', prefix: '[DROPPED]' } }), { args: ['--workers', '1'] });
  });
  after(async () => {
    await gw?.stop();
  });

  test('every stdout line is a JSON object; app lines have @timestamp, @version, level name, message, module', async () => {
    await req(gw.port, '/ok');
    await req(gw.port, '/down');
    await waitFor(gw, /"type":"access","status":500/);
    const lines = gw.stdout().trim().split('\n');
    const objs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const start = objs.find((o) => String(o.message).startsWith('Starting gw'));
    assert.ok(start, 'the start line');
    assert.equal(start['@version'], 1);
    assert.equal(start.level, 'INFO');
    assert.equal(start.module, 'KRAKEND');
    assert.match(String(start['@timestamp']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$/);
    assert.ok(!gw.stdout().includes('[DROPPED]'), 'logstash drops the prefix, as KrakenD');
    const ok = objs.find((o) => o.type === 'access' && o.path === '/ok');
    assert.ok(ok);
    assert.equal(ok.status, 200);
    assert.equal(ok.method, 'GET');
    assert.equal(ok.client_ip, '127.0.0.1');
    assert.equal(typeof ok.latency_ns, 'number');
    const down = objs.find((o) => o.type === 'access' && o.path === '/down');
    assert.match(String((down?.errors as string[])[0]), /ECONNREFUSED/);
    const err = objs.find((o) => o.level === 'ERROR');
    assert.match(String(err?.message), /^\[ENDPOINT: \/down\]\[BACKEND: /);
  });
});

describe('telemetry/logging: custom format, and router.disable_access_log', () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway(
      config({ 'telemetry/logging': { level: 'DEBUG', format: 'custom', custom_format: '%{level:.4s}|%{module}|%{pid}|%{time:15:04}|%{message}' } }, { disable_access_log: true }),
      { args: ['--workers', '1'] },
    );
  });
  after(async () => {
    await gw?.stop();
  });

  test('custom_format verbs: level with a printf layout, module, pid, time layout, message', async () => {
    await waitFor(gw, /^INFO\|KRAKEND\|\d+\|\d\d:\d\d\|Starting gw v/m);
    await waitFor(gw, /^DEBU\|KRAKEND\|\d+\|\d\d:\d\d\|\[ENDPOINT: \/ok\] Building the proxy pipe$/m);
  });

  test('disable_access_log: requests leave no gin line', async () => {
    await req(gw.port, '/ok');
    await req(gw.port, '/nowhere');
    await sleep(400);
    assert.doesNotMatch(gw.stdout(), /\[GIN\]/);
  });
});

describe('gw check: telemetry/logging mistakes are named', () => {
  test('format custom without custom_format, a pattern with an unknown verb, a non-boolean stdout', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ level: 'INFO', format: 'custom' }, /telemetry\/logging.*custom.*needs a custom_format/],
      [{ level: 'INFO', format: 'custom', custom_format: '%{nope} %{message}' }, /telemetry\/logging.*custom_format: unknown verb %\{nope\}/],
      [{ level: 'INFO', stdout: 'yes' }, /telemetry\/logging.*stdout: "yes" is not true or false/],
    ];
    for (const [logging, re] of cases) {
      const file = writeConfig({ version: 3, extra_config: { 'telemetry/logging': logging }, endpoints: [] });
      const r = await runCli(['check', '-c', file]);
      assert.notEqual(r.code, 0, r.output);
      assert.match(r.output, re);
    }
  });
});

describe('access log: a stdout pipe nobody reads', () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway(config({ 'telemetry/logging': { level: 'WARNING' } }), { args: ['--workers', '1'] });
  });
  after(async () => {
    gw?.proc.stdout?.resume();
    await gw?.stop();
  });

  test('requests keep being answered while the pipe is full; the lines come out once it drains', async () => {
    gw.proc.stdout!.pause();
    // ~3000 lines ≈ 300 KB: several times a pipe's 64 KiB buffer.
    const t0 = Date.now();
    for (let i = 0; i < 60; i++) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => req(gw.port, '/ok')));
      for (const r of batch) assert.equal(r.status, 200);
    }
    const ms = Date.now() - t0;
    assert.ok(ms < 20_000, `3000 requests took ${ms} ms with stdout stalled`);
    const h = await req(gw.port, '/__health');
    assert.equal(h.status, 200);
    gw.proc.stdout!.resume();
    const until = Date.now() + 5000;
    let lines = 0;
    while (Date.now() < until) {
      lines = gw.stdout().split('\n').filter((l) => l.startsWith('[GIN]') && l.endsWith('"/ok"')).length;
      if (lines >= 3000) break;
      await sleep(50);
    }
    assert.equal(lines, 3000, 'every line, once stdout drains');
  });
});

describe('telemetry/logging: syslog', () => {
  let gw: Gateway;
  let receiver: ChildProcess;
  let received = '';
  before(async () => {
    const sock = path.join(tempDir(), 'syslog.sock');
    // A unix datagram receiver (the local syslog's /dev/log), in Python: Node has no unix datagrams.
    receiver = spawn('python3', ['-u', '-c', `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("READY", flush=True)
while True:
    d = s.recv(65536)
    print(d.decode("utf-8", "replace"), flush=True)
`, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    receiver.stdout!.setEncoding('utf8').on('data', (d: string) => (received += d));
    const until = Date.now() + 5000;
    while (!received.includes('READY') && Date.now() < until) await sleep(20);
    gw = await startGateway(
      config({ 'telemetry/logging': { level: 'WARNING', prefix: '[GWSYS]', syslog: true, syslog_facility: 'local5', stdout: true }, 'telemetry/influx': {} }),
      { args: ['--workers', '1'], env: { GW_SYSLOG_SOCKET: sock } },
    );
  });
  after(async () => {
    await gw?.stop();
    receiver?.kill();
  });

  test("lines reach the local syslog: tag = prefix, facility local5, KrakenD's `LEVEL > message`, the configured level's severity", async () => {
    await req(gw.port, '/down');
    const until = Date.now() + 5000;
    while (!received.includes('ERROR > [ENDPOINT: /down]') && Date.now() < until) await sleep(25);
    assert.match(received, /WARNING > \[SERVICE: Config\] extra_config: "telemetry\/influx"/);
    assert.match(received, /ERROR > \[ENDPOINT: \/down\]\[BACKEND: \/refused\] Get /);
    // <priority>: local5 (21) × 8 + warning (4) = 172, for every line (KrakenD's severity rule).
    const prios = [...received.matchAll(/^<(\d+)>/gm)].map((m) => m[1]);
    assert.ok(prios.length >= 2, received);
    assert.ok(prios.every((p) => p === '172'), `priorities: ${prios.join(',')}`);
    assert.match(received, /\[GWSYS\]\[\d+\]:/, 'the prefix is the tag, with the pid');
    // stdout still has its own lines.
    assert.match(gw.stdout(), /▶ ERROR \[ENDPOINT: \/down\]/);
  });
});

describe('access log: the gin line written byte by byte', () => {
  test('the latency column is Go’s Duration.String right-aligned in 13 characters, as the string path writes it', async () => {
    const { goDuration, writeLatency } = await import('../core/telemetry/access.ts');
    const buf = Buffer.alloc(64);
    const values = [0, 1, 9, 10, 999, 1000, 1001, 1010, 1500, 9999, 10_000, 999_999, 1_000_000, 1_000_001, 1_234_500, 15_042_300, 100_000_000, 999_999_999];
    for (let i = 0; i < 2000; i++) values.push(Math.floor(Math.random() * 1e9));
    for (const ns of values) {
      const want = goDuration(ns).padStart(13, ' ');
      const end = writeLatency(buf, 0, ns);
      assert.equal(buf.toString('utf8', 0, end), want, `ns=${ns}`);
    }
  });
});
