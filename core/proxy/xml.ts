/**
 * Backend decoders for `xml` (krakend-xml: clbanning/mxj's map shape) and `rss` (krakend-rss:
 * a gofeed feed flattened into a map), on fast-xml-parser.
 *
 * mxj's shape: the root element is the single top-level key; attributes are `-name`; an
 * element with only text is that text (a string: values are not cast); the text of an element
 * that also has attributes or children is `#text`; an empty element is ""; repeated siblings
 * become an array; namespace prefixes are dropped. fast-xml-parser with the options below gives
 * the same map. It rejects element or attribute names such as `__proto__` (a decode error for
 * the backend), and its objects are then copied into null-prototype objects.
 */
import { XMLParser } from 'fast-xml-parser';

type Obj = Record<string, unknown>;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '-',
  textNodeName: '#text',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  removeNSPrefix: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
  processEntities: true,
  htmlEntities: false,
  commentPropName: false,
  cdataPropName: false,
});

function nullProto(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(nullProto);
  if (typeof v !== 'object' || v === null) return v;
  const out: Obj = Object.create(null);
  for (const k of Object.keys(v)) out[k] = nullProto((v as Obj)[k]);
  return out;
}

function parse(buf: Buffer): Obj {
  const text = buf.toString('utf8');
  if (text.trim() === '') throw new Error('EOF');
  const v = parser.parse(text, true) as unknown;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('xml: no root element');
  const o = nullProto(v) as Obj;
  // mxj keeps the first root element only.
  const keys = Object.keys(o);
  if (keys.length === 0) throw new Error('xml: no root element');
  return o;
}

export function decodeXml(buf: Buffer, isCollection: boolean): Obj {
  const o = parse(buf);
  if (!isCollection) return o;
  const out: Obj = Object.create(null);
  const root = o[Object.keys(o)[0]!];
  out.collection = Array.isArray(root) ? root : [root];
  return out;
}

// ---- rss ----

function text(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return text(v[0]);
  if (typeof v === 'object') {
    const t = (v as Obj)['#text'];
    if (typeof t === 'string') return t;
    const href = (v as Obj)['-href'];
    if (typeof href === 'string') return href;
  }
  return String(v);
}

function list(v: unknown): unknown[] {
  if (v === undefined || v === null || v === '') return [];
  return Array.isArray(v) ? v : [v];
}

function put(o: Obj, k: string, v: unknown): void {
  // gofeed's JSON tags are omitempty for most fields.
  if (v === '' || v === undefined || v === null) return;
  if (Array.isArray(v) && v.length === 0) return;
  o[k] = v;
}

function rssItem(it: Obj): Obj {
  const o: Obj = Object.create(null);
  put(o, 'title', text(it.title));
  put(o, 'description', text(it.description));
  put(o, 'content', text(it.encoded));
  put(o, 'link', text(it.link));
  put(o, 'links', list(it.link).map(text).filter(Boolean));
  put(o, 'published', text(it.pubDate ?? it.date));
  put(o, 'guid', text(it.guid));
  put(o, 'categories', list(it.category).map(text).filter(Boolean));
  const author = text(it.author ?? it.creator);
  if (author) o.author = { name: author };
  return o;
}

function atomEntry(it: Obj): Obj {
  const o: Obj = Object.create(null);
  put(o, 'title', text(it.title));
  put(o, 'description', text(it.summary));
  put(o, 'content', text(it.content));
  const links = list(it.link).map(text).filter(Boolean);
  put(o, 'link', links[0]);
  put(o, 'links', links);
  put(o, 'updated', text(it.updated));
  put(o, 'published', text(it.published));
  put(o, 'guid', text(it.id));
  const author = list(it.author)[0] as Obj | undefined;
  if (author && typeof author === 'object' && text(author.name)) o.author = { name: text(author.name) };
  return o;
}

/** krakend-rss: the feed as a map (title, description, link, items, …). */
export function decodeRss(buf: Buffer): Obj {
  const doc = parse(buf);
  const out: Obj = Object.create(null);
  if (isObj(doc.rss) || isObj(doc.RDF)) {
    const root = (doc.rss ?? doc.RDF) as Obj;
    const ch = (isObj(root.channel) ? root.channel : Array.isArray(root.channel) ? root.channel[0] : {}) as Obj;
    put(out, 'title', text(ch.title));
    put(out, 'description', text(ch.description));
    put(out, 'link', text(ch.link));
    put(out, 'links', list(ch.link).map(text).filter(Boolean));
    put(out, 'language', text(ch.language));
    put(out, 'copyright', text(ch.copyright));
    put(out, 'updated', text(ch.lastBuildDate));
    put(out, 'published', text(ch.pubDate));
    put(out, 'categories', list(ch.category).map(text).filter(Boolean));
    const img = isObj(ch.image) ? text(ch.image.url) : '';
    put(out, 'img_url', img);
    out.type = 'rss';
    out.version = isObj(doc.rss) ? text((doc.rss as Obj)['-version']) || '2.0' : '1.0';
    out.items = list(ch.item ?? root.item).filter(isObj).map(rssItem);
    return out;
  }
  if (isObj(doc.feed)) {
    const f = doc.feed;
    put(out, 'title', text(f.title));
    put(out, 'description', text(f.subtitle));
    const links = list(f.link).map(text).filter(Boolean);
    put(out, 'link', links[0]);
    put(out, 'links', links);
    put(out, 'updated', text(f.updated));
    put(out, 'copyright', text(f.rights));
    put(out, 'img_url', text(f.logo));
    out.type = 'atom';
    out.version = '1.0';
    out.items = list(f.entry).filter(isObj).map(atomEntry);
    return out;
  }
  throw new Error('Failed to detect feed type');
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
