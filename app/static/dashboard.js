/**
 * dashboard.js — the Live Activity Feed page. All connection logic lives in
 * livefeed-client.js; this file only renders what the client reports (rows
 * and counters in dashboard-rows.js, the chart in dashboard-chart.js).
 *
 * Rendering rules: event data is only ever put in the DOM with textContent
 * (never innerHTML); rows are added once per animation frame in a batch; the
 * feed keeps at most MAX_ROWS rows and the page at most MAX_KEPT events.
 */
import { MinuteChart } from './dashboard-chart.js';
import { KNOWN_TYPES, counterItem, el, envelopeOf, makeRow, relativeTime, typeName } from './dashboard-rows.js';
import { LivefeedClient } from './livefeed-client.js';

const MAX_ROWS = 500;
const MAX_KEPT = 1000;
const LOG_LINES = 150;
const MAX_SEARCH_TEXT = 8192;
const TOKEN_KEY = 'livefeed:read-token';

const BADGE = { websocket: 'Live · WebSocket', sse: 'Live · SSE (fallback)', poll: 'Live · polling' };

const $ = (id) => document.getElementById(id);

/** sessionStorage that never throws (it does when storage is disabled). */
const tabStore = {
  get(key) { try { return sessionStorage.getItem(key); } catch { return null; } },
  set(key, value) { try { sessionStorage.setItem(key, value); } catch { /* disabled or full */ } },
};

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
  workflows: new Map(),
  filter: { wf: '', type: '', q: '' },
  status: null,
  askedToken: false,
};

const client = new LivefeedClient({
  channel: params.get('channel') || 'validation_updates',
  tail: 100,
  keep: MAX_ROWS,
  token: tabStore.get(TOKEN_KEY) || null,
  baseUrl: location.origin + (document.querySelector('meta[name="livefeed-base-path"]')?.content || ''),
  ...(params.get('transports') ? { transports: params.get('transports').split(',') } : {}),
});
let chart = null; // built by wire()
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
  chart.count(Date.parse(env.ts));
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
  chart.render();
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

/* ---------------- counters ---------------- */

/** A counter was clicked: show only that type, or all again. */
function pickType(type) {
  const select = $('filter-type');
  select.value = select.value === type ? '' : type;
  applyFilters();
}

const counterNodes = new Map();
function renderCounters() {
  const list = $('counters');
  for (const [type, count] of state.counts) {
    let node = counterNodes.get(type);
    if (!node) {
      if (counterNodes.size >= 100) continue; // open-ended types: bounded UI
      node = counterItem(type, pickType);
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
    const node = counterItem(type, pickType);
    counterNodes.set(type, node);
    $('counters').append(node);
    addTypeOption(type);
  }
  chart = new MinuteChart($('chart'), $('rate'));
  chart.render(true);

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
    pre.textContent = JSON.stringify(envelopeOf(details), null, 2);
  }, true);
  setInterval(() => {
    for (const t of $('feed').querySelectorAll('time')) {
      const ms = Date.parse(t.dateTime);
      if (Number.isFinite(ms)) t.textContent = relativeTime(ms);
    }
    chart.render(true);
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
