/**
 * dashboard-rows.js — how one event, and one per-type counter, look on the
 * dashboard.
 *
 * Event data only ever reaches the DOM through textContent (never
 * innerHTML), so data that looks like HTML is shown, not run. A row's full
 * JSON is rendered only when it is opened (envelopeOf gives it back).
 */

const TYPE_LOOK = {
  validation_created: '+',
  validation_approved: '✓',
  validation_rejected: '✗',
  validation_enhanced: '✦',
  recommendation_created: '✚',
  recommendation_approved: '✔',
  recommendation_rejected: '✘',
  recommendation_applied: '⚙',
  workflow_started: '▶',
  workflow_completed: '■',
  workflow_failed: '⚠',
};
export const KNOWN_TYPES = Object.keys(TYPE_LOOK);

const rowEnv = new WeakMap();

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export const typeName = (type) => type.replace(/[_.-]+/g, ' ');

export function relativeTime(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  if (!Number.isFinite(s) || s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function preview(data) {
  if (!data || typeof data !== 'object') return '';
  const parts = [];
  for (const [k, v] of Object.entries(data)) {
    const value = v === null || typeof v !== 'object' ? String(v) : Array.isArray(v) ? `[${v.length}]` : '{…}';
    parts.push(`${k}: ${value.length > 60 ? `${value.slice(0, 59)}…` : value}`);
    if (parts.length === 3) break;
  }
  const text = parts.join(' · ');
  return text.length > 160 ? `${text.slice(0, 159)}…` : text;
}

/** The envelope shown by a row's <details> element. */
export const envelopeOf = (details) => rowEnv.get(details);

export function makeRow(env) {
  const li = el('li', 'row');
  li.dataset.eventId = String(env.id);
  li.dataset.type = env.type;
  if (!TYPE_LOOK[env.type]) li.classList.add('type-other');
  const details = el('details');
  const summary = el('summary');
  const ts = Date.parse(env.ts);
  const time = el('time', 'when', Number.isFinite(ts) ? relativeTime(ts) : '');
  time.dateTime = env.ts;
  time.title = env.ts;
  summary.append(
    el('span', 'icon', TYPE_LOOK[env.type] || '•'),
    el('span', 'type', typeName(env.type)),
    el('span', 'wf', env.workflow_id ?? '—'),
    el('span', 'preview', preview(env.data)),
    time,
    el('span', 'eid', `#${env.id}`),
  );
  summary.firstChild.setAttribute('aria-hidden', 'true');
  details.append(summary, el('pre', 'json'));
  li.append(details);
  rowEnv.set(details, env);
  return li;
}

/** A counter for `type`; `onPick` runs when it is clicked (filter by that type). */
export function counterItem(type, onPick) {
  const li = el('li', 'counter');
  li.dataset.type = type;
  li.dataset.count = '0';
  if (!TYPE_LOOK[type]) li.classList.add('type-other');
  const button = el('button');
  button.type = 'button';
  button.title = `Show only ${typeName(type)}`;
  button.append(el('span', 'icon', TYPE_LOOK[type] || '•'), el('span', 'name', typeName(type)), el('span', 'count', '0'));
  button.firstChild.setAttribute('aria-hidden', 'true');
  button.addEventListener('click', () => onPick(type));
  li.append(button);
  return li;
}
