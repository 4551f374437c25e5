// bench/peers/uws-undici-proto.cjs: a verbatim copy of the perf lab's peers/uws-undici-proto.js
// (/tmp/gw-perf-lab/peers/, from shared/perf-lab), used by the peers phase of `npm run bench`
// (bench/suites/peers.ts). It is a REFERENCE FLOOR, NOT PRODUCT CODE: ~100 lines on gw's own stack
// (uWS listener, one undici Pool, dispatch() with raw headers, corked writes, backpressure both
// ways) doing none of a gateway's work (no routes table, no header policy, no timeouts, no
// plugins). gw's CPU per request is compared with it to see what gw's features cost on top of the
// stack. Keep it in sync with the lab rather than improving it here.
// Usage: ORIGIN=http://127.0.0.1:<port> node bench/peers/uws-undici-proto.cjs <port>
'use strict'
// Prototype of our design (port 9107): uWebSockets.js listener + undici Pool, streaming passthrough
// via the low-level Pool.dispatch() handler API (raw header Buffers in, uWS res.cork/tryEnd out,
// backpressure both ways). Also: GET /agg (parse+merge two origin JSONs) and GET /agg-raw (byte splice).
const uWS = require('@trufflesuite/uws-js-unofficial')
const { Pool } = require('undici')

const ORIGIN = process.env.ORIGIN || 'http://127.0.0.1:9000'
const PORT = Number(process.argv[2] || 9107)
const pool = new Pool(ORIGIN, { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 })
const REQ_SKIP = new Set(['host', 'connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'trailer', 'transfer-encoding'])
// uWS writes its own Date / Content-Length / framing, so drop those from the origin response too
const RES_SKIP = new Set([...REQ_SKIP, 'content-length', 'date'])

class Passthrough { // undici dispatch handler (legacy form: no header parsing, raw Buffers)
  constructor (res) { this.res = res; this.aborted = false; this.total = -1; this.started = false }
  onConnect (abort) { this.abortUp = abort; if (this.aborted) abort(new Error('client aborted')) }
  onHeaders (status, raw, resume, text) {
    this.status = `${status} ${text || ''}`; this.raw = raw; this.resume = resume
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i].length === 14 && raw[i].toString('latin1').toLowerCase() === 'content-length') this.total = +raw[i + 1].toString('latin1')
    }
    return true
  }
  head () { // called inside a cork: status line + filtered headers, values passed as Buffers
    this.started = true
    this.res.writeStatus(this.status)
    for (let i = 0, raw = this.raw; i < raw.length; i += 2) {
      const k = raw[i].toString('latin1').toLowerCase()
      if (!RES_SKIP.has(k)) this.res.writeHeader(k, raw[i + 1])
    }
  }
  onData (chunk) {
    if (this.aborted) return true
    let ok = true
    this.res.cork(() => {
      if (!this.started) this.head()
      if (this.total >= 0) { // known length: tryEnd streams with a proper Content-Length
        const off = this.res.getWriteOffset()
        const [sent, done] = this.res.tryEnd(chunk, this.total)
        if (!sent && !done) { ok = false; this.pending = chunk; this.pendingOff = off; this.res.onWritable((o) => this.retry(o)) }
      } else if (!this.res.write(chunk)) { ok = false; this.res.onWritable(() => { this.resume(); return true }) }
    })
    return ok // false => undici stops reading the upstream socket until resume()
  }
  retry (offset) {
    const [sent, done] = this.res.tryEnd(this.pending.subarray(offset - this.pendingOff), this.total)
    if (sent || done) { this.pending = null; this.resume() }
    return sent
  }
  onComplete () {
    if (this.aborted || (this.started && this.total >= 0)) return
    this.res.cork(() => { if (!this.started) this.head(); this.res.end() })
  }
  onError (err) {
    if (this.aborted) return
    this.aborted = true
    if (this.started) this.res.close(); else this.res.cork(() => this.res.writeStatus('502 Bad Gateway').end(String(err.code || 'bad gateway')))
  }
}

function getBuf (path, cb) { // tiny collector used by the aggregation routes
  const parts = []
  pool.dispatch({ path, method: 'GET', headers: null }, {
    onConnect () {}, onHeaders () { return true }, onData (c) { parts.push(c); return true },
    onComplete () { cb(null, parts.length === 1 ? parts[0] : Buffer.concat(parts)) }, onError (e) { cb(e) }
  })
}
const A = Buffer.from('{"a":'); const B = Buffer.from(',"b":'); const Z = Buffer.from('}')
function aggregate (res, raw) {
  let aborted = false; let a; let b; let n = 0; let fail = null
  res.onAborted(() => { aborted = true })
  const done = (err) => {
    if (err) fail = err
    if (++n < 2 || aborted) return
    const body = fail ? null : raw ? Buffer.concat([A, a, B, b, Z]) : JSON.stringify({ a: JSON.parse(a), b: JSON.parse(b) })
    res.cork(() => body ? res.writeHeader('content-type', 'application/json').end(body) : res.writeStatus('502 Bad Gateway').end())
  }
  getBuf('/json', (e, x) => { a = x; done(e) })
  getBuf('/json2', (e, x) => { b = x; done(e) })
}

uWS.App()
  .get('/agg', (res) => aggregate(res, false))
  .get('/agg-raw', (res) => aggregate(res, true))
  .any('/*', (res, req) => {
    const method = req.getCaseSensitiveMethod(); const q = req.getQuery()
    const path = q ? `${req.getUrl()}?${q}` : req.getUrl()
    const headers = []
    req.forEach((k, v) => { if (!REQ_SKIP.has(k)) headers.push(k, v) }) // req is only valid synchronously
    const h = new Passthrough(res)
    res.onAborted(() => { h.aborted = true; if (h.abortUp) h.abortUp(new Error('client aborted')) })
    if (method === 'GET' || method === 'HEAD') return pool.dispatch({ path, method, headers }, h)
    const parts = [] // request bodies are buffered in this prototype (fine for small API payloads)
    res.onData((ab, last) => {
      parts.push(Buffer.from(ab.slice(0)))
      if (last) pool.dispatch({ path, method, headers, body: Buffer.concat(parts) }, h)
    })
  })
  .listen('127.0.0.1', PORT, (t) => {
    if (!t) { console.error(`uws proto: cannot listen on ${PORT}`); process.exit(1) }
    console.log(`uWS+undici prototype on 127.0.0.1:${PORT} -> ${ORIGIN}`)
  })
