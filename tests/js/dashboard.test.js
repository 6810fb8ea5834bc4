// The dashboard's own logic that needs no browser: counts per workflow, the selection in the address, the page's stand-ins.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { KNOWN_TYPES } from '../../app/static/dashboard-rows.js';
import { Tally } from '../../app/static/dashboard-tally.js';
import { selectionFromUrl, urlFor } from '../../app/static/dashboard-watch.js';

const NOW = Date.parse('2026-12-01T10:30:30Z');
const at = (minutesAgo) => new Date(NOW - minutesAgo * 60000).toISOString();
const env = (id, workflow_id, type = 'validation_created', minutesAgo = 0) => ({ id, type, workflow_id, ts: at(minutesAgo), data: {} });
const tally = () => new Tally({ windowMinutes: 30, clock: () => NOW });
const minutes = (t) => [...t.view.minutes.values()].reduce((a, b) => a + b, 0);

test('the view sums every workflow: total, by type, and by minute inside the window only', () => {
  const t = tally();
  t.add(env(1, 'wf_a', 'workflow_started', 0));
  t.add(env(2, 'wf_b', 'workflow_started', 1));
  t.add(env(3, null, 'odd.type', 45));
  assert.equal(t.view.total, 3);
  assert.deepEqual(Object.fromEntries(t.view.types), { workflow_started: 2, 'odd.type': 1 });
  assert.equal(minutes(t), 2, 'the 45-minute-old event is counted but not charted');
});

test('a workflow that leaves the selection takes its counts with it', () => {
  const t = tally();
  for (const [id, wf, type] of [[1, 'wf_a', 'a'], [2, 'wf_b', 'b'], [3, 'wf_a', 'b'], [4, null, 'c']]) t.add(env(id, wf, type));
  t.retain((wf) => wf === 'wf_b', false);
  assert.equal(t.view.total, 1);
  assert.deepEqual(Object.fromEntries(t.view.types), { b: 1 });
  assert.equal(minutes(t), 1);
});

test('history is counted only below the lowest id each workflow had counted, so nothing twice', () => {
  const t = tally();
  t.add(env(10, 'wf_a'));
  t.add(env(12, 'wf_a'));
  const counted = t.addHistory([env(3, 'wf_a'), env(5, 'wf_b'), env(7, 'wf_a'), env(10, 'wf_a'), env(11, 'wf_b')]);
  assert.equal(counted, 4, 'wf_a: 3 and 7; wf_b: both (it had none)');
  assert.equal(t.view.total, 6);
  assert.equal(t.addHistory([env(3, 'wf_a'), env(7, 'wf_a')]), 0, 'the same history again adds nothing');
});

test('beyond maxBuckets the least recently seen workflows are merged: still in an every-event view, gone from a narrower one', () => {
  const t = new Tally({ windowMinutes: 30, maxBuckets: 2, clock: () => NOW });
  t.add(env(1, 'wf_a'));
  t.add(env(2, 'wf_b'));
  t.add(env(3, 'wf_a'));
  t.add(env(4, 'wf_c')); // wf_b is the least recently seen
  assert.equal(t.view.total, 4);
  t.retain(() => true, true);
  assert.equal(t.view.total, 4);
  t.retain((wf) => wf === 'wf_a' || wf === 'wf_b', false);
  assert.equal(t.view.total, 2, 'wf_b went to the merged rest, which only every-event views show');
});

test('prune drops minutes that left the window', () => {
  let now = NOW;
  const t = new Tally({ windowMinutes: 30, clock: () => now });
  t.add(env(1, 'wf_a', 'x', 29));
  now += 2 * 60000;
  t.prune();
  assert.equal(minutes(t), 0);
  assert.equal(t.view.total, 1);
});

test('the address holds the selection: commas kept readable, other parameters untouched, none for every event', () => {
  assert.deepEqual(selectionFromUrl('?channel=wf_a,wf_b&transports=sse').channels, ['wf_a', 'wf_b']);
  assert.deepEqual(selectionFromUrl('').channels, ['validation_updates']);
  const bad = selectionFromUrl('?channel=wf_a,not%20one');
  assert.deepEqual(bad.channels, ['validation_updates']);
  assert.match(bad.problem, /not a channel name: "not one"/);
  const href = 'http://h/dashboard/?transports=websocket,sse#x';
  assert.equal(urlFor(['wf_a', 'wf_b'], href), '/dashboard/?transports=websocket,sse&channel=wf_a,wf_b#x');
  assert.equal(urlFor(['validation_updates'], 'http://h/dashboard/?channel=wf_a'), '/dashboard/');
});

test('the page ships a stand-in counter for each known type, in the order the script makes them', () => {
  const html = readFileSync(new URL('../../app/templates/dashboard.html', import.meta.url), 'utf8');
  const list = html.match(/{%-? for type in \[([^\]]*)\]/)[1];
  assert.deepEqual([...list.matchAll(/'([\w.-]+)'/g)].map((m) => m[1]), KNOWN_TYPES);
});
