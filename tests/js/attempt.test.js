// One connection attempt, fed through the sink its transport reports to: replay, control messages, proxy buffering.
import test from 'node:test';
import assert from 'node:assert/strict';

import { Attempt, Pulse } from '../../app/static/livefeed-attempt.js';
import { Ladder } from '../../app/static/livefeed-ladder.js';

const env = (id) => ({ id, type: 'validation_created', workflow_id: 'wf_1', ts: '2026-11-25T18:00:00Z', data: {} });

/** An attempt on `name` whose owner records every call; `seen` is a stand-in for the cursor. */
function attempt(name, { cursor = null, trial = false } = {}) {
  const calls = { delivered: [], control: [], log: [], replay: [], established: 0, down: [], reset: [] };
  const seen = new Set();
  const owner = {
    deliver: (e, source) => {
      if (seen.has(e.id)) return false;
      seen.add(e.id);
      calls.delivered.push([e.id, source]);
      return true;
    },
    control: (msg) => calls.control.push(msg.type),
    log: (line) => calls.log.push(line),
    replay: (detail) => calls.replay.push(detail),
    established: () => { calls.established++; },
    adopt: () => {},
    reset: (latest, after) => calls.reset.push([latest, after]),
    down: (a, info) => calls.down.push(info),
  };
  const config = { url: () => 'http://127.0.0.1:1/', headers: () => ({}), cursor: () => cursor };
  const a = new Attempt(name, { trial, cursor, owner, pulse: new Pulse({ intervalMs: 30000, timeoutMs: null }), config });
  return { a, calls, sink: a.transport.sink };
}

test('a transport is handed only the sink {frame, chunk, down, log} and the config {url, headers, cursor}', () => {
  const { a } = attempt('sse');
  assert.deepEqual(Object.keys(a.transport.sink).sort(), ['chunk', 'down', 'frame', 'log']);
  assert.deepEqual(Object.keys(a.transport.config).sort(), ['cursor', 'headers', 'url']);
});

for (const type of ['stream_error', 'error']) {
  test(`a ${type} control message marks the server's refusal and its delay, which the ladder then honours`, () => {
    const { a, calls, sink } = attempt('websocket');
    sink.frame({ type: 'connection_established', latest_id: 5 });
    sink.frame({ type, error: 'overloaded', detail: 'too many streams', reconnect_after_ms: 4200 });
    assert.deepEqual(calls.control, ['connection_established', type]);
    assert.match(calls.log.at(-1), /server error overloaded — too many streams/);
    sink.down({ code: 1013 });
    assert.equal(calls.down.length, 1);
    const facts = a.facts(calls.down[0]);
    assert.equal(facts.serverError.error, 'overloaded');
    assert.equal(facts.retryAfterMs, 4200);
    const ladder = new Ladder({ transports: ['websocket', 'sse', 'poll'], backoffBaseMs: 500, backoffMaxMs: 15000, upgradeIntervalMs: 60000 });
    assert.deepEqual(ladder.afterDown('websocket', calls.down[0], facts),
      { do: 'retry', delay: 4200, reason: 'WebSocket: server asked to reconnect later (overloaded)' });
  });
}

test('events up to the latest id named at connect are a replay, counted once; later ones are live', () => {
  const { calls, sink } = attempt('websocket', { cursor: 10 });
  sink.frame({ type: 'connection_established', latest_id: 13 });
  for (const id of [11, 12, 12, 13, 14]) sink.frame(env(id));
  assert.deepEqual(calls.delivered, [[11, 'replay'], [12, 'replay'], [13, 'replay'], [14, 'live']]);
  assert.deepEqual(calls.replay, [{ count: 3, after: 10, transport: 'websocket' }]);
});

test('with no cursor nothing counts as a replay, and the stream starts after the newest id (or where a long-poll began)', () => {
  const ws = attempt('websocket');
  ws.sink.frame({ type: 'connection_established', latest_id: 40, resumed_from: null });
  ws.sink.frame(env(38));
  assert.deepEqual(ws.calls.delivered, [[38, 'live']]);
  assert.equal(ws.a.startsAfter, 40);
  const poll = attempt('poll');
  poll.sink.frame({ type: 'connection_established', transport: 'poll', latest_id: null, resumed_from: 950 });
  assert.equal(poll.a.startsAfter, 950);
});

test("a replay_truncated 'ahead' resets to the server's newest id; a retention gap is only logged", () => {
  const { calls, sink } = attempt('sse', { cursor: 900 });
  sink.frame({ type: 'connection_established', latest_id: 3 });
  sink.frame({ type: 'replay_truncated', reason: 'ahead', requested_after: 900, latest_id: 3 });
  sink.frame({ type: 'replay_truncated', reason: 'retention', requested_after: 1, oldest_available: 2 });
  assert.deepEqual(calls.reset, [[3, 900]]);
  assert.match(calls.log.at(-1), /Replay truncated/);
});

test('unknown control messages and non-objects are ignored', () => {
  const { calls, sink } = attempt('websocket');
  for (const m of [{ type: 'from_the_future' }, null, 'text', 42]) sink.frame(m);
  assert.deepEqual(calls.control, []);
  assert.deepEqual(calls.delivered, []);
});

test('SSE heartbeats that arrive together in two chunks mean a buffering proxy: the attempt ends as buffered', () => {
  const { calls, sink } = attempt('sse');
  const hb = (agoMs) => ({ event: 'heartbeat', data: JSON.stringify({ type: 'heartbeat', ts: new Date(Date.now() - agoMs).toISOString() }), id: '' });
  sink.chunk([{ event: 'connection_established', data: '{"type":"connection_established","latest_id":0}', id: '' }]);
  sink.chunk([hb(2000), hb(1000)]);
  assert.equal(calls.down.length, 0, 'one burst can be a busy main thread');
  sink.chunk([hb(0), hb(-1000)]);
  assert.equal(calls.down.length, 1);
  assert.equal(calls.down[0].buffered, true);
  assert.match(calls.down[0].detail, /a proxy is buffering the stream/);
});

test('after the transport reports down once, its late frames and a second down are ignored', () => {
  const { calls, sink } = attempt('websocket');
  sink.frame({ type: 'connection_established', latest_id: 0 });
  sink.down({ code: 1006 });
  sink.frame(env(1));
  sink.down({ code: 1006 });
  assert.equal(calls.down.length, 1);
  assert.deepEqual(calls.delivered, []);
});

test('close() ends an attempt without reporting it down', () => {
  const { a, calls, sink } = attempt('sse');
  a.close();
  sink.down({ ended: true });
  sink.frame(env(1));
  assert.deepEqual(calls.down, []);
  assert.deepEqual(calls.delivered, []);
});
