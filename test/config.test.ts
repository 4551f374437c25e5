// Config loading, start-up errors and the one-shot CLI commands (spec §1, §4).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { STACK_FRAME, freePort, runCli, startGateway, writeConfig } from './helpers/gw.ts';

let port: number;
before(async () => {
  port = await freePort();
});

const be = (extra: Record<string, unknown> = {}) => ({ host: ['http://127.0.0.1:9999'], url_pattern: '/x', ...extra });

function valid(extra: Record<string, unknown> = {}) {
  return {
    version: 3,
    port,
    endpoints: [{ endpoint: '/users/{id}', backend: [be({ url_pattern: '/u/{id}' })] }],
    ...extra,
  };
}

/** check must exit 1 with `ERROR parsing the configuration file:` and `text`. */
async function expectCheckError(config: object | string, text: string | RegExp) {
  const r = await runCli(['check', '-c', writeConfig(config)]);
  assert.equal(r.timedOut, false, 'check did not finish');
  assert.equal(r.code, 1, `check exit code\n${r.output}`);
  assert.match(r.output, /ERROR parsing the configuration file:/);
  if (typeof text === 'string') assert.ok(r.output.includes(text), `expected ${JSON.stringify(text)} in:\n${r.output}`);
  else assert.match(r.output, text);
  assert.doesNotMatch(r.output, /Syntax OK!/);
  return r;
}

/** run must exit non-zero (quickly, without serving) and print `text`. */
async function expectRunError(config: object | string, text: string | RegExp) {
  const r = await runCli(['run', '-c', writeConfig(config)], { timeoutMs: 6000 });
  assert.equal(r.timedOut, false, `run did not exit (it should refuse to start)\n${r.output}`);
  assert.notEqual(r.code, 0, `run exit code must be non-zero\n${r.output}`);
  if (typeof text === 'string') assert.ok(r.output.includes(text), `expected ${JSON.stringify(text)} in:\n${r.output}`);
  else assert.match(r.output, text);
  assert.doesNotMatch(r.output, STACK_FRAME, 'a config error must not print a stack trace');
  return r;
}

describe('gw check', () => {
  test('a valid file prints "Syntax OK!" and exits 0', async () => {
    const r = await runCli(['check', '-c', writeConfig(valid())]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /Syntax OK!/);
    assert.doesNotMatch(r.output, /ERROR/);
  });

  test('version 2 → unsupported version: 2 (want: 3), exit 1', async () => {
    await expectCheckError(valid({ version: 2 }), 'unsupported version: 2 (want: 3)');
  });

  test('missing version → unsupported version, exit 1', async () => {
    const c: Record<string, unknown> = valid();
    delete c.version;
    await expectCheckError(c, /unsupported version: \d+ \(want: 3\)/);
  });

  test('malformed JSON → ERROR parsing, exit 1', async () => {
    await expectCheckError('{"version": 3, "endpoints": [', /ERROR parsing the configuration file:/);
  });

  test('endpoint with no backend', async () => {
    await expectCheckError(
      valid({ endpoints: [{ endpoint: '/x', backend: [] }] }),
      "ignoring the 'GET /x' endpoint, since it has 0 backends defined!",
    );
  });

  test('endpoint with no backend key at all (method in the message)', async () => {
    await expectCheckError(
      valid({ endpoints: [{ endpoint: '/x', method: 'post' }] }),
      "ignoring the 'POST /x' endpoint, since it has 0 backends defined!",
    );
  });

  for (const p of ['/__health', '/__debug/x', '/__echo/x']) {
    test(`reserved path ${p} is invalid`, async () => {
      await expectCheckError(
        valid({ endpoints: [{ endpoint: p, backend: [be()] }] }),
        `ignoring the 'GET ${p}' endpoint, since it is invalid!!!`,
      );
    });
  }

  test('url_pattern placeholder not declared by the endpoint', async () => {
    await expectCheckError(
      valid({ endpoints: [{ endpoint: '/foo/{a}', backend: [be({ url_pattern: '/bar/{x}' })] }] }),
      "undefined output param 'x'!",
    );
  });

  test('no-op with two backends', async () => {
    await expectCheckError(
      valid({ endpoints: [{ endpoint: '/n', output_encoding: 'no-op', backend: [be(), be({ url_pattern: '/y' })] }] }),
      'can not use NoOp encoding with more than one backends connected to the same endpoint',
    );
  });

  test('invalid host (with a path)', async () => {
    await expectCheckError(
      valid({ endpoints: [{ endpoint: '/h', backend: [be({ host: ['http://a.com/path'] })] }] }),
      'host http://a.com/path not valid: invalid host',
    );
  });

  test('invalid root host (default backend hosts)', async () => {
    const c = valid({ host: ['http://a.com/path'], endpoints: [{ endpoint: '/h', backend: [{ url_pattern: '/x' }] }] });
    await expectCheckError(c, 'host http://a.com/path not valid: invalid host');
  });

  test('schema error: "port": "abc" names the JSON path', async () => {
    const r = await expectCheckError(valid({ port: 'abc' }), /ERROR parsing/);
    assert.match(r.output, /(\/port\b|\.port\b|\["port"\]|'port'|"port")/, r.output);
  });

  test('schema error: endpoint is an object (nothing loose decoding can read as a path) → names endpoints[0].endpoint', async () => {
    const r = await expectCheckError(valid({ endpoints: [{ endpoint: { path: '/x' }, backend: [be()] }] }), /ERROR parsing/);
    assert.match(r.output, /endpoints(\/|\[|\.)0\]?(\/|\.)endpoint/, r.output);
  });

  test('unknown keys: check passes, check --lint reports them', async () => {
    const file = writeConfig(valid({ some_unknown_key: { a: 1 } }));
    const ok = await runCli(['check', '-c', file]);
    assert.equal(ok.code, 0, ok.output);
    assert.match(ok.output, /Syntax OK!/);
    const lint = await runCli(['check', '--lint', '-c', file]);
    assert.equal(lint.code, 1, lint.output);
    assert.match(lint.output, /some_unknown_key/);
    assert.doesNotMatch(lint.output, /Syntax OK!/);
  });

  test('check with a missing file exits 1', async () => {
    const r = await runCli(['check', '-c', '/nonexistent/gw-test-nope.json']);
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, /ERROR parsing the configuration file:/);
  });
});

describe('gw run start-up errors', () => {
  test('version 2 → exits non-zero with the KrakenD text', async () => {
    const r = await expectRunError(valid({ version: 2 }), 'unsupported version: 2 (want: 3)');
    assert.match(r.output, /ERROR parsing the configuration file:/);
  });

  test('endpoint with no backend', async () => {
    await expectRunError(
      valid({ endpoints: [{ endpoint: '/x', backend: [] }] }),
      "ignoring the 'GET /x' endpoint, since it has 0 backends defined!",
    );
  });

  test('reserved path /__health', async () => {
    await expectRunError(
      valid({ endpoints: [{ endpoint: '/__health', backend: [be()] }] }),
      "ignoring the 'GET /__health' endpoint, since it is invalid!!!",
    );
  });

  test('undeclared url_pattern param', async () => {
    await expectRunError(
      valid({ endpoints: [{ endpoint: '/foo/{a}', backend: [be({ url_pattern: '/bar/{x}' })] }] }),
      "undefined output param 'x'!",
    );
  });

  test('no-op with two backends', async () => {
    await expectRunError(
      valid({ endpoints: [{ endpoint: '/n', output_encoding: 'no-op', backend: [be(), be()] }] }),
      'can not use NoOp encoding with more than one backends connected to the same endpoint',
    );
  });

  test('invalid host', async () => {
    await expectRunError(
      valid({ endpoints: [{ endpoint: '/h', backend: [be({ host: ['http://a.com/path'] })] }] }),
      'host http://a.com/path not valid: invalid host',
    );
  });

  test('schema error names the JSON path', async () => {
    await expectRunError(valid({ endpoints: [{ endpoint: { path: '/x' }, backend: [be()] }] }), /endpoints(\/|\[|\.)0\]?(\/|\.)endpoint/);
  });

  test('duplicate path+method → start-up error naming both entries, no crash stack', async () => {
    const c = valid({
      endpoints: [
        { endpoint: '/dup', backend: [be()] },
        { endpoint: '/dup', backend: [be({ url_pattern: '/y' })] },
      ],
    });
    const r = await expectRunError(c, /\/dup/);
    const mentions = r.output.match(/\/dup/g)?.length ?? 0;
    assert.ok(mentions >= 2 || /duplicate/i.test(r.output), `should name both entries or say duplicate:\n${r.output}`);
  });

  test('duplicate path differing only in param name (/a/{id} vs /a/{name}) → start-up error', async () => {
    const c = valid({
      endpoints: [
        { endpoint: '/a/{id}', backend: [be({ url_pattern: '/x/{id}' })] },
        { endpoint: '/a/{name}', backend: [be({ url_pattern: '/y/{name}' })] },
      ],
    });
    await expectRunError(c, /\/a\//);
  });

  test('same path with different methods is fine (not a duplicate)', async () => {
    const gw = await startGateway({
      version: 3,
      endpoints: [
        { endpoint: '/same', method: 'GET', backend: [be()] },
        { endpoint: '/same', method: 'POST', backend: [be()] },
      ],
    });
    after(() => gw.stop('SIGKILL'));
    assert.ok(gw.port > 0);
  });

  test('unknown keys are ignored by run', async () => {
    const gw = await startGateway({ ...valid(), port: undefined, some_unknown_key: { a: 1 } });
    after(() => gw.stop('SIGKILL'));
    assert.ok(gw.port > 0);
  });
});

describe('gw version / usage', () => {
  test('gw version prints a Version: line and exits 0', async () => {
    const r = await runCli(['version']);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /Version:\s*\S+/);
  });

  test('gw run without -c prints the "Please, provide the path" hint', async () => {
    const r = await runCli(['run'], { timeoutMs: 5000 });
    assert.equal(r.timedOut, false);
    assert.match(r.output, /Please, provide the path to the configuration file with --config/);
  });
});
