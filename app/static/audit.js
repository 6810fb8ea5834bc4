/**
 * audit.js — the audit page: browse a stretch of the log (by id or by time,
 * paged through /api/events, not live), check what is on screen against a
 * signed checkpoint in this browser, and export it.
 *
 * Every event shown is the exact text the server sent for it (its leaf), and
 * is only marked verified once its inclusion proof leads to the root of a
 * checkpoint whose signature verified under the key: the pinned one, or else
 * the one this server serves (which the page says proves little). The last
 * checkpoint seen is remembered, and each new one must prove it extends it.
 */
import {
  AuditError, fromBase64, leafHash, openCheckpoint, pageEvents, parseVerifierKey, toBase64,
  verifyConsistency, verifyInclusion,
} from './audit-verify.js';

const TOKEN_KEY = 'livefeed:read-token'; // the dashboard's, so one entry serves both pages
const PINNED_KEY = 'livefeed:pinned-key';
const SEEN_PREFIX = 'livefeed:checkpoint-seen:';
const PROOFS_AT_ONCE = 6;
const EXPORT_PAGE = 1000;

const $ = (id) => document.getElementById(id);
const base = location.origin + (document.querySelector('meta[name="livefeed-base-path"]')?.content || '');

/** Web storage that never throws (it does when storage is disabled). */
const store = (area) => ({
  get(key) { try { return area().getItem(key); } catch { return null; } },
  set(key, value) { try { area().setItem(key, value); } catch { /* disabled or full */ } },
  remove(key) { try { area().removeItem(key); } catch { /* disabled */ } },
});
const tabStore = store(() => sessionStorage);
const keptStore = store(() => localStorage);

const view = { cursors: [], after: 0, lines: [], hasMore: false, nextAfter: 0, note: null, key: null };

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function fetchText(path) {
  const token = tabStore.get(TOKEN_KEY);
  const response = await fetch(base + path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const text = await response.text();
  if (!response.ok) {
    let detail = text.slice(0, 200);
    try { detail = JSON.parse(text).detail || detail; } catch { /* not JSON */ }
    throw new HttpError(response.status, `${path.split('?')[0]} answered ${response.status}: ${detail}`);
  }
  return text;
}

/* ---------------- the range ---------------- */

function rangeQuery(after, limit) {
  const params = new URLSearchParams({ after: String(after), limit: String(limit) });
  const workflow = $('workflow').value.trim();
  if (workflow) params.set('workflow_id', workflow);
  for (const name of ['since', 'until']) {
    const value = $(name).value;
    if (value) params.set(name, new Date(`${value}Z`).toISOString());
  }
  return params;
}

const startAfter = () => Math.max(0, (Number($('from-id').value) || 1) - 1);
const lastWanted = () => Number($('to-id').value) || Infinity;

/** One page after `after`: the events' exact lines, cut at the range's last id. */
async function readPage(after, limit) {
  const body = await fetchText(`/api/events?${rangeQuery(after, limit)}`);
  const lines = pageEvents(body);
  const page = JSON.parse(body);
  if (page.events.length !== lines.length) throw new AuditError('the page does not split into its events');
  const kept = lines.filter((line) => JSON.parse(line).id <= lastWanted());
  const cut = kept.length < lines.length;
  return { lines: kept, hasMore: page.has_more && !cut, nextAfter: page.next_after };
}

async function show(after) {
  setVerdict('pending', 'Reading the log…');
  const page = await readPage(after, Number($('page-size').value));
  Object.assign(view, { after, ...page });
  renderRows();
  $('prev').disabled = view.cursors.length === 0;
  $('next').disabled = !view.hasMore;
  $('export-page').disabled = view.lines.length === 0;
  await verifyScreen();
}

function renderRows() {
  const rows = $('rows');
  rows.replaceChildren();
  for (const line of view.lines) {
    const event = JSON.parse(line);
    const row = document.createElement('tr');
    row.dataset.id = String(event.id);
    row.dataset.verified = 'pending';
    const cells = ['…', event.id, event.ts.replace('T', ' ').replace('Z', ''), event.type,
      event.workflow_id ?? '—', JSON.stringify(event.data)];
    for (const value of cells) {
      const cell = document.createElement('td');
      cell.textContent = String(value); // event data is text, never markup
      row.append(cell);
    }
    rows.append(row);
  }
  const first = view.lines.length ? JSON.parse(view.lines[0]).id : null;
  const last = view.lines.length ? JSON.parse(view.lines.at(-1)).id : null;
  $('page-label').textContent = first === null ? 'No events in this range' : `Ids ${first}–${last}`;
}

/* ---------------- the checks ---------------- */

function setVerdict(state, text) {
  const verdict = $('verdict');
  verdict.dataset.state = state;
  verdict.textContent = text;
}

function mark(row, ok, why) {
  row.dataset.verified = ok ? 'yes' : 'no';
  row.firstElementChild.textContent = ok ? '✓' : '✗';
  row.title = why;
}

/** The key to check with: the pinned one, else this server's (and whether it was pinned). */
async function checkingKey() {
  const served = (await fetchText('/api/log/key')).trim();
  const pinned = keptStore.get(PINNED_KEY);
  const key = await parseVerifierKey(pinned || served);
  const note = !pinned
    ? 'The key was fetched from this server, not pinned: pin the key you got from the operator.'
    : (served !== pinned ? `This server now serves another key (${served.split('+', 2).join('+')}): ask why.` : '');
  return { key, pinned: Boolean(pinned), note };
}

async function proofFor(row, checkpoint, line) {
  const id = Number(row.dataset.id);
  const answer = JSON.parse(await fetchText(`/api/log/proof/inclusion?id=${id}&tree_size=${checkpoint.size}`));
  const proof = answer.hashes.map(fromBase64);
  const ok = await verifyInclusion(id - 1, checkpoint.size, await leafHash(line), proof, checkpoint.root);
  mark(row, ok, ok ? `in the log of checkpoint ${checkpoint.size}` : 'not the event the checkpoint signed');
  return ok;
}

async function verifyScreen() {
  const { key, pinned, note } = await checkingKey();
  view.key = key;
  view.note = await fetchText('/api/log/checkpoint'); // after the page: it covers every id on it
  let checkpoint;
  try {
    checkpoint = await openCheckpoint(view.note, key);
  } catch (error) {
    setVerdict('failed', `The checkpoint did not verify: ${error.message}. Nothing on screen is verified.`);
    return;
  }
  const rows = [...$('rows').children];
  const failed = [];
  const queue = rows.map((row, n) => [row, view.lines[n]]);
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [row, line] = next;
      let ok = false;
      try { ok = await proofFor(row, checkpoint, line); } catch (error) { mark(row, false, error.message); }
      if (!ok) failed.push(Number(row.dataset.id));
    }
  };
  await Promise.all(Array.from({ length: PROOFS_AT_ONCE }, worker));
  const history = await checkHistory(checkpoint, key);
  $('consistency').textContent = history.text;
  const signed = `checkpoint ${checkpoint.size} (${checkpoint.origin}, key ${key.hexId}${pinned ? ', pinned' : ''})`;
  if (!history.ok) {
    setVerdict('failed', `The log REWROTE history: ${signed} does not extend the checkpoint this browser saw before.`);
  } else if (failed.length) {
    failed.sort((a, b) => a - b);
    setVerdict('failed', `${failed.length} of ${rows.length} events on screen are NOT what ${signed} signed: ids ${failed.join(', ')}.`);
  } else {
    setVerdict(pinned ? 'verified' : 'unpinned', `Verified against ${signed}: ${rows.length} events on screen. ${note}`.trim());
  }
  $('save-checkpoint').disabled = false;
}

/**
 * Does this checkpoint extend the last one this browser saw for this key (or the
 * reverse, for an older one)? Remembers the newer. Returns {ok, text}.
 */
async function checkHistory(checkpoint, key) {
  const slot = SEEN_PREFIX + key.text;
  const seen = JSON.parse(keptStore.get(slot) || 'null');
  const remember = () => keptStore.set(slot, JSON.stringify({ size: checkpoint.size, root: toBase64(checkpoint.root) }));
  if (!seen || seen.size === 0 || checkpoint.size === 0) {
    remember();
    return { ok: true, text: 'The first checkpoint this browser keeps for this key.' };
  }
  const [old, now] = seen.size <= checkpoint.size
    ? [{ size: seen.size, root: fromBase64(seen.root) }, checkpoint]
    : [checkpoint, { size: seen.size, root: fromBase64(seen.root) }];
  const answer = JSON.parse(await fetchText(`/api/log/proof/consistency?first=${old.size}&second=${now.size}`));
  const ok = await verifyConsistency(old.size, now.size, old.root, now.root, answer.hashes.map(fromBase64));
  if (!ok) return { ok, text: `NOT consistent with checkpoint ${seen.size} seen before: keep both as evidence.` };
  if (checkpoint.size > seen.size) remember();
  return { ok, text: `Consistent with checkpoint ${seen.size}, seen before in this browser: nothing up to it was rewritten.` };
}

/* ---------------- exports ---------------- */

function download(name, text, type) {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

const ndjson = (lines) => lines.map((line) => `${line}\n`).join('');

async function exportRange() {
  const lines = [];
  let after = startAfter();
  for (;;) {
    const page = await readPage(after, EXPORT_PAGE);
    lines.push(...page.lines);
    if (!page.hasMore) break;
    after = page.nextAfter;
  }
  download('livefeed-export.ndjson', ndjson(lines), 'application/x-ndjson');
}

/* ---------------- wiring ---------------- */

function describeKey() {
  const pinned = keptStore.get(PINNED_KEY);
  $('key-state').textContent = pinned ? `Pinned: ${pinned.split('+', 2).join('+')}` : 'No key pinned: checks use the key this server serves.';
}

async function pin(text) {
  try {
    const key = await parseVerifierKey(text);
    keptStore.set(PINNED_KEY, key.text);
    describeKey();
  } catch (error) {
    $('key-state').textContent = `Not pinned: ${error.message}`;
  }
}

function failed(error) {
  const needsToken = error instanceof HttpError && error.status === 401;
  $('token-form').hidden = !needsToken;
  setVerdict('failed', needsToken ? 'This server needs a read token for proofs and events: enter it above.' : error.message);
}

function run(task) {
  return () => task().catch(failed);
}

function start() {
  const params = new URLSearchParams(location.search);
  for (const [field, name] of [['from-id', 'from'], ['to-id', 'to'], ['since', 'since'], ['until', 'until'], ['workflow', 'workflow_id']]) {
    const value = params.get(name);
    if (value) $(field).value = $(field).type === 'datetime-local' ? value.replace(/Z$/, '').slice(0, 19) : value;
  }
  describeKey();
  $('range').addEventListener('submit', (event) => {
    event.preventDefault();
    view.cursors = [];
    run(() => show(startAfter()))();
  });
  $('next').addEventListener('click', run(async () => { view.cursors.push(view.after); await show(view.nextAfter); }));
  $('prev').addEventListener('click', run(() => show(view.cursors.pop() ?? startAfter())));
  $('pin-key').addEventListener('click', () => pin($('pinned-key').value));
  $('pin-served-key').addEventListener('click', run(async () => pin(await fetchText('/api/log/key'))));
  $('unpin').addEventListener('click', () => { keptStore.remove(PINNED_KEY); describeKey(); });
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    tabStore.set(TOKEN_KEY, $('token').value.trim());
    $('token').value = '';
    $('token-form').hidden = true;
    run(() => show(view.after))();
  });
  $('export-page').addEventListener('click', () => download('livefeed-page.ndjson', ndjson(view.lines), 'application/x-ndjson'));
  $('export-range').addEventListener('click', run(exportRange));
  $('save-checkpoint').addEventListener('click', () => {
    download('checkpoint.txt', view.note, 'text/plain');
    download('livefeed.vkey', `${view.key.text}\n`, 'text/plain');
  });
  if ([...params.keys()].length) run(() => show(startAfter()))();
}

start();
