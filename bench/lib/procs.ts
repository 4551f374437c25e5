/**
 * Child processes of the bench (backend, gw, reference proxy, and for the peers phase nginx, the
 * uWS origin and prototype, wrk): started on 127.0.0.1, readiness detected from a stdout line or an
 * HTTP probe, CPU and RSS read from /proc (a process and its children: gw's workers are
 * processes), and always stopped: on a normal end, on an error, on SIGINT/SIGTERM, and (SIGKILL,
 * synchronously) on process exit.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';

export const HOST = '127.0.0.1';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** Last lines of stdout+stderr, for error messages. */
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  hasExited(): boolean;
  stop(): Promise<void>;
}

const live = new Set<Child>();
/** Children whose descendants must be killed too if they outlive it (nginx's worker after a SIGKILLed master). */
const trees = new WeakSet<Child>();

function killPids(pids: number[]): void {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

process.on('exit', () => {
  for (const c of live) {
    if (c.proc.pid === undefined) continue; // never spawned: kill() would signal pid 0, our own process group
    const kids = trees.has(c) ? processTree(c.pid).slice(1) : [];
    try {
      c.proc.kill('SIGKILL');
    } catch {
      /* already gone */
    }
    killPids(kids);
  }
});

/** Stops every child still running (SIGTERM, then SIGKILL after 3 s). */
export async function stopAll(): Promise<void> {
  await Promise.allSettled([...live].map((c) => c.stop()));
}

export interface SpawnOptions {
  /** The executable, default this Node binary; e.g. `taskset` (which execs the real program, keeping the pid) or nginx. */
  command?: string;
  args: string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Resolves the start when a stdout line matches; the match is returned. */
  readyLine?: RegExp;
  /** Or: resolves when GET http://127.0.0.1:<port><path> answers 200. */
  readyHttp?: { port: number; path: string };
  readyTimeoutMs?: number;
  /** On stop, also SIGKILL descendants still alive after the process itself ended (or was SIGKILLed). */
  killTree?: boolean;
}

/** Wraps a spawned process as a Child: tracked by stopAll() and the exit hook; SIGTERM, then SIGKILL after 3 s. */
function track(name: string, proc: ChildProcess, keepAll: boolean, killTree: boolean): { child: Child; all: () => string } {
  let out = '';
  let full = '';
  const keep = (d: string) => {
    out += d;
    if (out.length > 16_384) out = out.slice(-8192);
    if (keepAll) full += d;
  };
  proc.stderr?.setEncoding('utf8').on('data', keep);
  proc.stdout?.setEncoding('utf8').on('data', keep);
  let exitedFlag = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => {
      exitedFlag = true;
      resolve({ code, signal });
    });
    // A program that could not be spawned (ENOENT...) never emits 'exit'.
    proc.once('error', () => {
      if (proc.pid === undefined) {
        exitedFlag = true;
        resolve({ code: null, signal: null });
      }
    });
  });
  let stopping: Promise<void> | null = null;
  const child: Child = {
    name,
    proc,
    pid: proc.pid ?? -1,
    output: () => out,
    exited,
    hasExited: () => exitedFlag,
    stop() {
      stopping ??= (async () => {
        if (proc.pid === undefined) {
          // Never spawned (ENOENT...): kill() would signal pid 0, i.e. the bench's own process group.
          await exited;
        } else if (!exitedFlag) {
          const kids = killTree ? processTree(child.pid).slice(1) : [];
          proc.kill('SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(t);
          if (kids.length) {
            // Normally gone already (nginx's master waits for its worker); a leftover is SIGKILLed.
            await sleep(50);
            killPids(kids.filter((k) => fs.existsSync(`/proc/${k}`)));
          }
        }
        live.delete(child);
      })();
      return stopping;
    },
  };
  live.add(child);
  if (killTree) trees.add(child);
  void exited.then(() => live.delete(child));
  return { child, all: () => full };
}

export async function startChild(name: string, opts: SpawnOptions): Promise<{ child: Child; match: RegExpMatchArray | null }> {
  const proc = spawn(opts.command ?? process.execPath, opts.args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.on('error', () => {
    /* e.g. ENOENT: reported below as "could not be started" or "exited before becoming ready" */
  });
  const { child } = track(name, proc, false, opts.killTree ?? false);
  const out = () => child.output();
  const exitedFlag = () => child.hasExited();
  const exited = child.exited;
  if (proc.pid === undefined) {
    await child.stop();
    throw new Error(`${name}: could not be started (${opts.command ?? process.execPath})`);
  }

  let match: RegExpMatchArray | null = null;
  let lineBuf = '';
  proc.stdout!.on('data', (d: string) => {
    if (opts.readyLine && match === null) {
      lineBuf += d;
      for (const line of lineBuf.split('\n')) {
        const m = opts.readyLine.exec(line);
        if (m) {
          match = m;
          break;
        }
      }
      if (lineBuf.length > 65_536) lineBuf = lineBuf.slice(-4096);
    }
  });

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
  while (Date.now() < deadline) {
    if (exitedFlag()) {
      const r = await exited;
      throw new Error(`${name} exited before becoming ready (code ${r.code}, signal ${r.signal})\n${out()}`);
    }
    if (opts.readyLine && match !== null) return { child, match };
    if (opts.readyHttp && (await httpOk(opts.readyHttp.port, opts.readyHttp.path))) return { child, match };
    await sleep(25);
  }
  await child.stop();
  throw new Error(`${name} not ready within ${opts.readyTimeoutMs ?? 15_000} ms\n${out()}`);
}

/**
 * Runs a program to its end (a load generator such as wrk), tracked like the other children so an
 * interrupt or an error stops it too. Resolves with its exit and its whole stdout+stderr; a run
 * longer than `timeoutMs` is stopped and reported as an error.
 */
export async function runTool(
  name: string,
  command: string,
  args: string[],
  opts: { cwd: string; timeoutMs: number },
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const proc = spawn(command, args, { cwd: opts.cwd, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let spawnError: Error | null = null;
  proc.on('error', (err) => {
    spawnError = err;
  });
  // 'exit' can fire before the pipes are drained; 'close' comes after both.
  const closed = new Promise<void>((resolve) => proc.once('close', () => resolve()));
  const { child, all } = track(name, proc, true, false);
  if (proc.pid === undefined) {
    await child.stop();
    throw new Error(`${name}: could not be started (${command}${spawnError ? `: ${(spawnError as Error).message}` : ''})`);
  }
  let timedOut = false;
  const t = setTimeout(() => {
    timedOut = true;
    void child.stop();
  }, opts.timeoutMs);
  const r = await child.exited;
  clearTimeout(t);
  await closed;
  if (timedOut) throw new Error(`${name} did not finish within ${opts.timeoutMs} ms\n${all().slice(-2000)}`);
  return { ...r, output: all() };
}

function httpOk(port: number, path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const r = http.get({ host: HOST, port, path, agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
      res.on('error', () => resolve(false));
    });
    r.on('error', () => resolve(false));
    r.on('timeout', () => {
      r.destroy();
      resolve(false);
    });
  });
}

let clkTck: number | null = null;
/** Clock ticks per second (`getconf CLK_TCK`, 100 on Linux). */
export function clockTicks(): number {
  if (clkTck === null) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** A process and its descendants (gw's supervisor and its worker processes), via /proc/<pid>/task/<tid>/children. */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    let tasks: string[] = [];
    try {
      tasks = fs.readdirSync(`/proc/${p}/task`);
    } catch {
      return; // gone
    }
    const kids = new Set<number>();
    for (const t of tasks) {
      try {
        for (const c of fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(' ')) if (c.trim()) kids.add(Number(c));
      } catch {
        /* thread gone */
      }
    }
    for (const k of kids) walk(k);
  };
  walk(pid);
  return out;
}

/**
 * CPU time of a process and its descendants (gw's workers are child processes), in clock ticks:
 * utime + stime of each (all threads) + cutime + cstime (children already reaped, e.g. a replaced
 * worker). Null when /proc is unavailable.
 */
export function cpuTicks(pid: number): number | null {
  let total: number | null = null;
  for (const p of processTree(pid)) {
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
    } catch {
      continue;
    }
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
    total = (total ?? 0) + Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]);
  }
  return total;
}

/** Resident set size in KiB (VmRSS) of a process and its descendants, or null. */
export function rssKiB(pid: number): number | null {
  let total: number | null = null;
  for (const p of processTree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) total = (total ?? 0) + Number(m[1]);
    } catch {
      /* gone */
    }
  }
  return total;
}
