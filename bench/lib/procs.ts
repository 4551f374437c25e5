/**
 * Child processes of the bench (backend, gw, reference proxy): started on 127.0.0.1, readiness
 * detected from a stdout line or an HTTP probe, CPU and RSS read from /proc (a process and its
 * children: gw's workers are processes), and always stopped: on a
 * normal end, on an error, on SIGINT/SIGTERM, and (SIGKILL, synchronously) on process exit.
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

process.on('exit', () => {
  for (const c of live) {
    try {
      c.proc.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** Stops every child still running (SIGTERM, then SIGKILL after 3 s). */
export async function stopAll(): Promise<void> {
  await Promise.allSettled([...live].map((c) => c.stop()));
}

export interface SpawnOptions {
  args: string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Resolves the start when a stdout line matches; the match is returned. */
  readyLine?: RegExp;
  /** Or: resolves when GET http://127.0.0.1:<port><path> answers 200. */
  readyHttp?: { port: number; path: string };
  readyTimeoutMs?: number;
}

export async function startChild(name: string, opts: SpawnOptions): Promise<{ child: Child; match: RegExpMatchArray | null }> {
  const proc = spawn(process.execPath, opts.args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const keep = (d: string) => {
    out += d;
    if (out.length > 16_384) out = out.slice(-8192);
  };
  let exitedFlag = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => {
      exitedFlag = true;
      resolve({ code, signal });
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
        if (!exitedFlag) {
          proc.kill('SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(t);
        }
        live.delete(child);
      })();
      return stopping;
    },
  };
  live.add(child);
  void exited.then(() => live.delete(child));
  if (proc.pid === undefined) {
    await child.stop();
    throw new Error(`${name}: could not be started`);
  }

  let match: RegExpMatchArray | null = null;
  let lineBuf = '';
  proc.stderr!.setEncoding('utf8').on('data', keep);
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    keep(d);
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
    if (exitedFlag) {
      const r = await exited;
      throw new Error(`${name} exited before becoming ready (code ${r.code}, signal ${r.signal})\n${out}`);
    }
    if (opts.readyLine && match !== null) return { child, match };
    if (opts.readyHttp && (await httpOk(opts.readyHttp.port, opts.readyHttp.path))) return { child, match };
    await sleep(25);
  }
  await child.stop();
  throw new Error(`${name} not ready within ${opts.readyTimeoutMs ?? 15_000} ms\n${out}`);
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
