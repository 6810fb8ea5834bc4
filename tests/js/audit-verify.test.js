// The audit page's checks: C2SP keys and notes (Go's worked example), RFC 9162 proofs
// (against the RFC's recursive definitions, written out below), and page splitting.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import {
  AuditError, leafHash, openCheckpoint, openNote, pageEvents, parseVerifierKey,
  verifyConsistency, verifyInclusion,
} from '../../app/static/audit-verify.js';

// The worked example of Go's golang.org/x/mod/sumdb/note, the reference implementation.
const GO_VERIFIER = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
const GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_NOTE = `${GO_TEXT}\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n`;

// RFC 9162 §2.1, recursively, with Node's own hash: MTH, PATH and PROOF.
const sha = (...parts) => new Uint8Array(createHash('sha256').update(Buffer.concat(parts.map((p) => Buffer.from(p)))).digest());
const split = (n) => { let k = 1; while (k * 2 < n) k *= 2; return k; };
function mth(d) {
  if (d.length === 0) return sha([]);
  if (d.length === 1) return sha([0], d[0]);
  const k = split(d.length);
  return sha([1], mth(d.slice(0, k)), mth(d.slice(k)));
}
function path(m, d) {
  if (d.length === 1) return [];
  const k = split(d.length);
  return m < k ? [...path(m, d.slice(0, k)), mth(d.slice(k))] : [...path(m - k, d.slice(k)), mth(d.slice(0, k))];
}
function subproof(m, d, b) {
  if (m === d.length) return b ? [] : [mth(d)];
  const k = split(d.length);
  return m <= k
    ? [...subproof(m, d.slice(0, k), b), mth(d.slice(k))]
    : [...subproof(m - k, d.slice(k), false), mth(d.slice(0, k))];
}
const entries = Array.from({ length: 21 }, (_, n) => Buffer.from(`{"id":${n + 1}}`));

test('a verifier key is parsed and its key ID checked', async () => {
  const key = await parseVerifierKey(`${GO_VERIFIER}\n`);
  assert.equal(key.name, 'PeterNeumann');
  assert.equal(key.hexId, 'c74f20a3');
  await assert.rejects(parseVerifierKey(GO_VERIFIER.replace('c74f20a3', 'c74f20a4')), AuditError);
  await assert.rejects(parseVerifierKey('PeterNeumann+c74f20a3'), AuditError);
});

test("Go's example note opens, and any change to it is refused", async () => {
  const key = await parseVerifierKey(GO_VERIFIER);
  assert.equal(await openNote(GO_NOTE, key), GO_TEXT);
  await assert.rejects(openNote(GO_NOTE.replace('answer', 'Answer'), key), /does not verify/);
  const other = `\u2014 Witness AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n`;
  assert.equal(await openNote(GO_NOTE + other, key), GO_TEXT); // cosignatures by other keys are ignored
  await assert.rejects(openNote(GO_TEXT + '\n' + other, key), /no signature by PeterNeumann/);
});

test('a checkpoint must be signed for its origin and well formed', async () => {
  const key = await parseVerifierKey(GO_VERIFIER);
  await assert.rejects(openCheckpoint(GO_NOTE, key), /checkpoint origin/);
});

test('every RFC 9162 inclusion proof verifies, and no altered one does', async () => {
  for (let n = 1; n <= entries.length; n++) {
    const d = entries.slice(0, n);
    const root = mth(d);
    for (let m = 0; m < n; m++) {
      const leaf = await leafHash(d[m]);
      assert.deepEqual(leaf, sha([0], d[m]));
      const proof = path(m, d);
      assert.ok(await verifyInclusion(m, n, leaf, proof, root), `${m} in ${n}`);
      assert.equal(await verifyInclusion(m, n, await leafHash('x'), proof, root), false);
      if (proof.length) {
        const bent = proof.map((h, i) => (i === proof.length - 1 ? sha(h) : h));
        assert.equal(await verifyInclusion(m, n, leaf, bent, root), false);
        assert.equal(await verifyInclusion(m, n, leaf, proof.slice(1), root), false);
      }
    }
  }
});

test('every RFC 9162 consistency proof verifies, and no altered one does', async () => {
  for (let n = 1; n <= entries.length; n++) {
    const d = entries.slice(0, n);
    for (let m = 1; m <= n; m++) {
      const proof = subproof(m, d, true);
      const [old, now] = [mth(d.slice(0, m)), mth(d)];
      assert.ok(await verifyConsistency(m, n, old, now, proof), `${m} to ${n}`);
      assert.equal(await verifyConsistency(m, n, sha(old), now, proof), false);
      if (m < n) assert.equal(await verifyConsistency(m, n, old, now, proof.slice(0, -1)), false);
    }
  }
});

test("a page's events are its exact bytes, braces and quotes in strings and all", () => {
  const a = '{"id":1,"type":"t","workflow_id":null,"ts":"x","data":{"s":"}{\\"]","n":[1,{"k":2}]}}';
  const b = '{"id":2,"type":"t","workflow_id":"w","ts":"x","data":{}}';
  const body = `{"events":[${a},${b}],"next_after":2,"has_more":false,"notices":[{"type":"n"}]}`;
  assert.deepEqual(pageEvents(body), [a, b]);
  assert.deepEqual(pageEvents('{"events":[],"next_after":0,"has_more":false,"notices":[]}'), []);
  assert.throws(() => pageEvents('{"evil":[]}'), AuditError);
});
