"""The log's Merkle tree as stored node hashes, read O(log n) at a time.

What is stored is the hash of every *complete* subtree: node ``(level, index)``
covers leaves ``index * 2**level`` .. ``(index + 1) * 2**level - 1``, and level 0
holds the leaf hashes.  A complete subtree never changes once its last leaf
is appended, so the nodes are write-once rows, about two per leaf, written in
the same transaction as the events they cover.  Any root, inclusion proof or
consistency proof is then a fold over at most a few dozen of them, fetched in
one call to the store's :data:`ReadNodes` (this module never sees a
database, so it can be tested alone and shared by both engines).

``Node.position`` numbers the nodes in the order appends create them (the
layout of Crosby and Wallach's history trees, as in Go's checksum database):
after ``n`` leaves the nodes are exactly positions ``0 .. 2n - popcount(n) - 1``,
so a store can use it as an append-only integer key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from app.tlog.merkle import (
    EMPTY_ROOT,
    NODE_PREFIX,
    Range,
    consistency_path,
    inclusion_path,
    node_hash,
    split_hashes,
)


@dataclass(frozen=True, slots=True)
class Node:
    """A complete subtree: ``2**level`` leaves starting at leaf ``index * 2**level``."""

    level: int
    index: int

    @property
    def position(self) -> int:
        """This node's rank in append order (see the module docstring)."""
        last = ((self.index + 1) << self.level) - 1  # the leaf that completes it
        # Every leaf before `last` completed one node per level up to its
        # trailing ones: sum(last >> k for k >= 0) == 2*last - popcount(last).
        return 2 * last - last.bit_count() + self.level


ReadNodes = Callable[[Sequence[Node]], Awaitable[Sequence[bytes]]]
"""Return the stored hashes of these nodes, in the same order; the store's half."""


class MissingNodesError(LookupError):
    """The store answered a node read with the wrong number of hashes."""


def cover(lo: int, hi: int) -> list[Node]:
    """The complete subtrees that make up leaves ``lo .. hi-1``, left to right.

    Every range a proof needs starts on a boundary of its own size's largest
    power of two, so the greedy split below is RFC 9162's split too."""
    nodes: list[Node] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        nodes.append(Node(level, lo >> level))
        lo += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """The hash of a range from the hashes of its :func:`cover`, right to left."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


async def _range_hashes(ranges: Iterable[Range], read: ReadNodes) -> list[bytes]:
    """The hash of each range, from one read of the nodes they need."""
    covers = [cover(lo, hi) for lo, hi in ranges]
    wanted = sorted({node for nodes in covers for node in nodes}, key=lambda n: n.position)
    hashes = await read(wanted) if wanted else []
    if len(hashes) != len(wanted):
        raise MissingNodesError(f"asked the store for {len(wanted)} nodes, got {len(hashes)}")
    known = dict(zip(wanted, hashes, strict=True))
    return [fold([known[node] for node in nodes]) for nodes in covers]


async def root_hash(size: int, read: ReadNodes) -> bytes:
    """The root of the tree of the first ``size`` leaves (SHA-256("") when empty)."""
    if size < 0:
        raise ValueError(f"a tree cannot have {size} leaves")
    [root] = await _range_hashes([(0, size)], read)
    return root


async def inclusion_proof(index: int, size: int, read: ReadNodes) -> list[bytes]:
    """RFC 9162 §2.1.3.1: the audit path of leaf ``index`` in the tree of ``size``."""
    return await _range_hashes([r for r, _ in inclusion_path(index, size)], read)


async def consistency_proof(first: int, second: int, read: ReadNodes) -> list[bytes]:
    """RFC 9162 §2.1.4.1: proof that tree ``first`` is a prefix of tree ``second``."""
    return await _range_hashes(consistency_path(first, second), read)


class Frontier:
    """The complete subtrees of the tree's right edge: enough to append leaves
    and to compute the root, in O(log n) memory.

    The store loads it (:meth:`load`) inside its append transaction, extends
    it with the new events' leaf hashes and writes the nodes that returns; an
    offline verifier pushes a whole export through one, storing nothing."""

    __slots__ = ("_hashes", "_levels", "size")

    def __init__(self) -> None:
        self.size = 0
        self._levels: list[int] = []  # strictly decreasing, left to right
        self._hashes: list[bytes] = []

    @classmethod
    async def load(cls, size: int, read: ReadNodes) -> Frontier:
        """The frontier of the stored tree of ``size`` leaves, from one read."""
        nodes = cls.nodes(size)
        return cls.of(size, await read(nodes) if nodes else [])

    @staticmethod
    def nodes(size: int) -> list[Node]:
        """The nodes a frontier of ``size`` leaves is made of, left to right."""
        if size < 0:
            raise ValueError(f"a tree cannot have {size} leaves")
        return cover(0, size)

    @classmethod
    def of(cls, size: int, hashes: Sequence[bytes]) -> Frontier:
        """The frontier of ``size`` leaves from the hashes of its :meth:`nodes`, for a
        store that reads them without awaiting (SQLite's writer thread)."""
        nodes = cls.nodes(size)
        if len(hashes) != len(nodes):
            raise MissingNodesError(f"asked the store for {len(nodes)} nodes, got {len(hashes)}")
        frontier = cls()
        frontier.size = size
        frontier._levels = [node.level for node in nodes]
        frontier._hashes = list(hashes)
        return frontier

    def append(self, leaves: Iterable[bytes]) -> bytes:
        """Append leaf hashes; returns the hashes of the nodes they complete (each
        leaf's own hash, then the subtrees it closes, level by level), concatenated
        in position order: after ``n`` leaves, from position ``2n - popcount(n)``
        on.  That is the run a store appends to its rows, in one pass."""
        levels, hashes = self._levels, self._hashes
        run: list[bytes] = []
        keep = run.append
        sha256 = hashlib.sha256  # node_hash, inlined: this runs for every event appended
        count = 0
        for leaf in leaves:
            keep(leaf)
            level, value = 0, leaf
            while levels and levels[-1] == level:
                levels.pop()
                value = sha256(NODE_PREFIX + hashes.pop() + value).digest()
                keep(value)
                level += 1
            levels.append(level)
            hashes.append(value)
            count += 1
        self.size += count
        return b"".join(run)

    def push(self, leaf: bytes) -> list[bytes]:
        """Append one leaf hash; returns the hashes of the nodes it completes,
        the ``k``-th being node ``(k, index >> k)`` for the leaf's ``index``."""
        return split_hashes(self.append((leaf,)))

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[Node, bytes]]:
        """Append leaf hashes; returns every node they complete, in append
        (position) order: the rows a store writes."""
        nodes: list[tuple[Node, bytes]] = []
        for leaf in leaves:
            index = self.size
            nodes += ((Node(k, index >> k), h) for k, h in enumerate(self.push(leaf)))
        return nodes

    def root(self) -> bytes:
        """The root of the tree so far."""
        return fold(self._hashes)
