/**
 * livefeed-subscription.js — changing what one open WebSocket follows.
 *
 * API.md: `subscribe` / `unsubscribe` messages are answered, in order, by
 * `subscribed` (the whole list now, and the cursor N where the change took
 * effect) or by a `stream_error` refusal, and the connection stays open.
 * This keeps the messages sent and not yet answered, so a second change
 * made before the first is answered is planned from what the server will
 * follow by then, and it says what the answers amount to once the last one
 * is in. No sockets and no timers: the attempt sends and feeds answers in.
 */

import { changeMessages, sameChannels } from './livefeed-channels.js';

/** The `stream_error` codes that answer a subscribe or unsubscribe. */
export const REFUSALS = Object.freeze(['bad_message', 'bad_channel', 'forbidden', 'too_many_channels']);

export class Subscription {
  /** `following`: the channels the connection was opened with. */
  constructor(following) {
    this.following = following; // as the server last said
    this._expected = [];         // the list after each message not yet answered
    this._wanted = following;
    this._cursor = null;
    this._refused = null;
    this.since = 0;              // when the oldest unanswered message was sent (0: none)
  }

  /** True while a message is unanswered. */
  get pending() { return this._expected.length > 0; }

  /** The connection_established of the connection names what it follows. */
  established(channels) {
    if (Array.isArray(channels) && channels.length && !this.pending) this.following = this._wanted = channels;
  }

  /** The messages that make the connection follow `channels` (none when it already will). */
  change(channels, now) {
    const from = this._expected.at(-1) ?? this.following;
    this._wanted = channels;
    const messages = changeMessages(from, channels);
    let list = from;
    for (const m of messages) {
      list = m.type === 'subscribe' ? [...list, ...m.channels] : list.filter((n) => !m.channels.includes(n));
      this._expected.push(list);
    }
    if (messages.length && !this.since) this.since = now;
    return messages;
  }

  /**
   * A server message while changes are unanswered: null when it is no
   * answer to them, else what the answers amount to so far:
   *   {done: false}                          more answers to come
   *   {done: true, unsupported: true}        the server knows no subscribe (`bad_message`)
   *   {done: true, channels, cursor, refused} the list the server follows now and the
   *                                          cursor where the last change took effect
   *                                          (null if none did); `refused` is the
   *                                          last refusal ({error, detail}) or null
   */
  answer(msg, now) {
    if (!this.pending) return null;
    if (msg.type === 'subscribed' && Array.isArray(msg.channels)) {
      this.following = msg.channels;
      if (Number.isSafeInteger(msg.cursor)) this._cursor = msg.cursor;
    } else if (msg.type === 'stream_error' && REFUSALS.includes(msg.error) && !('ref' in msg)) {
      if (msg.error === 'bad_message') return this._finish({ done: true, unsupported: true });
      this._refused = { error: msg.error, detail: msg.detail ?? null };
    } else {
      return null;
    }
    this._expected.shift();
    this.since = this.pending ? now : 0;
    if (this.pending) return { done: false };
    const refused = this._refused ?? (sameChannels(this.following, this._wanted) ? null
      : { error: 'not_followed', detail: `the server follows ${this.following.join(', ')}` });
    return this._finish({ done: true, channels: this.following, cursor: this._cursor, refused });
  }

  _finish(result) {
    this._expected = [];
    this._cursor = null;
    this._refused = null;
    this.since = 0;
    return result;
  }
}
