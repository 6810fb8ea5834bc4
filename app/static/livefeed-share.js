/**
 * livefeed-share.js — one connection per browser.
 *
 * Tabs showing the same stream elect a leader with Web Locks: the tab that
 * holds the lock holds the connection and passes events, status, log lines
 * and control messages to the others over a BroadcastChannel. A tab that
 * joins says hello with its cursor; the leader answers with what it missed
 * from its ring (or the tab pages the gap from the server when the ring does
 * not reach back that far). When the leader goes, the lock passes to the
 * next tab, which resumes from its own cursor. A tab that changes what it
 * follows leaves its group for the new one's; a leader that finds no other
 * tab there keeps its connection (join({holding: true})).
 *
 * Messages between tabs: {k: 'events'|'status'|'log'|'control'|'replay'|
 * 'reset'|'leader'|'hello'|'sync'|'token'|'reconnect', ...}. Events are
 * batched for a few milliseconds; any other message flushes them first, so
 * the order is kept.
 *
 * The client is reached only through `host`:
 *   lead()                          this tab now holds the lock: connect
 *   demote()                        a holding join found another leader: disconnect
 *   deliver(env, source, transport) a shared or caught-up event -> bool (new)
 *   follow(status)                  the leader's status
 *   log(line), control(msg), replay(detail), reset(latestId, why)
 *   token(token)                    another tab set the read token
 *   reconnect()                     a follower asked (leader only)
 *   cursor()                        this tab's resume cursor
 *   syncFor(lastId)                 the leader's answer to a hello: {events,
 *                                   complete, lastId, status, log, token, resetFloor}
 *   page(after)                     one page of events from the server, or null
 */

const FLUSH_MS = 10;      // events to other tabs are batched this long
const HELLO_MS = 2000;    // a follower says hello again until the leader answers
const MAX_HELD = 20000;   // events held while a joining tab syncs
const CATCH_UP_PAGES = 20;

/** True where the browser has what sharing needs (Web Locks and BroadcastChannel). */
export function canShare() {
  return typeof BroadcastChannel === 'function' && typeof globalThis.navigator?.locks?.request === 'function';
}

export class Share {
  /** `key`: what tabs must have in common to share (channel, filter, server). */
  constructor(key, host) {
    this._key = key;
    this._host = host;
    this._id = Math.random().toString(36).slice(2);
    this.role = 'follower';
    this._syncing = true;
    this._held = [];
    this._outbox = [];
    this._timers = {};
    this._leaderTransport = null;
  }

  get leader() { return this.role === 'leader'; }

  /**
   * Open the channel, ask a leader for the state, and queue for the lock.
   * `holding`: this tab already has a connection for this group (it changed
   * what it follows): it keeps it if no tab leads here yet, else it
   * disconnects (host.demote()) and follows.
   */
  join({ holding = false } = {}) {
    this._bc = new BroadcastChannel(`livefeed:${this._key}`);
    this._bc.onmessage = (e) => this._receive(e.data);
    if (!holding) {
      this._queue();
      return;
    }
    navigator.locks.request(this._lockName(), { ifAvailable: true }, (lock) => {
      if (!this._bc) return undefined; // closed meanwhile
      if (lock) return this._hold(true);
      this._host.demote();
      this._queue();
      return undefined;
    }).catch(() => { /* the lock manager went away with the page */ });
  }

  _lockName() { return `livefeed-leader-${this._key}`; }

  /** Say hello to a leader and wait for the lock. */
  _queue() {
    this._hello();
    this._lockAbort = new AbortController();
    navigator.locks.request(this._lockName(), { signal: this._lockAbort.signal }, () => {
      if (!this._bc) return undefined; // closed while waiting
      return this._hold(false);
    }).catch(() => { /* aborted by close() */ });
  }

  /** This tab has the lock: lead until close() lets it go. */
  _hold(connected) {
    this._promote(connected);
    return new Promise((resolve) => { this._releaseLock = resolve; });
  }

  close() {
    for (const t of Object.values(this._timers)) clearTimeout(t);
    this._timers = {};
    this._lockAbort?.abort();
    this._releaseLock?.();
    this._releaseLock = null;
    if (this._bc) {
      this._flush();
      this._bc.close();
      this._bc = null;
    }
  }

  /* ---------------- what the leader tells the others ---------------- */

  event(env) {
    if (!this.leader) return;
    this._outbox.push(env);
    if (!this._timers.flush) this._timers.flush = setTimeout(() => this._flush(), FLUSH_MS);
  }

  status(detail) { if (this.leader) this._post({ k: 'status', detail }); }
  log(line) { if (this.leader) this._post({ k: 'log', line }); }
  replay(detail) { if (this.leader) this._post({ k: 'replay', detail }); }
  reset(lastId) { if (this.leader) this._post({ k: 'reset', lastId }); }

  control(msg) {
    if (this.leader && msg.type !== 'heartbeat' && msg.type !== 'pong') this._post({ k: 'control', detail: msg });
  }

  /* ---------------- what any tab tells the others ---------------- */

  token(token) { this._post({ k: 'token', token }); }
  askReconnect() { this._post({ k: 'reconnect' }); }

  _flush() {
    clearTimeout(this._timers.flush);
    this._timers.flush = null;
    if (!this._outbox.length || !this._bc) return;
    const events = this._outbox;
    this._outbox = [];
    this._bc.postMessage({ k: 'events', events });
  }

  _post(msg) {
    if (!this._bc) return;
    this._flush(); // keep order: events queued before this message go first
    try { this._bc.postMessage(msg); } catch { /* closed */ }
  }

  /** Lead: deliver what was held while syncing, connect unless `connected`, and say so. */
  _promote(connected) {
    this.role = 'leader';
    this._syncing = false;
    clearTimeout(this._timers.hello);
    const held = this._held || [];
    this._held = null;
    for (const env of held) this._host.deliver(env, 'shared', null);
    if (!connected) this._host.lead();
    this._post({ k: 'leader' });
  }

  _hello() {
    if (this.role !== 'follower') return;
    this._post({ k: 'hello', from: this._id, lastId: this._host.cursor() });
    clearTimeout(this._timers.hello);
    this._timers.hello = setTimeout(() => this._hello(), HELLO_MS);
  }

  _receive(msg) {
    if (!this._bc || !msg || typeof msg !== 'object') return;
    const host = this._host;
    if (msg.k === 'token') { host.token(msg.token); return; }
    if (this.leader) {
      if (msg.k === 'hello') this._post({ k: 'sync', to: msg.from, ...host.syncFor(msg.lastId) });
      else if (msg.k === 'reconnect') host.reconnect();
      return;
    }
    switch (msg.k) {
      case 'leader': this._hello(); break;
      case 'sync': if (msg.to === this._id) this._sync(msg); break;
      case 'events':
        if (this._syncing) {
          this._held.push(...msg.events);
          if (this._held.length > MAX_HELD) this._held.splice(0, this._held.length - MAX_HELD);
        } else {
          for (const env of msg.events) host.deliver(env, 'shared', this._leaderTransport);
        }
        break;
      case 'status': this._follow(msg.detail); break;
      case 'log': host.log(msg.line); break;
      case 'control': host.control(msg.detail); break;
      case 'replay': host.replay(msg.detail); break;
      case 'reset': host.reset(msg.lastId, `Cursor reset to #${msg.lastId} by the leader tab`); break;
      default: break;
    }
  }

  _follow(status) {
    this._leaderTransport = status.transport ?? null;
    this._host.follow(status);
  }

  /** The leader's answer to this tab's hello: its memory, its status, and its log. */
  async _sync(msg) {
    clearTimeout(this._timers.hello);
    if (!this._syncing) return;
    const host = this._host;
    if (msg.token) host.token(msg.token);
    const mine = host.cursor();
    if (msg.resetFloor !== null && msg.resetFloor !== undefined && mine !== null && mine > (msg.lastId ?? 0)) {
      host.reset(msg.resetFloor, `Cursor reset to #${msg.resetFloor}: the server's log was reset`);
    }
    for (const line of msg.log || []) host.log(`(leader tab) ${line}`);
    host.log('This tab shares the connection held by another tab');
    if (!msg.complete && host.cursor() !== null) {
      const stopAt = msg.events.length ? msg.events[0].id : Infinity;
      await this._catchUp(host.cursor(), stopAt);
      if (this.role !== 'follower') return; // promoted meanwhile: _promote() delivered the held events
    }
    const transport = msg.status?.transport ?? null;
    for (const env of msg.events) host.deliver(env, 'shared', transport);
    const held = this._held || [];
    this._held = null;
    this._syncing = false;
    for (const env of held) host.deliver(env, 'shared', transport);
    if (msg.status) this._follow(msg.status);
  }

  /** Page in the events this tab missed that the leader no longer remembers. */
  async _catchUp(after, stopAt) {
    let cursor = after;
    let total = 0;
    for (let page = 0; page < CATCH_UP_PAGES; page++) {
      const j = await this._host.page(cursor);
      if (!j) break;
      const events = Array.isArray(j.events) ? j.events : [];
      for (const env of events) if (this._host.deliver(env, 'catch-up', null)) total++;
      if (!events.length || !j.has_more || events[events.length - 1].id >= stopAt) break;
      cursor = events[events.length - 1].id;
    }
    if (total) this._host.log(`Caught up ${total} event${total === 1 ? '' : 's'} from the server`);
  }
}
