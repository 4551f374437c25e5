/**
 * `npm run bench`: gw's benchmark tool (issue #4).
 *
 *   npm run bench                          micro + end-to-end suites, then the peers phase
 *                                          (≈ 5 min + ≈ 4 min of peers on 2 cores)
 *   npm run bench -- --quick               the same, shorter (≈ 1 min + ≈ 1 min of peers)
 *   npm run bench -- --quick --micro-only  micro suites only (the CI smoke check)
 *   npm run bench -- --peers-only          only the peers phase (add --quick: 1 run of 3 s per row)
 *   npm run bench -- --no-peers            micro + end-to-end suites, no peers phase
 *   npm run bench -- --baseline            compare with the committed bench/baseline.json
 *   npm run bench -- --compare <file>      compare with an earlier results file
 *   npm run bench -- --threshold 15        regression threshold in percent (default 10)
 *   npm run bench -- --write-baseline      write this run as bench/baseline.json
 *
 * The peers phase (bench/suites/peers.ts) runs when nginx and wrk are on PATH: a uWS origin, nginx,
 * the uWS+undici prototype and gw under wrk, compared on proxy CPU per request. Without nginx or
 * wrk it is skipped with one line saying how to get them. Its PASS/FAIL targets are information
 * only and never change the exit status.
 *
 * Progress goes to stderr, the summary table to stdout, the full results to
 * bench/results/<iso-date>-<git-sha>.json. Exit status: 0, or 1 when a gated ratio regressed
 * beyond the threshold, 2 when the bench itself failed, 130 when interrupted.
 * See docs/bench.md.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { stopAll } from './lib/procs.js';
import { collectRatios, compare, summary, type Results } from './lib/report.js';
import { E2E, type E2EOptions } from './suites/e2e.js';
import { runMicro } from './suites/micro.js';
import { Peers, peersSkipReason, type PeersOptions, type PeersOutcome } from './suites/peers.js';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH_DIR, '..');
const BASELINE = path.join(BENCH_DIR, 'baseline.json');
const RESULTS_DIR = path.join(BENCH_DIR, 'results');

const USAGE = `usage: npm run bench -- [--quick] [--micro-only | --peers-only] [--no-peers] [--compare <file>] [--baseline]
                          [--threshold <pct>] [--write-baseline] [--concurrency <n>]
                          [--gw-workers <n>  (default 1; 0 = gw's own default, one per core)]

  --quick           shorter everywhere (peers: 1 run of 3 s per row instead of 3 repeats of 5 s)
  --micro-only      micro suites only
  --peers-only      the peers phase only: nginx, the uWS+undici prototype and gw (--workers 1)
                    under wrk, compared on proxy CPU per request (needs nginx and wrk on PATH)
  --no-peers        skip the peers phase (it runs after the end-to-end suite when nginx and wrk exist)`;

function parse() {
  try {
    const { values } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        'micro-only': { type: 'boolean', default: false },
        'peers-only': { type: 'boolean', default: false },
        'no-peers': { type: 'boolean', default: false },
        compare: { type: 'string', multiple: true },
        baseline: { type: 'boolean', default: false },
        threshold: { type: 'string', default: '10' },
        'write-baseline': { type: 'boolean', default: false },
        concurrency: { type: 'string', default: '16' },
        'gw-workers': { type: 'string', default: '1' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    });
    const threshold = Number(values.threshold);
    const concurrency = Number(values.concurrency);
    if (!Number.isFinite(threshold) || threshold < 0) throw new Error(`--threshold: not a percentage: ${values.threshold}`);
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) throw new Error(`--concurrency: 1..256, got ${values.concurrency}`);
    const gwWorkers = Number(values['gw-workers']);
    if (!Number.isInteger(gwWorkers) || gwWorkers < 0 || gwWorkers > 64) throw new Error(`--gw-workers: 0..64 (0 = gw's default), got ${values['gw-workers']}`);
    if (values['peers-only'] && values['micro-only']) throw new Error('--peers-only and --micro-only exclude each other');
    if (values['peers-only'] && values['no-peers']) throw new Error('--peers-only and --no-peers exclude each other');
    return { ...values, threshold, concurrency, gwWorkers, compare: values.compare ?? [] };
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
}

const t0 = performance.now();
function log(line: string): void {
  process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${line}\n`);
}

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

/** An error about the command line or its files: reported without a stack. */
class UsageError extends Error {}

function readResults(file: string): Results {
  let r: Results;
  try {
    r = JSON.parse(fs.readFileSync(file, 'utf8')) as Results;
  } catch (err) {
    throw new UsageError(`cannot read results file ${file}: ${(err as Error).message}`);
  }
  if (r.schema !== 1 || typeof r.ratios !== 'object') throw new UsageError(`${file} is not a gw bench results file`);
  return r;
}

async function main(): Promise<number> {
  const args = parse();
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const quick = args.quick;
  // Read the comparison files first: a typo should not cost a full run.
  const against: { name: string; results: Results }[] = [];
  for (const f of args.compare) against.push({ name: path.relative(process.cwd(), path.resolve(f)) || f, results: readResults(f) });
  if (args.baseline) {
    if (fs.existsSync(BASELINE)) against.push({ name: 'bench/baseline.json', results: readResults(BASELINE) });
    else log('--baseline: bench/baseline.json does not exist yet (write it with --write-baseline); nothing to compare');
  }

  const controller = new AbortController();
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log(`${sig}: stopping`);
    controller.abort(new Error('interrupted'));
    void stopAll().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const settings = {
    micro: quick ? { timeMs: 150, warmupMs: 50 } : { timeMs: 1000, warmupMs: 200 },
    e2e: quick
      ? { latencyMs: 1500, rounds: 3, warmupMs: 300, throughputMs: 2000, throughputWarmMs: 500, concurrency: args.concurrency, gwWorkers: args.gwWorkers,
          throughputTargets: ['direct 1 KB', 'gw no-op 1 KB', 'ref no-op 1 KB'] }
      : { latencyMs: 6000, rounds: 6, warmupMs: 1000, throughputMs: 5000, throughputWarmMs: 1000, concurrency: args.concurrency, gwWorkers: args.gwWorkers,
          throughputTargets: ['direct 1 KB', 'gw no-op 1 KB', 'ref no-op 1 KB', 'gw json', 'gw plugin delegate no-op 1 KB'] },
    peers: quick ? { repeats: 1, durationS: 3, warmupS: 1, connections: 64 } : { repeats: 3, durationS: 5, warmupS: 1, connections: 64 },
  };
  const peersOnly = args['peers-only'];
  const runPeers = !args['micro-only'] && !args['no-peers'];
  const sha = git(['rev-parse', '--short', 'HEAD']) || 'nogit';
  const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
  const only = args['micro-only'] ? ', micro suites only' : peersOnly ? ', peers phase only' : '';
  log(`gw bench: ${quick ? 'quick' : 'default'} run${only} at ${sha}${dirty ? ' (dirty)' : ''}`);

  let micro: Awaited<ReturnType<typeof runMicro>> = [];
  if (!peersOnly) {
    log('micro suites');
    micro = await runMicro({ ...settings.micro, log });
    if (controller.signal.aborted) return 130;
  }

  let e2e = null;
  if (!args['micro-only'] && !peersOnly) {
    log('end-to-end suite');
    const suite = new E2E({ root: ROOT, log, signal: controller.signal, ...settings.e2e } satisfies E2EOptions);
    try {
      e2e = await suite.run();
    } finally {
      await suite.close();
    }
  }

  let peers: PeersOutcome | null = null;
  if (runPeers) {
    const skip = peersSkipReason();
    if (skip !== null) {
      peers = { skipped: skip }; // one line in the summary (stdout)
    } else {
      log('peers phase (nginx, uWS+undici prototype, gw under wrk)');
      const phase = new Peers({ root: ROOT, log, signal: controller.signal, ...settings.peers } satisfies PeersOptions);
      try {
        peers = await phase.run();
      } finally {
        await phase.close();
      }
    }
  }

  const date = new Date();
  const results: Results = {
    schema: 1,
    date: date.toISOString(),
    git: { sha, dirty },
    mode: quick ? 'quick' : 'default',
    microOnly: args['micro-only'],
    peersOnly,
    machine: {
      node: process.version,
      platform: process.platform,
      arch: process.arch,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model.trim() ?? '',
      loadavg: os.loadavg().map((v) => Number(v.toFixed(2))),
    },
    settings,
    durationS: Number(((performance.now() - t0) / 1000).toFixed(1)),
    micro,
    e2e,
    peers,
    ratios: collectRatios(micro, e2e),
  };

  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${date.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}-${sha}.json`);
  fs.writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  log(`results written to ${path.relative(process.cwd(), file)}`);
  if (args['write-baseline']) {
    fs.writeFileSync(BASELINE, JSON.stringify(results, null, 2) + '\n');
    log(`baseline written to ${path.relative(process.cwd(), BASELINE)}`);
  }

  const text = [summary(results)];
  let regressed = false;
  for (const a of against) {
    const c = compare(a.results, results, args.threshold, a.name);
    text.push('', c.text);
    if (c.regressions.length) {
      regressed = true;
      text.push(`REGRESSION beyond ${args.threshold}%:`, ...c.regressions.map((r) => `  - ${r}`));
    }
  }
  process.stdout.write(text.join('\n') + '\n');
  return regressed ? 1 : 0;
}

main().then(
  async (code) => {
    await stopAll();
    process.exitCode = code;
  },
  async (err: Error) => {
    await stopAll();
    if (err?.message !== 'interrupted') log(`bench failed: ${err instanceof UsageError ? err.message : (err?.stack ?? err)}`);
    process.exitCode = err?.message === 'interrupted' ? 130 : 2;
  },
);
