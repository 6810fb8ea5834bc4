// Channel lists, and the answers to subscribe/unsubscribe on an open WebSocket.
import test from 'node:test';
import assert from 'node:assert/strict';

import {
  ALL_EVENTS_CHANNEL, MAX_CHANNELS, changeMessages, channelKey, channelList, channelPath, covers, sameChannels,
} from '../../app/static/livefeed-channels.js';
import { Subscription } from '../../app/static/livefeed-subscription.js';

test('a channel list is trimmed and de-duplicated in the order given; nothing, or validation_updates in it, means every event', () => {
  assert.deepEqual(channelList(' wf_b, wf_a ,wf_b,,'), ['wf_b', 'wf_a']);
  assert.deepEqual(channelList(['wf_a', 'wf_a']), ['wf_a']);
  for (const input of [undefined, null, '', [], ' , ', ['wf_a', ALL_EVENTS_CHANNEL]]) {
    assert.deepEqual(channelList(input), [ALL_EVENTS_CHANNEL], JSON.stringify(input));
  }
});

test('a malformed name or more than 50 channels is a RangeError that names the problem', () => {
  assert.throws(() => channelList('wf_a,wf b'), /not a channel name: "wf b"/);
  assert.throws(() => channelList(['wf/../x']), /not a channel name/);
  assert.throws(() => channelList(['x'.repeat(129)]), /not a channel name/);
  for (const dots of ['.', '..']) assert.throws(() => channelList(['wf_a', dots]), /not a channel name/);
  assert.deepEqual(channelList('wf.1,...'), ['wf.1', '...']);
  const many = Array.from({ length: MAX_CHANNELS + 1 }, (_, i) => `wf_${i}`);
  assert.throws(() => channelList(many), /51 channels: at most 50/);
  assert.equal(channelList(many.slice(1)).length, 50);
});

test('lists compare, key and match events whatever their order', () => {
  assert.ok(sameChannels(['wf_a', 'wf_b'], ['wf_b', 'wf_a']));
  assert.ok(!sameChannels(['wf_a'], ['wf_a', 'wf_b']));
  assert.ok(!sameChannels(['wf_a', 'wf_c'], ['wf_a', 'wf_b']));
  assert.equal(channelKey(['wf_b', 'wf_a']), channelKey(['wf_a', 'wf_b']));
  assert.equal(channelPath(['wf_a', 'wf:b']), 'wf_a,wf%3Ab');
  const env = (workflow_id) => ({ id: 1, type: 't', workflow_id });
  assert.ok(covers(['wf_a', 'wf_b'], env('wf_b')));
  assert.ok(!covers(['wf_a'], env('wf_b')));
  assert.ok(!covers(['wf_a'], env(null)));
  assert.ok(covers([ALL_EVENTS_CHANNEL], env(null)));
});

test('a change subscribes to what is new before it unsubscribes from what is gone', () => {
  assert.deepEqual(changeMessages(['wf_a', 'wf_b'], ['wf_b', 'wf_c']), [
    { type: 'subscribe', channels: ['wf_c'] },
    { type: 'unsubscribe', channels: ['wf_a'] },
  ]);
  assert.deepEqual(changeMessages([ALL_EVENTS_CHANNEL], ['wf_a']), [
    { type: 'subscribe', channels: ['wf_a'] },
    { type: 'unsubscribe', channels: [ALL_EVENTS_CHANNEL] },
  ]);
  assert.deepEqual(changeMessages(['wf_a'], ['wf_a']), []);
});

test('subscribed answers, in order, end the change at the cursor of the last one', () => {
  const sub = new Subscription(['wf_a', 'wf_b']);
  const messages = sub.change(['wf_b', 'wf_c'], 1000);
  assert.equal(messages.length, 2);
  assert.equal(sub.since, 1000);
  assert.equal(sub.answer({ type: 'heartbeat' }, 1001), null);
  assert.deepEqual(sub.answer({ type: 'subscribed', channels: ['wf_a', 'wf_b', 'wf_c'], cursor: 40 }, 1002), { done: false });
  assert.equal(sub.since, 1002, 'the wait starts again for the next answer');
  assert.deepEqual(sub.answer({ type: 'subscribed', channels: ['wf_b', 'wf_c'], cursor: 42 }, 1003),
    { done: true, channels: ['wf_b', 'wf_c'], cursor: 42, refused: null });
  assert.equal(sub.pending, false);
  assert.equal(sub.since, 0);
  assert.equal(sub.answer({ type: 'subscribed', channels: ['wf_x'], cursor: 50 }, 1004), null, 'nothing was asked');
});

test('a second change before the first is answered is planned from what the server will follow by then', () => {
  const sub = new Subscription(['wf_a']);
  assert.deepEqual(sub.change(['wf_a', 'wf_b'], 0), [{ type: 'subscribe', channels: ['wf_b'] }]);
  assert.deepEqual(sub.change(['wf_b'], 0), [{ type: 'unsubscribe', channels: ['wf_a'] }]);
  assert.deepEqual(sub.answer({ type: 'subscribed', channels: ['wf_a', 'wf_b'], cursor: 7 }, 0), { done: false });
  assert.deepEqual(sub.answer({ type: 'subscribed', channels: ['wf_b'], cursor: 9 }, 0),
    { done: true, channels: ['wf_b'], cursor: 9, refused: null });
});

test('a refused change ends with the list the server kept and the refusal; bad_message means no subscribe at all', () => {
  const sub = new Subscription(['wf_a']);
  sub.change(['wf_a', 'wf_secret'], 0);
  assert.equal(sub.answer({ type: 'stream_error', ref: 'p1', error: 'forbidden', detail: 'a publish' }, 0), null,
    'a refusal with a ref answers a publish, not this');
  assert.deepEqual(sub.answer({ type: 'stream_error', error: 'forbidden', detail: 'not for this token' }, 0),
    { done: true, channels: ['wf_a'], cursor: null, refused: { error: 'forbidden', detail: 'not for this token' } });
  sub.change(['wf_b'], 0);
  assert.deepEqual(sub.answer({ type: 'stream_error', error: 'bad_message', detail: 'the only client message is ping' }, 0),
    { done: true, unsupported: true });
  assert.equal(sub.pending, false);
});

test('the list named by connection_established is what the connection follows', () => {
  const sub = new Subscription(['wf_b', 'wf_a']);
  sub.established(['wf_a', 'wf_b']);
  assert.deepEqual(sub.following, ['wf_a', 'wf_b']);
  sub.established(undefined);
  assert.deepEqual(sub.following, ['wf_a', 'wf_b']);
});
