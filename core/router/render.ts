/**
 * Output encodings of decoding endpoints (lura's router/gin/render.go + CE's xml/yaml renders),
 * compiled once per endpoint into one function: merged data (+ the client's Accept, for
 * `negotiate`) → Content-Type and body.
 */
import YAML from 'yaml';
import type { EndpointConfig } from '../config/types.js';
import { goJson, goJsonView } from './json.js';

type Obj = Record<string, unknown>;

export interface Rendered {
  readonly contentType: string;
  /**
   * JSON comes as UTF-8 bytes, a view of goJson's scratch buffer (goJsonView): write it before
   * anything else renders JSON. The other encodings come as text.
   */
  readonly body: string | Buffer;
}

export type Render = (data: Obj, accept: string) => Rendered;

export interface CompiledRender {
  readonly render: Render;
  /** True when the render reads the Accept header (`negotiate`). */
  readonly needsAccept: boolean;
}

export const APPLICATION_JSON = 'application/json; charset=utf-8';
export const TEXT_PLAIN = 'text/plain; charset=utf-8';
export const APPLICATION_XML = 'application/xml';
export const APPLICATION_YAML = 'application/x-yaml; charset=utf-8';

const renderJson: Render = (data) => ({ contentType: APPLICATION_JSON, body: goJsonView(data) });

const renderCollection: Render = (data) => ({
  contentType: APPLICATION_JSON,
  body: Array.isArray(data.collection) ? goJsonView(data.collection) : '[]',
});

const renderString: Render = (data) => {
  const c = data.content;
  return { contentType: TEXT_PLAIN, body: typeof c === 'string' ? c : c === undefined ? '' : goJson(c) };
};

const renderXml: Render = (data) => ({ contentType: APPLICATION_XML, body: toXml(data) });

const renderYaml: Render = (data) => ({ contentType: APPLICATION_YAML, body: toYaml(data) });

// ---- negotiate (gin's NegotiateFormat over JSON, text/plain, XML, YAML) ----

const OFFERED = ['application/json', 'text/plain', 'application/xml', 'application/x-yaml'] as const;
const BY_OFFER: Render[] = [renderJson, renderYaml, renderXml, renderYaml];

/** Index into OFFERED, as gin picks it: Accept entries in order, prefix/`*` matching, no q-values. */
export function negotiate(accept: string): number {
  if (accept === '') return 0;
  for (const part of accept.split(',')) {
    let a = part;
    const semi = a.indexOf(';');
    if (semi !== -1) a = a.slice(0, semi);
    a = a.trim();
    if (a === '') continue;
    for (let o = 0; o < OFFERED.length; o++) {
      const offer = OFFERED[o]!;
      let i = 0;
      for (; i < a.length && i < offer.length; i++) {
        if (a[i] === '*' || offer[i] === '*') return o;
        if (a[i] !== offer[i]) break;
      }
      if (i === a.length) return o;
    }
  }
  return 0;
}

const renderNegotiated: Render = (data, accept) => BY_OFFER[negotiate(accept)]!(data, accept);

export function compileRender(ep: EndpointConfig): CompiledRender {
  switch (ep.outputEncoding) {
    case 'string':
      return { render: renderString, needsAccept: false };
    case 'json-collection':
      return { render: renderCollection, needsAccept: false };
    case 'xml':
      return { render: renderXml, needsAccept: false };
    case 'yaml':
      return { render: renderYaml, needsAccept: false };
    case 'negotiate':
      return { render: renderNegotiated, needsAccept: true };
    default:
      return { render: renderJson, needsAccept: false };
  }
}

// ---- YAML (yaml.v3 style: 4-space indent, sorted keys) ----

function toYaml(data: Obj): string {
  return YAML.stringify(plain(data), { indent: 4, sortMapEntries: true, lineWidth: 0 });
}

/** Copies null-prototype objects into plain ones (own `__proto__` keys kept as data). */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v !== 'object' || v === null) return v;
  const m = new Map<string, unknown>();
  for (const k of Object.keys(v)) m.set(k, plain((v as Obj)[k]));
  return m;
}

// ---- XML (clbanning/mxj's Map.Xml: one key → that root tag, else <doc>) ----

const NAME_START = /[A-Za-z_:]/;
const NAME_BAD = /[^A-Za-z0-9_:.\-]/g;

function tagName(k: string): string {
  let n = k.replace(NAME_BAD, '_');
  if (n === '' || !NAME_START.test(n[0]!)) n = '_' + n;
  return n;
}

function escText(s: string): string {
  return s.replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'));
}

function escAttr(s: string): string {
  return s.replace(/[&<>"]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&quot;'));
}

function scalar(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return goJson(v);
  return String(v);
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function element(out: string[], key: string, v: unknown): void {
  if (Array.isArray(v)) {
    for (const item of v) element(out, key, item);
    return;
  }
  const tag = tagName(key);
  if (isObj(v)) {
    const keys = Object.keys(v).sort();
    let attrs = '';
    let text = '';
    const children: string[] = [];
    for (const k of keys) {
      const x = v[k];
      if (k.length > 1 && k[0] === '-') attrs += ` ${tagName(k.slice(1))}="${escAttr(scalar(x))}"`;
      else if (k === '#text') text = escText(scalar(x));
      else element(children, k, x);
    }
    if (text === '' && children.length === 0) out.push(`<${tag}${attrs}/>`);
    else out.push(`<${tag}${attrs}>${text}${children.join('')}</${tag}>`);
    return;
  }
  const s = scalar(v);
  out.push(s === '' ? `<${tag}/>` : `<${tag}>${escText(s)}</${tag}>`);
}

export function toXml(data: Obj): string {
  const keys = Object.keys(data);
  const out: string[] = [];
  if (keys.length === 1 && !Array.isArray(data[keys[0]!])) element(out, keys[0]!, data[keys[0]!]);
  else element(out, 'doc', data);
  return out.join('');
}
