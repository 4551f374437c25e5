// Behaviours the lean hot path (issue 11) must keep: per-request deadlines from one timer per
// endpoint, cancellation without AbortController, receiver-mode no-op heads, Go's key order.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, req, sleep, startBackend, startGateway } from './helpers/gw.ts';

/** Go's encoding/json over the parsed value, written independently of gw: sorted copies, then escapes. */
function goReference(text: string): string {
  const write = (v: unknown): string => {
    if (Array.isArray(v)) return '[' + v.map(write).join(',') + ']';
    if (typeof v !== 'object' || v === null) return JSON.stringify(v);
    const o = v as Record<string, unknown>;
    return '{' + Object.keys(o).sort().map((k) => JSON.stringify(k) + ':' + write(o[k])).join(',') + '}';
  };
  return write(JSON.parse(text)).replace(/[<>&\u2028\u2029]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

/** Documents that stress the shape cache (same first key, other keys; same keys, other order) and every escape. */
const DOCS: string[] = (() => {
  const tricky = [
    '{"items":[{"id":1,"b":2},{"id":1,"c":3},{"id":2,"b":2,"a":0},{"b":1,"id":2},{}],"id":[]}',
    '{"s":"quote\\" back\\\\ nl\\n tab\\t ctl\\u0001 lone\\ud800 pair\\ud83d\\ude00 ls\\u2028 ps\\u2029 <b>&amp;</b>","<k>&":1}',
    '{"__proto__":{"x":1},"constructor":2,"toJSON":3,"n":[-0,1e21,1.5e-7,123456789012345680000,0.1]}',
    '{"z":{"z":{"z":{"z":{"y":[[[[{"b":1,"a":2}]]]]}}}},"a":null,"m":true,"f":false}',
    '{"10":"a","9":"b","1a":"c","01":"d","":"e"," ":"f"}',
  ];
  // Random documents: keys drawn from a small pool so shapes repeat with different orders.
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const pool = ['a', 'b', 'id', 'name', '10', '9', 'é', 'x<', 'tags', '\u00e9t\u00e9'];
  const value = (d: number): string => {
    const t = d > 3 ? rnd(3) : rnd(6);
    if (t === 0) return String(rnd(1000) - 500) + (rnd(2) ? '.25' : '');
    if (t === 1) return JSON.stringify(pool[rnd(pool.length)] + '&' + rnd(10));
    if (t === 2) return ['true', 'false', 'null'][rnd(3)]!;
    if (t === 3) return '[' + Array.from({ length: rnd(4) }, () => value(d + 1)).join(',') + ']';
    const keys = [...new Set(Array.from({ length: rnd(6) }, () => pool[rnd(pool.length)]!))];
    return '{' + keys.map((k) => JSON.stringify(k) + ':' + value(d + 1)).join(',') + '}';
  };
  const random = Array.from({ length: 40 }, () => '{"items":[' + Array.from({ length: 1 + rnd(5) }, () => value(1)).join(',') + '],"r":' + value(0) + '}');
  return [...tricky, ...random];
})();

let backend: Backend;
let gw: Gateway;
/** Requests the backend saw close before answering (gw cancelled them). */
let cancelled = 0;

before(async () => {
  backend = await startBackend((rq, res, rec) => {
    const u = new URL(rec.url, 'http://x');
    switch (u.pathname) {
      case '/hang':
        // Never answers; counts the connections gw closes on it.
        res.on('close', () => {
          if (!res.writableEnded) cancelled++;
        });
        return;
      case '/keys':
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end('{"9":1,"10":2,"b":{"z":1,"a":[{"y":1,"x":2},{"2":0,"11":0}]},"a":"<&>"}');
      case '/doc':
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(DOCS[Number(u.searchParams.get('n'))]);
      case '/fast':
        res.writeHead(200, { 'content-type': 'application/json', 'x-b': 'fast' });
        return res.end('{"fast":true}');
      case '/redirect':
        res.writeHead(302, { location: '/fast' });
        return res.end();
      default:
        res.writeHead(200, { 'content-type': 'application/json', 'x-b': 'plain', connection: 'x-hop', 'x-hop': 'drop me' });
        return res.end('{"ok":true}');
    }
    void rq;
  });
  const host = [backend.url];
  gw = await startGateway({
    version: 3,
    timeout: '2s',
    endpoints: [
      { endpoint: '/slow', timeout: '300ms', output_encoding: 'no-op', backend: [{ host, url_pattern: '/hang', encoding: 'no-op' }] },
      { endpoint: '/slow-json', timeout: '300ms', backend: [{ host, url_pattern: '/hang' }] },
      {
        endpoint: '/merge-slow',
        timeout: '400ms',
        backend: [
          { host, url_pattern: '/fast', group: 'f' },
          { host, url_pattern: '/hang', group: 'h' },
        ],
      },
      { endpoint: '/keys', backend: [{ host, url_pattern: '/keys' }] },
      { endpoint: '/doc/{n}', backend: [{ host, url_pattern: '/doc?n={n}' }] },
      { endpoint: '/noop', output_encoding: 'no-op', backend: [{ host, url_pattern: '/plain', encoding: 'no-op' }] },
      { endpoint: '/noop-redirect', output_encoding: 'no-op', backend: [{ host, url_pattern: '/redirect', encoding: 'no-op' }] },
    ],
  });
});

/** Waits until every call gw made to /hang was closed by gw (none left hanging); returns how many. */
async function allHangCancelled(): Promise<number> {
  const made = () => backend.requests.filter((r) => r.url.startsWith('/hang')).length;
  for (let i = 0; i < 100 && cancelled < made(); i++) await sleep(20);
  return made();
}

after(async () => {
  await gw?.stop();
  await backend?.close();
});

describe('endpoint deadlines: one timer per endpoint, each request its own deadline', () => {
  test('requests started at different times each time out at their own deadline', async () => {
    const t0 = Date.now();
    const a = req(gw.port, '/slow');
    await sleep(150);
    const b = req(gw.port, '/slow');
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(ra.status, 500);
    assert.equal(rb.status, 500);
    const ta = t0 + ra.ms;
    const tb = t0 + 150 + rb.ms;
    // Not early (the timer armed for the first must not expire the second), not late.
    assert.ok(ra.ms >= 290 && ra.ms < 1500, `first answered after ${ra.ms} ms`);
    assert.ok(rb.ms >= 290 && rb.ms < 1500, `second answered after ${rb.ms} ms of its own`);
    assert.ok(tb - ta >= 100, `second deadline ${tb - ta} ms after the first`);
  });

  test('a burst on one endpoint all time out, and the backend calls are cancelled', async () => {
    await allHangCancelled();
    const before = cancelled;
    const rs = await Promise.all(Array.from({ length: 20 }, () => req(gw.port, '/slow-json')));
    for (const r of rs) {
      assert.equal(r.status, 500);
      assert.ok(r.ms >= 290 && r.ms < 2000, `answered after ${r.ms} ms`);
    }
    // Every call gw made was cancelled (its connection closed), none left hanging.
    const made = await allHangCancelled();
    assert.equal(cancelled, made);
    assert.equal(cancelled - before, 20);
  });

  test('the merge deadline answers the part that came and cancels the rest', async () => {
    await allHangCancelled();
    const before = cancelled;
    const r = await req(gw.port, '/merge-slow');
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-krakend-completed'], 'false');
    assert.deepEqual(r.json(), { f: { fast: true } });
    assert.ok(r.ms >= 300 && r.ms < 1500, `answered after ${r.ms} ms (85 % of 400 ms)`);
    await allHangCancelled();
    assert.equal(cancelled - before, 1);
  });
});

describe('no-op answers read off undici\'s raw header list', () => {
  test('backend headers pass, hop-by-hop and Connection-named ones do not', async () => {
    const r = await req(gw.port, '/noop');
    assert.equal(r.status, 200);
    assert.equal(r.text, '{"ok":true}');
    assert.equal(r.headers['x-b'], 'plain');
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers['x-hop'], undefined);
    assert.equal(r.headers['x-krakend-completed'], 'false');
  });

  test('a redirect is followed on the receiver path and the final answer streamed', async () => {
    const r = await req(gw.port, '/noop-redirect');
    assert.equal(r.status, 200);
    assert.equal(r.text, '{"fast":true}');
    assert.equal(r.headers['x-b'], 'fast');
  });
});

describe('JSON in Go\'s map order', () => {
  test('keys sorted as strings at every level, integer-like ones too ("10" before "9")', async () => {
    const r = await req(gw.port, '/keys');
    assert.equal(r.status, 200);
    assert.equal(r.text, '{"10":2,"9":1,"a":"\\u003c\\u0026\\u003e","b":{"a":[{"x":2,"y":1},{"11":0,"2":0}],"z":1}}');
  });

  test('every document renders as Go would: escapes, numbers, shapes sharing a first key, random documents twice over', async () => {
    // Twice: the second pass runs with the serializer's shape cache warm from the first.
    for (let pass = 0; pass < 2; pass++) {
      for (let n = 0; n < DOCS.length; n++) {
        const r = await req(gw.port, `/doc/${n}`);
        assert.equal(r.status, 200, `doc ${n}`);
        assert.equal(r.text, goReference(DOCS[n]!), `doc ${n}: ${DOCS[n]}`);
      }
    }
  });
});

describe('plugins and cancellation scopes: an AbortSignal only when asked for, aborted all the same', () => {
  let pgw: Gateway;
  let dir: string;
  before(async () => {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-hotpath-'));
    fs.writeFileSync(
      path.join(dir, 'signals.mjs'),
      `const seen = [];
      export const ClientRegisterer = {
        registerClients(register) {
          // Reads req.signal (built on demand) and records why it aborted.
          register('watch-signal', () => (req, next) => {
            req.signal.addEventListener('abort', () => seen.push(String(req.signal.reason?.message)));
            return next();
          });
          // Sends a request object of its own with its own, shorter signal.
          register('own-signal', () => (req, next) =>
            next({ method: req.method, url: req.url, headers: req.headers, body: req.body, signal: AbortSignal.timeout(100) }));
          // Awaits the answer (the promise path on a no-op endpoint): gw must still cancel the call.
          register('awaits', () => async (req, next) => {
            const res = await next();
            return res;
          });
          register('seen', () => () => ({ status: 200, headers: {}, body: { seen } }));
        },
      };`,
    );
    const host = [backend.url];
    const use = (name: string) => ({ 'plugin/http-client': { name } });
    pgw = await startGateway({
      version: 3,
      timeout: '2s',
      plugin: { folder: dir, pattern: '.mjs' },
      endpoints: [
        { endpoint: '/watch', timeout: '300ms', output_encoding: 'no-op', backend: [{ host, url_pattern: '/hang', encoding: 'no-op', extra_config: use('watch-signal') }] },
        { endpoint: '/own', output_encoding: 'no-op', backend: [{ host, url_pattern: '/hang', encoding: 'no-op', extra_config: use('own-signal') }] },
        { endpoint: '/awaits', timeout: '300ms', output_encoding: 'no-op', backend: [{ host, url_pattern: '/hang', encoding: 'no-op', extra_config: use('awaits') }] },
        { endpoint: '/seen', backend: [{ host, url_pattern: '/x', extra_config: use('seen') }] },
      ],
    }, { args: ['--workers', '1'] }); // /seen must reach the worker whose plugin saw the abort
  });
  after(async () => {
    await pgw?.stop();
    (await import('node:fs')).rmSync(dir, { recursive: true, force: true });
  });

  test('req.signal read by a plugin aborts at the endpoint timeout, and the call is cancelled', async () => {
    await allHangCancelled();
    const before = cancelled;
    const r = await req(pgw.port, '/watch');
    assert.equal(r.status, 500);
    assert.ok(r.ms >= 290 && r.ms < 1500, `answered after ${r.ms} ms`);
    await allHangCancelled();
    assert.equal(cancelled - before, 1);
    const seen = (await req(pgw.port, '/seen')).json<{ seen: string[] }>().seen;
    assert.deepEqual(seen, ['context deadline exceeded']);
  });

  test('a plugin that awaits next() on a no-op endpoint: the endpoint timeout answers and cancels the call', async () => {
    await allHangCancelled();
    const before = cancelled;
    const r = await req(pgw.port, '/awaits');
    assert.equal(r.status, 500);
    assert.ok(r.ms >= 290 && r.ms < 1500, `answered after ${r.ms} ms`);
    await allHangCancelled();
    assert.equal(cancelled - before, 1, 'the backend call was left running');
  });

  test('a request with the plugin\'s own signal is cancelled by that signal', async () => {
    await allHangCancelled();
    const before = cancelled;
    const r = await req(pgw.port, '/own');
    assert.equal(r.status, 500);
    assert.ok(r.ms >= 90 && r.ms < 1000, `answered after ${r.ms} ms (the plugin's 100 ms, not the 2 s timeout)`);
    await allHangCancelled();
    assert.equal(cancelled - before, 1);
  });
});
