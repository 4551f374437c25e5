// Shared checks for the abuse suite: did the gateway survive, and raw exchanges that report how
// the connection ended.
import assert from 'node:assert/strict';
import net from 'node:net';
import { type Gateway, HOST, req } from '../helpers/gw.ts';
import { CRASH_LINE } from './world.ts';

/** The gateway's worker processes, sorted. */
export function workerPids(gw: Gateway): number[] {
  return gw.workerPids().sort((a, b) => a - b);
}


/** The gateway is alive, answers /__health, runs the same workers, and logged no crash. */
export async function assertSurvived(gw: Gateway, pids: readonly number[]): Promise<void> {
  assert.equal(gw.proc.exitCode, null, `gateway exited:\n${gw.output().slice(-3000)}`);
  assert.equal(gw.proc.signalCode, null, `gateway killed:\n${gw.output().slice(-3000)}`);
  const r = await req(gw.port, '/__health', { timeoutMs: 5000 });
  assert.equal(r.status, 200);
  assert.deepEqual(workerPids(gw), pids, `worker processes changed:\n${gw.output().slice(-3000)}`);
  const m = CRASH_LINE.exec(gw.output());
  assert.equal(m, null, `crash logged: ${m?.[0]}\n${gw.output().slice(-3000)}`);
}

export interface RawExchange {
  /** Everything the gateway sent, as latin1 text. */
  text: string;
  /** The gateway closed the connection within the wait. */
  closed: boolean;
}

/** Writes `data` on a fresh connection and collects what comes back for `waitMs` (or until closed). */
export function rawExchange(port: number, data: string | Buffer, waitMs: number): Promise<RawExchange> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    const chunks: Buffer[] = [];
    let closed = false;
    const done = () => {
      clearTimeout(t);
      s.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    };
    const t = setTimeout(done, waitMs);
    s.on('connect', () => s.write(data));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      closed = true;
      done();
    });
  });
}
