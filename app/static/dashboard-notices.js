/**
 * dashboard-notices.js — short messages for the reader (a replay, a paused
 * feed, a refused workflow), each with a button that dismisses it.
 *
 * They appear in a region that floats over the page's corner, so one
 * arriving never pushes the feed; a message with a key replaces the last
 * one with that key, and at most five are shown.
 */

import { el } from './dashboard-rows.js';

const MAX_SHOWN = 5;

export class Notices {
  /** `region`: the (aria-live) element the messages go in. */
  constructor(region) {
    this._region = region;
    this._byKey = new Map();
  }

  /** Show `text`; `kind` 'info' or 'warn'; gone after `timeoutMs` (0: when dismissed); `key` replaces. */
  show(text, { kind = 'info', timeoutMs = 0, key = null } = {}) {
    if (key) this.dismiss(key);
    const box = el('div', `notice notice-${kind}`);
    const close = el('button', 'dismiss', '×');
    close.type = 'button';
    close.setAttribute('aria-label', 'Dismiss');
    close.addEventListener('click', () => box.remove());
    box.append(el('p', '', text), close);
    this._region.append(box);
    if (key) this._byKey.set(key, box);
    if (timeoutMs) setTimeout(() => box.remove(), timeoutMs);
    while (this._region.childElementCount > MAX_SHOWN) this._region.firstElementChild.remove();
  }

  dismiss(key) {
    this._byKey.get(key)?.remove();
    this._byKey.delete(key);
  }
}
