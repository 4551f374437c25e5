// Start-up hints beyond KrakenD: keys that v3 silently ignores, and features gw does not have yet.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runCli, startGateway, startBackend, sendJSON, writeConfig } from './helpers/gw.ts';

describe('configuration hints', () => {
  test('sd "dns" without a host (the SRV name) is a start-up error naming the backend', async () => {
    const cfg = {
      version: 3,
      endpoints: [{ endpoint: '/x', backend: [{ sd: 'dns', url_pattern: '/x' }] }],
    };
    const r = await runCli(['check', '-c', writeConfig(cfg)]);
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, /ERROR parsing the configuration file:.*endpoints\[0\] \(GET \/x\), backend 0: "sd": "dns" needs the SRV name as its first "host"/s);
  });

  test('v2 key names (headers_to_pass, whitelist) are reported by check and logged by run, and still ignored', async () => {
    const backend = await startBackend((req, res) => sendJSON(res, 200, { seen: req.headers['x-foo'] ?? null, a: 1, b: 2 }));
    try {
      const cfg = {
        version: 3,
        endpoints: [
          {
            endpoint: '/x',
            headers_to_pass: ['X-Foo'],
            backend: [{ host: [backend.url], url_pattern: '/x', whitelist: ['a'] }],
          },
        ],
      };
      const r = await runCli(['check', '-c', writeConfig(cfg)]);
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /WARNING: endpoints\[0\] \(\/x\): "headers_to_pass" is the configuration v2 name and is ignored in version 3; use "input_headers"/);
      assert.match(r.output, /WARNING: endpoints\[0\] \(\/x\), backend 0: "whitelist" is the configuration v2 name .* use "allow"/);
      assert.match(r.output, /Syntax OK!/);

      const gw = await startGateway(cfg, { args: ['--workers', '1'] });
      try {
        const res = await fetch(`${gw.url}/x`, { headers: { 'X-Foo': 'bar' } });
        // Ignored, as in KrakenD v3: the header is not forwarded and nothing is filtered.
        assert.deepEqual(await res.json(), { seen: null, a: 1, b: 2 });
        assert.match(gw.output(), /headers_to_pass.{1,3} is the configuration v2 name/);
      } finally {
        await gw.stop();
      }
    } finally {
      await backend.close();
    }
  });

  test('namespaces gw does not implement: named at start-up; ones that refuse requests make their endpoint fail closed', async () => {
    let hits = 0;
    const backend = await startBackend((_req, res) => {
      hits++;
      sendJSON(res, 200, { ok: true });
    });
    try {
      const cfg = {
        version: 3,
        extra_config: { 'telemetry/opencensus': { exporters: { prometheus: { port: 9091 } } }, router: { return_error_msg: true } },
        endpoints: [
          {
            endpoint: '/private',
            extra_config: { 'auth/basic': { htpasswd_path: '/nonexistent' } },
            backend: [{ host: [backend.url], url_pattern: '/p' }],
          },
          {
            endpoint: '/private-noop',
            output_encoding: 'no-op',
            backend: [{ host: [backend.url], url_pattern: '/p', extra_config: { 'security/policies': { req: { policies: ['false'] } } } }],
          },
          {
            endpoint: '/public',
            backend: [{ host: [backend.url], url_pattern: '/p', extra_config: { 'modifier/martian': { 'header.Modifier': { scope: ['request'], name: 'X-M', value: '1' } } } }],
          },
        ],
      };
      const r = await runCli(['check', '-c', writeConfig(cfg)]);
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /WARNING: extra_config: "telemetry\/opencensus" is not implemented by gw and is ignored/);
      assert.match(r.output, /WARNING: endpoints\[0\] \(\/private\): "auth\/basic" \(basic authentication\) is not implemented by gw; this endpoint answers 500/);
      assert.match(r.output, /WARNING: endpoints\[1\] \(\/private-noop\), backend 0: "security\/policies" \(security policies\) is not implemented/);
      assert.doesNotMatch(r.output, /martian/, 'modifier/martian is implemented');

      const gw = await startGateway(cfg, { args: ['--workers', '1'] });
      try {
        for (const path of ['/private', '/private-noop']) {
          const res = await fetch(`${gw.url}${path}`);
          assert.equal(res.status, 500, path);
          assert.match(await res.text(), /gw does not implement "(auth\/basic|security\/policies)"/);
        }
        assert.equal(hits, 0, 'nothing reached the backend through an unenforced endpoint');
        const ok = await fetch(`${gw.url}/public`);
        assert.equal(ok.status, 200);
        assert.deepEqual(await ok.json(), { ok: true });
        assert.equal(hits, 1);
        assert.match(gw.output(), /auth\/basic.{1,3} \(basic authentication\) is not implemented by gw/);
      } finally {
        await gw.stop();
      }
    } finally {
      await backend.close();
    }
  });
});
