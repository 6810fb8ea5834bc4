"""The stored Merkle tree: roots and proofs against RFC 9162 written out independently."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from app.tlog import (
    EMPTY_ROOT,
    Frontier,
    MissingNodesError,
    Node,
    ProofError,
    TreeRangeError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tests import rfc9162

T = TypeVar("T")
SMALL = 70  # every size and every index/pair up to here


class NodeStore:
    """Node hashes in a dict, read the way a database would be: counted calls."""

    def __init__(self) -> None:
        self.nodes: dict[Node, bytes] = {}
        self.reads: list[int] = []
        self.size = 0

    async def read(self, wanted: Sequence[Node]) -> list[bytes]:
        self.reads.append(len(wanted))
        return [self.nodes[node] for node in wanted]

    def grow(self, entries: Sequence[bytes]) -> None:
        """Append entries one event at a time, as commits of one event would."""
        frontier = asyncio.run(Frontier.load(self.size, self.read))
        for entry in entries:
            self.nodes.update(frontier.extend([leaf_hash(entry)]))
        self.size = frontier.size


def entries(n: int, seed: int = 0) -> list[bytes]:
    """Distinct leaf data of varied lengths."""
    rng = random.Random(seed)
    return [f"entry {i} ".encode() + rng.randbytes(rng.randrange(0, 40)) for i in range(n)]


@pytest.fixture(scope="module")
def small() -> tuple[list[bytes], NodeStore]:
    data = entries(SMALL)
    store = NodeStore()
    store.grow(data)
    return data, store


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_hashes_follow_rfc_9162():
    """Leaf and empty-tree hashes are SHA-256 with the RFC's prefixes."""
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert rfc9162.mth([b"abc"]) == leaf_hash(b"abc")


def test_root_of_every_size_matches_the_recursive_mth(small):
    """The root of each prefix 0..70, from stored nodes, is RFC 9162's MTH."""
    data, store = small
    for size in range(SMALL + 1):
        assert run(root_hash(size, store.read)) == rfc9162.mth(data[:size]), size


def test_frontier_root_matches_while_appending():
    """A frontier's root after each push is the MTH of the leaves so far."""
    data, frontier = entries(SMALL, seed=1), Frontier()
    assert frontier.root() == EMPTY_ROOT
    for size, entry in enumerate(data, 1):
        frontier.push(leaf_hash(entry))
        assert frontier.root() == rfc9162.mth(data[:size])


def test_node_positions_number_nodes_in_append_order():
    """Appends create nodes at positions 0, 1, 2, ... with no gap or repeat."""
    frontier, positions = Frontier(), []
    for entry in entries(300):
        positions += [node.position for node, _ in frontier.extend([leaf_hash(entry)])]
    assert positions == list(range(len(positions)))
    assert len(positions) == 2 * 300 - (300).bit_count()


def test_stored_nodes_are_the_complete_subtrees(small):
    """Each stored node's hash is the MTH of exactly the leaves it covers."""
    data, store = small
    for node, value in store.nodes.items():
        lo = node.index << node.level
        assert lo + (1 << node.level) <= SMALL
        assert value == rfc9162.mth(data[lo : lo + (1 << node.level)])


def test_appending_in_batches_after_reloading_gives_the_same_nodes(small):
    """Commits of many sizes, each reloading the frontier, store the same tree."""
    data, one_by_one = small
    store, rng, size = NodeStore(), random.Random(7), 0
    while size < SMALL:
        batch = data[size : size + rng.randrange(1, 12)]
        frontier = run(Frontier.load(size, store.read))
        store.nodes.update(frontier.extend(leaf_hash(entry) for entry in batch))
        size += len(batch)
        assert frontier.size == size and frontier.root() == rfc9162.mth(data[:size])
    assert store.nodes == one_by_one.nodes


def test_inclusion_proofs_for_every_index_and_size(small):
    """PATH(m, D[n]) for all 1 <= n <= 70, checked by the RFC's verifier."""
    data, store = small
    for size in range(1, SMALL + 1):
        root = rfc9162.mth(data[:size])
        for index in range(size):
            got = run(inclusion_proof(index, size, store.read))
            assert got == rfc9162.path(index, data[:size]), (index, size)
            assert rfc9162.verify_inclusion(index, size, leaf_hash(data[index]), got, root)
            verify_inclusion(leaf_hash(data[index]), index, size, got, root)


def test_consistency_proofs_for_every_pair(small):
    """PROOF(m, D[n]) for all 1 <= m <= n <= 70, checked by the RFC's verifier."""
    data, store = small
    roots = [rfc9162.mth(data[:size]) for size in range(SMALL + 1)]
    for second in range(1, SMALL + 1):
        for first in range(1, second + 1):
            got = run(consistency_proof(first, second, store.read))
            assert got == rfc9162.proof(first, data[:second]), (first, second)
            if first < second:
                assert rfc9162.verify_consistency(first, second, roots[first], roots[second], got)
            else:
                assert got == []
            verify_consistency(first, second, roots[first], roots[second], got)


@pytest.mark.parametrize("seed", range(4))
def test_random_large_trees(seed):
    """Random sizes up to 40k: roots, proofs and reads of O(log n) nodes in one call."""
    rng = random.Random(seed)
    size = rng.randrange(1000, 40_000)
    data = entries(size, seed)
    store = NodeStore()
    store.grow(data)
    root = rfc9162.mth(data)
    assert run(root_hash(size, store.read)) == root
    bound = 2 * size.bit_length() + 2
    for _ in range(3):
        index = rng.randrange(size)
        store.reads.clear()
        got = run(inclusion_proof(index, size, store.read))
        assert store.reads and len(store.reads) == 1 and store.reads[0] <= bound
        assert rfc9162.verify_inclusion(index, size, leaf_hash(data[index]), got, root)
        first = rng.randrange(1, size)
        store.reads.clear()
        got = run(consistency_proof(first, size, store.read))
        assert len(store.reads) == 1 and store.reads[0] <= bound
        assert rfc9162.verify_consistency(first, size, rfc9162.mth(data[:first]), root, got)


def _tampered(proof: list[bytes]) -> list[list[bytes]]:
    """Each hash with one bit flipped, plus the proof cut short and lengthened."""
    variants = [proof[:-1], [*proof, proof[-1]]] if proof else [[EMPTY_ROOT]]
    for i, value in enumerate(proof):
        variants.append([*proof[:i], bytes([value[0] ^ 1]) + value[1:], *proof[i + 1 :]])
    return variants


def test_tampered_inclusion_proofs_are_rejected_by_both_verifiers(small):
    """A flipped bit, another index, a missing or extra hash: all fail.

    (The same path can be valid for a neighbouring tree size: the size is bound
    by the signed checkpoint, not by the proof.)"""
    data, store = small
    size, index = 43, 21
    root, leaf = rfc9162.mth(data[:size]), leaf_hash(data[index])
    good = run(inclusion_proof(index, size, store.read))
    cases = [(index, size, bad) for bad in _tampered(good)]
    cases += [(index + 1, size, good), (index - 1, size, good)]
    for i, n, hashes in cases:
        assert not rfc9162.verify_inclusion(i, n, leaf, hashes, root)
        with pytest.raises(ProofError):
            verify_inclusion(leaf, i, n, hashes, root)


def test_tampered_consistency_proofs_are_rejected_by_both_verifiers(small):
    """A flipped bit, another old size, a missing or extra hash: all fail."""
    data, store = small
    roots = [rfc9162.mth(data[:size]) for size in range(SMALL + 1)]
    for first, second in [(5, 43), (8, 43), (42, 43), (1, 2), (32, 70)]:
        good = run(consistency_proof(first, second, store.read))
        cases = [(first, second, bad) for bad in _tampered(good)]
        cases += [(first + 1, second, good)]
        for m, n, hashes in cases:
            assert not rfc9162.verify_consistency(m, n, roots[m], roots[n], hashes)
            with pytest.raises(ProofError):
                verify_consistency(m, n, roots[m], roots[n], hashes)
    with pytest.raises(ProofError):
        verify_consistency(9, 9, roots[9], roots[10], [])


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (inclusion_proof, (0, 0)),
        (inclusion_proof, (5, 5)),
        (inclusion_proof, (-1, 5)),
        (consistency_proof, (0, 5)),
        (consistency_proof, (6, 5)),
    ],
)
def test_out_of_range_proofs_are_refused(small, call, args):
    """Requests outside the tree raise TreeRangeError, never a wrong proof."""
    with pytest.raises(TreeRangeError):
        run(call(*args, small[1].read))


def test_a_store_that_returns_too_few_hashes_is_an_error():
    """A short answer from the store raises instead of folding the wrong hashes."""

    async def short(wanted: Sequence[Node]) -> list[bytes]:
        return [EMPTY_ROOT] * (len(wanted) - 1)

    with pytest.raises(MissingNodesError):
        run(root_hash(3, short))
    with pytest.raises(MissingNodesError):
        run(Frontier.load(3, short))
