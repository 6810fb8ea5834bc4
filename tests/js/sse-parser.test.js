// The SSE parser against the WHATWG "event stream interpretation" rules.
import test from 'node:test';
import assert from 'node:assert/strict';

import { SseParser } from '../../app/static/livefeed-sse-parser.js';

/** Every event `chunks` produce, fed to one parser in order. */
function parse(...chunks) {
  const parser = new SseParser();
  const out = [];
  for (const chunk of chunks) out.push(...parser.push(chunk));
  return { events: out, parser };
}

const STREAM = '\ufeff: a comment\nretry: 2500\n'
  + 'event: connection_established\ndata: {"type":"connection_established"}\n\n'
  + 'id: 41\r\nevent: validation_created\r\ndata: {"id":41,\r\ndata: "type":"validation_created"}\r\n\r\n'
  + 'id: 42\revent: heartbeat\rdata: {"type":"heartbeat"}\r\r'
  + 'data\n\n'
  + 'id: 4\u00003\ndata: nul\n\n';

test('LF, CRLF and CR all end lines, and a blank line of each kind ends an event', () => {
  const { events } = parse('data: a\n\ndata: b\r\n\r\ndata: c\r\r');
  assert.deepEqual(events.map((e) => e.data), ['a', 'b', 'c']);
});

test('a CR at the end of a chunk ends its line at once, and an LF opening the next chunk is not a blank line', () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push('data: a\r'), []);
  assert.deepEqual(parser.push('\r').map((e) => e.data), ['a']);
  assert.deepEqual(parser.push('data: b\r'), []);
  assert.deepEqual(parser.push('\ndata: c\r\n\r\n').map((e) => e.data), ['b\nc']);
});

test('a leading byte order mark is dropped; a later U+FEFF is kept (here it spoils a field name)', () => {
  assert.deepEqual(parse('\ufeffdata: x\n\n').events.map((e) => e.data), ['x']);
  assert.deepEqual(parse('', '\ufeffdata: x\n\n').events.map((e) => e.data), ['x']);
  assert.deepEqual(parse('data: x\n\n', '\ufeffdata: y\n\n').events.map((e) => e.data), ['x']);
});

test('comment lines are skipped, even between the data lines of one event', () => {
  const { events } = parse(':hello\ndata: a\n: keep-alive\ndata: b\n\n:\n\n');
  assert.deepEqual(events, [{ event: 'message', data: 'a\nb', id: '' }]);
});

test('several data lines join with LF; one leading space is removed from each value', () => {
  const { events } = parse('data:one\ndata:  two\ndata\ndata:\n\n');
  assert.deepEqual(events.map((e) => e.data), ['one\n two\n\n']);
});

test('an event with no data line is not dispatched, and its event name does not leak into the next', () => {
  const { events } = parse('event: lonely\n\ndata: x\n\n');
  assert.deepEqual(events, [{ event: 'message', data: 'x', id: '' }]);
});

test('the event name is kept as sent, including names EventSource reserves', () => {
  const { events } = parse('event: workflow_failed\ndata: 1\n\nevent: stream_error\ndata: 2\n\n');
  assert.deepEqual(events.map((e) => e.event), ['workflow_failed', 'stream_error']);
});

test('retry takes digits only, and the last valid one wins', () => {
  assert.equal(parse('retry: 3000\n').parser.retry, 3000);
  assert.equal(parse('retry: 3000\nretry: 1e3\nretry: -5\nretry:\n').parser.retry, 3000);
  assert.equal(parse('retry: 12a\n').parser.retry, null);
});

test('an id with a NUL is ignored; the last event id carries over to events without an id line', () => {
  const { events, parser } = parse('id: 7\ndata: a\n\nid: 8\u00009\ndata: b\n\ndata: c\n\nid:\ndata: d\n\n');
  assert.deepEqual(events.map((e) => e.id), ['7', '7', '7', '']);
  assert.equal(parser.lastEventId, '');
});

test('unknown fields are ignored and a field with no colon is a field with an empty value', () => {
  const { events } = parse('foo: bar\nevent\ndata: x\n\n');
  assert.deepEqual(events, [{ event: 'message', data: 'x', id: '' }]);
});

test('an event left unfinished when the stream stops is never dispatched', () => {
  assert.deepEqual(parse('data: a\n\ndata: b\n').events.map((e) => e.data), ['a']);
});

test('the same events come out wherever the stream is split into two chunks', () => {
  const whole = parse(STREAM).events;
  assert.equal(whole.length, 5);
  for (let i = 0; i <= STREAM.length; i++) {
    assert.deepEqual(parse(STREAM.slice(0, i), STREAM.slice(i)).events, whole, `split at ${i}`);
  }
});

test('the same events come out when the stream arrives one character at a time, or in three uneven chunks', () => {
  const whole = parse(STREAM).events;
  assert.deepEqual(parse(...STREAM).events, whole);
  for (let i = 0; i < STREAM.length; i += 3) {
    for (let j = i; j <= STREAM.length; j += 5) {
      assert.deepEqual(parse(STREAM.slice(0, i), STREAM.slice(i, j), STREAM.slice(j)).events, whole, `split at ${i}, ${j}`);
    }
  }
});
