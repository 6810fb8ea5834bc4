/**
 * dashboard.js — the Live Activity Feed page. All connection logic lives in
 * livefeed-client.js; this file only renders what the client reports.
 *
 * Rendering rules: event data is only ever put in the DOM with textContent
 * (never innerHTML); rows are added once per animation frame in a batch; the
 * feed keeps at most MAX_ROWS rows and the page at most MAX_KEPT events.
 */
import { LivefeedClient } from './livefeed-client.js';

const MAX_ROWS = 500;
const MAX_KEPT = 1000;
const CHART_MINUTES = 30;
const LOG_LINES = 150;
const MAX_SEARCH_TEXT = 8192;
const TOKEN_KEY = 'livefeed:read-token';

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
const KNOWN_TYPES = Object.keys(TYPE_LOOK);
const BADGE = { websocket: 'Live · WebSocket', sse: 'Live · SSE (fallback)', poll: 'Live · polling' };

const $ = (id) => document.getElementById(id);

/** sessionStorage that never throws (it does when storage is disabled). */
const tabStore = {
  get(key) { try { return sessionStorage.getItem(key); } catch { return null; } },
  set(key, value) { try { sessionStorage.setItem(key, value); } catch { /* disabled or full */ } },
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const typeName = (type) => type.replace(/[_.-]+/g, ' ');

function relativeTime(ms) {
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

/* ---------------- state ---------------- */

const params = new URLSearchParams(location.search);
const state = {
  kept: [],            // {env, text} in id order, at most MAX_KEPT
  pending: [],         // arrived since the last frame
  paused: false,
  pausedAt: null,      // newest id shown when paused
  heldCount: 0,        // events that arrived while paused
  counts: new Map(),
  total: 0,
  minutes: new Map(),  // minute number -> count (by event ts)
  workflows: new Map(),
  filter: { wf: '', type: '', q: '' },
  status: null,
  askedToken: false,
};
const rowEnv = new WeakMap();

const client = new LivefeedClient({
  channel: params.get('channel') || 'validation_updates',
  tail: 100,
  keep: MAX_ROWS,
  token: tabStore.get(TOKEN_KEY) || null,
  baseUrl: location.origin + (document.querySelector('meta[name="livefeed-base-path"]')?.content || ''),
  ...(params.get('transports') ? { transports: params.get('transports').split(',') } : {}),
});
globalThis.livefeedDashboard = { client, state };

/* ---------------- intake and batched rendering ---------------- */

function searchText(rec) {
  if (rec.text === null) {
    const e = rec.env;
    let data = '';
    try { data = JSON.stringify(e.data ?? {}); } catch { /* cyclic: impossible from JSON */ }
    rec.text = `#${e.id} ${e.type} ${e.workflow_id ?? ''} ${data}`.slice(0, MAX_SEARCH_TEXT).toLowerCase();
  }
  return rec.text;
}

function matches(rec) {
  const { wf, type, q } = state.filter;
  if (type && rec.env.type !== type) return false;
  if (wf && !String(rec.env.workflow_id ?? '').toLowerCase().includes(wf)) return false;
  if (q && !searchText(rec).includes(q)) return false;
  return true;
}

function intake(env, source) {
  const rec = { env, text: null };
  state.kept.push(rec);
  if (state.kept.length > MAX_KEPT + 100) state.kept.splice(0, state.kept.length - MAX_KEPT);
  state.total++;
  if (state.counts.has(env.type) || state.counts.size < 500) state.counts.set(env.type, (state.counts.get(env.type) || 0) + 1);
  const ts = Date.parse(env.ts);
  if (Number.isFinite(ts)) {
    const minute = Math.floor(ts / 60000);
    if (minute > Math.floor(Date.now() / 60000) - CHART_MINUTES) state.minutes.set(minute, (state.minutes.get(minute) || 0) + 1);
  }
  if (env.workflow_id) noteWorkflow(env.workflow_id);
  if (state.paused && source !== 'restore') state.heldCount++;
  state.pending.push(rec);
  if (state.pending.length > MAX_ROWS * 4) state.pending.splice(0, state.pending.length - MAX_ROWS * 2);
  scheduleFlush();
}

let flushFrame = 0;
let flushTimer = 0;
function scheduleFlush() {
  if (flushFrame) return;
  flushFrame = requestAnimationFrame(flush);
  // rAF does not run in hidden tabs; keep counters right there too, but rarely.
  flushTimer = setTimeout(flush, 1000);
}

function flush() {
  cancelAnimationFrame(flushFrame);
  clearTimeout(flushTimer);
  flushFrame = 0;
  const pending = state.pending;
  state.pending = [];
  renderCounters();
  renderChart();
  renderPause();
  if (!state.paused && pending.length) prependRows(pending.filter(matches));
}

function prependRows(recs) {
  if (!recs.length) return;
  const feed = $('feed');
  const fragment = document.createDocumentFragment();
  const start = Math.max(0, recs.length - MAX_ROWS);
  for (let i = recs.length - 1; i >= start; i--) fragment.append(makeRow(recs[i].env));
  if (recs.length >= MAX_ROWS) feed.replaceChildren(fragment);
  else feed.prepend(fragment);
  while (feed.childElementCount > MAX_ROWS) feed.lastElementChild.remove();
  renderFeedNote();
}

function renderAll() {
  const limit = state.paused ? state.pausedAt ?? Infinity : Infinity;
  const shown = [];
  for (let i = state.kept.length - 1; i >= 0 && shown.length < MAX_ROWS; i--) {
    const rec = state.kept[i];
    if (rec.env.id <= limit && matches(rec)) shown.push(rec);
  }
  $('feed').replaceChildren(...shown.map((rec) => makeRow(rec.env)));
  renderFeedNote();
}

function renderFeedNote() {
  const rows = $('feed').childElementCount;
  const filtering = state.filter.wf || state.filter.type || state.filter.q;
  $('feed-empty').hidden = rows > 0;
  $('feed-empty').textContent = filtering ? 'No events match the filters.' : 'Waiting for events…';
  $('feed-note').textContent = rows >= MAX_ROWS ? `Showing the newest ${MAX_ROWS} events.` : '';
}

function makeRow(env) {
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

/* ---------------- counters and chart ---------------- */

function counterItem(type) {
  const li = el('li', 'counter');
  li.dataset.type = type;
  li.dataset.count = '0';
  if (!TYPE_LOOK[type]) li.classList.add('type-other');
  const button = el('button');
  button.type = 'button';
  button.title = `Show only ${typeName(type)}`;
  button.append(el('span', 'icon', TYPE_LOOK[type] || '•'), el('span', 'name', typeName(type)), el('span', 'count', '0'));
  button.firstChild.setAttribute('aria-hidden', 'true');
  button.addEventListener('click', () => {
    const select = $('filter-type');
    select.value = select.value === type ? '' : type;
    applyFilters();
  });
  li.append(button);
  return li;
}

const counterNodes = new Map();
function renderCounters() {
  const list = $('counters');
  for (const [type, count] of state.counts) {
    let node = counterNodes.get(type);
    if (!node) {
      if (counterNodes.size >= 100) continue; // open-ended types: bounded UI
      node = counterItem(type);
      counterNodes.set(type, node);
      list.append(node);
      addTypeOption(type);
    }
    if (node.dataset.count !== String(count)) {
      node.dataset.count = String(count);
      node.querySelector('.count').textContent = count.toLocaleString('en');
    }
  }
  $('total-count').textContent = String(state.total);
}

function addTypeOption(type) {
  const select = $('filter-type');
  if ([...select.options].some((o) => o.value === type)) return;
  const option = el('option', '', typeName(type));
  option.value = type;
  select.append(option);
}

const SVG = 'http://www.w3.org/2000/svg';
const chart = { bars: [], max: null, last: 0, timer: 0 };

function buildChart() {
  const svg = $('chart');
  for (let i = 0; i < CHART_MINUTES; i++) {
    const rect = document.createElementNS(SVG, 'rect');
    rect.setAttribute('x', String(i * 10 + 1));
    rect.setAttribute('width', '8');
    rect.setAttribute('y', '78');
    rect.setAttribute('height', '0');
    rect.setAttribute('class', 'bar');
    svg.append(rect);
    chart.bars.push(rect);
  }
  const base = document.createElementNS(SVG, 'line');
  for (const [k, v] of Object.entries({ x1: 0, x2: 300, y1: 78.5, y2: 78.5, class: 'axis' })) base.setAttribute(k, String(v));
  svg.append(base);
  const label = (x, y, anchor, text) => {
    const t = document.createElementNS(SVG, 'text');
    t.setAttribute('x', String(x));
    t.setAttribute('y', String(y));
    t.setAttribute('text-anchor', anchor);
    t.setAttribute('class', 'label');
    t.textContent = text;
    svg.append(t);
    return t;
  };
  label(0, 89, 'start', `−${CHART_MINUTES} min`);
  label(300, 89, 'end', 'now');
  chart.max = label(0, 8, 'start', '');
}

function renderChart(force = false) {
  const t = Date.now();
  if (!force && t - chart.last < 500) {
    if (!chart.timer) chart.timer = setTimeout(() => renderChart(true), 500 - (t - chart.last));
    return;
  }
  clearTimeout(chart.timer);
  chart.timer = 0;
  chart.last = t;
  const current = Math.floor(t / 60000);
  for (const minute of state.minutes.keys()) if (minute <= current - CHART_MINUTES) state.minutes.delete(minute);
  const values = [];
  for (let i = CHART_MINUTES - 1; i >= 0; i--) values.push(state.minutes.get(current - i) || 0);
  const max = Math.max(1, ...values);
  values.forEach((v, i) => {
    const h = v ? Math.max(1, Math.round((v / max) * 66)) : 0;
    chart.bars[i].setAttribute('y', String(78 - h));
    chart.bars[i].setAttribute('height', String(h));
  });
  chart.max.textContent = `max ${max}/min`;
  const fraction = (t % 60000) / 60000;
  const rate = Math.round(values[CHART_MINUTES - 1] + values[CHART_MINUTES - 2] * (1 - fraction));
  $('rate').textContent = String(rate);
  $('chart').setAttribute('aria-label', `Events per minute over the last ${CHART_MINUTES} minutes; about ${rate} in the last minute, at most ${max}`);
}

/* ---------------- filters and pause ---------------- */

function noteWorkflow(id) {
  if (state.workflows.has(id)) return;
  const option = el('option');
  option.value = id;
  state.workflows.set(id, option);
  $('workflow-ids').append(option);
  if (state.workflows.size > 200) {
    const [oldest, node] = state.workflows.entries().next().value;
    node.remove();
    state.workflows.delete(oldest);
  }
}

let filterTimer = 0;
function applyFilters() {
  clearTimeout(filterTimer);
  state.filter = {
    wf: $('filter-workflow').value.trim().toLowerCase(),
    type: $('filter-type').value,
    q: $('search').value.trim().toLowerCase(),
  };
  for (const [type, node] of counterNodes) node.classList.toggle('selected', type === state.filter.type);
  renderAll();
}

function renderPause() {
  const button = $('pause');
  button.setAttribute('aria-pressed', String(state.paused));
  button.textContent = state.paused ? `Resume (${state.heldCount} new)` : 'Pause';
}

function togglePause() {
  state.paused = !state.paused;
  if (state.paused) {
    state.pausedAt = state.kept.length ? state.kept[state.kept.length - 1].env.id : 0;
    state.heldCount = 0;
    notice('Paused: new events are counted but not shown until you resume.', { key: 'paused' });
  } else {
    dismiss('paused');
    const missed = state.heldCount;
    state.pending = [];
    renderAll();
    if (missed) notice(`${missed} missed event${missed === 1 ? '' : 's'} replayed`, { timeoutMs: 15000, key: 'resumed' });
  }
  renderPause();
}

/* ---------------- notices, status and log ---------------- */

const notices = new Map();
function notice(text, { kind = 'info', timeoutMs = 0, key = null } = {}) {
  if (key) dismiss(key);
  const box = el('div', `notice notice-${kind}`);
  const close = el('button', 'dismiss', '×');
  close.type = 'button';
  close.setAttribute('aria-label', 'Dismiss');
  close.addEventListener('click', () => box.remove());
  box.append(el('p', '', text), close);
  $('notices').append(box);
  if (key) notices.set(key, box);
  if (timeoutMs) setTimeout(() => box.remove(), timeoutMs);
  while ($('notices').childElementCount > 5) $('notices').firstElementChild.remove();
}

function dismiss(key) {
  notices.get(key)?.remove();
  notices.delete(key);
}

let countdown = 0;
function showStatus(detail) {
  state.status = { ...detail, at: Date.now() };
  clearInterval(countdown);
  renderStatus();
  if (detail.state === 'reconnecting' && detail.retryInMs) countdown = setInterval(renderStatus, 250);
}

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

function renderStatus() {
  const s = state.status;
  const badge = $('status');
  const text = badgeText(s);
  if (badge.textContent !== text) badge.textContent = text;
  badge.dataset.state = s.state;
  badge.dataset.transport = s.transport || '';
  badge.dataset.role = s.role || '';
  const reason = s.reason || '';
  badge.title = reason;
  if ($('status-reason').textContent !== reason) $('status-reason').textContent = reason;
  $('status-role').textContent = s.role === 'follower' ? 'Shared: another tab of this browser holds the connection.'
    : s.role === 'leader' ? 'This tab holds the connection for every tab of this browser.' : '';
}

function addLog(line) {
  const list = $('connection-log');
  const item = el('li');
  const time = el('time', 'when', new Date().toLocaleTimeString('en-GB'));
  item.append(time, document.createTextNode(` ${line}`));
  list.prepend(item);
  while (list.childElementCount > LOG_LINES) list.lastElementChild.remove();
}

function onControl(msg) {
  if (msg.type !== 'replay_truncated') return;
  if (msg.reason === 'ahead') {
    notice(`This page had seen events up to #${msg.requested_after}, but the server's newest is #${msg.latest_id}: `
      + 'its log was reset, or this is another server. New events are shown from here on.', { kind: 'warn', key: 'truncated' });
  } else {
    const lost = Number(msg.oldest_available) - Number(msg.requested_after) - 1;
    notice(`Some events could not be replayed: the server no longer keeps the events after #${msg.requested_after} `
      + `before #${msg.oldest_available} (retention)${lost > 0 ? `, up to ${lost} event ids` : ''}. The feed continues from #${msg.oldest_available}.`,
    { kind: 'warn', key: 'truncated' });
  }
}

/* ---------------- read token ---------------- */

function askToken(refused) {
  const dialog = $('token-dialog');
  $('token-error').hidden = !refused;
  $('token-error').textContent = refused ? 'The server refused that token. Check it and try again.' : '';
  if (dialog.open) return;
  if (state.askedToken && !refused) return;
  state.askedToken = true;
  if (typeof dialog.showModal === 'function') dialog.showModal();
  else dialog.setAttribute('open', '');
  $('token-input').focus();
}

function submitToken(e) {
  e.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) return;
  tabStore.set(TOKEN_KEY, token);
  $('token-input').value = '';
  $('token-dialog').close?.();
  $('token-dialog').removeAttribute('open');
  client.setToken(token);
}

/* ---------------- wiring ---------------- */

function wire() {
  $('channel-name').textContent = client.channel;
  if (client.channel !== 'validation_updates') document.title = `${client.channel} · Live Activity Feed`;
  for (const type of KNOWN_TYPES) {
    const node = counterItem(type);
    counterNodes.set(type, node);
    $('counters').append(node);
    addTypeOption(type);
  }
  buildChart();
  renderChart(true);

  $('status').addEventListener('click', () => {
    const panel = $('status-panel');
    panel.hidden = !panel.hidden;
    $('status').setAttribute('aria-expanded', String(!panel.hidden));
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !$('status-panel').hidden) {
      $('status-panel').hidden = true;
      $('status').setAttribute('aria-expanded', 'false');
    }
  });
  $('reconnect').addEventListener('click', () => client.reconnect());
  $('filters').addEventListener('submit', (e) => e.preventDefault());
  for (const id of ['filter-workflow', 'search']) {
    $(id).addEventListener('input', () => { clearTimeout(filterTimer); filterTimer = setTimeout(applyFilters, 150); });
  }
  $('filter-type').addEventListener('change', applyFilters);
  $('pause').addEventListener('click', togglePause);
  $('token-form').addEventListener('submit', submitToken);
  $('feed').addEventListener('toggle', (e) => {
    const details = e.target;
    const pre = details.querySelector?.('pre.json');
    if (!details.open || !pre || pre.textContent) return;
    pre.textContent = JSON.stringify(rowEnv.get(details), null, 2);
  }, true);
  setInterval(() => {
    for (const t of $('feed').querySelectorAll('time')) {
      const ms = Date.parse(t.dateTime);
      if (Number.isFinite(ms)) t.textContent = relativeTime(ms);
    }
    renderChart(true);
  }, 10000);

  client.addEventListener('event', (e) => intake(e.detail, e.source));
  client.addEventListener('status', (e) => showStatus(e.detail));
  client.addEventListener('log', (e) => addLog(e.detail));
  client.addEventListener('control', (e) => onControl(e.detail));
  client.addEventListener('replay', (e) => {
    const n = e.detail.count;
    notice(`Reconnected: ${n} missed event${n === 1 ? '' : 's'} replayed`, { timeoutMs: 15000, key: 'replayed' });
  });
  client.addEventListener('authrequired', (e) => askToken(e.detail.refused));
  client.addEventListener('token', (e) => { if (e.detail) tabStore.set(TOKEN_KEY, e.detail); });
  showStatus(client.status);
  client.start();
  renderFeedNote();
}

wire();
