/**
 * livefeed-connector.js — runs the transport ladder for the tab that holds
 * the connection: opens attempts, follows the ladder's decisions with
 * timers, tries better transports while on a fallback, and ends silent ones.
 * When the channels change, a live WebSocket subscribes and unsubscribes;
 * any other connection is replaced by one that resumes from the same cursor.
 *
 * It knows the client only through `host` and the cursor's public methods:
 *
 *   host = {deliver(env, source, transport) -> bool, status(state, transport,
 *           reason, extra), log(line), control(msg), replay(detail),
 *           reset(latestId, why), authRequired(detail),
 *           channels({channels, cursor, via, refused})}
 *   cursor = {value(), lastId, startAfter(id)}   (a livefeed-cursor.js Cursor)
 */

import { Attempt, Pulse } from './livefeed-attempt.js';
import { diagnose } from './livefeed-diagnose.js';
import { LABELS, Ladder, seconds } from './livefeed-ladder.js';
import { now } from './livefeed-transports.js';

const OFFLINE_RETRY_MS = 30000; // no 'online' event after going offline: look again anyway

export class Connector {
  /** `options`: the client's (transports, backoff, timeouts); `endpoints`: a livefeed-endpoints.js Endpoints. */
  constructor({ options, endpoints, cursor, host }) {
    this._options = options;
    this._endpoints = endpoints;
    this._cursor = cursor;
    this._host = host;
    this._ladder = new Ladder(options);
    this._pulse = new Pulse({ intervalMs: options.heartbeatIntervalMs, timeoutMs: options.heartbeatTimeoutMs });
    this._active = false;
    this._conn = null;
    this._trial = null;
    this._trialQueue = [];
    this._timers = {};
    this._startedAt = now();
    this._everLive = false;
    this._authBlocked = false;
    this._offline = false;
    this._attemptOwner = {
      deliver: (env, source, transport) => host.deliver(env, source, transport),
      control: (msg) => host.control(msg),
      log: (line) => host.log(line),
      replay: (detail) => host.replay(detail),
      established: (a) => this._established(a),
      adopt: (a) => this._adopt(a),
      reset: (latest, requestedAfter) => host.reset(latest,
        `Server's log is behind this page's cursor (${requestedAfter ?? cursor.lastId}); continuing from its newest id ${latest}`),
      down: (a, info) => this._down(a, info),
      following: (a, result) => this._following(a, result),
    };
  }

  /** Take over connecting (this tab leads, or shares with none): from the top rung. */
  start() {
    this._active = true;
    this._ladder.restart();
    clearInterval(this._timers.watchdog);
    this._timers.watchdog = setInterval(() => this.watchdog(), 1000);
    this._connectNow();
  }

  stop() {
    this._active = false;
    this._closeConns();
    for (const t of Object.values(this._timers)) { clearTimeout(t); clearInterval(t); }
    this._timers = {};
  }

  /** Reconnect now, from the top rung, unless an attempt is under way. */
  reconnect() {
    if (!this._active) return;
    this._authBlocked = false;
    this._ladder.resetBackoff();
    if (this._conn && !this._conn.established) return;
    this._closeConns();
    this._ladder.restart();
    this._connectNow();
  }

  /** The read token changed: if the server was refusing us, try again. */
  credentialsChanged() {
    if (!this._active || !this._authBlocked) return;
    this._authBlocked = false;
    this._ladder.resetBackoff();
    this._connectNow();
  }

  offline() {
    if (!this._active) return;
    this._offline = true;
    this._closeConns();
    this._host.status('disconnected', null, 'The browser is offline — waiting for the network');
    this._host.log('Browser went offline');
    this._timers.retry = setTimeout(() => { this._offline = false; this._connectNow(); }, OFFLINE_RETRY_MS);
  }

  online() {
    if (!this._active) return;
    this._offline = false;
    this._ladder.resetBackoff();
    this._host.log('Browser is online again');
    this._connectNow();
  }

  /** The page became visible: timers may have been throttled, so look now. */
  visible() {
    if (!this._active) return;
    if (!this._conn && !this._authBlocked && !this._offline) {
      this._ladder.resetBackoff();
      this._connectNow();
    } else {
      this.watchdog();
    }
  }

  /**
   * The endpoints' channels changed: follow them. A live WebSocket sends
   * subscribe/unsubscribe and host.channels() is called when the server has
   * answered; otherwise the next connection carries the new list, from the
   * same cursor, and host.channels() is called at once.
   */
  setChannels() {
    if (!this._active) return;
    if (this._trial) {
      this._trial.close();
      this._trial = null;
      this._scheduleUpgrade();
    }
    const channels = this._endpoints.channels;
    if (this._conn?.follow(channels)) {
      this._host.log(`Following ${channels.join(', ')}: asked the server over the open ${this._conn.label}`);
      return;
    }
    this._reopen(`Following ${channels.join(', ')}`);
  }

  watchdog() {
    for (const a of [this._conn, this._trial]) a?.watch(this._options.connectTimeoutMs);
  }

  _open(name, trial) {
    const cursor = this._cursor;
    const config = this._endpoints.transportConfig(name, () => cursor.value());
    const channels = this._endpoints.channels;
    return new Attempt(name, { trial, cursor: cursor.value(), channels, owner: this._attemptOwner, pulse: this._pulse, config });
  }

  _connectNow() {
    clearTimeout(this._timers.retry);
    if (!this._active || this._conn || this._authBlocked) return;
    const name = this._ladder.transport;
    const conn = this._open(name, false);
    this._conn = conn;
    this._host.status(this._everLive ? 'reconnecting' : 'connecting', name, `Opening ${LABELS[name]}…${this._ladder.note(name)}`);
    conn.open();
  }

  _retryIn(delay, reason) {
    const name = this._ladder.transport;
    this._host.status('reconnecting', name, reason, { retryInMs: delay });
    this._host.log(`${reason} — retrying with ${LABELS[name]} in ${seconds(delay)}`);
    clearTimeout(this._timers.retry);
    this._timers.retry = setTimeout(() => this._connectNow(), delay);
  }

  _established(a) {
    this._cursor.startAfter(a.startsAfter);
    if (!a.trial) this._markLive(a);
    else if (a.name === 'websocket') a.ping(); // adopt on pong: proves frames flow both ways now
    else this._adopt(a);
  }

  _markLive(a) {
    const first = !this._everLive;
    this._everLive = true;
    this._ladder.live(a.name);
    const resumed = a.resumedFrom !== null ? ` after #${a.resumedFrom}` : '';
    this._host.status('live', a.name, `Connected over ${a.label}${resumed}${this._ladder.note(a.name)}`);
    this._host.log(first ? `Live over ${a.label} ${now() - this._startedAt} ms after start` : `Live over ${a.label}${resumed}`);
    this._scheduleUpgrade();
  }

  async _down(a, info) {
    if (a === this._trial) {
      this._trial = null;
      this._host.log(`${a.label} still unavailable: ${a.describe(info)}`);
      if (this._active) this._nextTrial();
      return;
    }
    if (a !== this._conn) return;
    this._conn = null;
    a.endReplay();
    if (!this._active || this._offline) return;
    let decision = this._ladder.afterDown(a.name, info, a.facts(info));
    if (decision.do === 'diagnose') {
      const d = await diagnose(a.name, info, decision.text, this._endpoints, (line) => this._host.log(line));
      if (this._conn || !this._active || this._offline) return;
      decision = this._ladder.afterDiagnosis(a.name, d);
    }
    if (decision.do === 'auth') this._needAuth(decision.status, decision.text);
    else if (decision.do === 'retry') this._retryIn(decision.delay, decision.reason);
    else if (decision.do === 'connect') {
      this._host.log(decision.log);
      this._connectNow();
    }
  }

  /** What the server's answers to a channel change amount to (see livefeed-subscription.js). */
  _following(a, result) {
    if (a !== this._conn || !this._active) return;
    if (result.unsupported) {
      this._reopen(`${a.label} cannot change channels (${result.detail ?? 'the server knows no subscribe'}); reconnecting with the new list`);
      return;
    }
    const via = 'subscribe';
    if (result.refused) this._host.log(`Channel change refused (${result.refused.error}); following ${result.channels.join(', ')}`);
    else this._host.log(`Following ${result.channels.join(', ')} from #${result.cursor} on the same ${a.label}`);
    this._host.channels({ channels: result.channels, cursor: result.cursor, via, refused: result.refused });
  }

  /** Replace the connection with one carrying the endpoints' channels, from the same cursor (no backoff). */
  _reopen(why) {
    const had = this._conn;
    this._conn = null;
    had?.close();
    this._host.channels({ channels: this._endpoints.channels, cursor: this._cursor.value(), via: 'reconnect', refused: null });
    if (!had) return; // waiting to retry, for credentials or for the network: the next connection carries them
    this._host.log(`${why}: reconnecting ${had.label}`);
    this._connectNow();
  }

  _needAuth(status, text) {
    this._authBlocked = true;
    const refused = !!this._endpoints.token;
    const reason = refused ? `The read token was refused (HTTP ${status})` : `This server needs a read token (HTTP ${status})`;
    this._host.log(`${reason}${text ? ` — ${text}` : ''}`);
    this._host.status('disconnected', this._ladder.transport, reason, { auth: true });
    this._host.authRequired({ refused, status });
  }

  /* ---------------- upgrades back to a better transport ---------------- */

  _scheduleUpgrade() {
    clearTimeout(this._timers.upgrade);
    const delay = this._ladder.upgradeDelay();
    if (delay !== null) this._timers.upgrade = setTimeout(() => this._tryUpgrade(), delay);
  }

  _tryUpgrade() {
    if (!this._active || !this._conn?.established || this._trial) return;
    this._trialQueue = this._ladder.upgradeCandidates();
    this._nextTrial();
  }

  _nextTrial() {
    const name = this._trialQueue.shift();
    if (!name || !this._conn?.established) {
      this._scheduleUpgrade();
      return;
    }
    this._trial = this._open(name, true);
    this._host.log(`Trying ${LABELS[name]} again`);
    this._trial.open();
  }

  _adopt(a) {
    const old = this._conn;
    this._trial = null;
    this._trialQueue = [];
    a.trial = false;
    old?.close();
    this._conn = a;
    this._ladder.adopt(a.name);
    this._host.log(`Back on ${a.label}${old ? ` (closed ${old.label})` : ''}`);
    this._markLive(a);
  }

  _closeConns() {
    this._conn?.close();
    this._trial?.close();
    this._conn = null;
    this._trial = null;
    clearTimeout(this._timers.retry);
    clearTimeout(this._timers.upgrade);
  }
}
