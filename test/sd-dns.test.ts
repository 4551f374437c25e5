// "sd": "dns" (issue 15): SRV records served by a DNS server this test starts on a loopback port
// (the dns2 package), gw pointed at it with GW_DNS_SERVERS; real loopback backends behind them.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import dns2 from 'dns2';
import { type Backend, freePort, req, sleep, startBackend, startGateway } from './helpers/gw.ts';

const { Packet } = dns2;

interface Srv {
  priority: number;
  weight: number;
  port: number;
  target: string;
}
/** SRV records by name; changed by the tests while gw runs. */
const zone = new Map<string, Srv[]>();
let dnsPort = 0;
let server: ReturnType<typeof dns2.createServer>;
let queries = 0;
const backends: Backend[] = [];

before(async () => {
  server = dns2.createServer({
    udp: true,
    handle: (request, send) => {
      queries++;
      const response = Packet.createResponseFromRequest(request);
      const q = request.questions[0];
      const records = q !== undefined && q.type === Packet.TYPE.SRV ? zone.get(q.name) : undefined;
      if (records === undefined) response.header.rcode = 3; // NXDOMAIN
      else for (const r of records) response.answers.push({ name: q!.name, type: Packet.TYPE.SRV, class: Packet.CLASS.IN, ttl: 1, ...r });
      send(response);
    },
  });
  await server.listen({ udp: { port: 0, address: '127.0.0.1', type: 'udp4' } });
  dnsPort = (server.addresses().udp as { port: number }).port;
  for (const name of ['a', 'b', 'c']) {
    backends.push(
      await startBackend((_rq, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ from: name }));
      }),
    );
  }
});
after(async () => {
  await server?.close();
  for (const b of backends) await b.close();
});

const portOf = (b: Backend) => Number(new URL(b.url).port);

describe('sd: dns (SRV)', () => {
  test('the lowest priority’s targets, balanced by weight (3:1); a higher priority is never called; a change is picked up on refresh', async () => {
    const [a, b, c] = backends as [Backend, Backend, Backend];
    zone.set('_api._tcp.gw.test', [
      { priority: 10, weight: 30, port: portOf(a), target: '127.0.0.1' },
      { priority: 10, weight: 10, port: portOf(b), target: '127.0.0.1' },
      { priority: 20, weight: 100, port: portOf(c), target: '127.0.0.1' },
    ]);
    const port = await freePort();
    const gw = await startGateway(
      {
        version: 3,
        port,
        endpoints: [{ endpoint: '/who', backend: [{ host: ['_api._tcp.gw.test'], sd: 'dns', url_pattern: '/x' }] }],
      },
      { listenPort: port, args: ['--workers', '1'], env: { GW_DNS_SERVERS: `127.0.0.1:${dnsPort}`, GW_DNS_REFRESH_MS: '500' } },
    );
    try {
      const seen: Record<string, number> = {};
      for (let i = 0; i < 40; i++) {
        const r = await req(port, '/who');
        assert.equal(r.status, 200, r.body);
        const from = (JSON.parse(r.body) as { from: string }).from;
        seen[from] = (seen[from] ?? 0) + 1;
      }
      assert.deepEqual(seen, { a: 30, b: 10 }, 'weights 30:10 → 3:1, priority 20 unused');
      assert.match(gw.stdout(), /sd dns: _api\._tcp\.gw\.test → http:\/\/127\.0\.0\.1:\d+, http:\/\/127\.0\.0\.1:\d+/);

      // The records change: only c now. Within a refresh or two, every call goes there.
      zone.set('_api._tcp.gw.test', [{ priority: 1, weight: 1, port: portOf(c), target: '127.0.0.1' }]);
      const until = Date.now() + 5000;
      let from = '';
      while (Date.now() < until && from !== 'c') {
        await sleep(100);
        from = (JSON.parse((await req(port, '/who')).body) as { from: string }).from;
      }
      assert.equal(from, 'c');
      for (let i = 0; i < 5; i++) assert.equal((JSON.parse((await req(port, '/who')).body) as { from: string }).from, 'c');

      // The name disappears (NXDOMAIN): the last good list keeps serving, and the failure is logged once.
      zone.delete('_api._tcp.gw.test');
      const q0 = queries;
      while (queries < q0 + 3) await sleep(100);
      assert.equal((await req(port, '/who')).status, 200);
      assert.equal((gw.stdout().match(/sd dns: resolving SRV _api\._tcp\.gw\.test: ENOTFOUND; keeping the last 1 instance/g) ?? []).length, 1, gw.stdout());
    } finally {
      await gw.stop();
    }
  });

  test('a name that never resolves: gw starts (logging why), its endpoint answers 500, the others are served', async () => {
    const port = await freePort();
    const gw = await startGateway(
      {
        version: 3,
        port,
        endpoints: [
          { endpoint: '/nowhere', backend: [{ host: ['_none._tcp.gw.test'], sd: 'dns', url_pattern: '/x' }] },
          { endpoint: '/static', backend: [{ host: [backends[0]!.url], url_pattern: '/x' }] },
        ],
      },
      { listenPort: port, args: ['--workers', '1'], env: { GW_DNS_SERVERS: `127.0.0.1:${dnsPort}` } },
    );
    try {
      assert.equal((await req(port, '/nowhere')).status, 500);
      assert.equal((await req(port, '/static')).status, 200);
      assert.match(gw.stdout(), /\[BACKEND: \/x\] sd dns: resolving SRV _none\._tcp\.gw\.test: ENOTFOUND; no instance to call yet/);
    } finally {
      await gw.stop();
    }
  });
});

describe('sd: dns, the balanced list (lura’s normalisation)', () => {
  test('weights scaled to ≤ 100 and divided by their gcd; zero weights only when all are zero; IPv6 targets bracketed; https scheme', async () => {
    const { srvHosts } = await import('../core/proxy/sd.ts');
    const r = (name: string, port: number, weight: number, priority = 0) => ({ name, port, weight, priority });
    assert.deepEqual(srvHosts([r('a', 1, 200), r('b', 2, 100), r('c', 3, 0)], 'http'), ['http://a:1', 'http://a:1', 'http://b:2']);
    assert.deepEqual(srvHosts([r('a', 1, 0), r('b', 2, 0)], 'http'), ['http://a:1', 'http://b:2']);
    assert.deepEqual(srvHosts([r('::1', 8080, 5), r('z', 1, 5, 1)], 'https'), ['https://[::1]:8080']);
    assert.deepEqual(srvHosts([], 'http'), []);
  });
});
