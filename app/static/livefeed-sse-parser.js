/**
 * livefeed-sse-parser.js — text/event-stream, parsed as the WHATWG HTML standard
 * says ("event stream interpretation"), incrementally, chunk by chunk.
 *
 * The client reads SSE with fetch() rather than EventSource (see
 * livefeed-client.js), so it needs its own parser: lines end in CR, LF or
 * CRLF (a CR at the end of a chunk may be half of a CRLF), a leading BOM is
 * dropped, `id` with a NUL is ignored, `retry` only takes digits.
 */

/** Incremental parser for text/event-stream (WHATWG HTML "event stream interpretation"). */
export class SseParser {
  constructor() {
    this._buf = '';
    this._data = [];
    this._event = '';
    this._first = true;
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
    for (let i = 0; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      if (c === 13 && i + 1 === buf.length) break; // a CR may be half of CRLF
      const line = buf.slice(start, i);
      if (c === 13 && buf.charCodeAt(i + 1) === 10) i++;
      start = i + 1;
      this._line(line, out);
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
    if (line.charCodeAt(0) === 58) return; // ':' comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') this._data.push(value);
    else if (field === 'event') this._event = value;
    else if (field === 'id') { if (!value.includes('\0')) this.lastEventId = value; }
    else if (field === 'retry') { if (/^\d+$/.test(value)) this.retry = Number(value); }
  }
}
