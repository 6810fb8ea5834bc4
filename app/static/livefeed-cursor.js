/**
 * livefeed-cursor.js — where the client is in the log, and what it has seen.
 *
 * Event ids strictly increase, so one number (the last id delivered) is the
 * resume cursor for every reconnect and every transport switch, and an
 * envelope at or below it is a duplicate: a replay after a switch, an event a
 * leader tab already shared, an out-of-order straggler. The most recent
 * events are kept in a ring, for tabs that join later and for a reload, and
 * the ring's floor says how far back that memory is complete.
 *
 * No DOM and no network here: the client feeds envelopes in and stores the
 * snapshot text where it likes (sessionStorage by default).
 */

const CURSOR_RE = /^\d{1,19}$/;
const RING_SLACK = 50; // trim the ring in steps, not on every event

/** A log event as the server sends it (control messages have no id). */
export function isEnvelope(m) {
  return m !== null && typeof m === 'object' && Number.isSafeInteger(m.id) && m.id > 0
    && typeof m.type === 'string';
}

export class Cursor {
  /** `ring`: how many recent events to remember (for other tabs and reloads). */
  constructor({ ring = 200 } = {}) {
    this._ringSize = Math.max(1, ring);
    this._lastId = null;    // newest id delivered
    this._minCursor = null; // a start point learnt without an event (server's newest id, stored cursor)
    this._ring = [];
    this._floor = null;     // every event after this id (and up to lastId) is in the ring
    this._resetFloor = null;
  }

  /** Newest id delivered, or null. */
  get lastId() { return this._lastId; }

  /** Where the server's log was last reset to (see reset()), or null. */
  get resetFloor() { return this._resetFloor; }

  /** The resume cursor: "send me every event after this id", or null for none yet. */
  value() {
    const c = Math.max(this._lastId ?? -1, this._minCursor ?? -1);
    return c < 0 ? null : c;
  }

  /** True when `env` is a new envelope (and records it); false for a duplicate or anything else. */
  accept(env) {
    if (!isEnvelope(env)) return false;
    if (this._lastId !== null && env.id <= this._lastId) return false;
    this._lastId = env.id;
    if (this._floor === null) this._floor = env.id - 1;
    this._ring.push(env);
    if (this._ring.length > this._ringSize + RING_SLACK) {
      const dropped = this._ring.splice(0, this._ring.length - this._ringSize);
      this._floor = dropped[dropped.length - 1].id;
    }
    return true;
  }

  /** Start after `id` when nothing is known yet (the server's newest id at connect). */
  startAfter(id) {
    if (this._lastId === null && this._minCursor === null && Number.isSafeInteger(id)) this._minCursor = id;
  }

  /** The server's log is behind us (reset, or another server): continue from its `latest`. */
  reset(latest) {
    this._lastId = latest;
    this._minCursor = latest;
    this._ring = [];
    this._floor = latest;
    this._resetFloor = latest;
  }

  /**
   * The channels changed: keep only the recent events `keep` accepts. When
   * channels were added, the ring is complete only from the cursor on (their
   * older events were never seen), unless `complete`.
   */
  retain(keep, complete) {
    this._ring = this._ring.filter(keep);
    if (!complete && this.value() !== null) this._floor = this.value();
  }

  /**
   * Keep `events` (older ones read from the log, at or below the cursor) with
   * the recent ones, in id order, so a reload shows them too. The cursor and
   * the floor stay as they are: the ring claims no completeness below it.
   */
  remember(events) {
    const seen = new Set(this._ring.map((e) => e.id));
    const older = events.filter((e) => isEnvelope(e) && !seen.has(e.id) && e.id <= (this.value() ?? -1));
    if (!older.length) return;
    this._ring = [...older, ...this._ring].sort((a, b) => a.id - b.id).slice(-this._ringSize);
  }

  /**
   * What a tab whose cursor is `after` has missed: `events` newer than it, and
   * `complete` when the ring reaches back that far. With no cursor, the
   * newest `tail` events (a first paint).
   */
  missedBy(after, tail) {
    if (after === null || after === undefined) return { events: this._ring.slice(-Math.max(0, tail)), complete: true };
    return { events: this._ring.filter((e) => e.id > after), complete: this._floor !== null && after >= this._floor };
  }

  /**
   * The snapshot text for a reload: the cursor, the ring's floor, and as many
   * of the newest events (at most `keep`) as fit in `budget` characters. Each
   * event is encoded once, newest first, so a few huge events cannot make
   * every save a multi-megabyte job. Null while there is no cursor.
   */
  snapshot({ keep, budget }) {
    const cursor = this.value();
    if (cursor === null) return null;
    const parts = [];
    let size = 0;
    let first = this._ring.length;
    while (first > 0 && parts.length < keep) {
      const text = JSON.stringify(this._ring[first - 1]);
      if (size + text.length > budget) break;
      parts.push(text);
      size += text.length + 1;
      first--;
    }
    const floor = !parts.length ? cursor : first > 0 ? this._ring[first - 1].id : (this._floor ?? cursor);
    return `{"v":1,"lastId":${cursor},"floor":${floor},"recent":[${parts.reverse().join(',')}]}`;
  }

  /**
   * Take a snapshot() text back (before anything else was delivered). Returns
   * the stored events accepted again, in order, or null when the text is not
   * a usable snapshot.
   */
  restore(text) {
    let snap;
    try { snap = JSON.parse(text || 'null'); } catch { return null; }
    if (!snap || !CURSOR_RE.test(String(snap.lastId ?? ''))) return null;
    const recent = Array.isArray(snap.recent) ? snap.recent.filter(isEnvelope) : [];
    this._floor = Number.isSafeInteger(snap.floor) ? snap.floor : null;
    const accepted = recent.filter((env) => this.accept(env));
    const last = Number(snap.lastId);
    if (this._lastId === null || last > this._lastId) this._minCursor = last;
    if (this._floor === null) this._floor = last;
    return accepted;
  }
}

/** The Storage a client persists to ('session', 'local' or null), or null where storage is disabled. */
export function openStorage(kind) {
  try {
    if (kind === 'local') return globalThis.localStorage ?? null;
    if (kind === 'session') return globalThis.sessionStorage ?? null;
  } catch { /* storage disabled: reading the property throws */ }
  return null;
}

/**
 * Store `cursor`'s snapshot under `key`; on a quota error, try again with a
 * quarter of the budget (a few times). Returns true when something was stored.
 */
export function saveSnapshot(storage, key, cursor, { keep, budget }) {
  for (let tries = 0; tries < 6; tries++, budget = Math.floor(budget / 4)) {
    const text = cursor.snapshot({ keep, budget });
    if (text === null) return false;
    try {
      storage.setItem(key, text);
      return true;
    } catch { /* quota: try a smaller snapshot */ }
  }
  return false;
}

const PERSIST_MS = 1000; // a burst of events is stored once

/**
 * Where a client keeps its cursor's snapshot between page loads: one
 * Storage entry per key (`livefeed:v1:<key>`), written at most once a
 * second while events arrive, and at once when asked (page hide, stop).
 */
export class Snapshots {
  /** `kind`: 'session', 'local' or null (nothing is kept); `keep`, `budget`: see Cursor.snapshot(). */
  constructor(kind, cursor, { keep, budget }) {
    this._storage = openStorage(kind);
    this._cursor = cursor;
    this._limits = { keep, budget };
    this._timer = 0;
    this._key = null;
  }

  /** Use `key`, and take back what is stored under it: the recent events accepted again, or null. */
  restore(key) {
    this._key = `livefeed:v1:${key}`;
    let text = null;
    try { text = this._storage?.getItem(this._key) ?? null; } catch { /* storage disabled */ }
    return this._cursor.restore(text);
  }

  /** The snapshot belongs under `key` from now on: the old entry goes. */
  move(key) {
    try { this._storage?.removeItem(this._key); } catch { /* storage disabled */ }
    this._key = `livefeed:v1:${key}`;
    this.save();
  }

  /** Save within a second. */
  later() {
    if (!this._storage || this._timer) return;
    this._timer = setTimeout(() => this.save(), PERSIST_MS);
  }

  save() {
    clearTimeout(this._timer);
    this._timer = 0;
    if (this._storage && this._key) saveSnapshot(this._storage, this._key, this._cursor, this._limits);
  }
}
