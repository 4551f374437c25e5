// Issue 10, "Proof": the abuse matrix. Every client behaviour × every endpoint kind × every backend
// fault (test/abuse/world.ts), each case run twice (two rounds), against one real gateway with its
// default workers:
//  - client behaviours: leaves while sending the request line / header block; leaves mid body
//    (declared Content-Length, chunked); leaves while gw waits for the backend; leaves as soon as
//    the answer starts streaming; and a well-behaved client, which must get KrakenD's answer for
//    that pair (world.ts `expected`: 200, 500, a partial merge, a cut stream);
//  - endpoint kinds: no-op, json, merge, sequential, client plugin delegating / hijacking /
//    hijacking with a streamed body, Lua (lua-backend pre + lua-proxy post), JWT;
//  - backend faults: healthy, refused, connect hangs, reset mid-body, trickle, gzip, gzip cut,
//    103 before the answer, 302 to another origin.
// Every connection must end (answered or closed) within the endpoint timeout + 3 s: a case that does
// not is a failure naming it. After each behaviour: /__health 200, the same worker processes, no
// crash logged. At the end: the serving processes' RSS and open fds are back within a generous
// bound of what they were after a warm-up round.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Gateway, sleep, startGateway } from '../helpers/gw.ts';
import { type Outcome, type Plan, requestBytes, runPlan } from './client.ts';
import { assertSurvived, workerPids } from './harness.ts';
import {
  BOUND_MS,
  type Fault,
  type Kind,
  MB,
  type Usage,
  type World,
  crashLines,
  endpointPath,
  expected,
  matrixConfig,
  pairs,
  servingPids,
  settledUsage,
  startWorld,
  usage,
} from './world.ts';

const ROUNDS = 2;
const CONCURRENCY = 16;
/** Growth allowed over the whole matrix, after the warm-up round. */
const RSS_SLACK = 128 * MB;
const FD_SLACK = 24;

let world: World;
let gw: Gateway;
let pids: number[];
let base: Usage;

interface Case {
  kind: Kind;
  fault: Fault;
}

type Behaviour = 'headers' | 'body' | 'chunked-body' | 'stall-body' | 'waiting' | 'streaming' | 'good' | 'good-chunked';

const BODY = Buffer.from(JSON.stringify({ hello: 'world', pad: 'p'.repeat(200) }));

function headers(): [string, string][] {
  return [
    ['Host', 'gw.test'],
    ['Content-Type', 'application/json'],
    ['Authorization', `Bearer ${world.token}`],
  ];
}

/** The connection plan of one client behaviour (round r varies where a cut falls). */
function plan(c: Case, b: Behaviour, r: number): Plan {
  const path = endpointPath(c.kind, c.fault);
  const full = requestBytes({ method: 'POST', path, headers: headers(), body: BODY });
  const methods = ['POST'];
  switch (b) {
    case 'headers': {
      // Round 0 stops in the request line, round 1 in the header block.
      const head = full.subarray(0, full.indexOf('\r\n\r\n'));
      const at = r % 2 === 0 ? Math.floor(path.length / 2) + 5 : head.length - 7;
      return { pieces: [{ data: full.subarray(0, at), delayMs: 0 }], then: { kind: 'close', ms: 50 }, methods, boundMs: BOUND_MS };
    }
    case 'body': {
      // 4 KiB announced, 1000 bytes sent: gw has started on the request when the client leaves.
      const h = requestBytes({ method: 'POST', path, headers: [...headers(), ['Content-Length', '4096']] });
      return {
        pieces: [{ data: Buffer.concat([h, Buffer.alloc(1000, 'b')]), delayMs: 0 }],
        then: { kind: 'close', ms: 150 },
        methods,
        boundMs: BOUND_MS,
      };
    }
    case 'chunked-body': {
      const h = requestBytes({ method: 'POST', path, headers: [...headers(), ['Transfer-Encoding', 'chunked']] });
      const partial = Buffer.concat([h, Buffer.from(`3e8\r\n${'c'.repeat(1000)}\r\n400\r\n${'c'.repeat(100)}`)]);
      return { pieces: [{ data: partial, delayMs: 0 }], then: { kind: 'close', ms: 150 }, methods, boundMs: BOUND_MS };
    }
    case 'stall-body': {
      // 4 KiB announced, 1000 bytes sent, then silence: gw must still answer (its timeout) or close.
      const h = requestBytes({ method: 'POST', path, headers: [...headers(), ['Content-Length', '4096']] });
      return { pieces: [{ data: Buffer.concat([h, Buffer.alloc(1000, 's')]), delayMs: 0 }], then: { kind: 'read', expect: 1 }, methods, boundMs: BOUND_MS };
    }
    case 'waiting':
      return { pieces: [{ data: full, delayMs: 0 }], then: { kind: 'close', ms: 40, onFirstByte: true }, methods, boundMs: BOUND_MS };
    case 'streaming':
      return { pieces: [{ data: full, delayMs: 0 }], then: { kind: 'close-on-data' }, methods, boundMs: BOUND_MS };
    case 'good':
      return { pieces: [{ data: full, delayMs: 0 }], then: { kind: 'read', expect: 1 }, methods, boundMs: BOUND_MS };
    case 'good-chunked': {
      const chunked = requestBytes({ method: 'POST', path, headers: headers(), body: BODY, chunked: 100 });
      return { pieces: [{ data: chunked, delayMs: 0 }], then: { kind: 'read', expect: 1 }, methods, boundMs: BOUND_MS };
    }
  }
}

/** Why this outcome is wrong for the case, or null. */
function judge(c: Case, b: Behaviour, o: Outcome): string | null {
  if (o.end === 'hung') return `connection neither answered nor closed within ${BOUND_MS} ms (got ${JSON.stringify(o.head.slice(0, 60))})`;
  if (o.end === 'error') return `connection failed: ${o.error}`;
  if (o.garbage !== undefined) return `unparseable answer: ${o.garbage}`;
  if (b !== 'good' && b !== 'good-chunked') return null;
  const r = o.responses[0];
  if (r === undefined) return `no answer (${o.end} after ${o.ms} ms, ${o.bytesIn} bytes)`;
  const ok = expected(c.kind, c.fault).some(
    (e) => e.status === r.status && e.complete === r.complete && (e.completed === undefined || r.headers['x-krakend-completed'] === e.completed),
  );
  if (ok) return null;
  const want = expected(c.kind, c.fault)
    .map((e) => `${e.status}${e.complete ? '' : ' cut'}${e.completed ? ` completed=${e.completed}` : ''}`)
    .join(' or ');
  return `got ${r.status}${r.complete ? '' : ' cut'} completed=${r.headers['x-krakend-completed']} (${o.end}, ${o.ms} ms), want ${want}`;
}

/** Runs `fn` over `items`, `n` at a time. */
async function pool<T, R>(items: readonly T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** The gateway's state in one line, put first in a failure report (a dead gateway explains all). */
function gatewayState(): string {
  const p = gw.proc;
  const crashes = crashLines(gw.output());
  const alive = p.exitCode === null && p.signalCode === null;
  const now = workerPids(gw);
  const same = now.length === pids.length && now.every((x, i) => x === pids[i]);
  return `gateway ${alive ? 'alive' : `exited (code ${p.exitCode}, signal ${p.signalCode})`}, worker pids ${same ? 'unchanged' : `${pids.join(' ')} → ${now.join(' ')}`}` +
    (crashes.length > 0 ? `, crash lines:\n${crashes.slice(0, 10).join('\n')}` : '');
}

async function runBehaviour(b: Behaviour): Promise<string[]> {
  const failures: string[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const cases = pairs();
    const outcomes = await pool(cases, CONCURRENCY, (c) => runPlan(gw.port, plan(c, b, r)));
    cases.forEach((c, i) => {
      const why = judge(c, b, outcomes[i]!);
      if (why !== null) failures.push(`[${b} round ${r + 1}] POST ${endpointPath(c.kind, c.fault)}: ${why}`);
    });
  }
  return failures;
}

before(async () => {
  world = await startWorld();
  gw = await startGateway(matrixConfig(world), { args: ['--log-format', 'json'], readyTimeout: 20_000 });
  pids = workerPids(gw);
  // Warm-up: every endpoint once (pools, JIT, plugin and Lua states), then the baseline.
  await pool(pairs(), CONCURRENCY, (c) => runPlan(gw.port, plan(c, 'good', 0)));
  await assertSurvived(gw, pids);
  await sleep(1500); // idle pooled connections close after 1 s
  base = usage(servingPids(gw, pids));
});

after(async () => {
  await gw?.stop('SIGKILL');
  await world?.close();
});

describe('abuse matrix: client behaviour × endpoint kind × backend fault', () => {
  const behaviours: [Behaviour, string][] = [
    ['good', 'a well-behaved client gets KrakenD\'s answer for every kind and fault'],
    ['good-chunked', 'a well-behaved client with a chunked body gets the same answers'],
    ['headers', 'a client leaving mid request line / header block'],
    ['body', 'a client leaving mid body (declared Content-Length)'],
    ['chunked-body', 'a client leaving mid chunked body'],
    ['stall-body', 'a client that stops sending mid body (and stays)'],
    ['waiting', 'a client leaving while gw waits for the backend'],
    ['streaming', 'a client leaving as soon as the answer starts'],
  ];
  for (const [b, title] of behaviours) {
    test(`${title}: every connection ends within its bound, and the gateway survives`, async () => {
      const failures = await runBehaviour(b);
      assert.deepEqual(failures, [], `${failures.length} case(s) failed; ${gatewayState()}\n${failures.slice(0, 40).join('\n')}`);
      await assertSurvived(gw, pids);
    });
  }

  test('RSS and open fds of the serving processes stay bounded over the whole matrix', async () => {
    const procs = servingPids(gw, pids);
    const end = await settledUsage(procs, base, 4);
    const msg = `RSS ${(base.rss / MB).toFixed(1)} → ${(end.rss / MB).toFixed(1)} MB, fds ${base.fds} → ${end.fds} (pids ${procs.join(' ')})`;
    console.log(`# ${msg}`);
    assert.ok(end.rss <= base.rss + RSS_SLACK, `RSS grew more than ${RSS_SLACK / MB} MB: ${msg}`);
    assert.ok(end.fds <= base.fds + FD_SLACK, `open fds grew by more than ${FD_SLACK}: ${msg}`);
    await assertSurvived(gw, pids);
  });
});
