// The browser client's module layout: small modules, public entry unchanged, every import preloaded by the page.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';

const STATIC = new URL('../../app/static/', import.meta.url);
const TEMPLATE = new URL('../../app/templates/dashboard.html', import.meta.url);
const read = (name) => readFileSync(new URL(name, STATIC), 'utf8');
const modules = readdirSync(STATIC).filter((f) => f.endsWith('.js')).sort();

/** The relative modules `name` imports or re-exports. */
function importsOf(name) {
  return [...read(name).matchAll(/^(?:import|export)\s[^;]*?from\s+'\.\/([\w.-]+\.js)';/gms)].map((m) => m[1]);
}

test('no browser module is over 400 lines', () => {
  for (const name of modules) {
    const lines = read(name).split('\n').length - 1;
    assert.ok(lines <= 400, `${name} has ${lines} lines`);
  }
});

test("no module touches another object's private (underscore) members", () => {
  for (const name of modules) {
    const foreign = read(name).match(/\b(?!this\b)[A-Za-z$][\w$]*\._[A-Za-z]\w*/g);
    assert.equal(foreign, null, `${name}: ${foreign}`);
  }
});

test('the page preloads exactly the modules dashboard.js needs, directly or not', () => {
  const needed = new Set();
  const queue = importsOf('dashboard.js');
  while (queue.length) {
    const name = queue.shift();
    if (needed.has(name)) continue;
    needed.add(name);
    queue.push(...importsOf(name));
  }
  const html = readFileSync(TEMPLATE, 'utf8');
  const preloaded = new Set([...html.match(/{%-? for module in \[([^\]]*)\]/)[1].matchAll(/'([\w.-]+\.js)'/g)].map((m) => m[1]));
  assert.deepEqual([...preloaded].sort(), [...needed].sort());
  for (const name of needed) assert.ok(modules.includes(name), `${name} is imported but missing`);
});

test('the public entry livefeed-client.js keeps its exports', async () => {
  const entry = await import(new URL('livefeed-client.js', STATIC));
  assert.deepEqual(Object.keys(entry).sort(),
    ['ALL_EVENTS_CHANNEL', 'CONTROL_TYPES', 'DEFAULT_OPTIONS', 'FeedEvent', 'LivefeedClient', 'SseParser']);
  assert.ok(entry.CONTROL_TYPES.includes('stream_error') && entry.CONTROL_TYPES.includes('error'));
  const client = new entry.LivefeedClient({ share: false, storage: null, transports: ['sse', 'bogus'] });
  assert.deepEqual(client.options.transports, ['sse']);
  assert.throws(() => new entry.LivefeedClient({ transports: ['toString'] }), /no known transport/);
});
