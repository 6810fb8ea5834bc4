/**
 * livefeed-channels.js — which channels a client follows, as one value.
 *
 * A stream follows a list of channels (API.md, "Several channels on one
 * connection"): up to 50 workflow ids, or `validation_updates` for every
 * event. The list is normalised once here, so the URL, the tab-sharing key,
 * the subscribe/unsubscribe messages and the page's own "does this event
 * belong here" test all agree. No DOM and no network.
 */

/** The channel of every event (any other channel is a workflow id). */
export const ALL_EVENTS_CHANNEL = 'validation_updates';

/** The server's limit on the channels of one stream. */
export const MAX_CHANNELS = 50;

const NAME_RE = /^[A-Za-z0-9_.:-]{1,128}$/;

/** True when `name` is a channel name the server accepts ('.' and '..' would be path segments). */
export const isChannelName = (name) => typeof name === 'string' && NAME_RE.test(name) && name !== '.' && name !== '..';

/**
 * `input` ('wf_a,wf_b', an array, or nothing) as a list: trimmed, repeats
 * dropped, in the order given. Nothing, or a list naming
 * `validation_updates`, is [`validation_updates`]: every event. A malformed
 * name or more than MAX_CHANNELS is a RangeError naming it.
 */
export function channelList(input) {
  const raw = Array.isArray(input) ? input : String(input ?? '').split(',');
  const names = [...new Set(raw.map((n) => String(n).trim()).filter(Boolean))];
  for (const name of names) if (!isChannelName(name)) throw new RangeError(`not a channel name: ${JSON.stringify(name)}`);
  if (!names.length || names.includes(ALL_EVENTS_CHANNEL)) return [ALL_EVENTS_CHANNEL];
  if (names.length > MAX_CHANNELS) throw new RangeError(`${names.length} channels: at most ${MAX_CHANNELS} per stream`);
  return names;
}

/** True when the list means every event. */
export const followsAll = (channels) => channels.includes(ALL_EVENTS_CHANNEL);

/** The same channels, whatever the order. */
export function sameChannels(a, b) {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((name) => set.has(name));
}

/** A list as it goes in a URL path or a `workflow_id=` parameter. */
export const channelPath = (channels) => channels.map(encodeURIComponent).join(',');

/** A list as an identity (tab sharing, storage): order does not matter. */
export const channelKey = (channels) => [...channels].sort().join(',');

/** True when an event (an envelope) belongs to a stream of `channels`. */
export function covers(channels, env) {
  return followsAll(channels) || (env?.workflow_id != null && channels.includes(env.workflow_id));
}

/**
 * The messages that turn a connection following `from` into one following
 * `to`: subscribe first, then unsubscribe, so a channel in both lists is
 * never left uncovered (and 'every event' is dropped only once the
 * narrower list is in place).
 */
export function changeMessages(from, to) {
  const add = to.filter((n) => !from.includes(n));
  const drop = from.filter((n) => !to.includes(n));
  const messages = [];
  if (add.length) messages.push({ type: 'subscribe', channels: add });
  if (drop.length) messages.push({ type: 'unsubscribe', channels: drop });
  return messages;
}
