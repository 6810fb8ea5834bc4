/**
 * dashboard-tally.js — the counters and the chart's figures, per workflow.
 *
 * The page counts the events it receives: in total, by type, and by minute
 * of their timestamp (for the chart). It keeps those counts per workflow, so
 * that when a workflow leaves the selection its counts leave with it, and
 * when one is added its earlier events (read from the log) are counted once:
 * a bucket remembers the lowest id it has counted, and everything it has
 * seen since is contiguous (the stream misses nothing), so history below
 * that id is new and the rest is not. No DOM here.
 */

const MAX_TYPES = 500; // open-ended types: bounded memory

/** Counts, and the lowest id counted. */
function bucket() {
  return { first: Infinity, total: 0, types: new Map(), minutes: new Map() };
}

function bump(map, key, by) {
  const n = (map.get(key) || 0) + by;
  if (n) map.set(key, n);
  else map.delete(key);
}

/** Add (sign 1) or take away (sign -1) `from`'s counts to `into`. */
function merge(into, from, sign) {
  into.total += sign * from.total;
  for (const [type, n] of from.types) {
    if (into.types.has(type) || (sign > 0 && into.types.size < MAX_TYPES)) bump(into.types, type, sign * n);
  }
  for (const [minute, n] of from.minutes) bump(into.minutes, minute, sign * n);
}

export class Tally {
  /**
   * `windowMinutes`: how far back minutes are kept; `maxBuckets`: workflows
   * counted apart (the least recently seen beyond that are merged into one
   * bucket, which only an every-event selection shows).
   */
  constructor({ windowMinutes, maxBuckets = 2000, clock = Date.now }) {
    this._window = windowMinutes;
    this._max = maxBuckets;
    this._clock = clock;
    this._buckets = new Map(); // workflow id ('' for none) -> bucket, least recently seen first
    this._rest = bucket();
    this.view = bucket();      // the sum of every bucket: what the page shows
  }

  /** Count an event from the stream (the client hands each over once). */
  add(env) {
    this._count(this._bucket(env.workflow_id ?? ''), env);
  }

  /**
   * Count events read from the log (oldest first) that the buckets have not:
   * those below the lowest id each bucket had counted before. Returns how
   * many were counted.
   */
  addHistory(events) {
    const firstBefore = new Map();
    let counted = 0;
    for (const env of events) {
      const key = env.workflow_id ?? '';
      if (!firstBefore.has(key)) firstBefore.set(key, this._buckets.get(key)?.first ?? Infinity);
      if (env.id >= firstBefore.get(key)) continue;
      this._count(this._bucket(key), env);
      counted++;
    }
    return counted;
  }

  _bucket(key) {
    let b = this._buckets.get(key);
    if (b) this._buckets.delete(key); // re-inserted: most recently seen last
    else b = bucket();
    this._buckets.set(key, b);
    if (this._buckets.size > this._max) this._evictOldest();
    return b;
  }

  _count(b, env) {
    const one = bucket();
    one.total = 1;
    one.types.set(env.type, 1);
    const minute = Math.floor(Date.parse(env.ts) / 60000);
    if (minute > this._oldestMinute()) one.minutes.set(minute, 1);
    merge(b, one, 1);
    merge(this.view, one, 1);
    b.first = Math.min(b.first, env.id);
  }

  /** Forget the workflows `keep` rejects (they left the selection); `all`: keep the merged rest too. */
  retain(keep, all) {
    for (const [key, b] of this._buckets) {
      if (keep(key || null)) continue;
      merge(this.view, b, -1);
      this._buckets.delete(key);
    }
    if (!all) {
      merge(this.view, this._rest, -1);
      this._rest = bucket();
    }
  }

  /** Drop minutes older than the window, everywhere (call now and then). */
  prune() {
    const oldest = this._oldestMinute();
    for (const b of [this.view, this._rest, ...this._buckets.values()]) {
      for (const minute of b.minutes.keys()) if (minute <= oldest) b.minutes.delete(minute);
    }
  }

  _oldestMinute() { return Math.floor(this._clock() / 60000) - this._window; }

  _evictOldest() {
    const [key, b] = this._buckets.entries().next().value;
    this._buckets.delete(key);
    merge(this._rest, b, 1);
  }
}
