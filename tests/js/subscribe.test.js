// A running LivefeedClient changes its channels: over a live WebSocket by subscribe/unsubscribe on the same
// socket, otherwise by a new connection from the same cursor. The sockets and fetch() are stand-ins that
// record what the client sends; everything above them (client, connector, attempt, transports) is the real code.
import test from 'node:test';
import assert from 'node:assert/strict';

import { LivefeedClient } from '../../app/static/livefeed-client.js';

const BASE = 'http://127.0.0.1:9';
const env = (id, workflow_id) => ({ id, type: 'validation_created', workflow_id, ts: '2026-12-01T10:00:00Z', data: {} });
const tick = () => new Promise((r) => setTimeout(r, 5));

/** A WebSocket stand-in: opens at once, records what the client sends, and lets the test play the server. */
class FakeSocket {
  static opened = [];
  constructor(url) {
    this.url = new URL(url);
    this.sent = [];
    this.readyState = 0;
    FakeSocket.opened.push(this);
    queueMicrotask(() => { this.readyState = 1; this.onopen?.(); });
  }

  send(text) { this.sent.push(JSON.parse(text)); }
  close() { this.readyState = 3; }
  serve(...msgs) { for (const m of msgs) this.onmessage?.({ data: JSON.stringify(m) }); }
}

/** A client on stand-in sockets, with every event, log line and `channels` event it dispatches. */
async function started(options) {
  FakeSocket.opened = [];
  globalThis.WebSocket = FakeSocket;
  const client = new LivefeedClient({ baseUrl: BASE, share: false, storage: null, ...options });
  const seen = { events: [], channels: [], log: [] };
  client.addEventListener('event', (e) => seen.events.push(e.detail.id));
  client.addEventListener('channels', (e) => seen.channels.push(e.detail));
  client.addEventListener('log', (e) => seen.log.push(e.detail));
  client.start();
  await tick();
  return { client, seen };
}

test('over a live WebSocket, channels are added and removed on the same socket, from the cursor the server names', async (t) => {
  const { client, seen } = await started({ channels: ['wf_a'], tail: 0 });
  t.after(() => client.stop());
  const [ws] = FakeSocket.opened;
  assert.equal(ws.url.pathname, '/ws/wf_a');
  ws.serve({ type: 'connection_established', transport: 'websocket', latest_id: 10, channels: ['wf_a'] }, env(11, 'wf_a'));

  assert.deepEqual(client.setChannels('wf_a,wf_b'), ['wf_a', 'wf_b']);
  assert.deepEqual(ws.sent, [{ type: 'subscribe', channels: ['wf_b'] }]);
  assert.deepEqual(seen.channels, [], 'applied only once the server answers');
  ws.serve({ type: 'subscribed', channels: ['wf_a', 'wf_b'], cursor: 11 }, env(12, 'wf_b'));
  assert.deepEqual(seen.channels, [{ channels: ['wf_a', 'wf_b'], cursor: 11, via: 'subscribe', refused: null }]);

  client.setChannels(['wf_b']);
  assert.deepEqual(ws.sent.at(-1), { type: 'unsubscribe', channels: ['wf_a'] });
  ws.serve({ type: 'subscribed', channels: ['wf_b'], cursor: 12 }, env(13, 'wf_b'));
  assert.equal(seen.channels.length, 2);
  assert.deepEqual(seen.events, [11, 12, 13]);
  assert.equal(FakeSocket.opened.length, 1, 'no second connection');
  assert.equal(client.status.state, 'live');
});

test('a server that knows no subscribe answers bad_message: the client reconnects with the new list from its cursor', async (t) => {
  const { client, seen } = await started({ channels: ['wf_a'], tail: 0 });
  t.after(() => client.stop());
  const [ws] = FakeSocket.opened;
  ws.serve({ type: 'connection_established', latest_id: 10 }, env(11, 'wf_a'));
  client.setChannels(['wf_a', 'wf_b']);
  ws.serve({ type: 'stream_error', error: 'bad_message', detail: 'the only client message is {"type":"ping"}' });
  await tick();
  assert.equal(FakeSocket.opened.length, 2);
  const next = FakeSocket.opened[1];
  assert.equal(next.url.pathname, '/ws/wf_a,wf_b');
  assert.equal(next.url.searchParams.get('last_event_id'), '11');
  assert.equal(ws.readyState, 3, 'the old socket is closed');
  assert.deepEqual(seen.channels, [{ channels: ['wf_a', 'wf_b'], cursor: 11, via: 'reconnect', refused: null }]);
  next.serve({ type: 'connection_established', latest_id: 12 }, env(11, 'wf_a'), env(12, 'wf_b'));
  assert.deepEqual(seen.events, [11, 12], 'the replay after the switch brings nothing twice');
});

test('a refused subscribe leaves the client on the list the server kept, and says why', async (t) => {
  const { client, seen } = await started({ channels: ['wf_a'], tail: 0 });
  t.after(() => client.stop());
  const [ws] = FakeSocket.opened;
  ws.serve({ type: 'connection_established', latest_id: 3 });
  client.setChannels(['wf_a', 'wf_secret']);
  ws.serve({ type: 'stream_error', error: 'forbidden', detail: 'the token does not cover wf_secret' });
  assert.deepEqual(client.channels, ['wf_a']);
  assert.deepEqual(seen.channels, [{ channels: ['wf_a'], cursor: null, via: 'subscribe',
    refused: { error: 'forbidden', detail: 'the token does not cover wf_secret' } }]);
  assert.equal(FakeSocket.opened.length, 1);
  assert.ok(seen.log.some((line) => /refused a channel change: forbidden/.test(line)));
});

test('a subscribe left unanswered is given up after connectTimeoutMs: a new connection carries the list', async (t) => {
  const { client, seen } = await started({ channels: ['wf_a'], tail: 0, connectTimeoutMs: 20 });
  t.after(() => client.stop());
  const [ws] = FakeSocket.opened;
  ws.serve({ type: 'connection_established', latest_id: 5 });
  client.setChannels(['wf_c']);
  await new Promise((r) => setTimeout(r, 1100)); // the watchdog looks once a second
  assert.equal(FakeSocket.opened.length, 2);
  assert.equal(FakeSocket.opened[1].url.pathname, '/ws/wf_c');
  assert.equal(seen.channels[0].via, 'reconnect');
  assert.ok(seen.log.some((line) => /no answer to subscribe/.test(line)));
});

test('over SSE the client reconnects with the new list and the same cursor', async (t) => {
  const requests = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url, init) => {
    requests.push(new URL(url));
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(
          'event: connection_established\ndata: {"type":"connection_established","latest_id":20}\n\n'
          + `id: 21\nevent: validation_created\ndata: ${JSON.stringify(env(21, 'wf_a'))}\n\n`));
        init.signal.addEventListener('abort', () => controller.error(new Error('aborted')));
      },
    });
    return new Response(body, { headers: { 'Content-Type': 'text/event-stream' } });
  };
  t.after(() => { globalThis.fetch = realFetch; });
  const { client, seen } = await started({ channels: ['wf_a'], transports: ['sse'], tail: 0 });
  t.after(() => client.stop());
  assert.equal(requests[0].pathname, '/sse/wf_a');
  client.setChannels(['wf_a', 'wf_b']);
  await tick();
  assert.equal(requests.length, 2);
  assert.equal(requests[1].pathname, '/sse/wf_a,wf_b');
  assert.equal(requests[1].searchParams.get('last_event_id'), '21');
  assert.deepEqual(seen.channels, [{ channels: ['wf_a', 'wf_b'], cursor: 21, via: 'reconnect', refused: null }]);
});

test('history reads the added channels from the log: since a moment, up to the cursor, oldest first', async (t) => {
  const asked = [];
  const realFetch = globalThis.fetch;
  const log = Array.from({ length: 2500 }, (_, i) => env(i + 1, 'wf_b'));
  globalThis.fetch = async (url) => {
    const u = new URL(url);
    asked.push(u);
    const after = Number(u.searchParams.get('after'));
    const events = log.filter((e) => e.id > after).slice(0, Number(u.searchParams.get('limit')));
    return new Response(JSON.stringify({ events, has_more: events.length > 0 && events.at(-1).id < log.length }));
  };
  t.after(() => { globalThis.fetch = realFetch; });
  const client = new LivefeedClient({ baseUrl: BASE, share: false, storage: null, channels: ['wf_a'] });
  const all = await client.history(['wf_b'], { through: 1500, sinceMs: 60000 });
  assert.equal(all.complete, true);
  assert.deepEqual([all.events[0].id, all.events.at(-1).id, all.events.length], [1, 1500, 1500]);
  assert.equal(asked[0].searchParams.get('workflow_id'), 'wf_b');
  assert.ok(Math.abs(Date.parse(asked[0].searchParams.get('since')) - (Date.now() - 60000)) < 5000);
  const capped = await client.history(['wf_b'], { through: 2500, sinceMs: 60000, pages: 2 });
  assert.equal(capped.complete, false, 'more than two pages: the newest page is read and the gap is said');
  assert.deepEqual([capped.events[999].id, capped.events[1000].id, capped.events.at(-1).id], [1000, 1501, 2500]);
});
