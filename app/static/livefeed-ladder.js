/**
 * livefeed-ladder.js — which transport to use next, when, and why.
 *
 * WebSocket first; Server-Sent Events when the WebSocket handshake is
 * refused, closes before `connection_established`, or goes silent; JSON
 * long-poll when SSE fails too. A failure only moves down the ladder when the
 * server is reachable (a stopped server is not a reason to give up on
 * WebSocket), a buffering proxy moves down at once and is not tried again,
 * and while on a fallback the better transports are tried now and then.
 *
 * This is the policy only: no timers, no sockets. The connector tells it
 * what happened and does what it answers, so every rule here is a plain
 * function of its inputs (and of `random`, for the jitter).
 */

export const LABELS = Object.freeze({ websocket: 'WebSocket', sse: 'SSE', poll: 'long-poll' });

/** A connection live this long counts as stable: the next drop starts the backoff afresh. */
export const STABLE_MS = 10000;

/** Refusals that mean "come back later", not "this transport is blocked". */
const SERVER_BUSY = new Set(['shutting_down', 'overloaded', 'unavailable']);

/** `ms` as whole seconds for people ("1 s" at least). */
export const seconds = (ms) => `${Math.max(1, Math.ceil(ms / 1000))} s`;

/** `ms` ± 25 %, so many clients told the same delay do not come back at once. */
export const spread = (ms, random = Math.random) => Math.round(ms * (0.75 + random() * 0.5));

/** Exponential backoff with "equal jitter": between half and all of min(max, base·2^attempt). */
export function backoff(attempt, base, max, random = Math.random) {
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 20));
  return Math.round(cap / 2 + (random() * cap) / 2);
}

/**
 * Decisions are plain objects:
 *   {do: 'connect', transport, log}     open `transport` now (one rung down)
 *   {do: 'retry', delay, reason}        wait `delay` ms, then reopen the current rung
 *   {do: 'auth', status, text}          credentials are needed: stop until a token is set
 *   {do: 'diagnose', text}              ask the server why, then call afterDiagnosis()
 */
export class Ladder {
  constructor({ transports, backoffBaseMs, backoffMaxMs, upgradeIntervalMs, random = Math.random }) {
    if (!transports.length) throw new Error('Ladder: no transport');
    this.transports = [...transports];
    this._base = backoffBaseMs;
    this._max = backoffMaxMs;
    this._upgradeMs = upgradeIntervalMs;
    this._random = random;
    this._rung = 0;
    this._attempt = 0;
    this._problems = {}; // transport -> why it was left (shown until it works again)
    this._avoid = {};    // transport -> why it is never retried (a buffering proxy)
    this._silent = {};   // transport -> live connections in a row that went silent
  }

  /** The transport of the current rung. */
  get transport() { return this.transports[this._rung]; }

  /** Back to the top rung with a fresh backoff (a manual reconnect, a new leader tab). */
  restart() {
    this._rung = 0;
    this._attempt = 0;
  }

  /** A fresh backoff on the same rung (the network came back, a token was set). */
  resetBackoff() { this._attempt = 0; }

  /** The next backoff delay; each call doubles the cap up to backoffMaxMs. */
  nextBackoff() {
    return backoff(this._attempt++, this._base, this._max, this._random);
  }

  /**
   * `name`'s connection went down. `info` is what the transport reported
   * ({detail?, status?, code?, buffered?, silent?, retryAfterMs?}); `facts`
   * is what the connection had seen: {text, wasLive, liveForMs, serverError,
   * retryAfterMs, retryHint} (`text` says what went wrong, for people).
   */
  afterDown(name, info, facts) {
    const label = LABELS[name];
    const { text, wasLive, serverError } = facts;
    if (wasLive && facts.liveForMs > STABLE_MS) { this._attempt = 0; this._silent[name] = 0; }
    if (info.status === 401 || info.status === 403) return { do: 'auth', status: info.status, text };
    if (info.buffered) {
      this._avoid[name] = text;
      return this.fall(name, text);
    }
    // The server asked us to come back later: not a transport problem.
    const busyClose = info.code === 1012 || info.code === 1013;
    if (SERVER_BUSY.has(serverError?.error) || facts.retryAfterMs !== null || busyClose
      || info.status === 429 || info.status === 503) {
      const why = serverError?.error || (info.code ? `close ${info.code}` : `HTTP ${info.status}`);
      const delay = facts.retryAfterMs ?? info.retryAfterMs
        ?? (info.code === 1012 || serverError ? spread(facts.retryHint ?? 3000, this._random) : this.nextBackoff());
      return { do: 'retry', delay, reason: `${label}: server asked to reconnect later (${why})` };
    }
    if (wasLive && !info.silent) return { do: 'retry', delay: this.nextBackoff(), reason: `${label} connection lost (${text})` };
    if (wasLive && info.silent) {
      this._silent[name] = (this._silent[name] || 0) + 1;
      if (this._silent[name] < 2) return { do: 'retry', delay: this.nextBackoff(), reason: text };
    }
    return { do: 'diagnose', text };
  }

  /**
   * What the server's answers said about `name` (see livefeed-diagnose.js):
   * {auth?, status?, reachable?, serverTrouble?, text}.
   */
  afterDiagnosis(name, d) {
    if (d.auth) return { do: 'auth', status: d.status, text: d.text };
    if (d.reachable && !d.serverTrouble) return this.fall(name, d.text);
    return { do: 'retry', delay: this.nextBackoff(), reason: d.text };
  }

  /** Leave `name` for the next rung at once; on the last rung, back off and retry it. */
  fall(name, reason) {
    this._problems[name] = reason;
    const idx = this.transports.indexOf(name);
    if (idx >= 0 && idx < this.transports.length - 1) {
      this._rung = idx + 1;
      return { do: 'connect', transport: this.transport, log: `${reason} — falling back to ${LABELS[this.transport]}` };
    }
    return { do: 'retry', delay: this.nextBackoff(), reason };
  }

  /** `name` went live: its old problem is no longer news. */
  live(name) { delete this._problems[name]; }

  /** Why the transports above `name` are not in use, as " (a; b)", or ''. */
  note(name) {
    const why = this.transports
      .slice(0, this.transports.indexOf(name))
      .map((t) => this._problems[t] || this._avoid[t])
      .filter(Boolean);
    return why.length ? ` (${why.join('; ')})` : '';
  }

  /** Delay before the next try of a better transport, or null on the top rung. */
  upgradeDelay() {
    return this._rung === 0 ? null : spread(this._upgradeMs, this._random);
  }

  /** The better transports worth trying again, best first. */
  upgradeCandidates() {
    return this.transports.slice(0, this._rung).filter((t) => !this._avoid[t]);
  }

  /** A trial of `name` worked and replaces the current connection. */
  adopt(name) {
    this._rung = this.transports.indexOf(name);
    this._silent[name] = 0;
  }
}
