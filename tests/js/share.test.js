// A tab that joins late pages in what the leader no longer remembers (Share._catchUp), through a stand-in
// host whose page(after) plays the server's /api/events.
import test from 'node:test';
import assert from 'node:assert/strict';

import { Share } from '../../app/static/livefeed-share.js';

const env = (id) => ({ id, type: 'validation_created', workflow_id: 'wf_a', ts: '2026-12-01T10:00:00Z', data: {} });

test('catch-up goes on past a page the server stopped short: empty, has_more, next_after moved on', async () => {
  const asked = [];
  const delivered = [];
  const pages = {
    100: { events: [], has_more: true, next_after: 8292 },
    8292: { events: [env(9000)], has_more: true, next_after: 16484 },
    16484: { events: [env(17000), env(17001)], has_more: false, next_after: 17001 },
  };
  const host = {
    page: async (after) => { asked.push(after); return pages[after]; },
    deliver: (e) => { delivered.push(e.id); return true; },
    log: () => {},
  };
  await new Share('k', host)._catchUp(100, Infinity);
  assert.deepEqual(asked, [100, 8292, 16484]);
  assert.deepEqual(delivered, [9000, 17000, 17001]);
});
