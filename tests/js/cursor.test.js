// The cursor: de-duplication by id, the ring of recent events, persistence across reloads.
import test from 'node:test';
import assert from 'node:assert/strict';

import { Cursor, isEnvelope, saveSnapshot } from '../../app/static/livefeed-cursor.js';

const env = (id, extra = {}) => ({ id, type: 'validation_created', workflow_id: 'wf_1', ts: '2026-11-25T18:00:00Z', data: {}, ...extra });
const ids = (events) => events.map((e) => e.id);

/** A Storage that refuses values longer than `quota` characters, as a full one does. */
class TinyStorage {
  constructor(quota = Infinity) { this.quota = quota; this.items = new Map(); }
  getItem(k) { return this.items.get(k) ?? null; }
  setItem(k, v) {
    if (v.length > this.quota) throw new DOMException('quota exceeded', 'QuotaExceededError');
    this.items.set(k, v);
  }
}

test('only objects with a positive integer id and a string type are envelopes', () => {
  assert.ok(isEnvelope(env(1)));
  for (const m of [null, 'x', { type: 'heartbeat' }, { id: 0, type: 't' }, { id: 1.5, type: 't' }, { id: '3', type: 't' },
    { id: 2 ** 53, type: 't' }, { id: 3 }]) {
    assert.equal(isEnvelope(m), false, JSON.stringify(m));
  }
});

test('a new cursor has no value, and the first event sets it', () => {
  const c = new Cursor();
  assert.equal(c.value(), null);
  assert.equal(c.accept(env(5)), true);
  assert.equal(c.value(), 5);
  assert.equal(c.lastId, 5);
});

test('an event replayed after a transport switch is a duplicate: each id is delivered once', () => {
  const c = new Cursor();
  const delivered = [];
  const feed = (list) => { for (const e of list) if (c.accept(e)) delivered.push(e.id); };
  feed([env(1), env(2), env(3)]);          // WebSocket, then it drops
  feed([env(2), env(3), env(4), env(5)]);  // SSE resumes from an older cursor (a leader tab's share raced it)
  feed([env(5), env(6)]);                  // back on WebSocket
  assert.deepEqual(delivered, [1, 2, 3, 4, 5, 6]);
  assert.equal(c.value(), 6);
});

test('an out-of-order event older than the cursor is dropped, and the cursor never moves back', () => {
  const c = new Cursor();
  assert.equal(c.accept(env(10)), true);
  assert.equal(c.accept(env(7)), false);
  assert.equal(c.accept(env(10)), false);
  assert.equal(c.accept(env(12)), true);
  assert.equal(c.value(), 12);
});

test('control messages and malformed frames are not accepted and leave the cursor alone', () => {
  const c = new Cursor();
  c.accept(env(3));
  assert.equal(c.accept({ type: 'heartbeat', ts: 'x' }), false);
  assert.equal(c.accept({ id: 9 }), false);
  assert.equal(c.value(), 3);
});

test("the server's newest id at connect becomes the cursor only while nothing is known", () => {
  const c = new Cursor();
  c.startAfter(40);
  assert.equal(c.value(), 40);
  assert.equal(c.lastId, null);
  c.startAfter(50);
  assert.equal(c.value(), 40);
  assert.equal(c.accept(env(12)), true, 'a tail event below the start point is still shown once');
  assert.equal(c.value(), 40);
  c.accept(env(41));
  assert.equal(c.value(), 41);
});

test('reset moves the cursor back to a server whose log is behind, and forgets the ring', () => {
  const c = new Cursor();
  for (let i = 100; i <= 105; i++) c.accept(env(i));
  c.reset(7);
  assert.equal(c.value(), 7);
  assert.equal(c.resetFloor, 7);
  assert.deepEqual(c.missedBy(0, 50).events, []);
  assert.equal(c.accept(env(8)), true);
  assert.equal(c.value(), 8);
});

test('a tab asking what it missed gets the newer events, and complete only when the ring reaches back that far', () => {
  const c = new Cursor({ ring: 10 });
  for (let i = 1; i <= 100; i++) c.accept(env(i));
  const far = c.missedBy(20, 50);
  assert.equal(far.complete, false);
  const near = c.missedBy(95, 50);
  assert.deepEqual(ids(near.events), [96, 97, 98, 99, 100]);
  assert.equal(near.complete, true);
  assert.deepEqual(ids(c.missedBy(null, 3).events), [98, 99, 100], 'no cursor: the newest `tail`');
  assert.ok(c.missedBy(null, 100).events.length <= 60, 'the ring stays bounded');
});

test('a snapshot restores the cursor and the recent events after a reload', () => {
  const before = new Cursor();
  for (let i = 1; i <= 5; i++) before.accept(env(i, { data: { n: i } }));
  const text = before.snapshot({ keep: 200, budget: 100000 });
  const after = new Cursor();
  const restored = after.restore(text);
  assert.deepEqual(restored.map((e) => e.data.n), [1, 2, 3, 4, 5]);
  assert.equal(after.value(), 5);
  assert.equal(after.accept(env(5)), false, 'the live stream replaying the last stored event is a duplicate');
  assert.equal(after.accept(env(6)), true);
  assert.equal(after.missedBy(0, 50).complete, true, 'the stored floor says the ring starts at the first event');
});

test('a snapshot keeps the newest events within its count and size budget, and the cursor even with none of them', () => {
  const c = new Cursor();
  for (let i = 1; i <= 30; i++) c.accept(env(i, { data: { pad: 'x'.repeat(i === 30 ? 5000 : 10) } }));
  const counted = new Cursor();
  counted.restore(c.snapshot({ keep: 4, budget: 100000 }));
  assert.deepEqual(ids(counted.missedBy(0, 50).events), [27, 28, 29, 30]);
  assert.equal(counted.missedBy(26, 50).complete, true);
  assert.equal(counted.missedBy(25, 50).complete, false);
  const small = new Cursor();
  assert.deepEqual(small.restore(c.snapshot({ keep: 200, budget: 1000 })), [], 'the newest event alone is over budget');
  assert.equal(small.value(), 30);
  assert.equal(small.missedBy(29, 50).complete, false);
  assert.equal(small.missedBy(30, 50).complete, true);
});

test('a cursor learnt without events (or reset) is stored and restored too; no cursor, no snapshot', () => {
  assert.equal(new Cursor().snapshot({ keep: 10, budget: 1000 }), null);
  const c = new Cursor();
  c.startAfter(99);
  const back = new Cursor();
  assert.deepEqual(back.restore(c.snapshot({ keep: 10, budget: 1000 })), []);
  assert.equal(back.value(), 99);
  assert.equal(back.accept(env(99)), true, 'nothing was delivered at 99, so it is not a duplicate');
});

test('a stored cursor beyond the stored events (they were trimmed) still wins', () => {
  const c = new Cursor();
  const restored = c.restore(JSON.stringify({ v: 1, lastId: 500, floor: 10, recent: [env(11), env(12)] }));
  assert.deepEqual(ids(restored), [11, 12]);
  assert.equal(c.value(), 500);
});

test('garbage in storage restores nothing and leaves the cursor empty', () => {
  for (const text of [null, '', '{', 'null', '[]', '{"lastId":"abc"}', '{"lastId":-1}', '{"lastId":"12345678901234567890"}']) {
    const c = new Cursor();
    assert.equal(c.restore(text), null, String(text));
    assert.equal(c.value(), null);
  }
  const c = new Cursor();
  assert.deepEqual(ids(c.restore('{"lastId":"8","recent":[{"id":3},{"id":4,"type":"t"},"x"]}')), [4]);
  assert.equal(c.value(), 8);
});

test('a full storage gets a smaller snapshot instead of none', () => {
  const c = new Cursor();
  for (let i = 1; i <= 200; i++) c.accept(env(i, { data: { pad: 'y'.repeat(100) } }));
  const storage = new TinyStorage(4000);
  assert.equal(saveSnapshot(storage, 'k', c, { keep: 200, budget: 1500000 }), true);
  const back = new Cursor();
  const restored = back.restore(storage.getItem('k'));
  assert.ok(restored.length > 0 && restored.length < 200, `${restored.length} events stored`);
  assert.equal(restored.at(-1).id, 200);
  assert.equal(back.value(), 200);
  assert.equal(saveSnapshot(new TinyStorage(10), 'k', c, { keep: 200, budget: 1500000 }), false);
});
