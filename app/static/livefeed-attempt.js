/**
 * livefeed-attempt.js — one connection attempt as the client sees it: a
 * transport plus what its frames mean.
 *
 * The transport only moves bytes; the attempt is its sink. It tells new
 * events from replayed ones (those at or below the `latest_id` the server
 * named at connect), counts the replay, reads the control messages, watches
 * the heartbeats (a silent connection, an SSE stream that arrives in bursts
 * behind a buffering proxy) and says what it saw when it ends. It reports to
 * its owner through a narrow interface:
 *
 *   owner = {deliver(env, source, transport) -> bool, control(msg), log(line),
 *            replay(detail), established(attempt), adopt(attempt),
 *            reset(latestId, requestedAfter), down(attempt, info),
 *            following(attempt, result)}
 *
 * A WebSocket attempt can also change what it follows while open (follow());
 * `following` reports what the server's answers amount to (see
 * livefeed-subscription.js).
 */

import { isEnvelope } from './livefeed-cursor.js';
import { LABELS, seconds } from './livefeed-ladder.js';
import { Subscription } from './livefeed-subscription.js';
import { createTransport, now } from './livefeed-transports.js';

const REPLAY_QUIET_MS = 400; // a replay that pauses this long is over

/** The heartbeat interval, as the server announced it or as observed; shared by every attempt. */
export class Pulse {
  constructor({ intervalMs, timeoutMs }) {
    this._default = intervalMs;
    this._timeout = timeoutMs;
    this._samples = [];
    this._hint = null;
  }

  /** The server named its interval (heartbeat_ms / heartbeat_s). */
  hint(ms) {
    if (Number.isFinite(ms) && ms > 0) this._hint = ms;
  }

  /** Two heartbeats arrived `gap` ms apart. */
  sample(gap) {
    if (gap <= 200) return; // two at once say nothing about the interval
    this._samples.push(gap);
    if (this._samples.length > 3) this._samples.shift();
  }

  interval() {
    if (this._hint) return this._hint;
    if (this._samples.length >= 2) return Math.max(500, ...this._samples);
    return this._default;
  }

  /** Silence longer than this means the connection is dead. */
  deadAfter() {
    return this._timeout ?? Math.round(2.5 * this.interval());
  }
}

export class Attempt {
  /** `trial`: a try of a better transport beside the connection in use. `cursor`: where it resumes; `channels`: what it follows. */
  constructor(name, { trial, cursor, channels = [], owner, pulse, config }) {
    this.name = name;
    this.label = LABELS[name];
    this.trial = trial;
    this.cursorAtOpen = cursor;
    this.established = false;
    this.openedAt = now();
    this.liveAt = 0;
    this.latestId = null;
    this.resumedFrom = null;
    this.startsAfter = null; // set at connection_established: see _established()
    this.serverError = null;
    this.retryAfterMs = null;
    this.pongAt = 0;
    this._owner = owner;
    this._pulse = pulse;
    this._over = false;
    this._pingAt = 0;
    this._replayCount = 0;
    this._replayDone = false;
    this._replayTimer = 0;
    this._lastHb = 0;
    this._prevHb = null;
    this._minLag = Infinity;
    this._bursts = 0;
    this._sub = new Subscription(channels);
    const sink = {
      frame: (msg) => this._frame(msg),
      chunk: (events) => this._chunk(events),
      down: (info) => this._down(info),
      log: (line) => owner.log(line),
    };
    this.transport = createTransport(name, sink, config);
  }

  open() { this.transport.open(this.cursorAtOpen); }

  /** End it without a report (replaced, stopped). */
  close() {
    this._over = true;
    clearTimeout(this._replayTimer);
    this.transport.close();
  }

  ping() { this.transport.ping(); }

  /** The channels the server follows for this connection, as it last said. */
  get channels() { return this._sub.following; }

  /**
   * Follow `channels` from now on without reconnecting: true when the
   * messages are sent (or none are needed), false when this connection cannot
   * (not a live WebSocket): then only a new connection can.
   */
  follow(channels) {
    if (this.name !== 'websocket' || !this.established || this._over) return false;
    for (const msg of this._sub.change(channels, now())) {
      if (!this.transport.send(msg)) return false;
    }
    return true;
  }

  /** What went wrong, for people: the transport's detail, or the close code. */
  describe(info) {
    if (info.detail) return info.detail;
    if (info.code !== undefined) {
      return `${this.label} closed with code ${info.code}${info.closeReason ? `: ${info.closeReason}` : ''}`
        + (info.opened && !this.established ? ' before connection_established' : '');
    }
    return `${this.label} failed`;
  }

  /** What the ladder needs to know about how this attempt ended (see Ladder.afterDown). */
  facts(info) {
    return {
      text: this.describe(info),
      wasLive: this.established,
      liveForMs: now() - this.liveAt,
      serverError: this.serverError,
      retryAfterMs: this.retryAfterMs,
      retryHint: this.transport.retryHint,
    };
  }

  /** The replay after a resume is over: say how many events it brought. */
  endReplay() {
    clearTimeout(this._replayTimer);
    if (this._replayDone || this.resumedFrom === null) return;
    this._replayDone = true;
    const count = this._replayCount;
    if (count > 0) {
      this._owner.log(`Replayed ${count} missed event${count === 1 ? '' : 's'} after #${this.resumedFrom}`);
      this._owner.replay({ count, after: this.resumedFrom, transport: this.name });
    }
  }

  /** Called every second: end a connection that never got going or went silent; ping a quiet WebSocket. */
  watch(connectTimeoutMs) {
    if (this._over || this.name === 'poll') return;
    const t = now();
    const waited = this._sub.since ? t - this._sub.since : 0;
    if (waited > connectTimeoutMs) {
      this._sub = new Subscription(this._sub.following);
      this._owner.following(this, { done: true, unsupported: true, detail: `no answer to subscribe for ${seconds(waited)}` });
    }
    if (!this.established) {
      if (t - this.openedAt > connectTimeoutMs) {
        const httpOk = this.transport.httpOk;
        const what = httpOk ? 'SSE answered 200 but sent nothing' : `${this.label} opened but sent no connection_established`;
        this._fail({ silent: true, buffered: httpOk, detail: `${what} for ${seconds(t - this.openedAt)} — a proxy may be buffering or blocking it` });
      }
      return;
    }
    if (this.trial && this.name === 'websocket' && !this.pongAt && t - this.liveAt > connectTimeoutMs) {
      this._fail({ silent: true, detail: 'WebSocket sent no pong' });
      return;
    }
    const lastRx = this.transport.lastRx;
    const silent = t - lastRx;
    const dead = this._pulse.deadAfter();
    if (this.name === 'websocket' && silent > dead / 2 && this._pingAt < lastRx) {
      this._pingAt = t;
      this.ping();
    }
    if (silent > dead) {
      this._fail({ silent: true, detail: `${this.label} silent for ${seconds(silent)} (heartbeat expected every ${seconds(this._pulse.interval())})` });
    }
  }

  _fail(info) { this.transport.down(info); }

  _down(info) {
    if (this._over) return;
    this._over = true;
    clearTimeout(this._replayTimer);
    this._owner.down(this, info);
  }

  _frame(msg) {
    if (this._over || !msg || typeof msg !== 'object') return;
    const owner = this._owner;
    if (isEnvelope(msg)) {
      const replayed = this.resumedFrom !== null && this.latestId !== null && msg.id <= this.latestId;
      if (owner.deliver(msg, replayed ? 'replay' : 'live', this.name) && replayed) this._replayCount++;
      if (!replayed || msg.id === this.latestId) this.endReplay();
      else {
        clearTimeout(this._replayTimer);
        this._replayTimer = setTimeout(() => this.endReplay(), REPLAY_QUIET_MS);
      }
      return;
    }
    const answer = this._sub.answer(msg, now());
    if (answer?.done) owner.following(this, answer);
    switch (msg.type) {
      case 'subscribed':
        break;
      case 'connection_established':
        this._established(msg);
        break;
      case 'heartbeat':
        this._heartbeat();
        this.endReplay();
        break;
      case 'pong':
        this.pongAt = now();
        if (this.trial && this.established) owner.adopt(this);
        break;
      case 'replay_truncated':
        if (msg.reason === 'ahead') {
          const latest = Number.isSafeInteger(msg.latest_id) ? msg.latest_id : this.latestId;
          if (latest !== null && latest !== undefined) owner.reset(latest, msg.requested_after);
        } else {
          owner.log(`Replay truncated: events after ${msg.requested_after} up to ${msg.oldest_available} are no longer kept`);
        }
        break;
      case 'stream_error':
      case 'error': // its name before 2026-12
        if (answer) {
          owner.log(`${this.label}: the server refused a channel change: ${msg.error}${msg.detail ? ` — ${msg.detail}` : ''}`);
          break;
        }
        this.serverError = msg;
        if (Number.isFinite(msg.reconnect_after_ms)) this.retryAfterMs = msg.reconnect_after_ms;
        owner.log(`${this.label}: server error ${msg.error}${msg.detail ? ` — ${msg.detail}` : ''}`);
        break;
      default:
        return; // unknown control messages are ignored
    }
    owner.control(msg);
  }

  _established(msg) {
    this.established = true;
    this.liveAt = now();
    this.latestId = Number.isSafeInteger(msg.latest_id) ? msg.latest_id : null;
    this.resumedFrom = this.cursorAtOpen ?? null;
    // where the stream starts when the client has no cursor: the log's newest id, or where a long-poll began
    this.startsAfter = this.latestId ?? (Number.isSafeInteger(msg.resumed_from) ? msg.resumed_from : null);
    this._sub.established(msg.channels);
    this._pulse.hint(Number(msg.heartbeat_ms ?? (msg.heartbeat_s ? msg.heartbeat_s * 1000 : NaN)));
    this._owner.established(this);
  }

  _heartbeat() {
    const t = now();
    if (this._lastHb) this._pulse.sample(t - this._lastHb);
    this._lastHb = t;
  }

  /**
   * SSE: the messages parsed from one network chunk. Watches for a buffering
   * proxy: heartbeats are sent one interval apart, so two of them arriving
   * together (or seconds later than usual) mean something held them back.
   * One observation can be a busy main thread; two are a pattern.
   */
  _chunk(events) {
    const t = now();
    const msgs = [];
    for (const ev of events) {
      try { msgs.push(JSON.parse(ev.data)); } catch { this._owner.log(`SSE: ignored an event whose data is not JSON (${ev.event})`); }
    }
    let evidence = null;
    for (const m of msgs) {
      if (m?.type !== 'heartbeat' || isEnvelope(m)) continue;
      const ts = Date.parse(m.ts);
      if (!Number.isFinite(ts)) continue;
      const lag = t - ts;
      this._minLag = Math.min(this._minLag, lag);
      if (this._prevHb) {
        const dTs = ts - this._prevHb.ts;
        const dArr = t - this._prevHb.arrival;
        if (dTs >= 400 && dArr < dTs / 4) evidence = `heartbeats sent ${seconds(dTs)} apart arrived together`;
      }
      if (lag - this._minLag > Math.max(2000, this._pulse.interval() / 2)) evidence = `a heartbeat arrived ${seconds(lag - this._minLag)} late`;
      this._prevHb = { ts, arrival: t };
    }
    for (const m of msgs) this._frame(m);
    if (!evidence || this._over || this.trial) return;
    this._bursts++;
    this._owner.log(`SSE: ${evidence}`);
    if (this._bursts >= 2) {
      this._fail({ buffered: true, detail: `SSE events arrive in bursts (${evidence}): a proxy is buffering the stream` });
    }
  }
}
