/**
 * DNS SRV service discovery (`"sd": "dns"`), as lura's sd/dnssrv: the backend's first `host` is
 * an SRV name (`_api._tcp.service.consul`); its records are resolved at start-up and every 30 s.
 * Only the records of the lowest priority are used; each target (`<sd_scheme>://target:port`,
 * http by default) appears in the balanced list as many times as its weight, after the weights
 * are scaled to a total of at most 100 and divided by their greatest common divisor (lura's
 * normalisation), so a round robin over the list honours the weights. A failed refresh keeps
 * the last good list (lura's behaviour); an empty one makes requests fail with
 * "no hosts available".
 *
 * The resolver is the system's (/etc/resolv.conf); `GW_DNS_SERVERS` (comma-separated
 * `ip[:port]`) points gw at other servers (a test's own, a sidecar's), and `GW_DNS_REFRESH_MS`
 * changes the refresh period (lura's 30 s by default).
 */
import { promises as dns } from 'node:dns';
import type { Logger } from '../log.js';

/** lura's TTL of the cached records, unless GW_DNS_REFRESH_MS says otherwise (≥ 100 ms). */
export const SRV_REFRESH_MS = Math.max(100, Number(process.env.GW_DNS_REFRESH_MS) || 30_000);

export interface SrvRecord {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

/** The balanced origin list for `records` (see the file comment). */
export function srvHosts(records: readonly SrvRecord[], scheme: string): string[] {
  if (records.length === 0) return [];
  const sorted = [...records].sort(
    (a, b) => a.priority - b.priority || b.weight - a.weight || (a.name < b.name ? -1 : a.name > b.name ? 1 : a.port - b.port),
  );
  const best = sorted.filter((r) => r.priority === sorted[0]!.priority);
  let ws = best.map((r) => r.weight);
  // All weights 0: each target once (RFC 2782 gives them equal, small chances).
  if (ws.every((w) => w === 0)) ws = ws.map(() => 1);
  const scale = Math.max(100, ws.length);
  const sum = ws.reduce((a, b) => a + b, 0);
  if (sum > scale) ws = ws.map((w) => Math.floor((w * scale) / sum));
  const g = ws.reduce((a, b) => gcd(a, b), 0);
  if (g > 1) ws = ws.map((w) => w / g);
  const out: string[] = [];
  best.forEach((r, i) => {
    const host = r.name.includes(':') ? `[${r.name}]` : r.name;
    for (let k = 0; k < ws[i]!; k++) out.push(`${scheme}://${host}:${r.port}`);
  });
  return out;
}

function gcd(a: number, b: number): number {
  while (b > 0) [a, b] = [b, a % b];
  return a;
}

function resolver(): dns.Resolver {
  const r = new dns.Resolver({ timeout: 2000, tries: 2 });
  const servers = process.env.GW_DNS_SERVERS?.split(',').map((s) => s.trim()).filter(Boolean);
  if (servers !== undefined && servers.length > 0) r.setServers(servers);
  return r;
}

/** One SRV name's current origins, refreshed in the background until `close()`. */
export class SrvHosts {
  /** The balanced origins (replaced, never mutated, on each refresh). */
  list: readonly string[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly resolver = resolver();
  private failing = false;

  constructor(
    readonly name: string,
    private readonly scheme: string,
    private readonly log: Logger,
    private readonly where: string,
    /** Each origin of a new list (to give it a connection pool). */
    private readonly onOrigin: (origin: string) => void,
    private readonly refreshMs = SRV_REFRESH_MS,
  ) {}

  /** The first resolution; then a refresh every `refreshMs`. */
  async start(): Promise<void> {
    await this.refresh();
    this.schedule();
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      void this.refresh().finally(() => {
        if (this.timer !== null) this.schedule();
      });
    }, this.refreshMs);
    this.timer.unref();
  }

  private async refresh(): Promise<void> {
    let records: SrvRecord[];
    try {
      records = await this.resolver.resolveSrv(this.name);
    } catch (err) {
      if (!this.failing) {
        this.failing = true;
        this.log.error(
          `${this.where} sd dns: resolving SRV ${this.name}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; ` +
            (this.list.length > 0 ? `keeping the last ${this.list.length} instance(s)` : 'no instance to call yet'),
        );
      }
      return;
    }
    const next = srvHosts(records, this.scheme);
    for (const o of new Set(next)) this.onOrigin(o);
    const changed = next.length !== this.list.length || next.some((h, i) => h !== this.list[i]);
    if (changed || this.failing) {
      this.log.info(`${this.where} sd dns: ${this.name} → ${next.length === 0 ? 'no instance' : [...new Set(next)].join(', ')}`);
    }
    this.failing = false;
    this.list = next;
  }

  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
