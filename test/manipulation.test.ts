// Per-backend response manipulation (target → allow/deny → mapping → group, is_collection),
// backend decoders (json, safejson, string, xml, rss; gzip/deflate/br bodies) and output
// encodings (json, json-collection, string, xml, yaml, negotiate) — spec §1.3, §2.1, §2.2.
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { type Backend, type Gateway, h, req, sendJSON, startBackend, startGateway } from './helpers/gw.ts';

let backend: Backend;
let gw: Gateway;

const DOC = {
  data: {
    user: { id: 1, name: 'ann', email: 'a@x', address: { city: 'Bcn', zip: '08001', geo: { lat: 1 } } },
    meta: { page: 1 },
  },
  top: 'level',
};

const XML = `<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<catalog xmlns:x="urn:x" version="2">
  <book id="b1"><title>One &amp; Two</title><x:price>10</x:price></book>
  <book id="b2"><title lang="en">Three</title><empty/></book>
  <note>  padded  </note>
</catalog>`;

const RSS = `<?xml version="1.0"?>
<rss version="2.0"><channel><title>Feed</title><link>http://f/</link><description>D</description>
<item><title>First</title><link>http://f/1</link><guid>g1</guid></item>
<item><title>Second</title><link>http://f/2</link><guid>g2</guid></item>
</channel></rss>`;

before(async () => {
  backend = await startBackend((_req, res, rec) => {
    switch (rec.url) {
      case '/doc':
        return sendJSON(res, 200, DOC);
      case '/array':
        return sendJSON(res, 200, [{ id: 1 }, { id: 2 }]);
      case '/scalar':
        return sendJSON(res, 200, 42);
      case '/text':
        res.writeHead(200, { 'content-type': 'text/plain' });
        return res.end('hello <world>');
      case '/xml':
        res.writeHead(200, { 'content-type': 'application/xml' });
        return res.end(XML);
      case '/bad-xml':
        res.writeHead(200, { 'content-type': 'application/xml' });
        return res.end('<a><b></a>');
      case '/rss':
        res.writeHead(200, { 'content-type': 'application/rss+xml' });
        return res.end(RSS);
      case '/gzip':
      case '/deflate':
      case '/br': {
        const raw = Buffer.from(JSON.stringify({ enc: rec.url.slice(1) }));
        const body = rec.url === '/gzip' ? zlib.gzipSync(raw) : rec.url === '/deflate' ? zlib.deflateSync(raw) : zlib.brotliCompressSync(raw);
        res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': rec.url.slice(1) });
        return res.end(body);
      }
      case '/weird':
        return sendJSON(res, 200, { 'a<b': 'x & y', n: null, list: [1, 2], '-attr': 'v', e: {} });
      default:
        return sendJSON(res, 404, {});
    }
  });
  const host = [backend.url];
  const be = (url_pattern: string, more: Record<string, unknown> = {}) => ({ host, url_pattern, ...more });
  const endpoints = [
    { endpoint: '/target', backend: [be('/doc', { target: 'data.user' })] },
    { endpoint: '/target-missing', backend: [be('/doc', { target: 'data.nope' })] },
    { endpoint: '/target-scalar', backend: [be('/doc', { target: 'top' })] },
    { endpoint: '/allow', backend: [be('/doc', { allow: ['top', 'data.user.name', 'data.user.address.geo', 'data.missing'] })] },
    { endpoint: '/deny', backend: [be('/doc', { deny: ['data.user.address', 'data.meta', 'nope.x'] })] },
    { endpoint: '/allow-deny', backend: [be('/doc', { allow: ['top'], deny: ['top'] })] },
    { endpoint: '/mapping', backend: [be('/doc', { target: 'data.user', mapping: { name: 'fullName', email: 'contact.mail', id: '__proto__' } })] },
    { endpoint: '/order', backend: [be('/doc', { target: 'data', allow: ['user.name', 'meta'], mapping: { user: 'who' }, group: 'g' })] },
    { endpoint: '/collection', backend: [be('/array', { is_collection: true })] },
    { endpoint: '/collection-out', output_encoding: 'json-collection', backend: [be('/array', { is_collection: true })] },
    { endpoint: '/collection-out-missing', output_encoding: 'json-collection', backend: [be('/doc')] },
    { endpoint: '/collection-mapped', backend: [be('/array', { is_collection: true, mapping: { collection: 'items' } })] },
    { endpoint: '/array-json', backend: [be('/array')] },
    { endpoint: '/safe-array', backend: [be('/array', { encoding: 'safejson' })] },
    { endpoint: '/safe-scalar', backend: [be('/scalar', { encoding: 'safejson' })] },
    { endpoint: '/string', backend: [be('/text', { encoding: 'string' })] },
    { endpoint: '/string-out', output_encoding: 'string', backend: [be('/text', { encoding: 'string' })] },
    { endpoint: '/xml', backend: [be('/xml', { encoding: 'xml' })] },
    { endpoint: '/bad-xml', backend: [be('/bad-xml', { encoding: 'xml' })] },
    { endpoint: '/xml-allow', backend: [be('/xml', { encoding: 'xml', target: 'catalog', allow: ['-version', 'note'] })] },
    { endpoint: '/rss', backend: [be('/rss', { encoding: 'rss' })] },
    { endpoint: '/gzip', backend: [be('/gzip', { group: 'g' }), be('/deflate', { group: 'd' }), be('/br', { group: 'b' })] },
    { endpoint: '/xml-out', output_encoding: 'xml', backend: [be('/weird')] },
    { endpoint: '/xml-roundtrip', output_encoding: 'xml', backend: [be('/xml', { encoding: 'xml' })] },
    { endpoint: '/yaml-out', output_encoding: 'yaml', backend: [be('/doc', { target: 'data' })] },
    { endpoint: '/negotiate', output_encoding: 'negotiate', backend: [be('/doc', { target: 'data.meta' })] },
  ];
  gw = await startGateway({ version: 3, endpoints });
});

after(async () => {
  await gw?.stop();
  await backend?.close();
});

async function get(path: string, headers?: Record<string, string>) {
  return req(gw.port, path, { headers });
}

describe('per-backend manipulation', () => {
  test('target picks a nested object; missing or non-object → {}', async () => {
    assert.deepEqual((await get('/target')).json(), DOC.data.user);
    const missing = await get('/target-missing');
    assert.equal(missing.text, '{}');
    assert.equal(h(missing.headers, 'x-krakend-completed'), 'false');
    assert.equal((await get('/target-scalar')).text, '{}');
  });

  test('allow keeps nested dot paths only', async () => {
    assert.deepEqual((await get('/allow')).json(), { top: 'level', data: { user: { name: 'ann', address: { geo: { lat: 1 } } } } });
  });

  test('deny removes nested dot paths', async () => {
    assert.deepEqual((await get('/deny')).json(), { top: 'level', data: { user: { id: 1, name: 'ann', email: 'a@x' } } });
  });

  test('allow wins over deny', async () => {
    assert.deepEqual((await get('/allow-deny')).json(), { top: 'level' });
  });

  test('mapping renames top-level keys (first segment of the new name); __proto__ stays data', async () => {
    const r = await get('/mapping');
    assert.equal(r.text, '{"__proto__":1,"address":{"city":"Bcn","geo":{"lat":1},"zip":"08001"},"contact":"a@x","fullName":"ann"}');
  });

  test('order: target → allow → mapping → group', async () => {
    assert.deepEqual((await get('/order')).json(), { g: { who: { name: 'ann' }, meta: { page: 1 } } });
  });

  test('is_collection wraps the array; json-collection renders it back', async () => {
    assert.deepEqual((await get('/collection')).json(), { collection: [{ id: 1 }, { id: 2 }] });
    const out = await get('/collection-out');
    assert.equal(out.text, '[{"id":1},{"id":2}]');
    assert.equal(h(out.headers, 'content-type'), 'application/json; charset=utf-8');
    assert.equal((await get('/collection-out-missing')).text, '[]');
    assert.deepEqual((await get('/collection-mapped')).json(), { items: [{ id: 1 }, { id: 2 }] });
  });

  test('json without is_collection refuses an array (500)', async () => {
    assert.equal((await get('/array-json')).status, 500);
  });
});

describe('backend decoders', () => {
  test('safejson: arrays → collection, scalars → content', async () => {
    assert.deepEqual((await get('/safe-array')).json(), { collection: [{ id: 1 }, { id: 2 }] });
    assert.deepEqual((await get('/safe-scalar')).json(), { content: 42 });
  });

  test('string: {content}; string output renders it as text/plain', async () => {
    assert.equal((await get('/string')).text, '{"content":"hello \\u003cworld\\u003e"}');
    const out = await get('/string-out');
    assert.equal(out.text, 'hello <world>');
    assert.equal(h(out.headers, 'content-type'), 'text/plain; charset=utf-8');
  });

  test('xml: mxj map shape (-attr, #text, repeated → array, values as strings)', async () => {
    const r = await get('/xml');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), {
      catalog: {
        '-version': '2',
        book: [
          { '-id': 'b1', title: 'One & Two', price: '10' },
          { '-id': 'b2', title: { '-lang': 'en', '#text': 'Three' }, empty: '' },
        ],
        note: 'padded',
      },
    });
    assert.equal((await get('/bad-xml')).status, 500);
    assert.deepEqual((await get('/xml-allow')).json(), { '-version': '2', note: 'padded' });
  });

  test('rss: the feed as a map', async () => {
    const j = (await get('/rss')).json();
    assert.equal(j.title, 'Feed');
    assert.equal(j.description, 'D');
    assert.deepEqual(
      j.items.map((i: { title: string; link: string }) => [i.title, i.link]),
      [['First', 'http://f/1'], ['Second', 'http://f/2']],
    );
  });

  test('gzip, deflate and br bodies are decoded before parsing', async () => {
    const r = await get('/gzip');
    assert.equal(h(r.headers, 'x-krakend-completed'), 'true');
    assert.deepEqual(r.json(), { g: { enc: 'gzip' }, d: { enc: 'deflate' }, b: { enc: 'br' } });
  });
});

describe('output encodings', () => {
  test('xml: <doc> around several keys, -keys as attributes, escaped text, sorted', async () => {
    const r = await get('/xml-out');
    assert.equal(h(r.headers, 'content-type'), 'application/xml');
    assert.equal(r.text, '<doc attr="v"><a_b>x &amp; y</a_b><e/><list>1</list><list>2</list><n/></doc>');
  });

  test('xml: an xml backend renders back to its own document', async () => {
    const r = await get('/xml-roundtrip');
    assert.equal(
      r.text,
      '<catalog version="2"><book id="b1"><price>10</price><title>One &amp; Two</title></book><book id="b2"><empty/><title lang="en">Three</title></book><note>padded</note></catalog>',
    );
  });

  test('yaml: 4-space indent, sorted keys', async () => {
    const r = await get('/yaml-out');
    assert.equal(h(r.headers, 'content-type'), 'application/x-yaml; charset=utf-8');
    assert.equal(
      r.text,
      'meta:\n    page: 1\nuser:\n    address:\n        city: Bcn\n        geo:\n            lat: 1\n        zip: "08001"\n    email: a@x\n    id: 1\n    name: ann\n',
    );
  });

  test('negotiate by Accept', async () => {
    const cases: [string | undefined, string, string][] = [
      [undefined, 'application/json; charset=utf-8', '{"page":1}'],
      ['application/json', 'application/json; charset=utf-8', '{"page":1}'],
      ['application/xml', 'application/xml', '<page>1</page>'],
      ['text/plain', 'application/x-yaml; charset=utf-8', 'page: 1\n'],
      ['application/x-yaml', 'application/x-yaml; charset=utf-8', 'page: 1\n'],
      ['text/html, application/xml;q=0.9', 'application/xml', '<page>1</page>'],
      ['*/*', 'application/json; charset=utf-8', '{"page":1}'],
      ['image/png', 'application/json; charset=utf-8', '{"page":1}'],
    ];
    for (const [accept, ct, body] of cases) {
      const r = await get('/negotiate', accept ? { accept } : undefined);
      assert.equal(h(r.headers, 'content-type'), ct, `Accept: ${accept}`);
      assert.equal(r.text, body, `Accept: ${accept}`);
    }
  });
});
