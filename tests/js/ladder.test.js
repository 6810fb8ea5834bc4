// The transport ladder's policy: fall back, back off with jitter, come back up, say why.
import test from 'node:test';
import assert from 'node:assert/strict';

import { Ladder, STABLE_MS, backoff, spread } from '../../app/static/livefeed-ladder.js';

const OPTIONS = { transports: ['websocket', 'sse', 'poll'], backoffBaseMs: 500, backoffMaxMs: 15000, upgradeIntervalMs: 60000 };
const ladder = (extra = {}) => new Ladder({ ...OPTIONS, ...extra });
/** What a connection that never got `connection_established` had seen. */
const refused = (text = 'WebSocket closed with code 1006') => ({ text, wasLive: false, liveForMs: 0, serverError: null, retryAfterMs: null, retryHint: null });
/** What a connection live for `ms` had seen. */
const wasLive = (ms = 1000, extra = {}) => ({ text: 'dropped', wasLive: true, liveForMs: ms, serverError: null, retryAfterMs: null, retryHint: null, ...extra });
const REACHABLE = { reachable: true, text: 'blocked somewhere' };
const UNREACHABLE = { reachable: false, text: 'the server is unreachable' };
const randoms = [0, 1e-9, 0.25, 0.5, 0.75, 0.999999999];

test('backoff stays between half and all of min(max, base * 2^attempt), for any random draw', () => {
  for (let attempt = 0; attempt < 40; attempt++) {
    const cap = Math.min(15000, 500 * 2 ** attempt);
    for (const r of randoms) {
      const d = backoff(attempt, 500, 15000, () => r);
      assert.ok(d >= cap / 2 && d <= cap, `attempt ${attempt}, random ${r}: ${d}`);
    }
  }
  assert.equal(backoff(0, 500, 15000, () => 0), 250);
  assert.equal(backoff(1e6, 500, 15000, () => 0.999999999), 15000, 'a huge attempt count neither overflows nor passes the max');
});

test('backoff with the real Math.random is jittered: 200 draws are not all the same and never leave the bounds', () => {
  const draws = Array.from({ length: 200 }, () => backoff(3, 500, 15000));
  assert.ok(new Set(draws).size > 20);
  assert.ok(draws.every((d) => d >= 2000 && d <= 4000));
});

test('spread keeps a delay within ±25 %', () => {
  for (const r of randoms) {
    const d = spread(60000, () => r);
    assert.ok(d >= 45000 && d <= 75000, `${d}`);
  }
});

test('each failed try on the same rung doubles the backoff cap, and a fresh backoff starts over', () => {
  const l = ladder({ random: () => 0.999999999 });
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(() => l.nextBackoff()), [500, 1000, 2000, 4000, 8000, 15000, 15000]);
  l.resetBackoff();
  assert.equal(l.nextBackoff(), 500);
});

test('starts on WebSocket; a refused WebSocket with the server reachable falls to SSE, then SSE to long-poll', () => {
  const l = ladder();
  assert.equal(l.transport, 'websocket');
  assert.deepEqual(l.afterDown('websocket', { code: 1006 }, refused()), { do: 'diagnose', text: 'WebSocket closed with code 1006' });
  const down = l.afterDiagnosis('websocket', REACHABLE);
  assert.equal(down.do, 'connect');
  assert.equal(down.transport, 'sse');
  assert.match(down.log, /blocked somewhere — falling back to SSE/);
  assert.equal(l.transport, 'sse');
  assert.equal(l.afterDiagnosis('sse', REACHABLE).transport, 'poll');
  assert.equal(l.transport, 'poll');
});

test('on the last rung a failure backs off and retries the same transport', () => {
  const l = ladder({ transports: ['poll'], random: () => 0 });
  const d = l.afterDiagnosis('poll', REACHABLE);
  assert.deepEqual(d, { do: 'retry', delay: 250, reason: 'blocked somewhere' });
  assert.equal(l.transport, 'poll');
});

test('a stopped server is not a reason to leave WebSocket: back off on the same rung, longer each time', () => {
  const l = ladder({ random: () => 0.999999999 });
  const delays = [];
  for (let i = 0; i < 4; i++) {
    assert.equal(l.afterDown('websocket', { code: 1006 }, refused()).do, 'diagnose');
    const d = l.afterDiagnosis('websocket', UNREACHABLE);
    assert.equal(d.do, 'retry');
    delays.push(d.delay);
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000]);
  assert.equal(l.transport, 'websocket');
  assert.equal(l.afterDiagnosis('websocket', { reachable: true, serverTrouble: true, text: 'HTTP 502' }).do, 'retry');
  assert.equal(l.transport, 'websocket');
});

test('401 and 403, from the transport or from the diagnosis, ask for credentials instead of retrying', () => {
  const l = ladder();
  assert.deepEqual(l.afterDown('sse', { status: 401 }, refused('SSE answered HTTP 401')), { do: 'auth', status: 401, text: 'SSE answered HTTP 401' });
  assert.equal(l.afterDown('sse', { status: 403 }, refused()).do, 'auth');
  assert.deepEqual(l.afterDiagnosis('websocket', { auth: true, status: 401, text: 'WebSocket refused: credentials required' }),
    { do: 'auth', status: 401, text: 'WebSocket refused: credentials required' });
  assert.equal(l.transport, 'websocket');
});

test('a buffering proxy moves down at once, without diagnosis, and that transport is never tried again', () => {
  const l = ladder();
  l.afterDown('websocket', { code: 1006 }, refused());
  l.afterDiagnosis('websocket', REACHABLE);
  const d = l.afterDown('sse', { buffered: true }, wasLive(3000, { text: 'SSE events arrive in bursts' }));
  assert.equal(d.do, 'connect');
  assert.equal(d.transport, 'poll');
  assert.deepEqual(l.upgradeCandidates(), ['websocket'], 'SSE is avoided, WebSocket is still worth a try');
  assert.equal(l.note('poll'), ' (blocked somewhere; SSE events arrive in bursts)');
});

test("the server's own delay wins when it asks to come back later, and the ladder stays on its rung", () => {
  const fixed = () => 0.5;
  const l = ladder({ random: fixed });
  const overloaded = { error: 'overloaded', type: 'stream_error' };
  assert.deepEqual(l.afterDown('websocket', { code: 1013 }, refused()), { do: 'retry', delay: 375, reason: 'WebSocket: server asked to reconnect later (close 1013)' });
  assert.equal(l.afterDown('sse', {}, { ...refused(), serverError: overloaded, retryAfterMs: 7000 }).delay, 7000, 'reconnect_after_ms');
  assert.equal(l.afterDown('sse', { status: 503, retryAfterMs: 9000 }, refused()).delay, 9000, 'Retry-After');
  assert.equal(l.afterDown('sse', {}, { ...refused(), serverError: overloaded, retryHint: 2000 }).delay, 2000, 'the SSE retry: hint, spread');
  assert.equal(l.afterDown('websocket', { code: 1012 }, refused()).delay, 3000, 'service restart: 3 s, spread');
  assert.match(l.afterDown('sse', { status: 429 }, refused()).reason, /HTTP 429/);
  assert.match(l.afterDown('sse', {}, { ...refused(), serverError: { error: 'shutting_down' } }).reason, /shutting_down/);
  assert.equal(l.transport, 'websocket');
});

test('a server error that is not a busy signal is no reason to wait for it: the failure is diagnosed', () => {
  const l = ladder();
  assert.equal(l.afterDown('websocket', { code: 1008 }, { ...refused(), serverError: { error: 'bad_message' } }).do, 'diagnose');
});

test('a live connection that drops is retried on the same rung with backoff, no diagnosis', () => {
  const l = ladder({ random: () => 0 });
  const d = l.afterDown('websocket', { code: 1006 }, wasLive());
  assert.deepEqual(d, { do: 'retry', delay: 250, reason: 'WebSocket connection lost (dropped)' });
  assert.equal(l.transport, 'websocket');
});

test('a live connection that goes silent is retried once; silent twice in a row, the transport is diagnosed', () => {
  const l = ladder();
  const silent = { silent: true };
  assert.equal(l.afterDown('websocket', silent, wasLive()).do, 'retry');
  assert.equal(l.afterDown('websocket', silent, wasLive()).do, 'diagnose');
});

test('a stable connection (live over 10 s) resets the backoff and the silence count', () => {
  const l = ladder({ random: () => 0.999999999 });
  for (let i = 0; i < 5; i++) l.nextBackoff();
  l.afterDown('websocket', { silent: true }, wasLive());
  const d = l.afterDown('websocket', { silent: true }, wasLive(STABLE_MS + 1));
  assert.deepEqual(d.do, 'retry', 'the earlier silence no longer counts');
  assert.equal(d.delay, 500, 'the backoff starts over');
});

test('an upgrade is planned only below the top rung, about every upgradeIntervalMs, best transport first', () => {
  const l = ladder({ random: () => 0 });
  assert.equal(l.upgradeDelay(), null);
  assert.deepEqual(l.upgradeCandidates(), []);
  l.fall('websocket', 'refused');
  l.fall('sse', 'refused too');
  assert.equal(l.transport, 'poll');
  assert.equal(l.upgradeDelay(), 45000);
  assert.deepEqual(l.upgradeCandidates(), ['websocket', 'sse']);
  l.adopt('websocket');
  assert.equal(l.transport, 'websocket');
  assert.equal(l.upgradeDelay(), null);
});

test('the reasons for being on a fallback are kept until that transport works again', () => {
  const l = ladder();
  l.fall('websocket', 'WebSocket refused: origin not allowed');
  assert.equal(l.note('sse'), ' (WebSocket refused: origin not allowed)');
  assert.equal(l.note('websocket'), '');
  l.adopt('websocket');
  l.live('websocket');
  assert.equal(l.note('sse'), '');
});

test('restart goes back to the top rung with a fresh backoff', () => {
  const l = ladder({ random: () => 0.999999999 });
  l.fall('websocket', 'x');
  l.nextBackoff();
  l.nextBackoff();
  l.restart();
  assert.equal(l.transport, 'websocket');
  assert.equal(l.nextBackoff(), 500);
});

test('a ladder of fewer transports keeps their order and needs at least one', () => {
  const l = ladder({ transports: ['sse', 'poll'] });
  assert.equal(l.transport, 'sse');
  assert.equal(l.fall('sse', 'x').transport, 'poll');
  assert.throws(() => ladder({ transports: [] }));
});
