/**
 * dashboard-status.js — the badge that says how the page is connected
 * (`Live · WebSocket`, `Reconnecting in 4 s…`), and the panel it opens with
 * the reason and a "Reconnect now" button.
 */

const BADGE = { websocket: 'Live · WebSocket', sse: 'Live · SSE (fallback)', poll: 'Live · polling' };

function badgeText(s) {
  if (s.state === 'live') return BADGE[s.transport] || 'Live';
  if (s.state === 'reconnecting' && s.retryInMs) {
    const left = s.retryInMs - (Date.now() - s.at);
    return `Reconnecting in ${Math.max(1, Math.ceil(left / 1000))} s…`;
  }
  if (s.state === 'reconnecting') return 'Reconnecting…';
  if (s.state === 'connecting') return 'Connecting…';
  return 'Disconnected';
}

export class StatusBadge {
  /** `badge`: the button; `panel`, `reason`, `role`: the panel and its texts; `onReconnect`: its button. */
  constructor({ badge, panel, reason, role, reconnect, onReconnect }) {
    this._badge = badge;
    this._panel = panel;
    this._reason = reason;
    this._role = role;
    this._status = null;
    this._countdown = 0;
    badge.addEventListener('click', () => this._open(panel.hidden));
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !panel.hidden) this._open(false); });
    reconnect.addEventListener('click', onReconnect);
  }

  /** A client status detail: {state, transport, reason, retryInMs?, role}. */
  show(detail) {
    this._status = { ...detail, at: Date.now() };
    clearInterval(this._countdown);
    this._render();
    if (detail.state === 'reconnecting' && detail.retryInMs) this._countdown = setInterval(() => this._render(), 250);
  }

  _open(open) {
    this._panel.hidden = !open;
    this._badge.setAttribute('aria-expanded', String(open));
  }

  _render() {
    const s = this._status;
    const badge = this._badge;
    const text = badgeText(s);
    if (badge.textContent !== text) badge.textContent = text;
    badge.dataset.state = s.state;
    badge.dataset.transport = s.transport || '';
    badge.dataset.role = s.role || '';
    const reason = s.reason || '';
    badge.title = reason;
    if (this._reason.textContent !== reason) this._reason.textContent = reason;
    this._role.textContent = s.role === 'follower' ? 'Shared: another tab of this browser holds the connection.'
      : s.role === 'leader' ? 'This tab holds the connection for every tab of this browser.' : '';
  }
}
