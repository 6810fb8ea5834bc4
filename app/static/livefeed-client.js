/**
 * livefeed-client.js — a browser client for Livefeed streams (API.md v1).
 *
 * Plain ES modules, no build step, no dependencies (transports in
 * livefeed-transports.js, the SSE parser in livefeed-sse-parser.js):
 *
 *   import { LivefeedClient } from '/static/livefeed-client.js';
 *   const feed = new LivefeedClient({ channel: 'validation_updates', tail: 50 });
 *   feed.addEventListener('event', (e) => render(e.detail));      // envelope
 *   feed.addEventListener('status', (e) => badge(e.detail));      // {state, transport, reason, retryInMs?}
 *   feed.start();
 *
 * What it does, and why:
 * 1. Transport ladder. WebSocket first; Server-Sent Events when the WebSocket
 *    handshake is refused, closes before `connection_established`, or goes
 *    silent; JSON long-poll when SSE fails too. A failure only moves down the
 *    ladder when the server is reachable (a stopped server is not a reason to
 *    give up on WebSocket), and a better transport is retried now and then.
 * 2. No gap, no duplicate. Ids strictly increase, so one number (the last id
 *    seen) is the cursor for every reconnect and every transport switch, and
 *    anything at or below it is a duplicate.
 * 3. SSE is read with fetch() and a WHATWG-conformant parser, not EventSource:
 *    EventSource cannot listen to "every event name" (log events are sent as
 *    `event: <type>`, and types are open-ended), never reports the HTTP status
 *    (a 401 looks like any other error), hides chunk boundaries (needed to see
 *    proxy buffering) and cannot send Authorization (so no token in the URL).
 * 4. One connection per browser. Tabs elect a leader with Web Locks; the
 *    leader holds the stream and shares events, status and log lines over a
 *    BroadcastChannel. When the leader goes, the next tab takes the lock and
 *    resumes from its own last id.
 * 5. Reload resumes. The last id and the most recent events are kept in
 *    sessionStorage (written on pagehide), so a reload continues without gap
 *    or duplicate; `tail=N` is only used when nothing is stored.
 *
 * Events dispatched (all CustomEvent):
 *   event        detail = envelope {id, type, workflow_id, ts, data};
 *                e.source = 'live'|'replay'|'restore'|'shared'|'catch-up'
 *   status       detail = {state, transport, reason, retryInMs?, role, auth?}
 *   control      detail = a server control message (connection_established,
 *                heartbeat, replay_truncated, error, pong)
 *   replay       detail = {count, after, transport}: events replayed after a resume
 *   log          detail = one human-readable line for a connection log
 *   authrequired detail = {refused, status}: call setToken() to continue
 *   token        detail = token set by another tab (so a page can keep it)
 */

import { Cursor, isEnvelope, openStorage, saveSnapshot } from './livefeed-cursor.js';
import { LABELS, Ladder, seconds } from './livefeed-ladder.js';
import { CONN_CLASSES, errorBody, now } from './livefeed-transports.js';

export { SseParser } from './livefeed-sse-parser.js';

export const ALL_EVENTS_CHANNEL = 'validation_updates';
export const CONTROL_TYPES = Object.freeze([
  'connection_established', 'heartbeat', 'replay_truncated', 'error', 'pong',
]);

export const DEFAULT_OPTIONS = Object.freeze({
  baseUrl: '',                 // '' = this page's origin
  channel: ALL_EVENTS_CHANNEL,
  types: null,                 // array or 'a,b' — server-side type filter
  tail: 50,                    // first paint when no cursor is stored
  token: null,                 // read token (LIVEFEED_READ_TOKEN)
  transports: ['websocket', 'sse', 'poll'],
  heartbeatIntervalMs: 30000,  // the server's default LIVEFEED_HEARTBEAT_S
  heartbeatTimeoutMs: null,    // default 2.5 x the (observed) interval
  connectTimeoutMs: 10000,     // open -> connection_established
  backoffBaseMs: 500,
  backoffMaxMs: 15000,
  upgradeIntervalMs: 60000,    // retry a better transport while on a fallback
  pollWaitS: 25,
  share: true,                 // one connection per browser (Web Locks + BroadcastChannel)
  storage: 'session',          // 'session' | 'local' | null
  keep: 200,                   // recent events kept for other tabs and reloads
  storageBytes: 1500000,       // cap of the stored snapshot (characters)
});

const SHARE_FLUSH_MS = 10;      // events to other tabs are batched this long
const AUTH_REASONS = /auth|token|credential|ticket|unauthori[sz]ed|forbidden/i;

/** A CustomEvent for log events, with where the event came from. */
export class FeedEvent extends CustomEvent {
  constructor(envelope, source, transport) {
    super('event', { detail: envelope });
    this.source = source;
    this.transport = transport;
  }
}

/* ------------------------------------------------------------------ */
/* The client                                                          */
/* ------------------------------------------------------------------ */

export class LivefeedClient extends EventTarget {
  constructor(options = {}) {
    super();
    const o = { ...DEFAULT_OPTIONS, ...options };
    const types = Array.isArray(o.types) ? o.types : (o.types ? String(o.types).split(',') : []);
    o.types = [...new Set(types.map((t) => t.trim()).filter(Boolean))].sort().join(',') || null;
    o.transports = (o.transports || []).filter((t) => t in CONN_CLASSES);
    if (!o.transports.length) throw new Error('LivefeedClient: no known transport in options.transports');
    const here = globalThis.location?.origin ?? 'http://localhost';
    this.base = new URL(o.baseUrl || here, here).href.replace(/\/$/, '');
    this.options = o;
    this.channel = String(o.channel || ALL_EVENTS_CHANNEL);
    this._token = o.token || null;
    const foreign = new URL(this.base).origin !== here ? `|${this.base}` : '';
    this._key = `${this.channel}${o.types ? `|${o.types}` : ''}${foreign}`;
    this._lockName = `livefeed-leader-${this._key}`;

    this._running = false;
    this._role = null;
    this._cur = new Cursor({ ring: Math.max(o.keep, o.tail, 1) });
    this._status = { state: 'disconnected', transport: null, reason: 'Not started', role: null };
    this._logLines = [];
    this._conn = null;
    this._trial = null;
    this._ladder = new Ladder(o);
    this._hbSamples = [];
    this._hbHint = null;
    this._ticketsSupported = undefined;
    this._timers = {};
    this._outbox = [];
    this._onGlobal = this._onGlobal.bind(this);
  }

  /** Last event id delivered (the resume cursor), or null. */
  get lastId() { return this._cur.lastId; }
  /** The last status detail. */
  get status() { return { ...this._status }; }
  /** 'leader' (holds the connection), 'follower' (another tab does), 'solo', or null. */
  get role() { return this._role; }

  start() {
    if (this._running) return;
    this._running = true;
    this._startedAt = now();
    this._everLive = false;
    this._storage = openStorage(this.options.storage);
    this._restore();
    for (const t of ['online', 'offline', 'pagehide']) globalThis.addEventListener?.(t, this._onGlobal);
    globalThis.document?.addEventListener('visibilitychange', this._onGlobal);
    this._timers.watchdog = setInterval(() => this._watchdog(), 1000);
    const canShare = this.options.share && typeof BroadcastChannel === 'function' && globalThis.navigator?.locks?.request;
    if (canShare) this._joinShare();
    else this._lead('solo');
  }

  stop() {
    if (!this._running) return;
    this._persist();
    this._running = false;
    this._closeConns();
    for (const t of Object.values(this._timers)) { clearTimeout(t); clearInterval(t); }
    this._timers = {};
    for (const t of ['online', 'offline', 'pagehide']) globalThis.removeEventListener?.(t, this._onGlobal);
    globalThis.document?.removeEventListener('visibilitychange', this._onGlobal);
    this._lockAbort?.abort();
    this._releaseLock?.();
    this._releaseLock = null;
    if (this._bc) { this._flushShare(); this._bc.close(); this._bc = null; }
    this._setStatus('disconnected', null, 'Stopped', {}, false);
    this._role = null;
  }

  /** Use a read token from now on (all tabs); reconnects if the server was asking for one. */
  setToken(token) {
    this._token = token || null;
    this._ticketsSupported = undefined;
    if (this._bc) this._post({ k: 'token', token: this._token });
    if (this._isConnector() && this._authBlocked) {
      this._authBlocked = false;
      this._ladder.resetBackoff();
      this._connectNow();
    }
  }

  /** Reconnect now (skips a pending backoff); in a follower tab, asks the leader. */
  reconnect() {
    if (!this._running) return;
    if (!this._isConnector()) { this._post({ k: 'reconnect' }); return; }
    this._authBlocked = false;
    this._ladder.resetBackoff();
    if (this._conn && !this._conn.established) return;
    this._closeConns();
    this._ladder.restart();
    this._connectNow();
  }

  /* ---------------- delivery ---------------- */

  _deliver(env, source, transport) {
    if (!this._cur.accept(env)) return false;
    this._announce(env, source, transport);
    return true;
  }

  _announce(env, source, transport) {
    if (this._bc && this._role === 'leader') this._share(env);
    this._dirty();
    this.dispatchEvent(new FeedEvent(env, source, transport));
  }

  _cursor() { return this._cur.value(); }

  _resetCursor(latest, why) {
    this._cur.reset(latest);
    this._log(why);
    this._dirty();
    if (this._bc && this._role === 'leader') this._post({ k: 'reset', lastId: latest });
  }

  /* ---------------- status and log ---------------- */

  _setStatus(state, transport, reason, extra = {}, broadcast = true) {
    this._status = { state, transport, reason, role: this._role, ...extra };
    if (broadcast && this._bc && this._role === 'leader') this._post({ k: 'status', detail: this._status });
    this.dispatchEvent(new CustomEvent('status', { detail: { ...this._status } }));
  }

  _log(line, broadcast = true) {
    this._logLines.push(line);
    if (this._logLines.length > 50) this._logLines.shift();
    if (broadcast && this._bc && this._role === 'leader') this._post({ k: 'log', line });
    this.dispatchEvent(new CustomEvent('log', { detail: line }));
  }

  _emitControl(msg, broadcast = true) {
    if (broadcast && this._bc && this._role === 'leader' && msg.type !== 'heartbeat' && msg.type !== 'pong') {
      this._post({ k: 'control', detail: msg });
    }
    this.dispatchEvent(new CustomEvent('control', { detail: msg }));
  }

  /* ---------------- URLs and credentials ---------------- */

  _url(path, params) {
    const u = new URL(this.base + path);
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') u.searchParams.set(k, v);
    return u.href;
  }

  _filterParams() {
    const p = {};
    if (this.channel !== ALL_EVENTS_CHANNEL) p.workflow_id = this.channel;
    if (this.options.types) p.types = this.options.types;
    return p;
  }

  _streamParams(cursor) {
    const p = {};
    if (this.options.types) p.types = this.options.types;
    if (cursor !== null) p.last_event_id = String(cursor);
    else if (this.options.tail > 0) p.tail = String(this.options.tail);
    return p;
  }

  _authHeaders() {
    return this._token ? { Authorization: `Bearer ${this._token}` } : {};
  }

  /** The log's newest id from /api/stats, or null when unreachable. */
  async _latestId() {
    try {
      const res = await fetch(`${this.base}/api/stats`, { headers: { Accept: 'application/json', ...this._authHeaders() }, cache: 'no-store' });
      if (!res.ok) return null;
      const j = await res.json();
      return Number.isSafeInteger(j.latest_id) ? j.latest_id : null;
    } catch {
      return null;
    }
  }

  async _wsUrl(cursor) {
    // batch=1: several events per frame (a JSON array), much cheaper for the server
    const params = { ...this._streamParams(cursor), batch: '1' };
    if (this._token) Object.assign(params, await this._credentialParams());
    return this._url(`/ws/${encodeURIComponent(this.channel)}`, params).replace(/^http/, 'ws');
  }

  /** A one-use ticket for the WebSocket URL; access_token only if the server has no tickets. */
  async _credentialParams() {
    if (this._ticketsSupported !== false) {
      let res;
      try {
        res = await fetch(`${this.base}/api/stream-tickets`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', ...this._authHeaders() },
          body: JSON.stringify({ channel: this.channel }),
          cache: 'no-store',
        });
      } catch (err) {
        throw Object.assign(new Error(`stream ticket request failed: ${err.message}`), { info: { phase: 'handshake', network: true } });
      }
      if (res.ok) {
        const j = await res.json().catch(() => ({}));
        if (typeof j.ticket === 'string') { this._ticketsSupported = true; return { ticket: j.ticket }; }
      }
      if (res.status === 404 || res.status === 405) {
        this._ticketsSupported = false;
        this._log('Stream tickets are not available on this server (404): the token goes in the URL as access_token');
      } else if (!res.ok) {
        const body = await errorBody(res);
        throw Object.assign(new Error(`stream ticket refused: HTTP ${res.status}`), {
          info: { phase: 'handshake', status: res.status, error: body.error, detail: `stream ticket request answered HTTP ${res.status}${body.detail ? `: ${body.detail}` : ''}` },
        });
      }
    }
    return { access_token: this._token };
  }

  /* ---------------- the ladder ---------------- */

  _isConnector() { return this._running && (this._role === 'leader' || this._role === 'solo'); }

  _connectNow() {
    clearTimeout(this._timers.retry);
    if (!this._isConnector() || this._conn || this._authBlocked) return;
    const name = this._ladder.transport;
    const conn = new CONN_CLASSES[name](this, name, false);
    this._conn = conn;
    conn.cursorAtOpen = this._cursor();
    const label = LABELS[name];
    this._setStatus(this._everLive ? 'reconnecting' : 'connecting', name, `Opening ${label}…${this._ladder.note(name)}`);
    conn.open(conn.cursorAtOpen).catch((err) => {
      conn.down(err.info ?? { phase: 'handshake', detail: `${label}: ${err.message}` });
    });
  }

  _retryIn(delay, reason) {
    const name = this._ladder.transport;
    this._setStatus('reconnecting', name, reason, { retryInMs: delay });
    this._log(`${reason} — retrying with ${LABELS[name]} in ${seconds(delay)}`);
    clearTimeout(this._timers.retry);
    this._timers.retry = setTimeout(() => this._connectNow(), delay);
  }

  _connFrame(conn, msg) {
    if (conn.closed || !msg || typeof msg !== 'object') return;
    if (isEnvelope(msg)) {
      const replayed = conn.resumedFrom !== null && conn.latestId !== null && msg.id <= conn.latestId;
      if (this._deliver(msg, replayed ? 'replay' : 'live', conn.name) && replayed) conn.replayCount++;
      if (!replayed || msg.id === conn.latestId) this._endReplay(conn);
      else this._armReplayEnd(conn);
      return;
    }
    switch (msg.type) {
      case 'connection_established':
        this._established(conn, msg);
        break;
      case 'heartbeat':
        this._heartbeat(conn);
        this._endReplay(conn);
        break;
      case 'pong':
        conn.pongAt = now();
        if (conn.trial && conn.established) this._adopt(conn);
        break;
      case 'replay_truncated':
        if (msg.reason === 'ahead') {
          const latest = Number.isSafeInteger(msg.latest_id) ? msg.latest_id : conn.latestId;
          if (latest !== null && latest !== undefined) {
            this._resetCursor(latest, `Server's log is behind this page's cursor (${msg.requested_after ?? this._cur.lastId}); continuing from its newest id ${latest}`);
          }
        } else {
          this._log(`Replay truncated: events after ${msg.requested_after} up to ${msg.oldest_available} are no longer kept`);
        }
        break;
      case 'error':
        conn.serverError = msg;
        if (Number.isFinite(msg.reconnect_after_ms)) conn.retryAfterMs = msg.reconnect_after_ms;
        this._log(`${LABELS[conn.name]}: server error ${msg.error}${msg.detail ? ` — ${msg.detail}` : ''}`);
        break;
      default:
        return; // unknown control messages are ignored
    }
    this._emitControl(msg);
  }

  _established(conn, msg) {
    conn.established = true;
    conn.liveAt = now();
    conn.latestId = Number.isSafeInteger(msg.latest_id) ? msg.latest_id : null;
    conn.resumedFrom = conn.cursorAtOpen ?? null;
    const hint = Number(msg.heartbeat_ms ?? (msg.heartbeat_s ? msg.heartbeat_s * 1000 : NaN));
    if (Number.isFinite(hint) && hint > 0) this._hbHint = hint;
    this._cur.startAfter(conn.latestId);
    if (conn.trial) {
      if (conn.name === 'websocket') conn.ping(); // adopt on pong: proves frames flow both ways now
      else this._adopt(conn);
      return;
    }
    this._markLive(conn);
  }

  _markLive(conn) {
    const label = LABELS[conn.name];
    const first = !this._everLive;
    this._everLive = true;
    this._ladder.live(conn.name);
    const resumed = conn.resumedFrom !== null ? ` after #${conn.resumedFrom}` : '';
    const extra = this._ladder.note(conn.name);
    this._setStatus('live', conn.name, `Connected over ${label}${resumed}${extra}`);
    this._log(first ? `Live over ${label} ${now() - this._startedAt} ms after start` : `Live over ${label}${resumed}`);
    this._scheduleUpgrade();
  }

  _armReplayEnd(conn) {
    clearTimeout(conn.replayTimer);
    conn.replayTimer = setTimeout(() => this._endReplay(conn), 400);
  }

  _endReplay(conn) {
    clearTimeout(conn.replayTimer);
    if (conn.replayDone || conn.resumedFrom === null) return;
    conn.replayDone = true;
    if (conn.replayCount > 0) {
      const detail = { count: conn.replayCount, after: conn.resumedFrom, transport: conn.name };
      this._log(`Replayed ${conn.replayCount} missed event${conn.replayCount === 1 ? '' : 's'} after #${conn.resumedFrom}`);
      if (this._bc && this._role === 'leader') this._post({ k: 'replay', detail });
      this.dispatchEvent(new CustomEvent('replay', { detail }));
    }
  }

  _heartbeat(conn) {
    const t = now();
    if (conn.lastHb) {
      const gap = t - conn.lastHb;
      if (gap > 200) {
        this._hbSamples.push(gap);
        if (this._hbSamples.length > 3) this._hbSamples.shift();
      }
    }
    conn.lastHb = t;
  }

  _hbInterval() {
    if (this._hbHint) return this._hbHint;
    if (this._hbSamples.length >= 2) return Math.max(500, ...this._hbSamples);
    return this.options.heartbeatIntervalMs;
  }

  _deadAfter() {
    return this.options.heartbeatTimeoutMs ?? Math.round(2.5 * this._hbInterval());
  }

  _watchdog() {
    for (const conn of [this._conn, this._trial]) {
      if (!conn || conn.closed || conn.name === 'poll') continue;
      const t = now();
      if (!conn.established) {
        if (t - conn.openedAt > this.options.connectTimeoutMs) {
          const what = conn.httpOk ? 'SSE answered 200 but sent nothing' : `${LABELS[conn.name]} opened but sent no connection_established`;
          conn.down({ phase: 'handshake', silent: true, buffered: conn.httpOk, detail: `${what} for ${seconds(t - conn.openedAt)} — a proxy may be buffering or blocking it` });
        }
        continue;
      }
      if (conn.trial && conn.name === 'websocket' && !conn.pongAt && t - conn.liveAt > this.options.connectTimeoutMs) {
        conn.down({ phase: 'handshake', silent: true, detail: 'WebSocket sent no pong' });
        continue;
      }
      const silent = t - conn.lastRx;
      const dead = this._deadAfter();
      if (conn.name === 'websocket' && silent > dead / 2 && conn.pingAt < conn.lastRx) {
        conn.pingAt = t;
        conn.ping();
      }
      if (silent > dead) {
        conn.down({ phase: 'live', silent: true, detail: `${LABELS[conn.name]} silent for ${seconds(silent)} (heartbeat expected every ${seconds(this._hbInterval())})` });
      }
    }
  }

  /**
   * SSE: the messages parsed from one network chunk. Watches for a buffering
   * proxy: heartbeats are sent one interval apart, so two of them arriving
   * together (or seconds later than usual) mean something held them back.
   * One observation can be a busy main thread; two are a pattern.
   */
  _sseChunk(conn, events) {
    const t = now();
    const msgs = [];
    for (const ev of events) {
      try { msgs.push(JSON.parse(ev.data)); } catch { this._log(`SSE: ignored an event whose data is not JSON (${ev.event})`); }
    }
    let evidence = null;
    for (const m of msgs) {
      if (m?.type !== 'heartbeat' || isEnvelope(m)) continue;
      const ts = Date.parse(m.ts);
      if (!Number.isFinite(ts)) continue;
      const lag = t - ts;
      conn.minLag = Math.min(conn.minLag ?? Infinity, lag);
      if (conn.prevHb) {
        const dTs = ts - conn.prevHb.ts;
        const dArr = t - conn.prevHb.arrival;
        if (dTs >= 400 && dArr < dTs / 4) evidence = `heartbeats sent ${seconds(dTs)} apart arrived together`;
      }
      if (lag - conn.minLag > Math.max(2000, this._hbInterval() / 2)) evidence = `a heartbeat arrived ${seconds(lag - conn.minLag)} late`;
      conn.prevHb = { ts, arrival: t };
    }
    for (const m of msgs) this._connFrame(conn, m);
    if (!evidence || conn.closed || conn.trial) return;
    conn.bursts = (conn.bursts || 0) + 1;
    this._log(`SSE: ${evidence}`);
    if (conn.bursts >= 2) {
      conn.down({ phase: 'live', buffered: true, detail: `SSE events arrive in bursts (${evidence}): a proxy is buffering the stream` });
    }
  }

  async _connDown(conn, info) {
    if (conn.downHandled) return;
    conn.downHandled = true;
    conn.close();
    clearTimeout(conn.replayTimer);
    if (conn === this._trial) { this._trialFailed(conn, info); return; }
    if (conn !== this._conn) return;
    this._conn = null;
    this._endReplay(conn);
    if (!this._isConnector()) return;
    if (this._offline) return;
    const name = conn.name;
    const text = info.detail || this._closeText(conn, info);
    let decision = this._ladder.afterDown(name, info, {
      text, wasLive: conn.established, liveForMs: now() - conn.liveAt,
      serverError: conn.serverError, retryAfterMs: conn.retryAfterMs, retryHint: conn.retryHint,
    });
    if (decision.do === 'diagnose') {
      const d = await this._diagnose(conn, info, text);
      if (this._conn || !this._isConnector() || this._offline) return;
      decision = this._ladder.afterDiagnosis(name, d);
    }
    this._follow(decision);
  }

  /** Do what the ladder decided. */
  _follow(decision) {
    if (decision.do === 'auth') this._needAuth(decision.status, decision.text);
    else if (decision.do === 'retry') this._retryIn(decision.delay, decision.reason);
    else if (decision.do === 'connect') { this._log(decision.log); this._connectNow(); }
  }

  _closeText(conn, info) {
    if (info.code !== undefined) {
      return `${LABELS[conn.name]} closed with code ${info.code}${info.closeReason ? `: ${info.closeReason}` : ''}`
        + (info.opened && !conn.established ? ' before connection_established' : '');
    }
    return `${LABELS[conn.name]} failed`;
  }

  /**
   * Why did a transport fail? Distinguishes "this transport is blocked"
   * (fall back) from "the server is down" (back off, stay on this rung) and
   * "credentials needed" (ask). Browsers report a refused WebSocket only as
   * close code 1006, so the server's diagnosis endpoint says why.
   */
  async _diagnose(conn, info, text) {
    const label = LABELS[conn.name];
    const st = info.status;
    if (st) {
      if (st === 401 || st === 403) return { auth: true, status: st, text };
      if (st >= 500 || st === 429 || st === 408) return { reachable: true, serverTrouble: true, text };
      return { reachable: true, text };
    }
    if (conn.name === 'websocket') {
      let res;
      try {
        // Browsers send no Origin on a same-origin GET, so name the page's origin.
        const query = { ...this._streamParams(null), origin: globalThis.location?.origin };
        delete query.tail;
        res = await fetch(this._url(`/api/diag/ws/${encodeURIComponent(this.channel)}`, query), {
          headers: { Accept: 'application/json', ...this._authHeaders() }, cache: 'no-store',
        });
      } catch {
        return { reachable: false, text: `${text}; the server is unreachable` };
      }
      if (res.status === 401) return { auth: true, status: 401, text: 'WebSocket refused: credentials required' };
      if (res.status >= 500 || res.status === 429) return { reachable: true, serverTrouble: true, text: `${text}; the server answers HTTP ${res.status}` };
      if (res.status === 404) return { reachable: true, text: `${text}; the server has no /api/diag endpoint to say why` };
      const j = await res.json().catch(() => null);
      if (j && j.ok === false) {
        const why = j.detail || j.reason || 'refused';
        const out = { reachable: true, text: `WebSocket refused: ${why}${j.reason && j.detail ? ` (${j.reason})` : ''}`, reason: j.reason };
        this._log(`Diagnosis from /api/diag/ws: ${j.reason} — ${j.detail ?? ''}`);
        if (AUTH_REASONS.test(j.reason || '')) return { ...out, auth: true, status: 401 };
        return out;
      }
      return { reachable: true, text: `${text}, although the server would accept this page: a proxy, firewall or browser extension is blocking WebSockets` };
    }
    // SSE or long-poll without an HTTP status: is the server there at all?
    let res;
    try {
      res = await fetch(this._url('/api/events', { after: '0', limit: '1', ...this._filterParams() }), {
        headers: { Accept: 'application/json', ...this._authHeaders() }, cache: 'no-store',
      });
    } catch {
      return { reachable: false, text: `${text}; the server is unreachable` };
    }
    if (res.status === 401 || res.status === 403) return { auth: true, status: res.status, text: `${label}: credentials required` };
    if (res.status >= 500 || res.status === 429) return { reachable: true, serverTrouble: true, text: `${text}; the server answers HTTP ${res.status}` };
    return { reachable: true, text: `${text}, although the server answers plain requests: something is blocking ${label}` };
  }

  _needAuth(status, text) {
    this._authBlocked = true;
    const refused = !!this._token;
    const reason = refused ? `The read token was refused (HTTP ${status})` : `This server needs a read token (HTTP ${status})`;
    this._log(`${reason}${text ? ` — ${text}` : ''}`);
    this._setStatus('disconnected', this._ladder.transport, reason, { auth: true });
    this.dispatchEvent(new CustomEvent('authrequired', { detail: { refused, status } }));
  }

  /* ---------------- upgrades back to a better transport ---------------- */

  _scheduleUpgrade() {
    clearTimeout(this._timers.upgrade);
    const delay = this._ladder.upgradeDelay();
    if (delay !== null) this._timers.upgrade = setTimeout(() => this._tryUpgrade(), delay);
  }

  _tryUpgrade() {
    if (!this._isConnector() || !this._conn?.established || this._trial) return;
    this._trialQueue = this._ladder.upgradeCandidates();
    this._nextTrial();
  }

  _nextTrial() {
    const name = this._trialQueue?.shift();
    if (!name || !this._conn?.established) {
      this._scheduleUpgrade();
      return;
    }
    const conn = new CONN_CLASSES[name](this, name, true);
    conn.cursorAtOpen = this._cursor();
    this._trial = conn;
    this._log(`Trying ${LABELS[name]} again`);
    conn.open(conn.cursorAtOpen).catch((err) => conn.down(err.info ?? { phase: 'handshake', detail: err.message }));
  }

  _trialFailed(conn, info) {
    this._trial = null;
    this._log(`${LABELS[conn.name]} still unavailable: ${info.detail || this._closeText(conn, info)}`);
    if (this._isConnector()) this._nextTrial();
  }

  _adopt(conn) {
    const old = this._conn;
    this._trial = null;
    this._trialQueue = [];
    conn.trial = false;
    if (old) { old.downHandled = true; old.close(); }
    this._conn = conn;
    this._ladder.adopt(conn.name);
    this._log(`Back on ${LABELS[conn.name]}${old ? ` (closed ${LABELS[old.name]})` : ''}`);
    this._markLive(conn);
  }

  _closeConns() {
    for (const c of [this._conn, this._trial]) {
      if (c) { c.downHandled = true; c.close(); }
    }
    this._conn = null;
    this._trial = null;
    clearTimeout(this._timers.retry);
    clearTimeout(this._timers.upgrade);
  }

  /* ---------------- browser signals ---------------- */

  _onGlobal(e) {
    if (!this._running) return;
    if (e.type === 'pagehide') { this._persist(); return; }
    if (!this._isConnector()) return;
    if (e.type === 'offline') {
      this._offline = true;
      this._closeConns();
      this._setStatus('disconnected', null, 'The browser is offline — waiting for the network');
      this._log('Browser went offline');
      this._timers.retry = setTimeout(() => { this._offline = false; this._connectNow(); }, 30000);
    } else if (e.type === 'online') {
      this._offline = false;
      this._ladder.resetBackoff();
      this._log('Browser is online again');
      this._connectNow();
    } else if (e.type === 'visibilitychange' && globalThis.document?.visibilityState === 'visible') {
      if (!this._conn && !this._authBlocked && !this._offline) { this._ladder.resetBackoff(); this._connectNow(); } else this._watchdog();
    }
  }

  /* ---------------- persistence (reload resumes) ---------------- */

  _storageKey() { return `livefeed:v1:${this._key}`; }

  _restore() {
    if (!this._storage) return;
    let text = null;
    try { text = this._storage.getItem(this._storageKey()); } catch { /* storage disabled */ }
    const recent = this._cur.restore(text);
    if (recent === null) return;
    for (const env of recent) this._announce(env, 'restore', null);
    this._log(`Resuming after #${this._cursor()} (stored by this tab)${recent.length ? `; restored ${recent.length} recent events` : ''}`, false);
  }

  _dirty() {
    if (!this._storage || this._timers.persist) return;
    this._timers.persist = setTimeout(() => { this._timers.persist = null; this._persist(); }, 1000);
  }

  _persist() {
    if (!this._storage || !this._running) return;
    saveSnapshot(this._storage, this._storageKey(), this._cur, { keep: this.options.keep, budget: this.options.storageBytes });
  }

  /* ---------------- one connection per browser ---------------- */

  _lead(role) {
    this._role = role;
    this._syncing = false;
    if (this._held) { for (const env of this._held) this._deliver(env, 'shared', null); this._held = null; }
    clearTimeout(this._timers.hello);
    this._ladder.restart();
    if (role === 'leader') {
      this._log('This tab holds the shared connection for all tabs');
      this._post({ k: 'leader' });
    }
    this._connectNow();
  }

  _joinShare() {
    this._id = Math.random().toString(36).slice(2);
    this._bc = new BroadcastChannel(`livefeed:${this._key}`);
    this._bc.onmessage = (e) => this._onShare(e.data);
    this._role = 'follower';
    this._syncing = true;
    this._held = [];
    this._setStatus('connecting', null, 'Looking for another tab that already holds the connection…', {}, false);
    this._hello();
    this._lockAbort = new AbortController();
    navigator.locks.request(this._lockName, { signal: this._lockAbort.signal }, () => {
      if (!this._running) return undefined;
      this._lead('leader');
      return new Promise((resolve) => { this._releaseLock = resolve; });
    }).catch(() => { /* aborted by stop() */ });
  }

  _hello() {
    if (this._role !== 'follower') return;
    this._post({ k: 'hello', from: this._id, lastId: this._cursor() });
    clearTimeout(this._timers.hello);
    this._timers.hello = setTimeout(() => this._hello(), 2000);
  }

  _share(env) {
    this._outbox.push(env);
    if (!this._timers.share) this._timers.share = setTimeout(() => this._flushShare(), SHARE_FLUSH_MS);
  }

  _flushShare() {
    clearTimeout(this._timers.share);
    this._timers.share = null;
    if (!this._outbox.length || !this._bc) return;
    const events = this._outbox;
    this._outbox = [];
    this._bc.postMessage({ k: 'events', events });
  }

  _post(msg) {
    if (!this._bc) return;
    this._flushShare(); // keep order: events queued before this message go first
    try { this._bc.postMessage(msg); } catch { /* closed */ }
  }

  _onShare(msg) {
    if (!this._running || !msg || typeof msg !== 'object') return;
    if (msg.k === 'token') {
      if (msg.token !== this._token) {
        this._token = msg.token;
        this._ticketsSupported = undefined;
        this.dispatchEvent(new CustomEvent('token', { detail: msg.token }));
        if (this._isConnector() && this._authBlocked) { this._authBlocked = false; this._connectNow(); }
      }
      return;
    }
    if (this._role === 'leader') {
      if (msg.k === 'hello') this._answerHello(msg);
      else if (msg.k === 'reconnect') this.reconnect();
      return;
    }
    if (this._role !== 'follower') return;
    switch (msg.k) {
      case 'leader': this._hello(); break;
      case 'sync': if (msg.to === this._id) this._onSync(msg); break;
      case 'events':
        if (this._syncing) {
          this._held.push(...msg.events);
          if (this._held.length > 20000) this._held.splice(0, this._held.length - 20000);
        } else {
          for (const env of msg.events) this._deliver(env, 'shared', this._status.transport);
        }
        break;
      case 'status': this._followStatus(msg.detail); break;
      case 'log': this._log(msg.line, false); break;
      case 'control': this._emitControl(msg.detail, false); break;
      case 'replay': this.dispatchEvent(new CustomEvent('replay', { detail: msg.detail })); break;
      case 'reset': this._resetCursor(msg.lastId, `Cursor reset to #${msg.lastId} by the leader tab`); break;
      default: break;
    }
  }

  _followStatus(detail) {
    this._status = { ...detail, role: 'follower' };
    this.dispatchEvent(new CustomEvent('status', { detail: { ...this._status } }));
    if (detail.auth) this.dispatchEvent(new CustomEvent('authrequired', { detail: { refused: !!this._token, status: 401 } }));
  }

  _answerHello(msg) {
    const { events, complete } = this._cur.missedBy(msg.lastId, this.options.tail);
    this._post({
      k: 'sync', to: msg.from, events, complete, lastId: this._cursor(), status: this._status,
      log: this._logLines.slice(-20), token: this._token, resetFloor: this._cur.resetFloor,
    });
  }

  async _onSync(msg) {
    clearTimeout(this._timers.hello);
    if (!this._syncing) return;
    if (msg.token && msg.token !== this._token) {
      this._token = msg.token;
      this.dispatchEvent(new CustomEvent('token', { detail: msg.token }));
    }
    if (msg.resetFloor !== null && msg.resetFloor !== undefined && this._cursor() !== null && this._cursor() > (msg.lastId ?? 0)) {
      this._resetCursor(msg.resetFloor, `Cursor reset to #${msg.resetFloor}: the server's log was reset`);
    }
    for (const line of msg.log || []) this._log(`(leader tab) ${line}`, false);
    this._log('This tab shares the connection held by another tab', false);
    if (!msg.complete && this._cursor() !== null) {
      const stopAt = msg.events.length ? msg.events[0].id : Infinity;
      await this._catchUp(this._cursor(), stopAt);
      if (this._role !== 'follower') return; // promoted meanwhile: _lead() flushed the held events
    }
    for (const env of msg.events) this._deliver(env, 'shared', msg.status?.transport ?? null);
    const held = this._held || [];
    this._held = null;
    this._syncing = false;
    for (const env of held) this._deliver(env, 'shared', msg.status?.transport ?? null);
    if (msg.status) this._followStatus(msg.status);
  }

  /** Fetch events a follower missed (its stored cursor is older than the leader's memory). */
  async _catchUp(after, stopAt) {
    let cursor = after;
    let total = 0;
    for (let page = 0; page < 20; page++) {
      let j;
      try {
        const res = await fetch(this._url('/api/events', { after: String(cursor), limit: '1000', ...this._filterParams() }), {
          headers: { Accept: 'application/json', ...this._authHeaders() }, cache: 'no-store',
        });
        if (!res.ok) break;
        j = await res.json();
      } catch {
        break;
      }
      const events = Array.isArray(j.events) ? j.events : [];
      for (const env of events) if (this._deliver(env, 'catch-up', null)) total++;
      if (!events.length || !j.has_more || events[events.length - 1].id >= stopAt) break;
      cursor = events[events.length - 1].id;
    }
    if (total) this._log(`Caught up ${total} event${total === 1 ? '' : 's'} from the server`, false);
  }
}
