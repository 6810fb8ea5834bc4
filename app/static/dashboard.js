/**
 * dashboard.js — the Live Activity Feed page. All connection logic lives in
 * livefeed-client.js; this file only renders what the client reports (rows
 * and counters in dashboard-rows.js, their counts in dashboard-tally.js, the
 * chart in dashboard-chart.js, the boxes that new items do not push around
 * in dashboard-feedbox.js, the watched workflows in dashboard-watch.js).
 *
 * Rendering rules: event data is only ever put in the DOM with textContent
 * (never innerHTML); rows are added once per animation frame in a batch; the
 * feed keeps at most MAX_ROWS rows and the page at most MAX_KEPT events.
 */
import { CHART_MINUTES, MinuteChart } from './dashboard-chart.js';
import { FeedBox } from './dashboard-feedbox.js';
import { Notices } from './dashboard-notices.js';
import { KNOWN_TYPES, counterItem, el, envelopeOf, makeRow, relativeTime, typeName } from './dashboard-rows.js';
import { StatusBadge } from './dashboard-status.js';
import { Tally } from './dashboard-tally.js';
import { WatchList, selectionFromUrl } from './dashboard-watch.js';
import { channelList, covers, followsAll } from './livefeed-channels.js';
import { LivefeedClient } from './livefeed-client.js';

const MAX_ROWS = 500;
const MAX_KEPT = 1000;
const LOG_LINES = 150;
const MAX_SEARCH_TEXT = 8192;
const TOKEN_KEY = 'livefeed:read-token';

const $ = (id) => document.getElementById(id);

/** sessionStorage that never throws (it does when storage is disabled). */
const tabStore = {
  get(key) { try { return sessionStorage.getItem(key); } catch { return null; } },
  set(key, value) { try { sessionStorage.setItem(key, value); } catch { /* disabled or full */ } },
};

/* ---------------- state ---------------- */

const params = new URLSearchParams(location.search);
const selection = selectionFromUrl();
const state = {
  channels: selection.channels, // the workflows watched (['validation_updates']: every event)
  loaded: new Set(selection.channels), // channels whose earlier events are on the page (or never asked for)
  kept: [],            // {env, text} in id order, at most MAX_KEPT
  pending: [],         // arrived since the last frame
  paused: false,
  pausedAt: null,      // newest id shown when paused
  heldCount: 0,        // events that arrived while paused
  tally: new Tally({ windowMinutes: CHART_MINUTES }),
  workflows: new Map(),
  filter: { wf: '', type: '', q: '' },
  askedToken: false,
};

const client = new LivefeedClient({
  channels: selection.channels,
  tail: 100,
  keep: MAX_ROWS,
  token: tabStore.get(TOKEN_KEY) || null,
  baseUrl: location.origin + (document.querySelector('meta[name="livefeed-base-path"]')?.content || ''),
  ...(params.get('transports') ? { transports: params.get('transports').split(',') } : {}),
});
const notices = new Notices($('notices'));
const notice = (text, options) => notices.show(text, options);
let chart = null; // built by wire()
let feedBox = null;
let logBox = null;
let watchList = null;
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
  if (!covers(state.channels, env)) return; // a workflow just removed, before the server heard
  const rec = { env, text: null };
  state.kept.push(rec);
  if (state.kept.length > MAX_KEPT + 100) state.kept.splice(0, state.kept.length - MAX_KEPT);
  state.tally.add(env);
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
  const rows = [];
  for (let i = recs.length - 1; i >= Math.max(0, recs.length - MAX_ROWS); i--) rows.push(makeRow(recs[i].env));
  if (recs.length >= MAX_ROWS) feedBox.replace(rows);
  else feedBox.prepend(rows);
  renderFeedNote();
}

function renderAll() {
  const limit = state.paused ? state.pausedAt ?? Infinity : Infinity;
  const shown = [];
  for (let i = state.kept.length - 1; i >= 0 && shown.length < MAX_ROWS; i--) {
    const rec = state.kept[i];
    if (rec.env.id <= limit && matches(rec)) shown.push(rec);
  }
  feedBox.replace(shown.map((rec) => makeRow(rec.env)));
  renderFeedNote();
}

function renderFeedNote() {
  const rows = feedBox.count;
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
  const { types, total } = state.tally.view;
  for (const type of types.keys()) {
    if (counterNodes.has(type) || counterNodes.size >= 100) continue; // open-ended types: bounded UI
    const node = counterItem(type, pickType);
    counterNodes.set(type, node);
    $('counters').append(node);
    addTypeOption(type);
  }
  for (const [type, node] of counterNodes) {
    const count = types.get(type) || 0;
    if (node.dataset.count === String(count)) continue;
    node.dataset.count = String(count);
    node.querySelector('.count').textContent = count.toLocaleString('en');
  }
  $('total-count').textContent = String(total);
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
    notices.dismiss('paused');
    const missed = state.heldCount;
    state.pending = [];
    renderAll();
    if (missed) notice(`${missed} missed event${missed === 1 ? '' : 's'} replayed`, { timeoutMs: 15000, key: 'resumed' });
  }
  renderPause();
}

/* ---------------- log ---------------- */

function addLog(line) {
  const item = el('li');
  const time = el('time', 'when', new Date().toLocaleTimeString('en-GB'));
  item.append(time, document.createTextNode(` ${line}`));
  logBox.prepend([item]);
}

/* ---------------- watched workflows ---------------- */

/** The reader asked for another selection: show only what it covers, and have the client follow it. */
function watch(channels) {
  let list;
  try {
    list = channelList(channels);
  } catch (err) {
    notice(err.message, { kind: 'warn', key: 'watch' });
    return;
  }
  applySelection(list);
  client.setChannels(list);
}

function applySelection(channels) {
  state.channels = channels;
  const keep = (env) => covers(channels, env);
  state.tally.retain((workflowId) => keep({ workflow_id: workflowId }), followsAll(channels));
  state.kept = state.kept.filter((rec) => keep(rec.env));
  state.pending = state.pending.filter((rec) => keep(rec.env));
  for (const name of state.loaded) if (!channels.includes(name)) state.loaded.delete(name);
  watchList.show(channels);
  renderCounters();
  chart.render(true);
  renderAll();
}

/** The client follows `channels` from event `cursor` on: bring in the earlier events of those added. */
async function onChannels({ channels, cursor, refused }) {
  if (refused) {
    notice(`The server kept watching ${channels.join(', ')}: ${refused.detail || refused.error}`, { kind: 'warn', key: 'watch' });
    applySelection(channels);
  }
  const added = channels.filter((name) => !state.loaded.has(name));
  for (const name of added) state.loaded.add(name);
  if (!added.length || cursor === null) return;
  const { events, complete } = await client.history(added, { through: cursor, sinceMs: CHART_MINUTES * 60000 });
  const earlier = events.filter((env) => covers(state.channels, env));
  state.tally.addHistory(earlier);
  const have = new Set(state.kept.map((rec) => rec.env.id));
  const recs = earlier.filter((env) => !have.has(env.id)).map((env) => ({ env, text: null }));
  for (const rec of recs) if (rec.env.workflow_id) noteWorkflow(rec.env.workflow_id);
  state.kept = [...recs, ...state.kept].sort((a, b) => a.env.id - b.env.id).slice(-MAX_KEPT);
  if (!complete) notice(`Only part of the last ${CHART_MINUTES} minutes of ${added.join(', ')} could be read.`, { kind: 'warn', key: 'history' });
  renderCounters();
  chart.render(true);
  renderAll();
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
  feedBox = new FeedBox({ scroller: $('feed-scroll'), list: $('feed'), jump: $('feed-jump'), maxItems: MAX_ROWS,
    describe: (n) => `↑ ${n} new event${n === 1 ? '' : 's'}` });
  logBox = new FeedBox({ scroller: $('log-scroll'), list: $('connection-log'), maxItems: LOG_LINES });
  watchList = new WatchList({ form: $('watch'), input: $('watch-input'), list: $('watching'), onChange: watch,
    complain: (text) => notice(text, { kind: 'warn', key: 'watch' }) });
  watchList.show(state.channels);
  if (selection.problem) notice(selection.problem, { kind: 'warn', key: 'watch' });
  for (const type of KNOWN_TYPES) {
    counterNodes.set(type, counterItem(type, pickType));
    addTypeOption(type);
  }
  $('counters').replaceChildren(...counterNodes.values()); // the page's stand-ins, the same size
  chart = new MinuteChart($('chart'), $('rate'), () => state.tally.view.minutes);
  chart.render(true);

  const badge = new StatusBadge({ badge: $('status'), panel: $('status-panel'), reason: $('status-reason'),
    role: $('status-role'), reconnect: $('reconnect'), onReconnect: () => client.reconnect() });
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
    state.tally.prune();
    chart.render(true);
  }, 10000);

  client.addEventListener('event', (e) => intake(e.detail, e.source));
  client.addEventListener('status', (e) => badge.show(e.detail));
  client.addEventListener('log', (e) => addLog(e.detail));
  client.addEventListener('control', (e) => onControl(e.detail));
  client.addEventListener('channels', (e) => onChannels(e.detail));
  client.addEventListener('replay', (e) => {
    const n = e.detail.count;
    notice(`Reconnected: ${n} missed event${n === 1 ? '' : 's'} replayed`, { timeoutMs: 15000, key: 'replayed' });
  });
  client.addEventListener('authrequired', (e) => askToken(e.detail.refused));
  client.addEventListener('token', (e) => { if (e.detail) tabStore.set(TOKEN_KEY, e.detail); });
  badge.show(client.status);
  client.start();
  renderFeedNote();
}

wire();
