/**
 * dashboard-watch.js — which workflows the page watches.
 *
 * The selection is shown as a list of names, each with a button that
 * removes it, beside a field that adds one; it lives in the address
 * (`?channel=wf_a,wf_b`), so a view can be bookmarked or sent to someone and
 * a reload keeps it. An empty selection watches every event. This module
 * only shows the selection and reports what the reader asks for; the page
 * decides (onChange) and calls show() with the list in force.
 */

import { ALL_EVENTS_CHANNEL, channelList, followsAll, isChannelName } from './livefeed-channels.js';
import { el } from './dashboard-rows.js';

const PARAM = 'channel';
const TITLE = 'Live Activity Feed';

/** The selection the address asks for, and the problem with it if it is malformed (then every event). */
export function selectionFromUrl(search = globalThis.location?.search ?? '') {
  const raw = new URLSearchParams(search).get(PARAM) ?? '';
  try {
    return { channels: channelList(raw), problem: null };
  } catch (err) {
    return { channels: [ALL_EVENTS_CHANNEL], problem: `The address names channels this page cannot watch (${err.message}): watching every event instead.` };
  }
}

/** The address for `channels`, other parameters kept. */
export function urlFor(channels, href = globalThis.location.href) {
  const url = new URL(href);
  if (followsAll(channels)) url.searchParams.delete(PARAM);
  else url.searchParams.set(PARAM, channels.join(','));
  return url.pathname + url.search.replaceAll('%2C', ',') + url.hash;
}

export class WatchList {
  /**
   * `form`: the add form, with `input`; `list`: where the names go;
   * `onChange(channels)`: the reader asked for this selection;
   * `complain(text)`: tell the reader why a name was not added.
   */
  constructor({ form, input, list, onChange, complain }) {
    this._input = input;
    this._list = list;
    this._onChange = onChange;
    this._complain = complain;
    this._channels = [ALL_EVENTS_CHANNEL];
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this._add(input.value.trim());
    });
  }

  /** Show `channels` as the selection, in the list, the address and the title. */
  show(channels) {
    this._channels = channels;
    const items = followsAll(channels) ? [el('li', 'chip chip-all', 'All workflows')] : channels.map((name) => this._chip(name));
    this._list.replaceChildren(...items);
    const url = urlFor(channels);
    if (url !== location.pathname + location.search + location.hash) history.replaceState(history.state, '', url);
    document.title = followsAll(channels) ? TITLE : `${channels.join(', ')} · ${TITLE}`;
  }

  _chip(name) {
    const remove = el('button', 'chip-remove', '×');
    remove.type = 'button';
    remove.setAttribute('aria-label', `Stop watching ${name}`);
    remove.title = `Stop watching ${name}`;
    remove.addEventListener('click', () => this._onChange(this._channels.filter((n) => n !== name)));
    const chip = el('li', 'chip');
    chip.dataset.channel = name;
    chip.append(el('code', '', name), remove);
    return chip;
  }

  _add(name) {
    if (!name) return;
    if (!isChannelName(name) || name === ALL_EVENTS_CHANNEL) {
      this._complain(`“${name.slice(0, 140)}” is not a workflow id (letters, digits and _ . : - only, at most 128).`);
      return;
    }
    this._input.value = '';
    if (this._channels.includes(name)) return;
    this._onChange(followsAll(this._channels) ? [name] : [...this._channels, name]);
  }
}
