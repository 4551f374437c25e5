/**
 * The listen port is checked by the supervisor before any worker starts (issue 10, defect 17).
 *
 * Workers listen with SO_REUSEPORT (uSockets' default on Linux) so that they can share the port;
 * the price is that a worker's own bind *joins* any other SO_REUSEPORT listener on the port (a
 * second gw) instead of failing. So the supervisor:
 *  1. takes an instance lock for (listen address, port): an abstract unix socket, which the kernel
 *     releases however the supervisor dies and which workers do not inherit (close-on-exec). Of two
 *     gw started at the same instant on the same address, exactly one gets it;
 *  2. probes the port with a plain bind (no SO_REUSEPORT): it fails against any listener there —
 *     another gw's workers, nginx, a node:net server — on any address the workers would cover.
 * Then the workers bind. uSockets' LIBUS_LISTEN_EXCLUSIVE_PORT makes a bind fail against others
 * too, but the next workers could then not join the first one, so it cannot serve here.
 */
import net from 'node:net';

/** Go's spelling, as KrakenD prints it: `listen tcp :8080: bind: address already in use`. */
export function listenError(host: string, port: number, reason: string): Error {
  const where = host === '' ? `:${port}` : net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  return new Error(`listen tcp ${where}: bind: ${reason}`);
}

const REASONS: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied',
  EADDRNOTAVAIL: 'cannot assign requested address',
};

/** Binds and releases `host:port` with a plain (exclusive) socket; rejects with a Go-style error. */
export function probePort(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => reject(listenError(host, port, REASONS[e.code ?? ''] ?? e.message)));
    // No host: `::` dual-stack (0.0.0.0 without IPv6), as uSockets binds without listen_ip.
    srv.listen({ port, host: host || undefined, exclusive: true, backlog: 1 }, () => srv.close(() => resolve()));
  });
}

export interface PortLock {
  release(): void;
}

/**
 * Holds the instance lock for `host:port` until released or the process ends. Another holder is
 * named in the error (it answers its pid on the socket). Where abstract unix sockets do not
 * exist (not Linux), there is no lock and the probe alone guards the port.
 */
export async function lockPort(host: string, port: number): Promise<PortLock> {
  const name = `\0gw-listen ${host || '*'}:${port}`;
  const srv = net.createServer((s) => {
    s.on('error', () => {});
    s.end(`${process.pid}\n`);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ path: name }, () => resolve());
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') return { release() {} };
    const holder = await holderPid(name);
    throw listenError(host, port, `address already in use${holder ? ` (gw pid ${holder} is serving it)` : ''}`);
  }
  srv.on('error', () => {}); // a peer that goes away mid-answer is no concern of the lock
  srv.unref();
  return {
    release() {
      srv.close();
    },
  };
}

function holderPid(name: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = net.connect({ path: name });
    const done = () => {
      s.destroy();
      resolve(/^\d+/.exec(got)?.[0] ?? '');
    };
    s.setTimeout(500, done);
    s.on('data', (d) => (got += d));
    s.on('end', done);
    s.on('error', done);
  });
}
