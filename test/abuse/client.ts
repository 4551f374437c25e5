// A raw-socket client for the abuse matrix and the fuzzer: it sends exact bytes, piece by piece,
// stops where the plan says (mid request line, mid body, while waiting, mid answer), and reports
// how the connection ended — answered, closed by gw, closed by us, or hung past its bound.
import net from 'node:net';
import { HOST } from '../helpers/gw.ts';

/** One response as read off the wire. */
export interface Response {
  status: number;
  /** lower-cased names, values joined with ", " */
  headers: Record<string, string>;
  bodyBytes: number;
  /** The body ended as its framing says (false: the connection closed before). */
  complete: boolean;
  /** 1xx answers that came before this one. */
  interim: number[];
}

type BodyMode = { kind: 'none' } | { kind: 'length'; left: number } | { kind: 'chunked' } | { kind: 'close' };

/** Incremental HTTP/1.1 response parser over one connection (pipelined answers in order). */
export class ResponseReader {
  readonly responses: Response[] = [];
  private buf: Buffer = Buffer.alloc(0);
  private cur: Response | null = null;
  private body: BodyMode = { kind: 'none' };
  private interim: number[] = [];
  /** Chunked: bytes of chunk data still to come (-1: a size line is next; -2: trailers). */
  private chunkLeft = -1;
  /** The bytes cannot be parsed as HTTP/1.1 answers (reported, not thrown). */
  garbage: string | null = null;
  /** 101: the connection left HTTP. */
  upgraded = false;

  /** `methods`: the request methods in the order they were sent (HEAD answers carry no body). */
  constructor(private readonly methods: string[]) {}

  get finished(): number {
    return this.responses.filter((r) => r.complete).length;
  }

  /** Bytes arrived. */
  feed(d: Buffer): void {
    if (this.garbage !== null || this.upgraded) return;
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.cur === null) {
        if (!this.head()) return;
      } else if (!this.bodyStep()) return;
    }
  }

  /** The connection closed: a body framed by the close ends here, any other is cut. */
  eof(): void {
    if (this.cur !== null && this.body.kind === 'close') this.done(true);
    else if (this.cur !== null) this.done(false);
  }

  private head(): boolean {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.buf.length > 65536) this.garbage = 'response head larger than 64 KiB';
      return false;
    }
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    this.buf = this.buf.subarray(end + 4);
    const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]!);
    if (!m) {
      this.garbage = `bad status line ${JSON.stringify(lines[0]!.slice(0, 80))}`;
      return false;
    }
    const status = Number(m[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      if (c <= 0) {
        this.garbage = `bad header line ${JSON.stringify(l.slice(0, 80))}`;
        return false;
      }
      const k = l.slice(0, c).trim().toLowerCase();
      const v = l.slice(c + 1).trim();
      headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
    }
    if (status === 101) {
      this.upgraded = true;
      this.responses.push({ status, headers, bodyBytes: 0, complete: true, interim: this.interim });
      return false;
    }
    if (status >= 100 && status < 200) {
      this.interim.push(status);
      return true;
    }
    this.cur = { status, headers, bodyBytes: 0, complete: false, interim: this.interim };
    this.interim = [];
    const method = this.methods[this.responses.length] ?? 'GET';
    const te = (headers['transfer-encoding'] ?? '').toLowerCase();
    if (method === 'HEAD' || status === 204 || status === 304) this.body = { kind: 'none' };
    else if (te.includes('chunked')) {
      this.body = { kind: 'chunked' };
      this.chunkLeft = -1;
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (!Number.isSafeInteger(n) || n < 0 || headers['content-length'].includes(',')) {
        this.garbage = `bad Content-Length ${headers['content-length']}`;
        return false;
      }
      this.body = { kind: 'length', left: n };
    } else this.body = { kind: 'close' };
    if (this.body.kind === 'none' || (this.body.kind === 'length' && this.body.left === 0)) this.done(true);
    return true;
  }

  private bodyStep(): boolean {
    const cur = this.cur!;
    const b = this.body;
    if (b.kind === 'close') {
      cur.bodyBytes += this.buf.length;
      this.buf = Buffer.alloc(0);
      return false;
    }
    if (b.kind === 'length') {
      if (this.buf.length === 0) return false;
      const n = Math.min(b.left, this.buf.length);
      cur.bodyBytes += n;
      b.left -= n;
      this.buf = this.buf.subarray(n);
      if (b.left === 0) this.done(true);
      return true;
    }
    // chunked
    if (this.chunkLeft === -1) {
      const e = this.buf.indexOf('\r\n');
      if (e < 0) return false;
      const line = this.buf.subarray(0, e).toString('latin1');
      this.buf = this.buf.subarray(e + 2);
      const size = parseInt(line.split(';')[0]!.trim(), 16);
      if (!Number.isFinite(size) || size < 0 || !/^[0-9a-fA-F]+/.test(line)) {
        this.garbage = `bad chunk size ${JSON.stringify(line.slice(0, 40))}`;
        return false;
      }
      this.chunkLeft = size === 0 ? -2 : size + 2; // data + CRLF
      return true;
    }
    if (this.chunkLeft === -2) {
      // trailers, ended by an empty line
      const e = this.buf.indexOf('\r\n');
      if (e < 0) return false;
      this.buf = this.buf.subarray(e + 2);
      if (e === 0) this.done(true);
      return true;
    }
    if (this.buf.length === 0) return false;
    const n = Math.min(this.chunkLeft, this.buf.length);
    const data = Math.min(n, Math.max(0, this.chunkLeft - 2));
    cur.bodyBytes += data;
    this.chunkLeft -= n;
    this.buf = this.buf.subarray(n);
    if (this.chunkLeft === 0) this.chunkLeft = -1;
    return true;
  }

  private done(complete: boolean): void {
    const cur = this.cur!;
    cur.complete = complete;
    this.responses.push(cur);
    this.cur = null;
    this.body = { kind: 'none' };
  }
}

/** After the last piece is written: */
export type Then =
  /** read until `expect` complete answers (or the peer closes) */
  | { kind: 'read'; expect: number }
  /** close after `ms` (or earlier, at the first response byte when `onFirstByte`) */
  | { kind: 'close'; ms: number; onFirstByte?: boolean }
  /** close at the first response bytes (the answer is streaming) */
  | { kind: 'close-on-data' };

export interface Plan {
  /** Written in order, each after its delay. */
  pieces: { data: Buffer; delayMs: number }[];
  then: Then;
  /** Request methods on this connection, in order (for HEAD answers). */
  methods: string[];
  /** The whole connection must end within this (from connect). */
  boundMs: number;
}

export type End =
  /** every expected answer arrived complete */
  | 'answered'
  /** gw closed the connection (maybe after some answers) */
  | 'closed'
  /** we closed it as planned */
  | 'left'
  /** neither answered nor closed within the bound */
  | 'hung'
  /** the connection failed (refused: gw is down) */
  | 'error';

export interface Outcome {
  end: End;
  responses: Response[];
  /** First final status, or 0. */
  status: number;
  ms: number;
  bytesIn: number;
  /** The first and the last bytes gw sent, for reports. */
  head: string;
  tail: string;
  error?: string;
  garbage?: string;
}

/** Runs one connection to 127.0.0.1:port as planned. Never rejects. */
export function runPlan(port: number, plan: Plan): Promise<Outcome> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const reader = new ResponseReader(plan.methods);
    const sock = net.connect({ host: HOST, port });
    sock.setNoDelay(true);
    let bytesIn = 0;
    let first: Buffer | null = null;
    let last: Buffer = Buffer.alloc(0);
    let settled = false;
    let written = false;
    let closeTimer: NodeJS.Timeout | null = null;
    const timers: NodeJS.Timeout[] = [];
    const finish = (end: End, error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(bound);
      if (closeTimer !== null) clearTimeout(closeTimer);
      for (const t of timers) clearTimeout(t);
      sock.destroy();
      const final = reader.responses;
      resolve({
        end,
        responses: final,
        status: final[0]?.status ?? 0,
        ms: Date.now() - t0,
        bytesIn,
        head: (first ?? Buffer.alloc(0)).subarray(0, 160).toString('latin1'),
        tail: last.toString('latin1'),
        error,
        garbage: reader.garbage ?? undefined,
      });
    };
    const bound = setTimeout(() => finish('hung'), plan.boundMs);
    const then = plan.then;
    const afterWrites = () => {
      written = true;
      // An answer that came while we were still writing (gw answered early) counts as the first bytes.
      if (bytesIn > 0 && (then.kind === 'close-on-data' || (then.kind === 'close' && then.onFirstByte))) return finish('left');
      if (then.kind === 'close') closeTimer = setTimeout(() => finish('left'), then.ms);
      check();
    };
    const check = () => {
      if (settled || !written) return;
      if (then.kind === 'read' && reader.finished >= then.expect) finish('answered');
      if (then.kind === 'read' && (reader.garbage !== null || reader.upgraded)) finish('answered');
    };
    sock.on('connect', () => {
      let i = 0;
      const next = () => {
        if (settled || sock.destroyed) return;
        if (i >= plan.pieces.length) return afterWrites();
        const p = plan.pieces[i++]!;
        const write = () => {
          if (settled || sock.destroyed) return;
          if (p.data.length > 0) sock.write(p.data);
          next();
        };
        if (p.delayMs > 0) timers.push(setTimeout(write, p.delayMs));
        else write();
      };
      next();
    });
    sock.on('data', (d: Buffer) => {
      bytesIn += d.length;
      if (first === null) first = d;
      else if (first.length < 160) first = Buffer.concat([first, d]);
      last = d.length >= 160 ? d.subarray(d.length - 160) : Buffer.concat([last, d]).subarray(-160);
      reader.feed(d);
      if (written && (then.kind === 'close-on-data' || (then.kind === 'close' && then.onFirstByte))) return finish('left');
      check();
    });
    sock.on('error', (e) => {
      if (bytesIn === 0 && !written && (e as NodeJS.ErrnoException).code === 'ECONNREFUSED') finish('error', e.message);
      // ECONNRESET and the like: gw closed the connection; 'close' follows.
    });
    sock.on('close', () => {
      reader.eof();
      if (settled) return;
      if (then.kind === 'read' && written && reader.finished >= then.expect) finish('answered');
      else finish('closed');
    });
  });
}

// ---------------------------------------------------------------------------
// Request bytes

export interface RequestSpec {
  method: string;
  path: string;
  headers: [string, string][];
  body?: Buffer;
  /** Send the body chunked (in chunks of this many bytes), without a Content-Length. */
  chunked?: number;
}

export function requestBytes(r: RequestSpec): Buffer {
  const lines = [`${r.method} ${r.path} HTTP/1.1`, ...r.headers.map(([k, v]) => `${k}: ${v}`)];
  const body = r.body ?? Buffer.alloc(0);
  if (r.chunked !== undefined) {
    lines.push('Transfer-Encoding: chunked');
    const parts: Buffer[] = [Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1')];
    for (let i = 0; i < body.length; i += r.chunked) {
      const c = body.subarray(i, i + r.chunked);
      parts.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
    }
    parts.push(Buffer.from('0\r\n\r\n'));
    return Buffer.concat(parts);
  }
  if (r.body !== undefined) lines.push(`Content-Length: ${body.length}`);
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), body]);
}
