"""Verifying *any* export against a checkpoint with the log's inclusion proofs:
filtered, starting after id 1, from a trimmed log.

Each run of consecutive ids in the export is split into aligned complete
subtrees (the largest ``2**k`` leaves starting at a multiple of ``2**k``).
Every such subtree is a node of the signed tree, so its hash, computed here
from the export's own lines, must lead to the signed root along the upper
part of the inclusion proof of its first leaf: one proof per subtree, so a
complete export of a million events costs a few dozen requests, and an
export of scattered events one per event.  A subtree that fails is halved
until the altered events are found, so every failing id is named.

The proofs come from a :data:`FetchProof` callback (the ``verify`` command
fetches them over HTTP); nothing here does I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from app.tlog.audit import BadLines, IdTally
from app.tlog.checkpoint import Checkpoint
from app.tlog.exports import Record
from app.tlog.merkle import HASH_SIZE, ProofError, inclusion_path, leaf_hash, node_hash
from app.tlog.tree import Frontier, Node

#: The inclusion proof of leaf ``index`` in the tree of ``size`` leaves.
FetchProof = Callable[[int, int], Awaitable[Sequence[bytes]]]
CONCURRENCY = 16  # proofs fetched at once


@dataclass(slots=True)
class Run:
    """Consecutive leaves ``start ..`` of the export, their hashes end to end."""

    start: int
    hashes: bytearray = field(default_factory=bytearray)

    @property
    def end(self) -> int:
        return self.start + len(self.hashes) // HASH_SIZE

    def subtree_hash(self, node: Node) -> bytes:
        """The hash of a complete subtree inside this run, from its leaves."""
        first = (node.index << node.level) - self.start
        frontier = Frontier()
        span = range(first * HASH_SIZE, (first + (1 << node.level)) * HASH_SIZE, HASH_SIZE)
        frontier.append(bytes(self.hashes[at : at + HASH_SIZE]) for at in span)
        return frontier.root()


def aligned_subtrees(start: int, end: int) -> list[Node]:
    """Leaves ``start .. end-1`` as the fewest complete subtrees that each start
    at a multiple of their size, left to right: every one is a node of any tree
    that holds all of those leaves."""
    nodes = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append(Node(level, start >> level))
        start += 1 << level
    return nodes


def root_from_subtree(subtree: bytes, node: Node, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that the inclusion proof of ``node``'s first leaf implies for
    ``node`` itself: its hash folded with the proof's steps above its level."""
    steps = inclusion_path(node.index << node.level, size)
    if len(proof) != len(steps):
        raise ProofError(f"an inclusion proof in a tree of size {size} has {len(steps)} hashes")
    value = subtree
    for (_, left), sibling in zip(steps[node.level :], proof[node.level :], strict=True):
        value = node_hash(sibling, value) if left else node_hash(value, sibling)
    return value


class _Prover:
    """Checks subtrees of the export against the checkpoint, halving failures."""

    def __init__(self, checkpoint: Checkpoint, fetch: FetchProof) -> None:
        self._checkpoint = checkpoint
        self._fetch = fetch
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def all_failures(self, runs: Sequence[Run]) -> list[int]:
        """The failing ids of every run, its subtrees checked by a few workers."""
        todo = iter([(run, node) for run in runs for node in aligned_subtrees(run.start, run.end)])
        failed: list[int] = []

        async def worker() -> None:
            for run, node in todo:
                failed.extend(await self.failures(run, node))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return sorted(failed)

    async def failures(self, run: Run, node: Node) -> list[int]:
        """The ids in ``node`` whose lines are not the signed leaves."""
        async with self._slots:
            proof = await self._fetch(node.index << node.level, self._checkpoint.size)
        try:
            root = root_from_subtree(run.subtree_hash(node), node, self._checkpoint.size, proof)
        except ProofError:
            root = b""
        if root == self._checkpoint.root:
            return []
        if node.level == 0:
            return [node.index + 1]
        halves = [Node(node.level - 1, 2 * node.index + half) for half in (0, 1)]
        found = await asyncio.gather(*(self.failures(run, half) for half in halves))
        return [ident for part in found for ident in part]


async def verify_with_proofs(
    records: Iterable[Record], checkpoint: Checkpoint, fetch: FetchProof
) -> tuple[int, list[str]]:
    """Check each record that names an id against ``checkpoint`` (already
    verified); returns how many records were read and every problem found."""
    ids = IdTally(checkpoint.size)
    runs: list[Run] = []
    count = 0
    badly_encoded = BadLines()
    for record in records:
        count += 1
        ident = record.id
        if record.problem is not None:
            badly_encoded.add(record)
            continue
        if ident is not None and ids.first_time(ident):
            if not runs or runs[-1].end != ident - 1:
                runs.append(Run(ident - 1))
            runs[-1].hashes += leaf_hash(record.leaf)
    failed = await _Prover(checkpoint, fetch).all_failures(runs)
    failing = ("not the events the checkpoint signed (their inclusion proofs fail)", failed)
    return count, badly_encoded.problems() + ids.problems(failing)
