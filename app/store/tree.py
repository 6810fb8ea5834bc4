"""The log's Merkle tree as both engines store it, and how appends grow it.

The tree is the hashes of its complete subtrees (:mod:`app.tlog.tree`),
numbered by :attr:`Node.position` in the order appends create them.  A
commit of leaves ``n .. m-1`` creates exactly positions ``2n - popcount(n)``
up to ``2m - popcount(m) - 1``, so each commit *appends* one run of hashes.
They are stored ``NODES_PER_ROW`` to a row of ``tree_nodes (chunk, hashes)``:
a commit writes one or two rows however many events it holds (its run
appended to the last row, the rest in new rows), instead of about two rows
per event; 32 hashes keep a row at 1 KiB, inside one database page on both
engines.  A proof reads a few dozen rows by primary key.

Between commits the engine keeps the frontier (the right edge, O(log n)
hashes) in a :class:`TreeEdge`, so an append reads no node unless another
process appended since.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from app.errors import StoreUnavailable
from app.events import Event
from app.store.migrate import MigrationError
from app.tlog import Frontier, MissingNodesError, Node
from app.tlog.merkle import HASH_SIZE, leaf_hashes

log = logging.getLogger(__name__)

NODES_PER_ROW = 32
ROW_BYTES = NODES_PER_ROW * HASH_SIZE
#: Events read per step when building the tree of a log that predates it.
BUILD_PAGE = 10_000

#: The tree's last row, (chunk, bytes of hashes): where its nodes end (both engines).
LAST_ROW_SQL = "SELECT chunk, length(hashes) FROM tree_nodes ORDER BY chunk DESC LIMIT 1"
#: Rows appended to: (chunk, hashes to add at the end of that chunk's row).
NodeRows = list[tuple[int, bytes]]
#: An events row as the stores read it (``COLUMNS``, Event.build's arguments).
EventRow = tuple[int, str, str | None, str, str]


def first_position(size: int) -> int:
    """The position of the first node the leaf after ``size`` leaves creates."""
    return 2 * size - size.bit_count()


def stored_size(last_row: tuple[int, int] | None) -> int | None:
    """How many leaves the stored tree holds, from its last row (chunk, bytes of
    hashes; ``None``: no row): ``None`` if no tree ends there.  A tree of ``n``
    leaves fills ``2n - popcount(n)`` positions, which grows with ``n``."""
    positions = 0 if last_row is None else last_row[0] * NODES_PER_ROW + last_row[1] // HASH_SIZE
    lo, hi = 0, positions
    while lo < hi:
        mid = (lo + hi) // 2
        if first_position(mid) < positions:
            lo = mid + 1
        else:
            hi = mid
    return lo if first_position(lo) == positions else None


def caught_up(frontier: Frontier, head: int, rows: Sequence[EventRow]) -> NodeRows:
    """The nodes of events ``frontier.size + 1 .. head`` (``rows``, read from the
    log), which a process that does not keep the tree appended around it: one of
    a version before the tree, still running while this one started on the same
    database.  The log holds them in order, so the tree takes them as any
    append would; a gap (trimmed since) cannot be, and is refused."""
    first = frontier.size + 1
    kept = [row[0] for row in rows]
    if kept != list(range(first, head + 1)):
        missing = min(set(range(first, head + 1)) - set(kept))
        raise StoreUnavailable(
            f"the Merkle tree stops at event {frontier.size} but the log's head is {head}, "
            f"and event {missing} is no longer in the log to be added to it; nothing was "
            "written. See docs/verifiable-log.md, 'Upgrading'."
        )
    log.warning(
        "events %d..%d were appended without their Merkle tree leaves (by a process of a "
        "version before the verifiable log?); they are in the tree now",
        first,
        head,
    )
    return grow(frontier, (Event.build(*row) for row in rows))


def node_rows(position: int, hashes: bytes) -> NodeRows:
    """The row pieces that store ``hashes`` (concatenated) from ``position`` on."""
    rows: NodeRows = []
    offset = 0
    while offset < len(hashes):
        chunk, within = divmod(position, NODES_PER_ROW)
        take = min(len(hashes) - offset, ROW_BYTES - within * HASH_SIZE)
        rows.append((chunk, hashes[offset : offset + take]))
        offset += take
        position += take // HASH_SIZE
    return rows


def grow(frontier: Frontier, events: Iterable[Event]) -> NodeRows:
    """Append the events' leaves to ``frontier``; returns the rows to write."""
    start = first_position(frontier.size)
    return node_rows(start, frontier.append(leaf_hashes([event.json for event in events])))


def chunks_of(nodes: Sequence[Node]) -> list[int]:
    """The rows that hold these nodes."""
    return sorted({node.position // NODES_PER_ROW for node in nodes})


def pick(nodes: Sequence[Node], rows: Mapping[int, bytes]) -> list[bytes]:
    """Each node's hash out of the rows read, in the order asked."""
    hashes = []
    for node in nodes:
        chunk, within = divmod(node.position, NODES_PER_ROW)
        start = within * HASH_SIZE
        found = rows.get(chunk, b"")[start : start + HASH_SIZE]
        if len(found) != HASH_SIZE:
            raise MissingNodesError(
                f"the tree has no node ({node.level}, {node.index}) at position {node.position}"
            )
        hashes.append(found)
    return hashes


class TreeEdge:
    """The frontier as of this process's last commit, and that commit's ``ts``.

    An append *takes* it (it is mutated while the commit is built) and
    *keeps* it back only once the commit succeeded, so a failed commit can
    never leave a frontier that runs ahead of the database."""

    __slots__ = ("_frontier", "last_ts")

    def __init__(self) -> None:
        self._frontier: Frontier | None = None
        self.last_ts = ""

    @property
    def size(self) -> int | None:
        """The tree size the kept frontier stands for (None: nothing kept)."""
        return None if self._frontier is None else self._frontier.size

    def take(self, size: int | None = None) -> Frontier | None:
        """The kept frontier if it is at ``size`` (any size when None); it is no
        longer kept either way."""
        frontier, self._frontier = self._frontier, None
        if frontier is None or (size is not None and frontier.size != size):
            return None
        return frontier

    def keep(self, frontier: Frontier, last_ts: str) -> None:
        self._frontier = frontier
        self.last_ts = last_ts


class TreeBuild:
    """Builds the tree of a log written before the tree existed (migration 0005),
    a page of events at a time.

    Leaf *i* must be the event with id *i*+1, so every event from id 1 must
    still be there: a log trimmed before this version cannot rebuild the
    leaves it lost, and is refused, naming what is missing and what to do."""

    def __init__(self, head: int, oldest: int | None) -> None:
        if head and oldest != 1:
            lost = f"1..{oldest - 1}" if oldest is not None else f"1..{head} (all of them)"
            raise MigrationError(
                f"this log was trimmed before Livefeed kept its Merkle tree: events {lost} "
                "are gone, so their leaves cannot be rebuilt and no checkpoint could cover "
                "them. Restore a backup that still holds every event from id 1, or give this "
                "version a new database (LIVEFEED_DATABASE_URL); the previous version of "
                "Livefeed still serves this one. See docs/verifiable-log.md, 'Upgrading'."
            )
        self.head = head
        self.frontier = Frontier()

    def add(self, rows: Sequence[EventRow]) -> NodeRows:
        """The node rows for the next page of events (``COLUMNS``, in id order)."""
        expected = self.frontier.size + 1
        for offset, row in enumerate(rows):
            if row[0] != expected + offset:
                raise MigrationError(
                    f"event {expected + offset} is missing (the next kept id is {row[0]}): "
                    "a log with a gap cannot be given a Merkle tree; restore it from a backup"
                )
        return grow(self.frontier, (Event.build(*row) for row in rows))

    def finish(self) -> None:
        if self.frontier.size != self.head:
            raise MigrationError(
                f"the log's head is {self.head} but only events 1..{self.frontier.size} are "
                "there: a log with missing events cannot be given a Merkle tree"
            )
