/**
 * audit-verify.js — checks what a Livefeed server says about its log, in the browser.
 *
 * C2SP verifier keys and signed notes (Ed25519), tlog checkpoints, and RFC 9162
 * inclusion and consistency proofs (§2.1.3.2 and §2.1.4.2, written from the RFC).
 * Only WebCrypto: SHA-256 and Ed25519 (`crypto.subtle`, Chromium 137+, Node 20).
 * Nothing here fetches or trusts anything: every function gets bytes and says
 * whether they prove what they claim.
 */

const encoder = new TextEncoder();

/** Why a key, note or checkpoint was refused. */
export class AuditError extends Error {}

export function fromBase64(text) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) throw new AuditError(`not base64: ${text.slice(0, 40)}`);
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

export function toBase64(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

export function sameBytes(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
}

export async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', concat(parts)));
}

/** RFC 9162 §2.1.1: SHA-256(0x00 ‖ leaf), the leaf being an event's envelope bytes. */
export function leafHash(leaf) {
  return sha256(Uint8Array.of(0), typeof leaf === 'string' ? encoder.encode(leaf) : leaf);
}

const nodeHash = (left, right) => sha256(Uint8Array.of(1), left, right);

const validName = (name) => name.length > 0 && !/[\s+]/u.test(name);

/**
 * A C2SP verifier key, `<name>+<hex key ID>+<base64(0x01 ‖ Ed25519 public key)>`,
 * split on its first two `+` only (base64 holds `+` too); the key ID is checked.
 * Returns {name, id, key (a CryptoKey), text}.
 */
export async function parseVerifierKey(text) {
  const line = text.trim();
  const first = line.indexOf('+');
  const second = line.indexOf('+', first + 1);
  if (first < 0 || second < 0) throw new AuditError('a verifier key is <name>+<key ID>+<key>');
  const name = line.slice(0, first);
  const hexId = line.slice(first + 1, second);
  const payload = fromBase64(line.slice(second + 1));
  if (!validName(name)) throw new AuditError(`key name ${JSON.stringify(name)} is empty or holds a space or '+'`);
  if (!/^[0-9a-f]{8}$/.test(hexId)) throw new AuditError(`key ID ${hexId} is not 8 hex digits`);
  if (payload.length !== 33 || payload[0] !== 1) throw new AuditError('the key is not an Ed25519 key (0x01 and 32 bytes)');
  const id = Uint8Array.from(hexId.match(/../g), (h) => parseInt(h, 16));
  const expected = (await sha256(encoder.encode(`${name}\n`), payload)).slice(0, 4);
  if (!sameBytes(id, expected)) throw new AuditError(`key ID ${hexId} does not match the key's name and bytes`);
  const key = await crypto.subtle.importKey('raw', payload.slice(1), { name: 'Ed25519' }, false, ['verify']);
  return { name, id, key, text: line, hexId };
}

/** The text of a C2SP signed note once `vkey`'s signature on it verified (others are ignored). */
export async function openNote(note, vkey) {
  const split = note.lastIndexOf('\n\n');
  if (split < 0 || !note.endsWith('\n')) throw new AuditError('not a signed note: no blank line before the signatures');
  const text = note.slice(0, split + 1);
  let verified = false;
  for (const line of note.slice(split + 2, -1).split('\n')) {
    const match = /^\u2014 (\S+) (\S+)$/u.exec(line);
    if (!match) throw new AuditError(`malformed signature line ${JSON.stringify(line.slice(0, 40))}`);
    const signature = fromBase64(match[2]);
    if (match[1] !== vkey.name || !sameBytes(signature.slice(0, 4), vkey.id)) continue;
    const good = await crypto.subtle.verify({ name: 'Ed25519' }, vkey.key, signature.slice(4), encoder.encode(text));
    if (!good) throw new AuditError(`the signature by ${vkey.name}+${vkey.hexId} does not verify`);
    verified = true;
  }
  if (!verified) throw new AuditError(`the note has no signature by ${vkey.name}+${vkey.hexId}`);
  return text;
}

/** {origin, size, root} of a signed tlog-checkpoint, once its signature verified. */
export async function openCheckpoint(note, vkey) {
  const [origin, size, root] = (await openNote(note, vkey)).split('\n');
  if (origin !== vkey.name) throw new AuditError(`checkpoint origin ${origin} is not the key's name ${vkey.name}`);
  if (!/^(0|[1-9][0-9]{0,15})$/.test(size ?? '')) throw new AuditError(`checkpoint size ${size} is not a decimal`);
  const digest = fromBase64(root ?? '');
  if (digest.length !== 32) throw new AuditError('checkpoint root is not a SHA-256 hash');
  return { origin, size: Number(size), root: digest };
}

// RFC 9162's verification algorithms shift sizes right; JavaScript's >> is 32-bit,
// so halve with arithmetic (log sizes stay far below 2**53).
const odd = (n) => n % 2 === 1;
const half = (n) => Math.floor(n / 2);

/** RFC 9162 §2.1.3.2: does `proof` show leaf hash `leaf` at `index` under `root`? */
export async function verifyInclusion(index, size, leaf, proof, root) {
  if (!(index < size)) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      r = await nodeHash(p, r);
      if (!odd(fn)) while (!odd(fn) && fn !== 0) { fn = half(fn); sn = half(sn); }
    } else {
      r = await nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && sameBytes(r, root);
}

/** RFC 9162 §2.1.4.2: is the tree of `first` with `firstRoot` a prefix of the tree of `second`? */
export async function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
  if (first === second) return proof.length === 0 && sameBytes(firstRoot, secondRoot);
  if (!(first >= 1 && first < second) || proof.length === 0) return false;
  // When `first` is a power of two, its tree is a left subtree: the proof leaves its root out.
  const path = Number.isInteger(Math.log2(first)) ? [firstRoot, ...proof] : proof;
  let fn = first - 1;
  let sn = second - 1;
  while (odd(fn)) { fn = half(fn); sn = half(sn); }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if (!odd(fn)) while (!odd(fn) && fn !== 0) { fn = half(fn); sn = half(sn); }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sameBytes(fr, firstRoot) && sameBytes(sr, secondRoot) && sn === 0;
}

/**
 * The events of a `GET /api/events` page as the exact text the server sent for
 * each (its envelope: the leaf), not as re-encoded by JSON.parse: the page is
 * `{"events":[E,E,...],...}` and each E is found by its brackets, outside strings.
 */
export function pageEvents(body) {
  const prefix = '{"events":[';
  if (!body.startsWith(prefix)) throw new AuditError('not a page of /api/events');
  const events = [];
  let depth = 0;
  let begin = -1;
  let inString = false;
  for (let i = prefix.length; i < body.length; i++) {
    const c = body[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === '{' || c === '[') {
      if (depth++ === 0) begin = i;
    } else if (c === '}' || c === ']') {
      if (depth === 0) return events; // the events array ends
      if (--depth === 0) events.push(body.slice(begin, i + 1));
    }
  }
  throw new AuditError('the page ends inside its events');
}
