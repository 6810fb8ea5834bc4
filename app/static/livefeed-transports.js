/**
 * livefeed-transports.js — one object per connection attempt, per transport.
 *
 * WebSocket, SSE (fetch + the spec parser) and JSON long-poll each turn their
 * wire format into the same calls on the client (`_connFrame`, `_sseChunk`,
 * `down(info)`), so the client's ladder, cursor and de-duplication logic is
 * written once. A closed attempt ignores its own late callbacks.
 */

import { SseParser } from './livefeed-sse-parser.js';

export const now = () => Date.now();

export function redact(url) {
  return String(url).replace(/([?&](?:ticket|access_token)=)[^&]*/g, '$1…');
}

export function retryAfterMs(response) {
  const v = response.headers.get('Retry-After');
  if (v && /^\d+$/.test(v)) return Number(v) * 1000;
  return null;
}

export async function errorBody(response) {
  try {
    const text = await response.text();
    try {
      const j = JSON.parse(text);
      if (j && typeof j === 'object') return { error: j.error ?? j.reason ?? null, detail: j.detail ?? null };
    } catch { /* not JSON */ }
    return { error: null, detail: text.slice(0, 200) || null };
  } catch {
    return { error: null, detail: null };
  }
}

class Conn {
  constructor(client, name, trial) {
    this.client = client;
    this.name = name;
    this.trial = trial;
    this.closed = false;
    this.downHandled = false;
    this.established = false;
    this.openedAt = now();
    this.liveAt = 0;
    this.lastRx = now();
    this.pingAt = 0;
    this.pongAt = 0;
    this.retryAfterMs = null;
    this.serverError = null;
    this.latestId = null;
    this.resumedFrom = null;
    this.replayCount = 0;
    this.replayDone = false;
    this.httpOk = false;
  }

  down(info) {
    this.client._connDown(this, info);
  }

  close() {
    this.closed = true;
    this._teardown();
  }

  ping() { /* only WebSocket can */ }
  _teardown() { /* per transport */ }
}

class WsConn extends Conn {
  async open(cursor) {
    const url = await this.client._wsUrl(cursor); // may throw (auth / network)
    if (this.closed) return;
    this.url = url;
    this.client._log(`WebSocket: opening ${redact(url)}`);
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.down({ phase: 'handshake', detail: `WebSocket could not be created: ${err.message}` });
      return;
    }
    this.ws = ws;
    ws.onopen = () => { if (!this.closed) this.opened = true; };
    ws.onmessage = (e) => {
      if (this.closed) return;
      this.lastRx = now();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        this.client._log('WebSocket: ignored a frame that is not JSON');
        return;
      }
      for (const m of Array.isArray(msg) ? msg : [msg]) {
        if (this.closed) return;
        this.client._connFrame(this, m);
      }
    };
    ws.onclose = (e) => {
      if (this.closed) return;
      this.down({
        phase: this.established ? 'live' : 'handshake',
        code: e.code, closeReason: e.reason, opened: !!this.opened,
      });
    };
  }

  ping() {
    try { this.ws?.send('{"type":"ping"}'); } catch { /* closing */ }
  }

  _teardown() {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try { ws.close(1000); } catch { /* already closed */ }
  }
}

class SseConn extends Conn {
  async open(cursor) {
    this.abort = new AbortController();
    const url = this.client._url(`/sse/${encodeURIComponent(this.client.channel)}`, this.client._streamParams(cursor));
    this.url = url;
    this.client._log(`SSE: opening ${redact(url)}`);
    let res;
    try {
      res = await fetch(url, {
        headers: { Accept: 'text/event-stream', ...this.client._authHeaders() },
        cache: 'no-store',
        signal: this.abort.signal,
      });
    } catch (err) {
      if (!this.closed) this.down({ phase: 'handshake', network: true, detail: `SSE request failed: ${err.message}` });
      return;
    }
    if (this.closed) return;
    if (!res.ok) {
      const body = await errorBody(res);
      this.down({
        phase: 'handshake', status: res.status, error: body.error,
        detail: `SSE answered HTTP ${res.status}${body.detail ? `: ${body.detail}` : ''}`,
        retryAfterMs: retryAfterMs(res),
      });
      return;
    }
    const ctype = res.headers.get('Content-Type') || '';
    if (!ctype.startsWith('text/event-stream') || !res.body) {
      this.down({ phase: 'handshake', status: res.status, detail: `SSE answered ${ctype || 'no content type'}, not an event stream` });
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
        if (events.length) this.client._sseChunk(this, events);
      }
    } catch (err) {
      if (!this.closed) {
        this.down({ phase: this.established ? 'live' : 'handshake', network: true, detail: `SSE stream broke: ${err.message}` });
      }
      return;
    }
    if (!this.closed) {
      this.down({ phase: this.established ? 'live' : 'handshake', ended: true, detail: 'SSE stream ended' });
    }
  }

  _teardown() {
    try { this.abort?.abort(); } catch { /* ignore */ }
  }
}

class PollConn extends Conn {
  async open() {
    const c = this.client;
    const wait = c.options.pollWaitS;
    let first = true;
    while (!this.closed) {
      let cursor = c._cursor();
      if (cursor === null) {
        // /api/events has no tail=: start a little before the newest id instead.
        const latest = await c._latestId();
        if (this.closed) return;
        if (latest === null) { this.down({ phase: 'handshake', network: true, detail: 'long-poll: /api/stats is unreachable' }); return; }
        cursor = Math.max(0, latest - c.options.tail);
      }
      const params = { after: String(cursor), limit: '1000', wait: first ? '0' : String(wait), ...c._filterParams() };
      const url = c._url('/api/events', params);
      if (first) c._log(`Long-poll: ${redact(url)}`);
      this.abort = new AbortController();
      const timer = setTimeout(() => this.abort.abort(), (wait + 15) * 1000);
      const started = now();
      let res;
      let page;
      try {
        res = await fetch(url, { headers: { Accept: 'application/json', ...c._authHeaders() }, cache: 'no-store', signal: this.abort.signal });
        if (res.ok) page = await res.json();
      } catch (err) {
        clearTimeout(timer);
        if (!this.closed) this.down({ phase: this.established ? 'live' : 'handshake', network: true, detail: `long-poll request failed: ${err.message}` });
        return;
      }
      clearTimeout(timer);
      if (this.closed) return;
      if (!res.ok) {
        const body = await errorBody(res);
        this.down({
          phase: this.established ? 'live' : 'handshake', status: res.status, error: body.error,
          detail: `long-poll answered HTTP ${res.status}${body.detail ? `: ${body.detail}` : ''}`,
          retryAfterMs: retryAfterMs(res),
        });
        return;
      }
      this.lastRx = now();
      if (first) {
        first = false;
        this.httpOk = true;
        c._connFrame(this, { type: 'connection_established', transport: 'poll', latest_id: null, resumed_from: cursor });
      }
      for (const notice of Array.isArray(page?.notices) ? page.notices : []) c._connFrame(this, notice);
      const events = Array.isArray(page?.events) ? page.events : [];
      for (const env of events) {
        if (this.closed) return;
        c._connFrame(this, env);
      }
      if (c._cursor() === null) c._cur.startAfter(page?.next_after);
      if (!events.length && !page?.has_more && now() - started < 1000) {
        await new Promise((r) => setTimeout(r, 1000)); // a server that does not hold: no hot loop
      }
    }
  }

  _teardown() {
    try { this.abort?.abort(); } catch { /* ignore */ }
  }
}

export const CONN_CLASSES = { websocket: WsConn, sse: SseConn, poll: PollConn };
