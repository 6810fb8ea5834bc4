/**
 * livefeed-diagnose.js — why did a transport fail?
 *
 * Tells "this transport is blocked" (fall back) from "the server is down"
 * (back off, stay on this rung) and "credentials needed" (ask). Browsers
 * report a refused WebSocket only as close code 1006, so the server's
 * diagnosis endpoint (`/api/diag/ws/{channels}`, same checks as the handshake)
 * says why; for SSE and long-poll, a plain page request says whether the
 * server is there at all. The answer feeds Ladder.afterDiagnosis().
 */

import { LABELS } from './livefeed-ladder.js';

const AUTH_REASONS = /auth|token|credential|ticket|unauthori[sz]ed|forbidden/i;

/**
 * `name` failed with `info` (what the transport reported), described as
 * `text`. Returns {auth?, status?, reachable?, serverTrouble?, text}.
 * `endpoints` is a livefeed-endpoints.js Endpoints; `log` takes notes for people.
 */
export async function diagnose(name, info, text, endpoints, log) {
  const st = info.status;
  if (st) {
    if (st === 401 || st === 403) return { auth: true, status: st, text };
    if (st >= 500 || st === 429 || st === 408) return { reachable: true, serverTrouble: true, text };
    return { reachable: true, text };
  }
  return name === 'websocket' ? askWhyWebSocket(text, endpoints, log) : probe(name, text, endpoints);
}

async function fetchOrNull(url, endpoints) {
  try {
    return await fetch(url, { headers: endpoints.headers(), cache: 'no-store' });
  } catch {
    return null;
  }
}

const serverTrouble = (res, text) => ({ reachable: true, serverTrouble: true, text: `${text}; the server answers HTTP ${res.status}` });
const unreachable = (text) => ({ reachable: false, text: `${text}; the server is unreachable` });

async function askWhyWebSocket(text, endpoints, log) {
  // Browsers send no Origin on a same-origin GET, so name the page's origin.
  const query = { ...endpoints.streamParams(null), origin: globalThis.location?.origin };
  delete query.tail;
  const res = await fetchOrNull(endpoints.url(`/api/diag/ws/${endpoints.path}`, query), endpoints);
  if (!res) return unreachable(text);
  if (res.status === 401) return { auth: true, status: 401, text: 'WebSocket refused: credentials required' };
  if (res.status >= 500 || res.status === 429) return serverTrouble(res, text);
  if (res.status === 404) return { reachable: true, text: `${text}; the server has no /api/diag endpoint to say why` };
  const j = await res.json().catch(() => null);
  if (j && j.ok === false) {
    const why = j.detail || j.reason || 'refused';
    const out = { reachable: true, text: `WebSocket refused: ${why}${j.reason && j.detail ? ` (${j.reason})` : ''}`, reason: j.reason };
    log(`Diagnosis from /api/diag/ws: ${j.reason} — ${j.detail ?? ''}`);
    if (AUTH_REASONS.test(j.reason || '')) return { ...out, auth: true, status: 401 };
    return out;
  }
  return { reachable: true, text: `${text}, although the server would accept this page: a proxy, firewall or browser extension is blocking WebSockets` };
}

/** SSE or long-poll failed without an HTTP status: is the server there at all? */
async function probe(name, text, endpoints) {
  const label = LABELS[name];
  const res = await fetchOrNull(endpoints.url('/api/events', { after: '0', limit: '1', ...endpoints.filterParams() }), endpoints);
  if (!res) return unreachable(text);
  if (res.status === 401 || res.status === 403) return { auth: true, status: res.status, text: `${label}: credentials required` };
  if (res.status >= 500 || res.status === 429) return serverTrouble(res, text);
  return { reachable: true, text: `${text}, although the server answers plain requests: something is blocking ${label}` };
}
