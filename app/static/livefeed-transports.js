/**
 * livefeed-transports.js — one object per connection attempt, per transport.
 *
 * WebSocket, SSE (fetch + the spec parser) and JSON long-poll each turn their
 * wire format into the same calls on a sink, so the ladder, cursor and
 * de-duplication logic above them is written once:
 *
 *   sink   = {frame(msg), chunk(events), down(info), log(line)}
 *            frame: one server message (envelope or control), parsed JSON
 *            chunk: the SSE events of one network chunk, [{event, data, id}]
 *            down:  the attempt is over: {detail?, status?, error?, code?,
 *                   closeReason?, opened?, retryAfterMs?, network?, ended?}
 *   config = {url(cursor), headers(accept), cursor()}   (long-poll: url(after, waitS), start(), waitS)
 *
 * A transport object has open(cursor), close(), send(msg), ping() and, for its owner's
 * watchdog, `lastRx` (when bytes last arrived), `httpOk` (SSE answered 200)
 * and `retryHint` (the stream's `retry:` field). After down() or close() it
 * makes no further call on the sink.
 */

import { errorBody, httpRefusal, redact } from './livefeed-endpoints.js';
import { LABELS } from './livefeed-ladder.js';
import { SseParser } from './livefeed-sse-parser.js';

export const now = () => Date.now();

class Transport {
  constructor(name, sink, config) {
    this.name = name;
    this.sink = sink;
    this.config = config;
    this.closed = false;
    this.lastRx = now();
    this.httpOk = false;
    this.retryHint = null;
  }

  /** Connect and run until down() or close(); never rejects. */
  async open(cursor) {
    try {
      await this._run(cursor);
    } catch (err) {
      this.down(err.info ?? { detail: `${LABELS[this.name]}: ${err.message}` });
    }
  }

  /** Report the end once (never after close()). */
  down(info) {
    if (this.closed) return;
    this.closed = true;
    this._teardown();
    this.sink.down(info);
  }

  close() {
    this.closed = true;
    this._teardown();
  }

  /** Send a client message; false where the transport has no way back to the server. */
  send() { return false; }

  ping() { this.send({ type: 'ping' }); }
  _teardown() { /* per transport */ }
}

class WsTransport extends Transport {
  async _run(cursor) {
    const url = await this.config.url(cursor); // may throw (auth / network)
    if (this.closed) return;
    this.sink.log(`WebSocket: opening ${redact(url)}`);
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.down({ detail: `WebSocket could not be created: ${err.message}` });
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => { opened = true; };
    ws.onmessage = (e) => {
      if (this.closed) return;
      this.lastRx = now();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        this.sink.log('WebSocket: ignored a frame that is not JSON');
        return;
      }
      for (const m of Array.isArray(msg) ? msg : [msg]) {
        if (this.closed) return;
        this.sink.frame(m);
      }
    };
    ws.onclose = (e) => this.down({ code: e.code, closeReason: e.reason, opened });
  }

  send(msg) {
    if (this.ws?.readyState !== 1) return false; // OPEN
    try {
      this.ws.send(JSON.stringify(msg));
      return true;
    } catch {
      return false; // closing
    }
  }

  _teardown() {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try { ws.close(1000); } catch { /* already closed */ }
  }
}

class SseTransport extends Transport {
  async _run(cursor) {
    this.abort = new AbortController();
    const url = this.config.url(cursor);
    this.sink.log(`SSE: opening ${redact(url)}`);
    let res;
    try {
      res = await fetch(url, { headers: this.config.headers('text/event-stream'), cache: 'no-store', signal: this.abort.signal });
    } catch (err) {
      this.down({ network: true, detail: `SSE request failed: ${err.message}` });
      return;
    }
    if (this.closed) return;
    if (!res.ok) {
      this.down(httpRefusal('SSE', res, await errorBody(res)));
      return;
    }
    const ctype = res.headers.get('Content-Type') || '';
    if (!ctype.startsWith('text/event-stream') || !res.body) {
      this.down({ status: res.status, detail: `SSE answered ${ctype || 'no content type'}, not an event stream` });
      return;
    }
    this.httpOk = true;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (this.closed) return;
        if (done) break;
        this.lastRx = now();
        const events = parser.push(decoder.decode(value, { stream: true }));
        if (parser.retry !== null) this.retryHint = parser.retry;
        if (events.length) this.sink.chunk(events);
      }
    } catch (err) {
      this.down({ network: true, detail: `SSE stream broke: ${err.message}` });
      return;
    }
    this.down({ ended: true, detail: 'SSE stream ended' });
  }

  _teardown() {
    try { this.abort?.abort(); } catch { /* ignore */ }
  }
}

class PollTransport extends Transport {
  async _run() {
    const { waitS } = this.config;
    let first = true;
    while (!this.closed) {
      let cursor = this.config.cursor();
      if (cursor === null) {
        cursor = await this.config.start();
        if (this.closed) return;
        if (cursor === null) { this.down({ network: true, detail: 'long-poll: /api/stats is unreachable' }); return; }
      }
      const url = this.config.url(cursor, first ? 0 : waitS);
      if (first) this.sink.log(`Long-poll: ${redact(url)}`);
      this.abort = new AbortController();
      const timer = setTimeout(() => this.abort.abort(), (waitS + 15) * 1000);
      const started = now();
      let res;
      let page;
      try {
        res = await fetch(url, { headers: this.config.headers(), cache: 'no-store', signal: this.abort.signal });
        if (res.ok) page = await res.json();
      } catch (err) {
        this.down({ network: true, detail: `long-poll request failed: ${err.message}` });
        return;
      } finally {
        clearTimeout(timer);
      }
      if (this.closed) return;
      if (!res.ok) {
        this.down(httpRefusal('long-poll', res, await errorBody(res)));
        return;
      }
      this.lastRx = now();
      if (first) {
        first = false;
        this.httpOk = true;
        // resumed_from: where this poll starts, the cursor when the client had none
        this.sink.frame({ type: 'connection_established', transport: 'poll', latest_id: null, resumed_from: cursor });
      }
      for (const notice of Array.isArray(page?.notices) ? page.notices : []) this.sink.frame(notice);
      const events = Array.isArray(page?.events) ? page.events : [];
      for (const env of events) {
        if (this.closed) return;
        this.sink.frame(env);
      }
      if (!events.length && !page?.has_more && now() - started < 1000) {
        await new Promise((r) => setTimeout(r, 1000)); // a server that does not hold: no hot loop
      }
    }
  }

  _teardown() {
    try { this.abort?.abort(); } catch { /* ignore */ }
  }
}

const CLASSES = { websocket: WsTransport, sse: SseTransport, poll: PollTransport };

/** The transports this client speaks, best first. */
export const TRANSPORTS = Object.freeze(Object.keys(CLASSES));

/** A transport `name` (one of TRANSPORTS) reporting to `sink`, configured by `config`. */
export function createTransport(name, sink, config) {
  return new CLASSES[name](name, sink, config);
}
