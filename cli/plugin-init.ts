/**
 * `gw plugin init <client|server|modifier> <name> [--dir DIR] [--link]`: writes a ready-to-edit
 * plugin and a passing test into a folder (default `./<name>`):
 *
 *   <name>.js                 the plugin: ESM, `// @ts-check` with JSDoc types from `gw/plugin`,
 *                             runnable by plain `node` (no build step) and importing nothing from
 *                             gw at run time (so it loads from any plugin folder)
 *   test/<name>.test.js       node:test tests with `gw/plugin/testing` (in a sub-folder, so that
 *                             the plugin loader, which is not recursive, never imports them)
 *   package.json              "type": "module", `npm test`
 *   README.md                 the extra_config snippet and how to run the test
 *
 * Existing files are never overwritten: if any of them exists, nothing is written. `--link` makes
 * `gw` resolvable from the folder (a `node_modules/gw` symlink to this gw installation), which the
 * test needs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';

export const PLUGIN_KINDS = ['client', 'server', 'modifier'] as const;
export type InitKind = (typeof PLUGIN_KINDS)[number];

/** Lower-case letters, digits, '-', '_', '.'; starts and ends with a letter or digit; at most 64. */
const NAME = /^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$/;

/** Why `name` cannot name a plugin, or null. */
export function pluginNameProblem(name: string): string | null {
  if (NAME.test(name) && !name.includes('..')) return null;
  return (
    `invalid plugin name ${JSON.stringify(name)}: use 1 to 64 lower-case letters, digits, '-', '_' or '.', ` +
    'starting and ending with a letter or digit (it names the folder, the files, the npm package and the config key)'
  );
}

/** The root of the gw package this command runs from (the folder whose package.json is gw's). */
export function gwRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    try {
      if ((JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'gw') return dir;
    } catch {
      /* keep looking */
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the gw package root');
    dir = up;
  }
}

// ---------------------------------------------------------------------------------------------
// Templates. The generated code uses no template literals, so these stay plain to read.
// ---------------------------------------------------------------------------------------------

const HEADER = (name: string, kind: string, what: string) => `// @ts-check
/**
 * ${name}: a gw ${kind} plugin.
 *
${what}
 *
 * The types come from gw's plugin API ('gw/plugin'): an editor checks this file with them
 * ("// @ts-check"). At run time the plugin imports nothing from gw, so it loads from any folder.
 */
`;

function clientPlugin(name: string): string {
  return `${HEADER(
    name,
    'HTTP client',
    ` * A backend uses it with
 *
 *   "extra_config": { "plugin/http-client": { "name": "${name}", "${name}": { "path": "/hello" } } }
 *
 * Calls to the backend path "path" are answered by the plugin itself (hijack: the backend is not
 * called); every other call goes to the backend through gw's client (delegate), with an
 * X-Gw-Plugin header added.`,
  )}
/** @typedef {import('gw/plugin').ClientFactory} ClientFactory */
/** @typedef {import('gw/plugin').ClientRegisterer} ClientRegisterer */
/** @typedef {import('gw/plugin').PluginLogger} PluginLogger */

const NAME = '${name}';

/** @type {PluginLogger | null} */
let logger = null;

/**
 * The plugin's own settings: extra_config["plugin/http-client"]["${name}"].
 * @param {unknown} raw
 * @returns {{ path: string }}
 */
function settings(raw) {
  if (raw === undefined) return { path: '/hello' };
  if (typeof raw !== 'object' || raw === null) throw new Error('"' + NAME + '" must be an object');
  const path = /** @type {Record<string, unknown>} */ (raw).path ?? '/hello';
  if (typeof path !== 'string' || !path.startsWith('/')) throw new Error('"' + NAME + '".path must be a path starting with "/"');
  return { path };
}

/**
 * Called once per backend that names the plugin, at start-up (gw run, gw check): validate the
 * configuration and precompute everything here; a throw stops the gateway with your message.
 * @type {ClientFactory}
 */
const factory = (ctx, extra) => {
  const { path } = settings(extra[NAME]);
  const answer = JSON.stringify({ message: 'hello from ' + NAME });
  ctx.logger.debug('answering', path, 'for', ctx.method, ctx.endpoint);

  // The handler, called for every backend call.
  return async (req, next) => {
    // req.url is the final backend URL (host + url_pattern + query).
    if (new URL(req.url).pathname === path) {
      return { status: 200, headers: { 'Content-Type': 'application/json' }, body: answer };
    }
    // Change the request in place and pass it on. Returning next()'s response untouched keeps
    // its body streaming from the backend to the client (zero-copy).
    req.headers['X-Gw-Plugin'] = NAME;
    return next(req);
  };
};

/** The symbol gw's plugin loader looks for. @type {ClientRegisterer} */
export const ClientRegisterer = {
  name: NAME,
  registerLogger(l) {
    logger = l;
    logger.debug('logger loaded');
  },
  registerClients(register) {
    register(NAME, factory);
  },
};
`;
}

function clientTest(name: string): string {
  return `// @ts-check
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { loadPlugin, response } from 'gw/plugin/testing';

const NAME = '${name}';
const plugin = await loadPlugin(new URL('../${name}.js', import.meta.url));
after(() => plugin.close());

test('registers one client plugin', () => {
  assert.deepEqual(plugin.names('client'), [NAME]);
});

test('answers calls to the configured path itself (hijack)', async () => {
  const client = await plugin.buildClient(NAME, { config: { path: '/hello' } });
  const res = await client.call({ url: 'http://backend.test/hello?x=1' });
  assert.equal(res.delegated, false, 'the backend must not be called');
  assert.equal(res.status, 200);
  assert.deepEqual(await res.body.json(), { message: 'hello from ' + NAME });
});

test('delegates every other call with its header, keeping the body streamed', async () => {
  const client = await plugin.buildClient(NAME, { config: { path: '/hello' } });
  // A fake backend: gets the request the plugin passes on, answers with a streamed body.
  /** @param {import('gw/plugin').BackendRequest} req */
  const next = (req) => response({ status: 201, body: { got: req.headers['X-Gw-Plugin'], url: req.url } });
  const res = await client.call({ url: 'http://backend.test/users/1' }, next);
  assert.equal(res.calls.length, 1);
  assert.equal(res.status, 201);
  assert.equal(res.bodyFromNext, true, 'the backend body is returned untouched');
  assert.deepEqual(await res.body.json(), { got: NAME, url: 'http://backend.test/users/1' });
});

test('refuses a bad configuration at start-up', async () => {
  await assert.rejects(plugin.buildClient(NAME, { config: { path: 'no-slash' } }), /must be a path starting with/);
});
`;
}

function serverPlugin(name: string): string {
  return `${HEADER(
    name,
    'HTTP server',
    ` * The service uses it with (service level, not in an endpoint)
 *
 *   "extra_config": { "plugin/http-server": { "name": ["${name}"], "${name}": { "path": "/__hello" } } }
 *
 * It sees every request before gw's router: requests for "path" are answered by the plugin;
 * every other request goes on to the router (next), and its answer gets an x-gw-plugin header.`,
  )}
/** @typedef {import('gw/plugin').ServerFactory} ServerFactory */
/** @typedef {import('gw/plugin').HandlerRegisterer} HandlerRegisterer */
/** @typedef {import('gw/plugin').PluginLogger} PluginLogger */

const NAME = '${name}';

/** @type {PluginLogger | null} */
let logger = null;

/**
 * The plugin's own settings: extra_config["plugin/http-server"]["${name}"].
 * @param {unknown} raw
 * @returns {{ path: string }}
 */
function settings(raw) {
  if (raw === undefined) return { path: '/__hello' };
  if (typeof raw !== 'object' || raw === null) throw new Error('"' + NAME + '" must be an object');
  const path = /** @type {Record<string, unknown>} */ (raw).path ?? '/__hello';
  if (typeof path !== 'string' || !path.startsWith('/')) throw new Error('"' + NAME + '".path must be a path starting with "/"');
  return { path };
}

/**
 * Called once at start-up with the whole "plugin/http-server" object and the handler this plugin
 * wraps (the router, or the plugin listed before it). A throw stops the gateway with your message.
 * @type {ServerFactory}
 */
const factory = (ctx, extra, next) => {
  const { path } = settings(extra[NAME]);
  const answer = JSON.stringify({ message: 'hello from ' + NAME });
  ctx.logger.debug('answering', path);

  // The handler, called for every client request.
  return async (req) => {
    if (req.path === path) {
      return { status: 200, headers: { 'content-type': 'application/json' }, body: answer };
    }
    // Pass the request on; change the answer's headers but keep its body (it keeps streaming).
    const res = await next(req);
    res.headers['x-gw-plugin'] = NAME;
    return res;
  };
};

/** The symbol gw's plugin loader looks for. @type {HandlerRegisterer} */
export const HandlerRegisterer = {
  name: NAME,
  registerLogger(l) {
    logger = l;
    logger.debug('logger loaded');
  },
  registerHandlers(register) {
    register(NAME, factory);
  },
};
`;
}

function serverTest(name: string): string {
  return `// @ts-check
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { loadPlugin, response } from 'gw/plugin/testing';

const NAME = '${name}';
const plugin = await loadPlugin(new URL('../${name}.js', import.meta.url));
after(() => plugin.close());

// A fake router: what gw would answer without the plugin.
/** @param {import('gw/plugin').ServerRequest} req */
const router = (req) => response({ status: 200, headers: { 'content-type': 'text/plain' }, body: 'router saw ' + req.method + ' ' + req.path });

test('registers one server plugin', () => {
  assert.deepEqual(plugin.names('server'), [NAME]);
});

test('answers its own path (the router is not called)', async () => {
  const server = await plugin.buildServer(NAME, { config: { path: '/__hello' }, next: router });
  const res = await server.call({ path: '/__hello' });
  assert.equal(res.delegated, false);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.body.json(), { message: 'hello from ' + NAME });
});

test('passes every other request to the router and marks the answer', async () => {
  const server = await plugin.buildServer(NAME, { config: { path: '/__hello' }, next: router });
  const res = await server.call({ method: 'POST', path: '/users?page=2', body: 'hi' });
  assert.equal(res.calls.length, 1);
  assert.equal(res.calls[0].query, 'page=2');
  assert.equal(res.headers['x-gw-plugin'], NAME);
  assert.equal(res.bodyFromNext, true, 'the router body is returned untouched');
  assert.equal(await res.body.text(), 'router saw POST /users');
});

test('refuses a bad configuration at start-up', async () => {
  await assert.rejects(plugin.buildServer(NAME, { config: { path: 'no-slash' } }), /must be a path starting with/);
});
`;
}

function modifierPlugin(name: string): string {
  return `${HEADER(
    name,
    'request/response modifier',
    ` * It registers two modifiers: "${name}" (requests) and "${name}-response" (responses). An
 * endpoint or a backend uses them with
 *
 *   "extra_config": { "plugin/req-resp-modifier": {
 *     "name": ["${name}", "${name}-response"],
 *     "${name}": { "require_header": "X-Api-Key" } } }
 *
 * "${name}" refuses requests without the required header (401) and adds X-Gw-Plugin to the
 * others; "${name}-response" adds an x-gw-plugin header to the response.`,
  )}
/** @typedef {import('gw/plugin').ModifierFactory} ModifierFactory */
/** @typedef {import('gw/plugin').ModifierRegisterer} ModifierRegisterer */
/** @typedef {import('gw/plugin').RequestWrapper} RequestWrapper */
/** @typedef {import('gw/plugin').ResponseWrapper} ResponseWrapper */
/** @typedef {import('gw/plugin').PluginLogger} PluginLogger */

const NAME = '${name}';

/** @type {PluginLogger | null} */
let logger = null;

/**
 * Thrown from a modifier, it sets the answer's status: gw reads any error with a numeric
 * statusCode (gw/plugin exports HTTPResponseError, the same shape; this file avoids a run-time
 * import of gw).
 */
class HTTPError extends Error {
  /**
   * @param {string} message
   * @param {number} statusCode
   */
  constructor(message, statusCode) {
    super(message);
    this.statusCode = statusCode;
  }
}

/** Go's canonical header name (x-api-key -> X-Api-Key): request wrappers use those. @param {string} h */
function canonical(h) {
  return h.toLowerCase().replace(/(^|-)([a-z])/g, (_, dash, c) => dash + c.toUpperCase());
}

/**
 * Called once per endpoint/backend listing "${name}", with the whole "plugin/req-resp-modifier"
 * object. Return the modifier (or nothing, to be skipped); a throw stops the gateway.
 * @type {ModifierFactory}
 */
const requestFactory = (extra, ctx) => {
  const raw = /** @type {Record<string, unknown> | undefined} */ (extra[NAME]);
  const required = raw?.require_header;
  if (required !== undefined && typeof required !== 'string') throw new Error('"' + NAME + '".require_header must be a header name');
  const header = required === undefined ? null : canonical(required);
  ctx.logger.debug(ctx.where, header === null ? 'no header required' : 'requiring ' + header);

  /** @param {RequestWrapper} req */
  return (req) => {
    if (header !== null && !req.headers[header]?.length) throw new HTTPError('missing ' + header, 401);
    req.headers['X-Gw-Plugin'] = [NAME];
  };
};

/** @type {ModifierFactory} */
const responseFactory = () => {
  /** @param {ResponseWrapper} res */
  return (res) => {
    res.headers['x-gw-plugin'] = [NAME];
  };
};

/** The symbol gw's plugin loader looks for. @type {ModifierRegisterer} */
export const ModifierRegisterer = {
  name: NAME,
  registerLogger(l) {
    logger = l;
    logger.debug('logger loaded');
  },
  registerModifiers(register) {
    // register(name, factory, appliesToRequest, appliesToResponse): a name registered for both
    // is applied to requests only (as in KrakenD), hence two names.
    register(NAME, requestFactory, true, false);
    register(NAME + '-response', responseFactory, false, true);
  },
};
`;
}

function modifierTest(name: string): string {
  return `// @ts-check
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { loadPlugin } from 'gw/plugin/testing';

const NAME = '${name}';
const plugin = await loadPlugin(new URL('../${name}.js', import.meta.url));
after(() => plugin.close());

test('registers a request and a response modifier', () => {
  assert.deepEqual(plugin.names('modifier'), [NAME, NAME + '-response']);
  assert.equal(plugin.modifiers.get(NAME)?.appliesToRequest, true);
  assert.equal(plugin.modifiers.get(NAME + '-response')?.appliesToResponse, true);
});

test('adds its header to a request carrying the required one', async () => {
  const mod = await plugin.buildModifier(NAME, { config: { require_header: 'x-api-key' } });
  const req = await mod.request({ path: '/users', headers: { 'X-Api-Key': 'k1' } });
  assert.deepEqual(req.headers['X-Gw-Plugin'], [NAME]);
  assert.deepEqual(req.headers['X-Api-Key'], ['k1']);
});

test('refuses a request without the required header with 401', async () => {
  const mod = await plugin.buildModifier(NAME, { config: { require_header: 'x-api-key' } });
  await assert.rejects(mod.request({ path: '/users' }), { statusCode: 401 });
});

test('marks the response', async () => {
  const mod = await plugin.buildModifier(NAME + '-response');
  const res = await mod.response({ statusCode: 200, data: { id: 1 } });
  assert.deepEqual(res.headers['x-gw-plugin'], [NAME]);
  assert.deepEqual(res.data, { id: 1 });
});

test('refuses a bad configuration at start-up', async () => {
  await assert.rejects(plugin.buildModifier(NAME, { config: { require_header: 42 } }), /require_header must be a header name/);
});
`;
}

function packageJson(name: string, kind: InitKind): string {
  return `${JSON.stringify(
    {
      name,
      version: '0.1.0',
      private: true,
      description: `A gw ${kind} plugin`,
      type: 'module',
      main: `${name}.js`,
      scripts: { test: 'node --test' },
      engines: { node: '>=20.18.1' },
    },
    null,
    2,
  )}\n`;
}

const SNIPPET: Record<InitKind, (name: string) => string> = {
  client: (name) => `{
  "version": 3,
  "plugin": { "folder": "./${name}/", "pattern": "${name}.js" },
  "endpoints": [
    {
      "endpoint": "/users/{id}",
      "backend": [
        {
          "host": ["http://backend:8080"],
          "url_pattern": "/users/{id}",
          "extra_config": {
            "plugin/http-client": { "name": "${name}", "${name}": { "path": "/hello" } }
          }
        }
      ]
    }
  ]
}`,
  server: (name) => `{
  "version": 3,
  "plugin": { "folder": "./${name}/", "pattern": "${name}.js" },
  "extra_config": {
    "plugin/http-server": { "name": ["${name}"], "${name}": { "path": "/__hello" } }
  },
  "endpoints": [
    { "endpoint": "/users/{id}", "backend": [{ "host": ["http://backend:8080"], "url_pattern": "/users/{id}" }] }
  ]
}`,
  modifier: (name) => `{
  "version": 3,
  "plugin": { "folder": "./${name}/", "pattern": "${name}.js" },
  "endpoints": [
    {
      "endpoint": "/users/{id}",
      "extra_config": {
        "plugin/req-resp-modifier": {
          "name": ["${name}", "${name}-response"],
          "${name}": { "require_header": "X-Api-Key" }
        }
      },
      "backend": [{ "host": ["http://backend:8080"], "url_pattern": "/users/{id}" }]
    }
  ]
}`,
};

const WHAT: Record<InitKind, string> = {
  client: 'an HTTP client plugin: it replaces gw\'s HTTP client for the backends that name it, and either answers a call itself or passes it on to the backend',
  server: 'an HTTP server plugin: it wraps gw\'s router and sees every client request, answering it itself or passing it on',
  modifier: 'request/response modifier plugins: they change the request before, and the response after, an endpoint\'s or a backend\'s call',
};

const FLAG: Record<InitKind, string> = { client: '-c', server: '-s', modifier: '-m' };

function readme(name: string, kind: InitKind): string {
  return `# ${name}

A gw plugin: ${WHAT[kind]}. Generated by \`gw plugin init ${kind} ${name}\`.

- \`${name}.js\`: the plugin (plain ESM JavaScript, type-checked in your editor through
  \`// @ts-check\` and the \`gw/plugin\` types; no build step).
- \`test/${name}.test.js\`: its tests (\`node:test\` and the \`gw/plugin/testing\` harness).

## Configure it

Point gw's plugin loader at this folder and use the plugin in the configuration:

\`\`\`json
${SNIPPET[kind](name)}
\`\`\`

- \`plugin.folder\` is relative to the directory gw runs in and read non-recursively: the tests in
  \`test/\` are never loaded. \`plugin.pattern\` is a substring of the file names to load.
- Check it before running it: \`gw test-plugin ${FLAG[kind]} ${name}.js\` (can the file be loaded?) and
  \`gw test-plugin --config gw.json\` (does every factory the configuration uses start with its
  settings?), then \`gw check -c gw.json\` and \`gw run -c gw.json\`.

## Test it

The tests import \`gw/plugin/testing\`, so \`gw\` must be resolvable from this folder: create it with
\`gw plugin init --link\`, or run \`npm install --save-dev <path to gw>\` (or \`npm link gw\`) here.

\`\`\`sh
npm test          # node --test
\`\`\`

See gw's docs/plugin-sdk.md for the harness API and docs/plugins.md for the plugin API.
`;
}

export interface InitOptions {
  /** Target folder (default `./<name>`, relative to `cwd`). */
  dir?: string;
  /** Create `<dir>/node_modules/gw` → this gw installation. */
  link?: boolean;
  cwd?: string;
}

export interface InitResult {
  dir: string;
  files: string[];
}

export class InitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InitError';
  }
}

/** Writes the plugin skeleton. Throws {@link InitError} on a bad kind or name, or existing files. */
export function initPlugin(kind: string, name: string, opts: InitOptions = {}): InitResult {
  if (!(PLUGIN_KINDS as readonly string[]).includes(kind)) {
    throw new InitError(`unknown plugin kind ${JSON.stringify(kind)}: use one of ${PLUGIN_KINDS.join(', ')}`);
  }
  const k = kind as InitKind;
  const problem = pluginNameProblem(name);
  if (problem !== null) throw new InitError(problem);
  const cwd = opts.cwd ?? process.cwd();
  const dir = path.resolve(cwd, opts.dir ?? name);
  const plugin = k === 'client' ? clientPlugin(name) : k === 'server' ? serverPlugin(name) : modifierPlugin(name);
  const test = k === 'client' ? clientTest(name) : k === 'server' ? serverTest(name) : modifierTest(name);
  const files: Array<[string, string]> = [
    [`${name}.js`, plugin],
    [path.join('test', `${name}.test.js`), test],
    ['package.json', packageJson(name, k)],
    ['README.md', readme(name, k)],
  ];
  const existing = files.map(([f]) => f).filter((f) => fs.existsSync(path.join(dir, f)));
  if (opts.link && fs.existsSync(path.join(dir, 'node_modules', 'gw'))) existing.push(path.join('node_modules', 'gw'));
  if (existing.length > 0) {
    throw new InitError(`refusing to overwrite ${existing.map((f) => path.join(dir, f)).join(', ')}: choose another folder with --dir`);
  }
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new InitError(`${dir} exists and is not a folder`);
  fs.mkdirSync(path.join(dir, 'test'), { recursive: true });
  for (const [f, text] of files) fs.writeFileSync(path.join(dir, f), text, { flag: 'wx' });
  const written = files.map(([f]) => f);
  if (opts.link) {
    fs.mkdirSync(path.join(dir, 'node_modules'), { recursive: true });
    fs.symlinkSync(gwRoot(), path.join(dir, 'node_modules', 'gw'), 'dir');
    written.push(path.join('node_modules', 'gw'));
  }
  return { dir, files: written };
}

/** Adds `plugin init` to the gw program. */
export function addPluginCommand(program: Command): void {
  const plugin = program.command('plugin').description('Plugin development tools');
  plugin
    .command('init')
    .description('Writes a ready-to-edit plugin with a passing test (node:test + gw/plugin/testing) into a new folder')
    .argument('<kind>', `the plugin kind: ${PLUGIN_KINDS.join(' | ')}`)
    .argument('<name>', "the plugin name (lower-case letters, digits, '-', '_', '.'): the name configurations use")
    .option('--dir <dir>', 'the folder to write into (default: ./<name>); existing files are never overwritten')
    .option('--link', 'make gw resolvable from the folder (node_modules/gw -> this gw), so that npm test runs right away')
    .action((kind: string, name: string, flags: { dir?: string; link?: boolean }) => {
      let r: InitResult;
      try {
        r = initPlugin(kind, name, { dir: flags.dir, link: flags.link });
      } catch (e) {
        console.error(`ERROR: ${(e as Error).message}`);
        process.exitCode = 1;
        return;
      }
      const rel = path.relative(process.cwd(), r.dir) || '.';
      console.log(`Created the ${kind} plugin '${name}' in ${rel}:`);
      for (const f of r.files) console.log(`  ${path.join(rel, f)}`);
      console.log('');
      console.log('Next:');
      console.log(`  cd ${rel}`);
      if (!flags.link) console.log('  npm install --save-dev <path to gw>   # or rerun with --link: the test imports gw/plugin/testing');
      console.log('  npm test');
      console.log(`  gw test-plugin ${FLAG[kind as InitKind]} ${name}.js`);
      console.log('See README.md for the configuration snippet.');
    });
}
