"""RFC 9162 §2.1 Merkle tree hashing, proof shapes and proof verification.

Everything here is arithmetic on hashes: no storage, no I/O.  The shapes
(which subtree ranges a proof is made of, in which order) are computed once
here and shared by the prover in :mod:`app.tlog.tree` and the verifiers
below, so that the two cannot drift apart.

A range ``(lo, hi)`` names the subtree over leaves ``lo..hi-1``; RFC 9162
splits a range of ``n > 1`` leaves at ``k``, the largest power of two
smaller than ``n``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

Range = tuple[int, int]


class TreeRangeError(ValueError):
    """A proof or root was asked for outside the tree (the caller's mistake)."""


class ProofError(ValueError):
    """A proof does not prove what it claims."""


def leaf_hash(leaf: bytes) -> bytes:
    """SHA-256(0x00 || leaf): the leaf's hash in the tree."""
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def leaf_hashes(leaves: Iterable[bytes]) -> list[bytes]:
    """:func:`leaf_hash` of each leaf, without a call per leaf (every append hashes
    each of its events)."""
    sha256 = hashlib.sha256
    return [sha256(LEAF_PREFIX + leaf).digest() for leaf in leaves]


def split_hashes(joined: bytes) -> list[bytes]:
    """Concatenated hashes (a run of nodes, a frontier sent by the database) one by one."""
    return [joined[at : at + HASH_SIZE] for at in range(0, len(joined), HASH_SIZE)]


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an interior node's hash."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def check_inclusion_range(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise TreeRangeError(f"leaf index {index} is outside a tree of size {size}")


def check_consistency_range(first: int, second: int) -> None:
    if not 1 <= first <= second:
        raise TreeRangeError(f"sizes {first} and {second} need 1 <= first <= second")


def inclusion_path(index: int, size: int) -> list[tuple[Range, bool]]:
    """RFC 9162 PATH(index, D[0:size]) as the ranges whose hashes make the proof,
    leaf end first, each with whether it stands to the *left* of the path."""
    check_inclusion_range(index, size)
    steps: list[tuple[Range, bool]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + split_point(hi - lo)
        if index < mid:
            steps.append(((mid, hi), False))
            hi = mid
        else:
            steps.append(((lo, mid), True))
            lo = mid
    steps.reverse()
    return steps


def consistency_path(first: int, second: int) -> list[Range]:
    """RFC 9162 PROOF(first, D[0:second]) as the ranges whose hashes make the
    proof, in proof order (empty when the sizes are equal)."""
    check_consistency_range(first, second)
    ranges: list[Range] = []
    lo, hi, whole = 0, second, True  # whole: SUBPROOF's b, "[lo, hi) starts the old tree"
    while first != hi:
        mid = lo + split_point(hi - lo)
        if first <= mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo, whole = mid, False
    if not whole:  # the old tree's last piece: the verifier cannot know its hash
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for leaf hash ``leaf`` at ``index``."""
    steps = inclusion_path(index, size)
    if len(proof) != len(steps):
        raise ProofError(f"an inclusion proof in a tree of size {size} has {len(steps)} hashes")
    node = leaf
    for (_, left), sibling in zip(steps, proof, strict=True):
        node = node_hash(sibling, node) if left else node_hash(node, sibling)
    return node


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless ``proof`` shows leaf hash ``leaf`` at ``index`` under ``root``."""
    if root_from_inclusion(leaf, index, size, proof) != root:
        raise ProofError(f"leaf {index} is not in the tree of size {size} with that root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless ``proof`` shows the tree of size ``first`` with
    ``first_root`` is a prefix of the tree of size ``second`` with ``second_root``."""
    ranges = consistency_path(first, second)
    if len(proof) != len(ranges):
        raise ProofError(f"a consistency proof from {first} to {second} has {len(ranges)} hashes")
    if not ranges:
        if first_root != second_root:
            raise ProofError(f"two roots for the same size {first}")
        return
    # Rebuild both roots from the old tree's last piece outwards: a sibling on
    # the left lies inside the old tree and feeds both roots, one on the right
    # only the new.  When the old tree is itself a left subtree (its size a
    # power of two), the proof leaves its root out: it is first_root.
    steps = zip(ranges, proof, strict=True)
    if ranges[0][1] == first:
        old = new = proof[0]
        next(steps)
    else:
        old = new = first_root
    for (_, hi), sibling in steps:
        if hi <= first:
            old, new = node_hash(sibling, old), node_hash(sibling, new)
        else:
            new = node_hash(new, sibling)
    if old != first_root or new != second_root:
        raise ProofError(f"the trees of sizes {first} and {second} are not consistent")
