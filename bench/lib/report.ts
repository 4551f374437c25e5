/**
 * The results file, the plain-text summary (pasteable into a PR) and the ratio comparison.
 */
import type { MicroResult } from '../suites/micro.js';
import { fmtNs } from '../suites/micro.js';
import type { E2EResult } from '../suites/e2e.js';
import type { PeersOutcome } from '../suites/peers.js';

export interface Ratio {
  value: number;
  /** Gated ratios fail the run when they regress beyond the threshold; the others are shown only. */
  gate: boolean;
  label: string;
}

export interface Results {
  schema: 1;
  date: string;
  git: { sha: string; dirty: boolean };
  mode: 'quick' | 'default';
  microOnly: boolean;
  /** `--peers-only`: neither micro nor end-to-end suites ran. */
  peersOnly?: boolean;
  machine: { node: string; platform: string; arch: string; cpus: number; cpuModel: string; loadavg: number[] };
  settings: Record<string, unknown>;
  durationS: number;
  micro: MicroResult[];
  e2e: E2EResult | null;
  /** The peers phase (nginx, the uWS+undici prototype, gw under wrk); null when not run (--no-peers, --micro-only). */
  peers?: PeersOutcome | null;
  /** The ratios `--compare` looks at; all are "lower is better". */
  ratios: Record<string, Ratio>;
}

export function collectRatios(micro: MicroResult[], e2e: E2EResult | null): Record<string, Ratio> {
  const out: Record<string, Ratio> = {};
  const direct = micro.find((m) => m.suite === 'plugin' && m.name.startsWith('next()'));
  const wrapped = micro.find((m) => m.suite === 'plugin' && m.name.startsWith('pluginClient'));
  if (direct && wrapped) {
    out['micro.plugin_dispatch.x'] = {
      value: round(wrapped.p50_ns / direct.p50_ns),
      gate: false,
      label: 'micro: pluginClient dispatch ÷ direct next() (p50)',
    };
  }
  if (e2e) {
    for (const o of e2e.overhead) {
      // The reference proxy's own ratio is shown for context; only gw's ratios can fail a run.
      const isGw = o.name.startsWith('gw ');
      out[`e2e.${slug(o.name)}.p50_x`] = { value: o.p50_x, gate: isGw, label: `${o.name} ÷ ${o.vs} (p50)` };
      out[`e2e.${slug(o.name)}.p99_x`] = { value: o.p99_x, gate: false, label: `${o.name} ÷ ${o.vs} (p99)` };
    }
    if (e2e.cpu_ratio_gw_ref !== null) {
      out['cpu.gw_noop_1k.vs_ref'] = { value: e2e.cpu_ratio_gw_ref, gate: true, label: 'gw CPU/req ÷ reference proxy CPU/req (no-op 1 KB)' };
    }
  }
  return out;
}

function round(v: number): number {
  return Number(v.toPrecision(3));
}

function slug(s: string): string {
  return s.toLowerCase().replace(/×/g, 'x').replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '');
}

// ------------------------------------------------------------------------------ text

function table(head: string[], rows: string[][], alignLeft = 1): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < alignLeft ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const us = (v: number) => (Math.abs(v) >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${v.toFixed(1)} µs`);
const signed = (v: number) => `${v >= 0 ? '+' : '−'}${us(Math.abs(v))}`;
const x = (v: number) => `${v.toFixed(2)}×`;

export function summary(r: Results): string {
  const out: string[] = [];
  out.push(
    `gw bench · ${r.date} · ${r.git.sha}${r.git.dirty ? ' (dirty)' : ''} · ${r.mode}${r.microOnly ? ', micro only' : ''}${r.peersOnly ? ', peers only' : ''} · ` +
      `node ${r.machine.node} · ${r.machine.cpus} CPU ${r.machine.cpuModel} · ${r.durationS.toFixed(0)} s`,
  );
  if (r.micro.length) {
    out.push('');
    out.push('Micro suites (per operation; fast ops timed in batches, p50/p99 of batch means)');
    out.push(
      table(
        ['suite: task', 'mean', 'p50', 'p99', 'ops/s'],
        r.micro.map((m) => [`${m.suite}: ${m.name}`, fmtNs(m.mean_ns), fmtNs(m.p50_ns), fmtNs(m.p99_ns), m.ops_per_s.toLocaleString('en-US')]),
      ),
    );
  }
  const e = r.e2e;
  if (e) {
    const byName = new Map(e.latency.map((l) => [l.name, l]));
    const ov = new Map(e.overhead.map((o) => [o.name, o]));
    out.push('');
    out.push(
      `End-to-end latency (gw --workers ${e.gw_workers}; one request at a time, keep-alive, full body read; overhead vs direct)`,
    );
    out.push(
      table(
        ['task', 'p50', 'p99', 'mean', 'vs', 'overhead p50', '×', 'overhead p99', '×'],
        e.latency.map((l) => {
          const o = ov.get(l.name);
          return [
            l.name, us(l.p50_us), us(l.p99_us), us(l.mean_us),
            o ? o.vs : '',
            o ? signed(o.p50_us) : '', o ? x(o.p50_x) : '',
            o ? signed(o.p99_us) : '', o ? x(o.p99_x) : '',
          ];
        }),
      ),
    );
    out.push('');
    out.push('Client plugins (p50 latency added to the same endpoint without plugin; target for delegation: < 10% of gw overhead)');
    out.push(
      table(
        ['endpoint', 'vs', 'added p50', 'of gw overhead'],
        e.delegation.map((d) => [d.name, d.vs, signed(d.extra_p50_us), `${d.pct_of_gw_overhead.toFixed(1)}%`]),
      ),
    );
    if (e.throughput.length) {
      const t0 = e.throughput[0]!;
      out.push('');
      out.push(`Throughput (${t0.concurrency} requests in flight, ${t0.seconds.toFixed(1)} s per target; CPU = utime+stime of the process under test and its children: gw's workers)`);
      out.push(
        table(
          ['target', 'req/s', 'CPU µs/req', 'of process', 'backend CPU µs/req', 'RSS'],
          e.throughput.map((t) => [
            t.name,
            t.rps.toFixed(0),
            t.cpu_us_per_req?.toFixed(1) ?? '?',
            t.target === 'direct' ? 'backend' : t.target === 'gw' ? 'gw' : 'reference',
            t.backend_cpu_us_per_req?.toFixed(1) ?? '',
            t.rss_kib !== null ? `${(t.rss_kib / 1024).toFixed(0)} MB` : '',
          ]),
        ),
      );
      const ws = e.worker_scaling;
      if (ws) {
        out.push('');
        out.push(
          `gw no-op req/s with ${ws.workers} workers ÷ 1 worker: ${ws.rps_ratio.toFixed(2)}× ` +
            '(the load generator and the backend share these cores, so this understates a dedicated host)',
        );
      } else if (e.worker_scaling_note) {
        out.push('');
        out.push(e.worker_scaling_note);
      }
      if (e.cpu_ratio_gw_ref !== null) {
        out.push('');
        out.push(`gw CPU per no-op request ÷ reference node:http+undici proxy: ${e.cpu_ratio_gw_ref.toFixed(2)} (target ≤ 0.50)`);
      }
    }
    const noop = ov.get('gw no-op 1 KB');
    const dlg = e.delegation[0];
    if (noop && byName.get('direct 1 KB') && dlg) {
      out.push(
        `gw no-op 1 KB overhead vs direct: p50 ${signed(noop.p50_us)} (${x(noop.p50_x)}), p99 ${signed(noop.p99_us)} (${x(noop.p99_x)}); ` +
          `delegating plugin adds ${signed(dlg.extra_p50_us)} p50 (${dlg.pct_of_gw_overhead.toFixed(1)}% of gw overhead; target < 10%)`,
      );
    }
  }
  if (r.peers) out.push('', ...peersText(r.peers));
  return out.join('\n');
}

/** The peers phase: the table, the targets (information only) and the spread of the /big rows. */
export function peersText(p: PeersOutcome): string[] {
  if (p.skipped !== null) return [p.skipped];
  const out: string[] = [];
  const runs = p.repeats === 1 ? '1 run' : `${p.repeats} repeats`;
  out.push(
    `Peers (wrk ${p.tools.wrk} -t1 -c${p.connections}, ${runs} of ${p.duration_s} s per row after ${p.warmup_s} s warm-up; ` +
      `nginx ${p.tools.nginx} 1 worker, proto = uWS+undici prototype, gw --workers 1; ${p.pinning})`,
  );
  out.push("CPU µs/req = utime+stime of the proxy's process tree over the measured window ÷ requests served; req/s, p99 from wrk; medians over repeats.");
  out.push(
    '× nginx, × proto = median over repeats of the per-repeat CPU/req ratio to the same path on nginx / the prototype ' +
      '(/agg, /json-plugin, /dec, /dec-mod and gw-srv /json vs nginx /json; /json-plugin and gw-srv /json vs proto /json). ' +
      'gw-srv = gw with one delegating server plugin; /dec-mod = /dec (one decoding backend) with a request + a response modifier.',
  );
  const errs = p.rows.some((r) => r.errors > 0);
  out.push(
    table(
      ['row', 'CPU µs/req', 'req/s', 'p99', '× nginx', '× proto', ...(errs ? ['errors'] : [])],
      p.rows.map((r) => [
        r.name,
        r.cpu_us_per_req?.toFixed(1) ?? '?',
        r.rps.toFixed(0),
        us(r.p99_us),
        r.x_nginx ? x(r.x_nginx.value) : '',
        r.x_proto ? x(r.x_proto.value) : '',
        ...(errs ? [String(r.errors)] : []),
      ]),
    ),
  );
  out.push('');
  out.push('Targets (CPU per request; information only: PASS/FAIL does not change the exit status, the machine is noisy)');
  for (const t of p.targets) {
    out.push(`  ${t.pass === null ? 'N/A ' : t.pass ? 'PASS' : 'FAIL'}  ${t.label}: ${t.ratio === null ? '?' : x(t.ratio)}`);
  }
  const spread = p.spread
    .map((s) => `${s.row} ${s.min === null ? '?' : s.min.toFixed(1)}–${s.max === null ? '?' : s.max.toFixed(1)}`)
    .join(', ');
  out.push(
    `Spread of CPU µs/req over ${runs} (min–max): ${spread}` +
      (p.repeats === 1 ? ' (a single run has no spread: run without --quick for 3 repeats)' : ''),
  );
  if (errs) out.push('note: some rows had non-2xx answers or socket errors (see the errors column): their figures are suspect');
  return out;
}

// ------------------------------------------------------------------------------ compare

export interface Comparison {
  text: string;
  regressions: string[];
  compared: number;
}

export function compare(base: Results, cur: Results, thresholdPct: number, baseName: string): Comparison {
  const rows: string[][] = [];
  const regressions: string[] = [];
  let compared = 0;
  for (const [key, c] of Object.entries(cur.ratios)) {
    const b = base.ratios?.[key];
    if (!b || !Number.isFinite(b.value) || b.value <= 0 || !Number.isFinite(c.value)) continue;
    compared++;
    const change = (c.value / b.value - 1) * 100;
    let verdict = '';
    if (c.gate) {
      if (change > thresholdPct) {
        verdict = 'REGRESSED';
        regressions.push(`${c.label}: ${b.value} → ${c.value} (+${change.toFixed(1)}%)`);
      } else if (change < -thresholdPct) verdict = 'improved';
      else verdict = 'ok';
    } else verdict = '(info)';
    rows.push([c.label, b.value.toFixed(3), c.value.toFixed(3), `${change >= 0 ? '+' : ''}${change.toFixed(1)}%`, verdict]);
  }
  const notes: string[] = [];
  if (base.mode !== cur.mode) notes.push(`note: the baseline is a ${base.mode} run, this is a ${cur.mode} run (quick runs are noisier)`);
  const bw = base.e2e?.gw_workers;
  const cw = cur.e2e?.gw_workers;
  if (bw !== undefined && cw !== undefined && bw !== cw) notes.push(`note: gw workers differ (baseline ${bw}, now ${cw}): the ratios are not comparable`);
  const bc = (base.settings as { e2e?: { concurrency?: number } })?.e2e?.concurrency;
  const cc = (cur.settings as { e2e?: { concurrency?: number } })?.e2e?.concurrency;
  if (bc !== undefined && cc !== undefined && bc !== cc) notes.push(`note: throughput concurrency differs (baseline ${bc}, now ${cc})`);
  const head =
    `Comparison with ${baseName} (${base.date}, ${base.git?.sha ?? '?'}, ${base.mode}); ratios only, lower is better, ` +
    `threshold ${thresholdPct}%`;
  const text = [
    head,
    ...notes,
    compared ? table(['ratio', 'baseline', 'now', 'change', ''], rows) : 'no ratio in common (a --micro-only or --peers-only run has no gated ratios)',
  ].join('\n');
  return { text, regressions, compared };
}
