/**
 * livefeed-endpoints.js — the server's URLs, credentials and small JSON reads.
 *
 * One place builds every URL the client asks for (streams, pages, stats,
 * diagnosis, history), so the channels, the `types` filter and the read
 * token are applied the same way everywhere. It also hands each transport
 * the narrow config it needs: `{url(), headers(), cursor()}` (long-poll adds
 * `start()` and `waitS`), and nothing else of the client. `channels` may
 * change while the client runs: every URL is built when it is needed.
 */

import { ALL_EVENTS_CHANNEL, channelPath, followsAll } from './livefeed-channels.js';

export { ALL_EVENTS_CHANNEL };

const HISTORY_PAGE = 1000; // /api/events' largest page

/** A URL fit for a log line: one-use tickets and tokens are not printed. */
export function redact(url) {
  return String(url).replace(/([?&](?:ticket|access_token)=)[^&]*/g, '$1…');
}

/** The Retry-After header in milliseconds (seconds form only), or null. */
export function retryAfterMs(response) {
  const v = response.headers.get('Retry-After');
  if (v && /^\d+$/.test(v)) return Number(v) * 1000;
  return null;
}

/** {error, detail} of an error answer: the API's JSON body, or the start of whatever text it is. */
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

/** A refusal as the transports report it: "<what> answered HTTP 503: <detail>". */
export function httpRefusal(what, response, body) {
  return {
    status: response.status, error: body.error, retryAfterMs: retryAfterMs(response),
    detail: `${what} answered HTTP ${response.status}${body.detail ? `: ${body.detail}` : ''}`,
  };
}

export class Endpoints {
  /**
   * `base`: the server's URL (no trailing slash); `channels`: a
   * livefeed-channels.js list; `types`: 'a,b' or null; `tail`: events for a
   * first paint; `log`: where notes for people go.
   */
  constructor({ base, channels, types, tail, pollWaitS, token, log }) {
    this.base = base;
    this.channels = channels;
    this._types = types;
    this._tail = tail;
    this._pollWaitS = pollWaitS;
    this._token = token || null;
    this._log = log;
    this._tickets = undefined; // unknown until the server answers /api/stream-tickets
  }

  get token() { return this._token; }

  set token(token) {
    this._token = token || null;
    this._tickets = undefined;
  }

  url(path, params = {}) {
    const u = new URL(this.base + path);
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') u.searchParams.set(k, v);
    return u.href;
  }

  /** The read token as a header (empty without one). */
  auth() {
    return this._token ? { Authorization: `Bearer ${this._token}` } : {};
  }

  headers(accept = 'application/json') {
    return { Accept: accept, ...this.auth() };
  }

  /** The channels as a path segment: `wf_a,wf_b`. */
  get path() { return channelPath(this.channels); }

  /** The channels (or `channels`) and the type filter as /api/events parameters. */
  filterParams(channels = this.channels) {
    const p = {};
    if (!followsAll(channels)) p.workflow_id = channels.join(',');
    if (this._types) p.types = this._types;
    return p;
  }

  /** Stream parameters: resume after `cursor`, or the newest `tail` events. */
  streamParams(cursor) {
    const p = {};
    if (this._types) p.types = this._types;
    if (cursor !== null) p.last_event_id = String(cursor);
    else if (this._tail > 0) p.tail = String(this._tail);
    return p;
  }

  /** GET a JSON document; null when unreachable or not 2xx. */
  async getJson(path, params) {
    try {
      const res = await fetch(this.url(path, params), { headers: this.headers(), cache: 'no-store' });
      return res.ok ? await res.json() : null;
    } catch {
      return null;
    }
  }

  /** The log's newest id from /api/stats, or null when unreachable. */
  async latestId() {
    const j = await this.getJson('/api/stats');
    return Number.isSafeInteger(j?.latest_id) ? j.latest_id : null;
  }

  /** One page of matching events after `after` ({events, has_more, ...}), or null. */
  page(after) {
    return this.getJson('/api/events', { after: String(after), limit: String(HISTORY_PAGE), ...this.filterParams() });
  }

  /**
   * The events of `channels` stamped within the last `sinceMs` with ids up to
   * `through`, oldest first: what a stream that starts following them at
   * `through` does not send. At most `pages` pages of 1000; when there is
   * more, the last page is the one just before `through` (the newest matter
   * most) and `complete` is false, as it is when a page failed.
   */
  async history(channels, { through, sinceMs, pages = 5 }) {
    const since = new Date(Date.now() - sinceMs).toISOString();
    const events = [];
    let after = 0;
    let skipped = false;
    for (let page = 0; page < pages; page++) {
      if (page === pages - 1 && through - HISTORY_PAGE > after) {
        after = through - HISTORY_PAGE;
        skipped = true;
      }
      const j = await this.getJson('/api/events', { after: String(after), limit: String(HISTORY_PAGE), since, ...this.filterParams(channels) });
      if (!j || !Array.isArray(j.events)) return { events, complete: false };
      const wanted = j.events.filter((env) => env.id <= through);
      events.push(...wanted);
      if (wanted.length < j.events.length || !j.has_more || !j.events.length) return { events, complete: !skipped };
      after = j.events[j.events.length - 1].id;
    }
    return { events, complete: false };
  }

  async wsUrl(cursor) {
    // batch=1: several events per frame (a JSON array), much cheaper for the server
    const params = { ...this.streamParams(cursor), batch: '1' };
    if (this._token) Object.assign(params, await this._credentialParams());
    return this.url(`/ws/${this.path}`, params).replace(/^http/, 'ws');
  }

  /** A one-use ticket for the WebSocket URL; access_token only if the server has no tickets. */
  async _credentialParams() {
    if (this._tickets !== false) {
      let res;
      try {
        res = await fetch(`${this.base}/api/stream-tickets`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', ...this.auth() },
          body: JSON.stringify({ channel: this.channels.join(',') }),
          cache: 'no-store',
        });
      } catch (err) {
        throw Object.assign(new Error(`stream ticket request failed: ${err.message}`), { info: { network: true } });
      }
      if (res.ok) {
        const j = await res.json().catch(() => ({}));
        if (typeof j.ticket === 'string') { this._tickets = true; return { ticket: j.ticket }; }
      }
      if (res.status === 404 || res.status === 405) {
        this._tickets = false;
        this._log('Stream tickets are not available on this server (404): the token goes in the URL as access_token');
      } else if (!res.ok) {
        const info = httpRefusal('stream ticket request', res, await errorBody(res));
        throw Object.assign(new Error(`stream ticket refused: HTTP ${res.status}`), { info });
      }
    }
    return { access_token: this._token };
  }

  /** What transport `name` may know of the client: where to connect, with which headers, from which cursor. */
  transportConfig(name, cursor) {
    const headers = (accept) => this.headers(accept);
    if (name === 'websocket') return { url: (c) => this.wsUrl(c), headers, cursor };
    if (name === 'sse') {
      return { url: (c) => this.url(`/sse/${this.path}`, this.streamParams(c)), headers, cursor };
    }
    return {
      url: (after, waitS) => this.url('/api/events', { after: String(after), limit: '1000', wait: String(waitS), ...this.filterParams() }),
      headers,
      cursor,
      waitS: this._pollWaitS,
      // /api/events has no tail=: with no cursor, start a little before the newest id instead.
      start: async () => {
        const latest = await this.latestId();
        return latest === null ? null : Math.max(0, latest - this._tail);
      },
    };
  }
}
