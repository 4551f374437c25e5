// telemetry/opentelemetry traces (issue 14): spans received by an OTLP/HTTP collector started by
// the test, with krakend-otel's global → proxy → backend links, the client's traceparent honoured,
// and each backend seeing the traceparent of its own span. Real gw processes, real backends.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { type Backend, type Gateway, req, sleep, startBackend, startGateway, tempDir } from './helpers/gw.ts';

interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: { key: string; value: Record<string, unknown> }[];
}

/** A minimal OTLP/HTTP (JSON) trace collector: it keeps every span it is sent. */
async function startCollector(): Promise<{ port: number; spans: Span[]; posts: string[]; close(): Promise<void> }> {
  const spans: Span[] = [];
  const posts: string[] = [];
  const server = http.createServer((rq, res) => {
    let body = '';
    rq.setEncoding('utf8');
    rq.on('data', (c: string) => (body += c));
    rq.on('end', () => {
      posts.push(`${rq.method} ${rq.url} ${rq.headers['content-type']}`);
      try {
        const o = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: Span[] }[] }[] };
        for (const rs of o.resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) spans.push(...(ss.spans ?? []));
      } catch {
        /* counted in posts; the test fails on missing spans */
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    spans,
    posts,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const attr = (s: Span, k: string) => {
  const a = s.attributes.find((x) => x.key === k)?.value;
  return a === undefined ? undefined : (a.stringValue ?? a.intValue ?? a.boolValue);
};

let backend: Backend;
let collector: Awaited<ReturnType<typeof startCollector>>;
before(async () => {
  backend = await startBackend((rq, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ at: rq.url }));
  });
  collector = await startCollector();
});
after(async () => {
  await backend?.close();
  await collector?.close();
});

describe('traces over OTLP/HTTP', () => {
  let gw: Gateway;
  before(async () => {
    const dir = path.join(tempDir(), 'trace-plugins');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(
      path.join(dir, 'delegate.mjs'),
      `export const ClientRegisterer = { registerClients(register) { register('trace-delegate', () => (req, next) => next(req)); } };\n`,
    );
    gw = await startGateway(
      {
        version: 3,
        plugin: { folder: dir, pattern: '.mjs' },
        extra_config: {
          router: { disable_access_log: true },
          'telemetry/opentelemetry': {
            service_name: 'traced-gw',
            exporters: { otlp: [{ name: 'col', use_http: true, host: '127.0.0.1', port: collector.port, disable_metrics: true }] },
          },
        },
        endpoints: [
          {
            endpoint: '/merge/{id}',
            backend: [
              { host: [backend.url], url_pattern: '/a/{id}', group: 'a' },
              { host: [backend.url], url_pattern: '/b', group: 'b' },
            ],
          },
          { endpoint: '/noop', output_encoding: 'no-op', backend: [{ host: [backend.url], url_pattern: '/n', encoding: 'no-op' }] },
          {
            endpoint: '/plugged',
            backend: [{ host: [backend.url], url_pattern: '/p', extra_config: { 'plugin/http-client': { name: 'trace-delegate' } } }],
          },
        ],
      },
      { args: ['--workers', '1'] },
    );
  });
  after(async () => {
    await gw?.stop();
  });

  async function spansOf(traceId: string, n: number): Promise<Span[]> {
    const until = Date.now() + 8000;
    for (;;) {
      const got = collector.spans.filter((s) => s.traceId === traceId);
      if (got.length >= n || Date.now() > until) return got;
      await sleep(100);
    }
  }

  test("a merge: the client's traceparent is the parent; global → proxy → one span per backend; each backend saw its span's traceparent", async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parent = '00f067aa0ba902b7';
    const before = backend.requests.length;
    const r = await req(gw.port, '/merge/42', { headers: { traceparent: `00-${traceId}-${parent}-01` } });
    assert.equal(r.status, 200);
    const spans = await spansOf(traceId, 4);
    assert.equal(spans.length, 4, `spans of the trace: ${JSON.stringify(spans.map((s) => s.name))}; collector posts: ${collector.posts.join(', ')}`);
    const server = spans.find((s) => s.kind === 2)!;
    assert.ok(server, 'a SERVER span');
    assert.equal(server.name, '/merge/42');
    assert.equal(server.parentSpanId, parent, "the client's span is the parent");
    assert.equal(attr(server, 'http.response.status_code'), 200);
    const proxy = spans.find((s) => s.kind === 1)!;
    assert.equal(proxy.name, '/merge/:id');
    assert.equal(proxy.parentSpanId, server.spanId);
    const clients = spans.filter((s) => s.kind === 3).sort((a, b) => a.name.localeCompare(b.name));
    assert.deepEqual(clients.map((s) => s.name), ['/a/{id}', '/b']);
    for (const c of clients) assert.equal(c.parentSpanId, proxy.spanId);
    const seen = backend.requests.slice(before).map((q) => String(q.headers.traceparent));
    assert.deepEqual(
      seen.sort(),
      clients.map((c) => `00-${traceId}-${c.spanId}-01`).sort(),
      'each backend request carries the traceparent of its own span',
    );
  });

  test('a no-op endpoint without a client traceparent: a new trace, the backend span is its child', async () => {
    const before = backend.requests.length;
    const r = await req(gw.port, '/noop');
    assert.equal(r.status, 200);
    const tp = String(backend.requests[before]?.headers.traceparent);
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(tp);
    assert.ok(m, `traceparent at the backend: ${tp}`);
    const spans = await spansOf(m[1]!, 3);
    assert.equal(spans.length, 3);
    const server = spans.find((s) => s.kind === 2)!;
    assert.equal(server.parentSpanId ?? '', '', 'a root span');
    const client = spans.find((s) => s.kind === 3)!;
    assert.equal(client.spanId, m[2]);
    assert.equal(client.name, '/n');
    assert.equal(attr(client, 'http.response.status_code'), 200);
  });

  test("a client plugin's handler has its own span under the backend call's", async () => {
    const before = backend.requests.length;
    assert.equal((await req(gw.port, '/plugged')).status, 200);
    const tp = String(backend.requests[before]?.headers.traceparent);
    const traceId = /^00-([0-9a-f]{32})-/.exec(tp)![1]!;
    const spans = await spansOf(traceId, 4);
    const client = spans.find((s) => s.kind === 3)!;
    const plugin = spans.find((s) => s.name === 'plugin/http-client: trace-delegate');
    assert.ok(plugin, `spans: ${spans.map((s) => s.name).join(', ')}`);
    assert.equal(plugin.parentSpanId, client.spanId);
  });

  test('an invalid client traceparent is ignored: a new trace, never an error', async () => {
    const before = backend.requests.length;
    const r = await req(gw.port, '/noop', { headers: { traceparent: '00-zz-not-a-trace-01' } });
    assert.equal(r.status, 200);
    assert.match(String(backend.requests[before]?.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });
});

describe('traces through server and modifier plugins', () => {
  let gw: Gateway;
  before(async () => {
    const dir = path.join(tempDir(), 'trace-more-plugins');
    fs.mkdirSync(dir, { recursive: true });
    // Two server plugins: the outer passes the request on as it is, the inner as a copy with one more header.
    fs.writeFileSync(
      path.join(dir, 'server.mjs'),
      `export const HandlerRegisterer = { registerHandlers(register) {
  register('trace-outer', (_ctx, _extra, next) => async (req) => { await new Promise((r) => setTimeout(r, 5)); return next(req); });
  register('trace-inner', (_ctx, _extra, next) => (req) => next({ ...req, headers: { ...req.headers, 'x-inner': '1' } }));
} };\n`,
    );
    fs.writeFileSync(
      path.join(dir, 'modifiers.mjs'),
      `export const ModifierRegisterer = { registerModifiers(register) {
  register('trace-req', () => (r) => r, true, false);
  register('trace-resp', () => async (r) => { r.data.seen = true; return r; }, false, true);
  register('trace-fail', () => () => { throw new Error('refused by trace-fail'); }, true, false);
} };\n`,
    );
    gw = await startGateway(
      {
        version: 3,
        plugin: { folder: dir, pattern: '.mjs' },
        extra_config: {
          router: { disable_access_log: true },
          'plugin/http-server': { name: ['trace-inner', 'trace-outer'] },
          'telemetry/opentelemetry': {
            exporters: { otlp: [{ name: 'col', use_http: true, host: '127.0.0.1', port: collector.port, disable_metrics: true }] },
          },
        },
        endpoints: [
          {
            endpoint: '/mod',
            input_headers: ['X-Inner'],
            extra_config: { 'plugin/req-resp-modifier': { name: ['trace-req', 'trace-resp'] } },
            backend: [{ host: [backend.url], url_pattern: '/m', extra_config: { 'plugin/req-resp-modifier': { name: ['trace-req'] } } }],
          },
          { endpoint: '/fail', extra_config: { 'plugin/req-resp-modifier': { name: ['trace-fail'] } }, backend: [{ host: [backend.url], url_pattern: '/f' }] },
        ],
      },
      { args: ['--workers', '1'] },
    );
  });
  after(async () => {
    await gw?.stop();
  });

  async function spansOf(traceId: string, n: number): Promise<Span[]> {
    const until = Date.now() + 8000;
    for (;;) {
      const got = collector.spans.filter((s) => s.traceId === traceId);
      if (got.length >= n || Date.now() > until) return got;
      await sleep(100);
    }
  }

  test('each server plugin, endpoint modifier and backend modifier call is a span, linked client → outer → inner → global → proxy → modifiers and backend → its modifier', async () => {
    const traceId = '5bf92f3577b34da6a3ce929d0e0e4737';
    const parent = '10f067aa0ba902b7';
    const before = backend.requests.length;
    const r = await req(gw.port, '/mod', { headers: { traceparent: `00-${traceId}-${parent}-01` } });
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).seen, true, 'the response modifier ran');
    assert.equal(backend.requests[before]?.headers['x-inner'], '1', 'the inner server plugin’s copy reached the backend');
    const spans = await spansOf(traceId, 8);
    const names = spans.map((s) => s.name).sort();
    assert.deepEqual(names, [
      '/m', '/mod', '/mod',
      'plugin/http-server: trace-inner', 'plugin/http-server: trace-outer',
      'plugin/req-resp-modifier: trace-req', 'plugin/req-resp-modifier: trace-req', 'plugin/req-resp-modifier: trace-resp',
    ]);
    const one = (f: (s: Span) => boolean) => {
      const got = spans.filter(f);
      assert.equal(got.length, 1, JSON.stringify(got.map((s) => s.name)));
      return got[0]!;
    };
    const outer = one((s) => s.name === 'plugin/http-server: trace-outer');
    const inner = one((s) => s.name === 'plugin/http-server: trace-inner');
    const server = one((s) => s.kind === 2);
    const proxy = one((s) => s.kind === 1 && s.name === '/mod');
    const client = one((s) => s.kind === 3);
    assert.equal(outer.parentSpanId, parent, "the outermost server plugin's parent is the client's span");
    assert.equal(inner.parentSpanId, outer.spanId);
    assert.equal(server.parentSpanId, inner.spanId, 'the global span is a child of the innermost server plugin');
    assert.equal(proxy.parentSpanId, server.spanId);
    assert.equal(client.parentSpanId, proxy.spanId);
    const mods = spans.filter((s) => s.name.startsWith('plugin/req-resp-modifier'));
    assert.deepEqual(
      mods.map((s) => `${s.name} under ${s.parentSpanId === proxy.spanId ? 'proxy' : s.parentSpanId === client.spanId ? 'backend' : s.parentSpanId}`).sort(),
      ['plugin/req-resp-modifier: trace-req under backend', 'plugin/req-resp-modifier: trace-req under proxy', 'plugin/req-resp-modifier: trace-resp under proxy'],
    );
    assert.equal(String(backend.requests[before]?.headers.traceparent), `00-${traceId}-${client.spanId}-01`);
  });

  test('a modifier that throws: its span carries the error, and the request fails as without traces', async () => {
    const traceId = '6bf92f3577b34da6a3ce929d0e0e4738';
    const r = await req(gw.port, '/fail', { headers: { traceparent: `00-${traceId}-20f067aa0ba902b7-01` } });
    assert.equal(r.status, 500);
    const spans = await spansOf(traceId, 5);
    const failed = spans.find((s) => s.name === 'plugin/req-resp-modifier: trace-fail') as (Span & { status?: { code?: number; message?: string } }) | undefined;
    assert.ok(failed, spans.map((s) => s.name).join(', '));
    assert.equal(failed.status?.code, 2, 'status ERROR');
    assert.match(String(failed.status?.message), /refused by trace-fail/);
    const proxy = spans.find((s) => s.kind === 1 && s.name === '/fail');
    assert.equal(failed.parentSpanId, proxy?.spanId);
    assert.equal(spans.filter((s) => s.kind === 3).length, 0, 'no backend call was made');
  });
});
