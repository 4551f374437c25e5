/**
 * `gw run`'s supervisor: N worker *processes* (core/worker.ts) share one port, each with its own
 * uWS listener. This process serves no traffic; it checks the port (core/port.ts), starts the
 * workers, replaces the ones that die, and stops them all on shutdown.
 *
 * Replacement: a worker that dies (crash, kill -9, or a signal sent to it alone) costs that worker
 * only; the others keep the port served. It is replaced after a backoff per worker slot: 100 ms,
 * doubling up to 5 s, back to 100 ms once a worker has run 30 s. A replacement that fails to
 * start is retried on the same backoff, forever while other workers serve the port; when none
 * does and 10 starts in a row failed, the supervisor gives up and exits 1 (the process manager
 * takes it from there). Workers that crash after starting are always replaced: giving up on them
 * would hand whoever triggers the crash a way to stop the gateway.
 *
 * Reload (SIGHUP, `gw run --watch`): a new generation of workers starts with the new configuration
 * and joins the port; only once all of them listen do the previous ones stop listening and drain.
 * A new generation that cannot start is stopped, and the previous one keeps serving.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from './log.js';
import { lockPort, probePort, type PortLock } from './port.js';
import { CRASH_EXIT_CODE, type FromWorker, type ToWorker, type WorkerInit } from './ipc.js';
import { BucketAuthority } from './qos/limiter.js';
import type { MetricJSON } from './telemetry/metrics.js';
import type { WorkerStats } from './telemetry/stats.js';

export interface SupervisorOptions {
  workers: number;
  configFile: string;
  /** The config text read at start-up; every worker (and replacement) runs this one, until a reload. */
  rawConfig: string;
  debug: boolean;
  /** 0 = ephemeral: the first worker binds, the others join its port. */
  port: number;
  /** `listen_ip`, '' for every interface. */
  host: string;
  logLevel?: string;
  logFormat?: string;
  logger: Logger;
}

export class StartupError extends Error {
  constructor(
    message: string,
    readonly config = false,
    readonly listen = false,
  ) {
    super(message);
  }
}

// worker.js next to this file (worker.ts when gw runs from source under a TS loader).
const WORKER_FILE = fileURLToPath(new URL(`./worker${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url));
const MIN_DELAY_MS = 100;
const MAX_DELAY_MS = 5000;
const STABLE_MS = 30_000;
const START_TIMEOUT_MS = 30_000;
const GIVE_UP_AFTER = 10;
/** Past the drain wait, how long a worker gets to close its pools before it is killed. */
const CLOSE_GRACE_MS = 5000;

interface Forked {
  child: ChildProcess;
  hello: boolean;
}

// Workers inherit node's flags (`--cpu-prof` profiles each process), but a debugger flag would
// make every worker claim the supervisor's inspector port: each gets a free one instead (Node
// prints its address).
//
// V8's memory reducer is off in workers (unless node's own flags name it): once a
// worker has been idle for 8 s it shrinks the heap's growth limits, and a burst of large streamed
// bodies afterwards (each socket read is a fresh 64 KiB buffer, counted against those limits until
// the next scavenge) then runs a full GC every ~50 ms: measured, a 64 KiB no-op endpoint after
// 40 s idle cost 72-78 µs of CPU per request instead of 38-39, and stayed there. A worker's heap
// is then not handed back after a spike; it is bounded by the spike.
const WORKER_EXEC_ARGV = [
  ...(process.execArgv.some((a) => a.includes('memory-reducer')) ? [] : ['--no-memory-reducer']),
  ...process.execArgv
    .filter((a) => !a.startsWith('--inspect-port'))
    .map((a) => (/^--inspect(-brk|-wait)?(=|$)/.test(a) ? '--inspect=127.0.0.1:0' : a)),
];

/** How long a reload waits for a retiring worker to report its listening socket closed. */
const UNLISTEN_WAIT_MS = 2000;

function forkWorker(): Forked {
  const child = fork(WORKER_FILE, [], { execArgv: WORKER_EXEC_ARGV, stdio: ['inherit', 'inherit', 'inherit', 'ipc'], serialization: 'json' });
  const f: Forked = { child, hello: false };
  child.on('message', (m: FromWorker) => {
    if (m.type === 'hello') f.hello = true;
  });
  return f;
}

let spare: Forked | null = null;

/**
 * Forks the first worker before the supervisor has even read the config, so that the worker's
 * module loading overlaps the supervisor's (about half of `gw run`'s start-up). Unreferenced until
 * used: an unused spare never keeps the supervisor alive, and exits when the supervisor does.
 */
export function preforkWorker(): void {
  if (spare !== null) return;
  spare = forkWorker();
  spare.child.on('error', () => {});
  spare.child.unref();
  spare.child.channel?.unref();
}

interface Slot {
  readonly index: number;
  pid: number;
  child: ChildProcess | null;
  ready: boolean;
  readyAt: number;
  delay: number;
  failures: number;
  timer: NodeJS.Timeout | null;
  /** What the current worker reported before it went: a crash, or the signal it received. */
  crash: string | null;
  drainReason: string | null;
}

const newSlots = (n: number): Slot[] =>
  Array.from({ length: n }, (_, index) => ({
    index, pid: 0, child: null, ready: false, readyAt: 0, delay: MIN_DELAY_MS, failures: 0, timer: null, crash: null, drainReason: null,
  }));

const ms = (n: number) => (n < 1000 ? `${n} ms` : `${n / 1000} s`);

export class Supervisor {
  /** The bound port (known once the first worker listens). */
  port = 0;
  /** Resolves with the exit code when the supervisor gave up (no worker can be started). */
  readonly gaveUp: Promise<number>;
  private giveUp!: (code: number) => void;
  private slots: Slot[];
  private readonly children = new Set<ChildProcess>();
  /** Workers of a previous configuration, draining after a reload: their exit is not replaced. */
  private readonly retired = new Set<ChildProcess>();
  /** Retiring workers a reload waits for until they have closed their listening socket. */
  private readonly unlistening = new Map<ChildProcess, () => void>();
  /** The config text new workers (and replacements) run. */
  private rawConfig: string;
  /** Workers of the generation being started or serving (told to each worker: rate-limit lease sizes). */
  private size: number;
  /** Rate-limit buckets shared by the workers: they lease tokens from it in small batches (core/qos/limiter.ts). */
  private readonly tokens = new BucketAuthority();
  /** Metrics scrapes waiting for workers' answers, by sequence number. */
  private readonly scrapes = new Map<number, (data: unknown) => void>();
  private scrapeSeq = 0;
  private lock: PortLock | null = null;
  private closing = false;
  private closed: Promise<number> | null = null;
  private readonly log: Logger;

  constructor(private readonly opts: SupervisorOptions) {
    this.log = opts.logger;
    this.rawConfig = opts.rawConfig;
    this.size = opts.workers;
    this.slots = newSlots(opts.workers);
    this.gaveUp = new Promise((resolve) => (this.giveUp = resolve));
  }

  /** Checks the port, starts every worker; rejects with a StartupError (all workers stopped). */
  async start(): Promise<void> {
    const host = this.opts.host;
    try {
      if (this.opts.port !== 0) {
        this.lock = await lockPort(host, this.opts.port);
        await probePort(host, this.opts.port);
      }
      // The first worker binds (an ephemeral port, maybe); the others join the bound port.
      this.port = await this.startOne(this.slots[0]!, this.opts.port, false);
      if (this.opts.port === 0) this.lock = await lockPort(host, this.port);
      await Promise.all(this.slots.slice(1).map((s) => this.startOne(s, this.port, true)));
    } catch (err) {
      if (this.closing) return; // a signal arrived during start-up: close() stops what started
      this.kill();
      throw err instanceof StartupError ? err : new StartupError((err as Error).message);
    }
    if (this.closing) return;
    this.log.info(`[SERVICE: Workers] ${this.opts.workers} ${this.opts.workers === 1 ? 'worker' : 'workers'} listening on port ${this.port}`);
  }

  /**
   * Every worker stops listening at once and drains (up to `waitMs`); resolves with 0 when all
   * exited on their own, 1 when some had to be killed. Idempotent.
   */
  close(waitMs: number): Promise<number> {
    this.closing = true;
    this.closed ??= (async () => {
      for (const s of this.slots) if (s.timer !== null) clearTimeout(s.timer);
      const exits = [...this.children].map((c) => this.stopChild(c, waitMs));
      const killed = (await Promise.all(exits)).some(Boolean);
      this.lock?.release();
      return killed ? 1 : 0;
    })();
    return this.closed;
  }

  /**
   * Zero-downtime reload: a new generation of `workers` workers starts with `rawConfig` and joins
   * the port; once every one of them listens, the previous workers stop listening and drain (up
   * to `drainMs`, answering their open connections for `lingerMs` first). If a new worker fails to
   * start (its configuration does not build, it cannot bind), the new ones are stopped and the
   * previous generation keeps serving: rejects with the reason. One reload at a time.
   */
  async reload(rawConfig: string, workers: number, drainMs: number, lingerMs: number): Promise<void> {
    if (this.closing) throw new StartupError('gw is stopping');
    const previous = this.slots;
    const previousConfig = this.rawConfig;
    const fresh = newSlots(workers);
    const previousSize = this.size;
    this.rawConfig = rawConfig;
    this.size = workers;
    try {
      // The first new worker logs its build (warnings once per instance), the others start quietly.
      await this.startOne(fresh[0]!, this.port, false, 0, 'new configuration');
      await Promise.all(fresh.slice(1).map((s) => this.startOne(s, this.port, true, 0, 'new configuration')));
    } catch (err) {
      this.rawConfig = previousConfig;
      this.size = previousSize;
      for (const s of fresh) {
        if (s.timer !== null) clearTimeout(s.timer);
        if (s.child !== null) {
          this.retired.add(s.child);
          s.child.kill('SIGKILL');
        }
      }
      throw err;
    }
    if (this.closing) return;
    this.slots = fresh;
    // A generation still draining from an earlier reload exits first: while its connections close,
    // clients open new ones, and a listener that closes then resets those the kernel queued on it.
    await this.retiredGone(drainMs + lingerMs + CLOSE_GRACE_MS);
    if (this.closing) return;
    // Two steps. 1: every previous worker closes its listening socket and goes on serving its
    // open connections as before. 2: only once all of them stopped listening do they start
    // closing connections (each answer ends its connection during the linger). In one step, the
    // clients of the first worker to close reconnect at once, the kernel queues some of those
    // connections on a previous worker still listening, and that worker's close resets them
    // after the client had sent its request (`read ECONNRESET`, a request lost).
    const retiring: ChildProcess[] = [];
    for (const s of previous) {
      if (s.timer !== null) clearTimeout(s.timer);
      s.timer = null;
      if (s.child === null || !this.children.has(s.child)) continue;
      this.retired.add(s.child);
      retiring.push(s.child);
    }
    // The reload is done (and logged) once the previous workers' listening sockets are closed:
    // from then on a new connection can only reach the new workers.
    await Promise.all(retiring.map((c) => this.whenUnlistened(c, UNLISTEN_WAIT_MS)));
    if (this.closing) return; // close() stops every worker, these too
    for (const c of retiring) void this.stopChild(c, drainMs, lingerMs);
  }

  /** Asks `c` to close its listening socket; resolves when it reports it closed, exits, or after `ms`. */
  private whenUnlistened(c: ChildProcess, ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null || !c.connected) return resolve();
      const done = () => {
        clearTimeout(t);
        this.unlistening.delete(c);
        c.off('exit', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.unlistening.set(c, done);
      c.once('exit', done);
      c.send({ type: 'unlisten' } satisfies ToWorker, () => {});
    });
  }

  /** Resolves once every retired worker has exited (or after `ms`). */
  private retiredGone(ms: number): Promise<void> {
    const waiting = [...this.retired].filter((c) => c.exitCode === null && c.signalCode === null);
    if (waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      void Promise.all(waiting.map((c) => new Promise((r) => c.once('exit', r)))).then(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /**
   * Every serving worker's metrics snapshot (telemetry/export.ts). A worker that does not answer
   * within `timeoutMs` (busy, or dying) is left out of this scrape.
   */
  collectMetrics(timeoutMs = 2000): Promise<MetricJSON[][]> {
    return this.collect('prom', timeoutMs) as Promise<MetricJSON[][]>;
  }

  /** Every serving worker's `/__stats` series (telemetry/stats.ts). */
  collectStats(timeoutMs = 2000): Promise<WorkerStats[]> {
    return this.collect('stats', timeoutMs) as Promise<WorkerStats[]>;
  }

  private collect(kind: 'prom' | 'stats', timeoutMs: number): Promise<unknown[]> {
    const live = [...this.children].filter((c) => c.connected);
    return Promise.all(
      live.map(
        (c) =>
          new Promise<unknown>((resolve) => {
            const seq = ++this.scrapeSeq;
            const done = (data: unknown) => {
              clearTimeout(t);
              this.scrapes.delete(seq);
              resolve(data);
            };
            const t = setTimeout(() => done(null), timeoutMs);
            this.scrapes.set(seq, done);
            c.send({ type: 'metrics?', seq, kind } satisfies ToWorker, (err: Error | null) => {
              if (err) done(null);
            });
          }),
      ),
    ).then((all) => all.filter((d) => d !== null && d !== undefined));
  }

  /** Kills every worker now (a second signal, or a failed start). */
  kill(): void {
    this.closing = true;
    for (const s of this.slots) if (s.timer !== null) clearTimeout(s.timer);
    for (const c of this.children) c.kill('SIGKILL');
    this.lock?.release();
  }

  /** Resolves true when the worker had to be killed. */
  private stopChild(c: ChildProcess, waitMs: number, lingerMs = 0): Promise<boolean> {
    return new Promise((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve(false);
      const t = setTimeout(() => {
        this.log.error(`[SERVICE: Workers] worker pid ${c.pid} did not stop within ${ms(waitMs + lingerMs + CLOSE_GRACE_MS)}; killing it`);
        c.kill('SIGKILL');
        resolve(true);
      }, waitMs + lingerMs + CLOSE_GRACE_MS);
      c.once('exit', () => {
        clearTimeout(t);
        resolve(false);
      });
      if (c.connected) c.send({ type: 'shutdown', waitMs, lingerMs } satisfies ToWorker, () => {});
      else c.kill('SIGTERM');
    });
  }

  private serving(): number {
    return this.slots.filter((s) => s.ready).length;
  }

  /**
   * spawn(), logging the worker's pid once it listens. A failed bind is explained with the
   * kernel's reason: while none of our workers holds the port, a plain bind says why.
   */
  private async startOne(slot: Slot, port: number, quiet: boolean, replaces = 0, why = ''): Promise<number> {
    let bound: number;
    try {
      bound = await this.spawn(slot, port, quiet);
    } catch (err) {
      if (!(err instanceof StartupError) || !err.listen || port === 0 || this.serving() > 0) throw err;
      const reason = await probePort(this.opts.host, port).then(
        () => null,
        (e: Error) => e.message,
      );
      throw reason === null ? err : new StartupError(reason, false, true);
    }
    if (!this.closing) {
      this.log.info(`[SERVICE: Workers] worker #${slot.index} (pid ${slot.pid}) listening on port ${bound}${replaces ? ` (replaces pid ${replaces})` : ''}${why ? ` (${why})` : ''}`);
    }
    return bound;
  }

  /** Forks one worker into `slot`; resolves with its bound port once it listens. */
  private spawn(slot: Slot, port: number, quietStart: boolean): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.closing) return reject(new StartupError('gw is stopping'));
      const init: WorkerInit = {
        index: slot.index, configFile: this.opts.configFile, rawConfig: this.rawConfig, debug: this.opts.debug, port,
        logLevel: this.opts.logLevel, logFormat: this.opts.logFormat, quietStart, workers: this.size,
      };
      const forked = spare ?? forkWorker();
      spare = null;
      const child = forked.child;
      child.ref();
      child.channel?.ref();
      this.children.add(child);
      Object.assign(slot, { pid: child.pid ?? 0, child, ready: false, crash: null, drainReason: null });
      const who = () => `worker #${slot.index} (pid ${child.pid})`;
      let settled = false;
      let becameReady = false;
      const fail = (e: StartupError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(e);
      };
      const timer = setTimeout(() => fail(new StartupError(`${who()} did not start within ${ms(START_TIMEOUT_MS)}`)), START_TIMEOUT_MS);
      if (forked.hello) child.send({ type: 'init', init } satisfies ToWorker, () => {});
      child.on('message', (m: FromWorker) => {
        switch (m.type) {
          case 'hello':
            child.send({ type: 'init', init } satisfies ToWorker, () => {});
            break;
          case 'ready':
            if (settled) break;
            settled = true;
            becameReady = true;
            clearTimeout(timer);
            slot.ready = true;
            slot.readyAt = Date.now();
            resolve(m.port);
            break;
          case 'fatal':
            fail(new StartupError(m.message, m.config, m.listen));
            break;
          case 'crash':
            slot.crash = m.message;
            fail(new StartupError(`${who()} crashed while starting: ${m.message}`));
            break;
          case 'lease': {
            const g = this.tokens.lease(m.spec, m.key, m.want);
            if (child.connected) child.send({ type: 'grant', seq: m.seq, n: g.n, retryMs: g.retryMs } satisfies ToWorker, () => {});
            break;
          }
          case 'giveback':
            this.tokens.giveBack(m.spec, m.key, m.n);
            break;
          case 'metrics':
            this.scrapes.get(m.seq)?.(m.data);
            break;
          case 'unlistened':
            this.unlistening.get(child)?.();
            break;
          case 'draining':
            slot.drainReason = m.reason;
            slot.ready = false;
            if (!this.closing && !this.retired.has(child)) this.log.warn(`[SERVICE: Workers] ${who()} received ${m.reason}: it stops listening, drains and exits; it will be replaced`);
            break;
        }
      });
      // A failed fork, or an IPC write to a worker that just died; the exit event follows.
      child.on('error', (err) => fail(new StartupError(`${who()}: ${err.message}`)));
      child.on('exit', (code, signal) => {
        this.children.delete(child);
        if (this.retired.delete(child)) {
          // A previous configuration's worker, drained after a reload (or a new one whose start failed).
          fail(new StartupError(`${who()} stopped`));
          if (becameReady && !this.closing) this.log.info(`[SERVICE: Workers] ${who()} of the previous configuration drained and exited`);
          return;
        }
        if (slot.pid === child.pid) slot.ready = false;
        if (!becameReady) {
          // A start that failed (reported and retried by the caller), or this exit is the failure.
          const why = signal ? `killed by ${signal}` : `exit code ${code}`;
          fail(new StartupError(`${who()} exited while starting (${why})`));
          return;
        }
        if (!this.closing) this.replaceLater(slot, child.pid ?? 0, code, signal);
      });
    });
  }

  private replaceLater(slot: Slot, pid: number, code: number | null, signal: NodeJS.Signals | null): void {
    if (Date.now() - slot.readyAt >= STABLE_MS) slot.delay = MIN_DELAY_MS;
    const how = signal !== null ? `killed by ${signal}` : `exit code ${code}`;
    const cause = slot.crash !== null ? ` after ${slot.crash}` : slot.drainReason !== null ? ` after it received ${slot.drainReason}` : '';
    const planned = code === 0 && slot.drainReason !== null;
    const line = `[SERVICE: Workers] worker #${slot.index} (pid ${pid}) ${planned ? 'exited' : 'died'}: ${how}${cause}; ` +
      `starting a replacement in ${ms(slot.delay)} (${this.serving()} of ${this.slots.length} workers serving port ${this.port})`;
    if (planned) this.log.warn(line);
    else this.log.error(line);
    if (code === CRASH_EXIT_CODE && slot.crash === null) {
      this.log.error(`[SERVICE: Workers] worker #${slot.index} (pid ${pid}) reported nothing before dying; see its CRITICAL line above`);
    }
    this.schedule(slot, pid);
  }

  private schedule(slot: Slot, oldPid: number): void {
    const wait = slot.delay;
    slot.delay = Math.min(slot.delay * 2, MAX_DELAY_MS);
    slot.timer = setTimeout(() => {
      slot.timer = null;
      void this.replace(slot, oldPid);
    }, wait);
  }

  private async replace(slot: Slot, oldPid: number): Promise<void> {
    if (this.closing || !this.slots.includes(slot)) return;
    try {
      await this.startOne(slot, this.port, true, oldPid);
    } catch (err) {
      if (this.closing || !this.slots.includes(slot)) return;
      slot.failures++;
      const message = (err as Error).message;
      const serving = this.serving();
      if (serving === 0 && slot.failures >= GIVE_UP_AFTER) {
        this.log.critical(
          `[SERVICE: Workers] no worker is serving port ${this.port} and worker #${slot.index} failed to start ${slot.failures} times in a row ` +
            `(last: ${message}); giving up`,
        );
        this.kill();
        this.giveUp(1);
        return;
      }
      this.log.error(
        `[SERVICE: Workers] worker #${slot.index} could not be started: ${message}; retrying in ${ms(slot.delay)} ` +
          `(${serving} of ${this.slots.length} workers serving port ${this.port})`,
      );
      this.schedule(slot, oldPid);
      return;
    }
    slot.failures = 0;
    // A reload happened while this replacement started: it belongs to the previous configuration.
    if (!this.slots.includes(slot) && slot.child !== null) {
      this.retired.add(slot.child);
      void this.stopChild(slot.child, 0);
    }
  }
}
