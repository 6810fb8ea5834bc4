/**
 * livefeed-sse-parser.js — text/event-stream, parsed as the WHATWG HTML standard
 * says ("event stream interpretation"), incrementally, chunk by chunk.
 *
 * The client reads SSE with fetch() rather than EventSource (see
 * livefeed-client.js), so it needs its own parser: lines end in CR, LF or
 * CRLF (a CR ends its line at once; an LF right after it, even in the next
 * chunk, belongs to it), a leading BOM is dropped, `id` with a NUL is
 * ignored, `retry` only takes digits.
 */

const LF = 10;
const CR = 13;
const COLON = 58;
const SPACE = 32;

/** Incremental parser for text/event-stream (WHATWG HTML "event stream interpretation"). */
export class SseParser {
  constructor() {
    this._buf = '';
    this._data = [];
    this._event = '';
    this._first = true;
    this._afterCr = false; // the last line ended in CR: a leading LF is its second half
    this.lastEventId = '';
    this.retry = null;
  }

  /** Feed decoded text; returns the events completed by it: [{event, data, id}]. */
  push(text) {
    if (this._first && text.length) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this._first = false;
    }
    const buf = this._buf + text;
    const out = [];
    let start = 0;
    if (this._afterCr && buf.length) {
      if (buf.charCodeAt(0) === LF) start = 1;
      this._afterCr = false;
    }
    for (let i = start; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c !== LF && c !== CR) continue;
      this._line(buf.slice(start, i), out);
      if (c === CR) {
        if (i + 1 === buf.length) this._afterCr = true;
        else if (buf.charCodeAt(i + 1) === LF) i++;
      }
      start = i + 1;
    }
    this._buf = buf.slice(start);
    return out;
  }

  _line(line, out) {
    if (line === '') {
      if (this._data.length) {
        out.push({ event: this._event || 'message', data: this._data.join('\n'), id: this.lastEventId });
      }
      this._data = [];
      this._event = '';
      return;
    }
    if (line.charCodeAt(0) === COLON) return; // a comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === SPACE) value = value.slice(1);
    if (field === 'data') this._data.push(value);
    else if (field === 'event') this._event = value;
    else if (field === 'id') { if (!value.includes('\0')) this.lastEventId = value; }
    else if (field === 'retry') { if (/^\d+$/.test(value)) this.retry = Number(value); }
  }
}
