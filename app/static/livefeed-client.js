/**
 * livefeed-client.js — a browser client for Livefeed streams (API.md v1).
 *
 * Plain ES modules, no build step, no dependencies. This is the public entry:
 *
 *   import { LivefeedClient } from '/static/livefeed-client.js';
 *   const feed = new LivefeedClient({ channels: ['wf_a', 'wf_b'], tail: 50 });
 *   feed.addEventListener('event', (e) => render(e.detail));      // envelope
 *   feed.addEventListener('status', (e) => badge(e.detail));      // {state, transport, reason, retryInMs?}
 *   feed.start();
 *   feed.setChannels(['wf_a', 'wf_c']);                          // same connection over WebSocket
 *
 * What it does, and where:
 * 1. Transport ladder (livefeed-ladder.js decides, livefeed-connector.js
 *    runs it). WebSocket first; Server-Sent Events when the WebSocket
 *    handshake is refused, closes before `connection_established`, or goes
 *    silent; JSON long-poll when SSE fails too. A failure only moves down the
 *    ladder when the server is reachable (a stopped server is not a reason to
 *    give up on WebSocket), and a better transport is retried now and then.
 * 2. No gap, no duplicate (livefeed-cursor.js). Ids strictly increase, so one
 *    number (the last id seen) is the cursor for every reconnect and every
 *    transport switch, and anything at or below it is a duplicate.
 * 3. SSE is read with fetch() and a WHATWG-conformant parser
 *    (livefeed-sse-parser.js), not EventSource: EventSource cannot listen to
 *    "every event name" (log events are sent as `event: <type>`, and types
 *    are open-ended), never reports the HTTP status (a 401 looks like any
 *    other error), hides chunk boundaries (needed to see proxy buffering) and
 *    cannot send Authorization (so no token in the URL).
 * 4. One connection per browser (livefeed-share.js). Tabs elect a leader with
 *    Web Locks; the leader holds the stream and shares events, status and log
 *    lines over a BroadcastChannel. When the leader goes, the next tab takes
 *    the lock and resumes from its own last id.
 * 5. Reload resumes. The last id and the most recent events are kept in
 *    sessionStorage (written on pagehide), so a reload continues without gap
 *    or duplicate; `tail=N` is only used when nothing is stored.
 * 6. Channels change while connected (livefeed-subscription.js): a live
 *    WebSocket sends `subscribe` / `unsubscribe`; SSE and long-poll reconnect
 *    with the new list from the same cursor. The `channels` event says from
 *    which id on; older events of an added channel come from `history()`.
 *
 * Events dispatched (all CustomEvent):
 *   event        detail = envelope {id, type, workflow_id, ts, data};
 *                e.source = 'live'|'replay'|'restore'|'shared'|'catch-up'
 *   status       detail = {state, transport, reason, retryInMs?, role, auth?}
 *   control      detail = a server control message (connection_established,
 *                heartbeat, replay_truncated, stream_error, pong)
 *   replay       detail = {count, after, transport}: events replayed after a resume
 *   log          detail = one human-readable line for a connection log
 *   authrequired detail = {refused, status}: call setToken() to continue
 *   token        detail = token set by another tab (so a page can keep it)
 *   channels     detail = {channels, cursor, via, refused}: the channels followed
 *                from event id `cursor` on (null: from the start); via 'subscribe',
 *                'reconnect' or 'share'; `refused` = {error, detail} when the
 *                server kept another list, which the client then follows
 */

import { ALL_EVENTS_CHANNEL, channelKey, channelList, covers, sameChannels } from './livefeed-channels.js';
import { Connector } from './livefeed-connector.js';
import { Cursor, Snapshots } from './livefeed-cursor.js';
import { Endpoints } from './livefeed-endpoints.js';
import { Share, canShare } from './livefeed-share.js';
import { TRANSPORTS } from './livefeed-transports.js';

export { SseParser } from './livefeed-sse-parser.js';
export { ALL_EVENTS_CHANNEL };

/** Control messages (no id, never replayed). `error` is `stream_error`'s name before 2026-12; both are read. */
export const CONTROL_TYPES = Object.freeze([
  'connection_established', 'heartbeat', 'replay_truncated', 'stream_error', 'error', 'pong', 'subscribed',
]);

export const DEFAULT_OPTIONS = Object.freeze({
  baseUrl: '',                 // '' = this page's origin
  channel: ALL_EVENTS_CHANNEL, // one channel, or 'wf_a,wf_b'
  channels: null,              // or an array (wins over `channel`); see livefeed-channels.js
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

const LOG_KEPT = 50;        // log lines kept (a joining tab gets the last SYNC_LOG)
const SYNC_LOG = 20;
const GLOBAL_EVENTS = ['online', 'offline', 'pagehide'];

/** A CustomEvent for log events, with where the event came from. */
export class FeedEvent extends CustomEvent {
  constructor(envelope, source, transport) {
    super('event', { detail: envelope });
    this.source = source;
    this.transport = transport;
  }
}

export class LivefeedClient extends EventTarget {
  constructor(options = {}) {
    super();
    const o = { ...DEFAULT_OPTIONS, ...options };
    const types = Array.isArray(o.types) ? o.types : (o.types ? String(o.types).split(',') : []);
    o.types = [...new Set(types.map((t) => t.trim()).filter(Boolean))].sort().join(',') || null;
    o.transports = (o.transports || []).filter((t) => TRANSPORTS.includes(t));
    if (!o.transports.length) throw new Error('LivefeedClient: no known transport in options.transports');
    const here = globalThis.location?.origin ?? 'http://localhost';
    this.base = new URL(o.baseUrl || here, here).href.replace(/\/$/, '');
    this.options = o;
    this._channels = channelList(o.channels ?? o.channel);
    // tabs share a connection (and a stored snapshot) when these agree
    this._keySuffix = `${o.types ? `|${o.types}` : ''}${new URL(this.base).origin !== here ? `|${this.base}` : ''}`;
    this._key = channelKey(this._channels) + this._keySuffix;

    this._running = false;
    this._changing = false; // a channel change not yet answered
    this._role = null;
    this._status = { state: 'disconnected', transport: null, reason: 'Not started', role: null };
    this._logLines = [];
    this._snapshots = null;
    this._share = null;
    this._cursor = new Cursor({ ring: Math.max(o.keep, o.tail, 1) });
    this._endpoints = new Endpoints({
      base: this.base, channels: this._channels, types: o.types, tail: o.tail, pollWaitS: o.pollWaitS,
      token: o.token, log: (line) => this._log(line),
    });
    this._connector = null;
    this._onGlobal = this._onGlobal.bind(this);
  }

  /** The channels followed (['validation_updates'] for every event). */
  get channels() { return [...this._channels]; }
  /** The same, comma-joined. */
  get channel() { return this._channels.join(','); }

  /** Last event id delivered (the resume cursor), or null. */
  get lastId() { return this._cursor.lastId; }
  /** The last status detail. */
  get status() { return { ...this._status }; }
  /** 'leader' (holds the connection), 'follower' (another tab does), 'solo', or null. */
  get role() { return this._role; }

  start() {
    if (this._running) return;
    this._running = true;
    this._snapshots = new Snapshots(this.options.storage, this._cursor, { keep: this.options.keep, budget: this.options.storageBytes });
    this._restore();
    for (const t of GLOBAL_EVENTS) globalThis.addEventListener?.(t, this._onGlobal);
    globalThis.document?.addEventListener('visibilitychange', this._onGlobal);
    this._connector = new Connector({ options: this.options, endpoints: this._endpoints, cursor: this._cursor, host: this._connectorHost() });
    if (this.options.share && canShare()) {
      this._role = 'follower';
      this._setStatus('connecting', null, 'Looking for another tab that already holds the connection…');
      this._share = new Share(this._key, this._shareHost());
      this._share.join();
    } else {
      this._lead('solo');
    }
  }

  stop() {
    if (!this._running) return;
    this._snapshots.save();
    this._snapshots = null;
    this._running = false;
    this._connector.stop();
    for (const t of GLOBAL_EVENTS) globalThis.removeEventListener?.(t, this._onGlobal);
    globalThis.document?.removeEventListener('visibilitychange', this._onGlobal);
    this._share?.close();
    this._share = null;
    this._setStatus('disconnected', null, 'Stopped');
    this._role = null;
  }

  /** Use a read token from now on (all tabs); reconnects if the server was asking for one. */
  setToken(token) {
    this._endpoints.token = token;
    this._share?.token(this._endpoints.token);
    this._connector?.credentialsChanged();
  }

  /**
   * Follow `channels` (a list, 'a,b'; empty for every event) from now on, on
   * the same connection where the transport allows. Returns the list as
   * followed; a malformed name or more than 50 is a RangeError. The
   * `channels` event says from which id the new list applies.
   */
  setChannels(channels) {
    const next = channelList(channels);
    if (sameChannels(next, this._channels)) return this.channels;
    const added = next.some((n) => !this._channels.includes(n));
    this._follow(next, added);
    if (!this._running) return this.channels;
    if (this._role === 'follower') this._channelsNow('share');
    else this._connector.setChannels();
    this._rejoin();
    return this.channels;
  }

  /**
   * The events of `channels` (default: those followed) with ids up to
   * `through` from the last `sinceMs`, oldest first, read from the server's
   * log: {events, complete}. What a `channels` event's cursor leaves out;
   * those followed are kept with the recent events, for a reload.
   */
  async history(channels, { through, sinceMs, pages }) {
    const read = await this._endpoints.history(channels ? channelList(channels) : this._channels, { through, sinceMs, pages });
    this._cursor.remember(read.events.filter((env) => covers(this._channels, env)));
    this._snapshots?.later();
    return read;
  }

  /** Reconnect now (skips a pending backoff); in a follower tab, asks the leader. */
  reconnect() {
    if (!this._running) return;
    if (this._role === 'follower') this._share.askReconnect();
    else this._connector.reconnect();
  }

  /* ---------------- what the page hears ---------------- */

  _deliver(env, source, transport) {
    if (!this._cursor.accept(env)) return false;
    this._announce(env, source, transport);
    return true;
  }

  _announce(env, source, transport) {
    this._share?.event(env);
    this._snapshots?.later();
    this.dispatchEvent(new FeedEvent(env, source, transport));
  }

  _setStatus(state, transport, reason, extra = {}) {
    this._status = { state, transport, reason, role: this._role, ...extra };
    this._share?.status(this._status);
    this.dispatchEvent(new CustomEvent('status', { detail: { ...this._status } }));
  }

  _log(line) {
    this._logLines.push(line);
    if (this._logLines.length > LOG_KEPT) this._logLines.shift();
    this._share?.log(line);
    this.dispatchEvent(new CustomEvent('log', { detail: line }));
  }

  _control(msg) {
    this._share?.control(msg);
    this.dispatchEvent(new CustomEvent('control', { detail: msg }));
  }

  _replay(detail) {
    this._share?.replay(detail);
    this.dispatchEvent(new CustomEvent('replay', { detail }));
  }

  _reset(latest, why) {
    this._cursor.reset(latest);
    this._log(why);
    this._snapshots?.later();
    this._share?.reset(latest);
  }

  /* ---------------- the channels followed ---------------- */

  /** Take `channels` as the list: URLs, the recent events kept, the stored snapshot's key. */
  _follow(channels, added) {
    this._channels = channels;
    this._endpoints.channels = channels;
    this._cursor.retain((env) => covers(channels, env), !added);
    this._changing = true;
    this._key = channelKey(channels) + this._keySuffix;
    this._snapshots?.move(this._key);
  }

  /** Tabs share a connection per list: leave the old list's group for the new one's. */
  _rejoin() {
    if (!this._share) return;
    const holding = this._role === 'leader';
    this._share.close();
    this._share = new Share(this._key, this._shareHost());
    this._share.join({ holding });
  }

  /** The list applies from the cursor as it is now (no connection of this tab had to answer). */
  _channelsNow(via) {
    this._channelsApplied({ channels: this._channels, cursor: this._cursor.value(), via, refused: null });
  }

  _channelsApplied(detail) {
    if (detail.refused && !sameChannels(detail.channels, this._channels)) {
      this._follow(channelList(detail.channels), false);
      this._rejoin();
    }
    this._changing = false;
    this.dispatchEvent(new CustomEvent('channels', { detail: { ...detail, channels: this.channels } }));
  }

  /** A token from another tab (or from the leader's answer). */
  _tokenFrom(token) {
    if (token === this._endpoints.token) return;
    this._endpoints.token = token;
    this.dispatchEvent(new CustomEvent('token', { detail: token }));
    this._connector?.credentialsChanged();
  }

  _connectorHost() {
    return {
      deliver: (env, source, transport) => this._deliver(env, source, transport),
      status: (state, transport, reason, extra) => this._setStatus(state, transport, reason, extra),
      log: (line) => this._log(line),
      control: (msg) => this._control(msg),
      replay: (detail) => this._replay(detail),
      reset: (latest, why) => this._reset(latest, why),
      authRequired: (detail) => this.dispatchEvent(new CustomEvent('authrequired', { detail })),
      channels: (detail) => this._channelsApplied(detail),
    };
  }

  /* ---------------- one connection per browser ---------------- */

  _lead(role) {
    this._role = role;
    if (role === 'leader') this._log('This tab holds the shared connection for all tabs');
    this._connector.start();
  }

  _shareHost() {
    return {
      lead: () => this._lead('leader'),
      demote: () => {
        this._role = 'follower';
        this._connector.stop();
        if (this._changing) this._channelsNow('share');
      },
      deliver: (env, source, transport) => this._deliver(env, source, transport),
      follow: (status) => {
        this._status = { ...status, role: 'follower' };
        this.dispatchEvent(new CustomEvent('status', { detail: { ...this._status } }));
        if (status.auth) this.dispatchEvent(new CustomEvent('authrequired', { detail: { refused: !!this._endpoints.token, status: 401 } }));
      },
      log: (line) => this._log(line),
      control: (msg) => this._control(msg),
      replay: (detail) => this._replay(detail),
      reset: (latest, why) => this._reset(latest, why),
      token: (token) => this._tokenFrom(token),
      reconnect: () => this._connector.reconnect(),
      cursor: () => this._cursor.value(),
      syncFor: (lastId) => ({
        ...this._cursor.missedBy(lastId, this.options.tail),
        lastId: this._cursor.value(),
        status: this._status,
        log: this._logLines.slice(-SYNC_LOG),
        token: this._endpoints.token,
        resetFloor: this._cursor.resetFloor,
      }),
      page: (after) => this._endpoints.page(after),
    };
  }

  /* ---------------- browser signals ---------------- */

  _onGlobal(e) {
    if (!this._running) return;
    if (e.type === 'pagehide') this._snapshots.save();
    else if (e.type === 'offline') this._connector.offline();
    else if (e.type === 'online') this._connector.online();
    else if (e.type === 'visibilitychange' && globalThis.document?.visibilityState === 'visible') this._connector.visible();
  }

  /* ---------------- reload resumes ---------------- */

  _restore() {
    const recent = this._snapshots.restore(this._key);
    if (recent === null) return;
    for (const env of recent) this._announce(env, 'restore', null);
    this._log(`Resuming after #${this._cursor.value()} (stored by this tab)${recent.length ? `; restored ${recent.length} recent events` : ''}`);
  }
}
