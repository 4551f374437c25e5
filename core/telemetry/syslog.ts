/**
 * `telemetry/logging.syslog`: the application log also goes to the local syslog, as KrakenD's
 * (Go's log/syslog on /dev/log): tag = the prefix (`KRAKEND` without one), facility =
 * `syslog_facility`, and — as KrakenD — every line at the severity of the configured level, in
 * krakend-gologging's syslog pattern `LEVEL > message`.
 *
 * Node has no unix datagram sockets, so one util-linux `logger` process per gw process reads the
 * lines on its stdin and sends each as one datagram. `GW_SYSLOG_SOCKET` points it at another
 * socket than /dev/log (a container's mounted log socket). When `logger` is missing or exits, the
 * failure is logged once to stdout and syslog lines stop; stdout lines never depend on it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { LineSink } from '../log.js';

const SEVERITY: Record<string, string> = { DEBUG: 'debug', INFO: 'info', WARNING: 'warning', ERROR: 'err', CRITICAL: 'crit' };

export class SyslogSink implements LineSink {
  private child: ChildProcess | null;
  private broken = false;
  /** Bytes waiting in the pipe to `logger`: beyond 1 MiB, lines are dropped (syslog is not drained). */
  private waiting = 0;

  constructor(tag: string, facility: string, level: string, onFailure: (why: string) => void) {
    const socket = process.env.GW_SYSLOG_SOCKET || '/dev/log';
    const prio = `${facility}.${SEVERITY[level] ?? 'crit'}`;
    let child: ChildProcess;
    try {
      child = spawn('logger', ['--id=' + process.pid, '-t', tag || 'KRAKEND', '-p', prio, '-u', socket, '--socket-errors=on'], {
        stdio: ['pipe', 'ignore', 'pipe'],
      });
    } catch (err) {
      this.child = null;
      this.broken = true;
      onFailure((err as Error).message);
      return;
    }
    this.child = child;
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d.slice(0, 500)));
    const fail = (why: string) => {
      if (this.broken) return;
      this.broken = true;
      this.child = null;
      onFailure(why);
    };
    child.on('error', (err) => fail(err.message));
    child.on('exit', (code, signal) => fail(`logger exited (${signal ?? code})${stderr ? `: ${stderr.trim()}` : ''}`));
    child.stdin!.on('error', () => {});
    // The helper never keeps gw alive.
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
  }

  /** One message, in krakend-gologging's syslog pattern `LEVEL > message` (one datagram per line). */
  message(level: string, msg: string): void {
    this.write(`${level} > ${msg.replace(/\r?\n/g, ' ')}\n`);
  }

  write(text: string): void {
    const c = this.child;
    if (c === null || this.broken) return;
    if (this.waiting > 1024 * 1024) return;
    this.waiting += text.length;
    c.stdin!.write(text, () => (this.waiting -= text.length));
  }
}
