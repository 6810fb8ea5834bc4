"""The store interface: one small protocol, one module per engine.

The log is the source of truth; every live queue in the process is only a
cache of it.  So the interface is "append", "read after a cursor" and "tell
me when the log advanced" (including appends made by other processes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.config import Retention
from app.events import EVERYTHING, Draft, Event, EventFilter
from app.tlog import Node, SignerKey

IDEMPOTENCY_WINDOW_S = 24 * 3600
#: The events table's columns, in Event.build's argument order.
COLUMNS = "id, type, workflow_id, ts, data"
#: Rows deleted per statement when trimming, so publishers never wait long for a lock.
TRIM_CHUNK = 10_000


def fitted_limit(events: Sequence[Event], current: int, budget_bytes: int, most: int) -> int:
    """How many events to ask for in the next page so that it holds about
    ``budget_bytes``, never more than ``most``, judged by the page just read (by
    ``current`` when it held none).  Events may be up to 64 KiB: a page of 1000
    would be 64 MB in memory, several times over once encoded for the transports,
    for as long as a reader that stopped reading holds it."""
    size = sum(len(event.json) for event in events)
    if not size:
        return current
    return max(1, min(most, budget_bytes * len(events) // size))


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of one publish: its events, or the first answer when replayed."""

    events: list[Event]  # empty when replayed: nothing new was written
    receipt: list[tuple[int, str]]  # (id, ts) per event, in order
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class RedeemedTicket:
    """A ticket used once.  The stream it opens must not outlive the credential that
    minted it, so the credential's expiry travels with the ticket."""

    credential_expires_at: float | None  # Unix time; None: minted with a lasting token


@dataclass(frozen=True, slots=True)
class Page:
    """Matching events after a cursor, and how far the scan looked.

    ``scanned_to`` lets a filtered reader move its cursor past ids that did
    not match, so that it never scans the same rows twice.  ``more``: the page
    stopped at its scan budget (:mod:`app.store.seek`) short of the head, so
    matching events may follow ``scanned_to`` although the page is short or
    even empty; the reader continues from ``scanned_to``.
    """

    events: list[Event]
    scanned_to: int
    more: bool = False

    @classmethod
    def read(
        cls, events: list[Event], limit: int, after: int, head: int, stopped_at: int | None = None
    ) -> Page:
        """A page of a read after ``after`` that saw the head at ``head``: a full page
        scanned only to its last event; a short one scanned every committed row, or
        only up to ``stopped_at`` when its budget ran out before the head."""
        if events and len(events) == limit:
            return cls(events, events[-1].id)
        if stopped_at is not None:
            return cls(events, stopped_at, more=True)
        return cls(events, max(head, after))


@dataclass(frozen=True, slots=True)
class Bounds:
    """The oldest id still kept and the newest id ever appended (0 when empty)."""

    oldest_id: int
    latest_id: int


def count_cutoff(head: int, retention: Retention) -> int:
    """The newest id a count limit lets go: ids run without gaps up to the head and
    trimming removes the oldest, so the newest ``max_events`` are ``head - n + 1..head``."""
    if retention.max_events is None:
        return 0
    return max(0, head - retention.max_events)


class LogReader(Protocol):
    """What the hub needs: read after a cursor, and know when the log advanced."""

    async def read(self, after: int, limit: int, filter: EventFilter = EVERYTHING) -> Page:
        """Up to ``limit`` matching events with ``id > after``, in id order."""

    async def read_tail(self, count: int, filter: EventFilter = EVERYTHING) -> Page:
        """The last ``count`` matching events, in id order; ``scanned_to`` is the head."""

    async def bounds(self) -> Bounds:
        """Read from the database itself, never a cached view."""

    async def wait_for_head(self, beyond: int) -> int:
        """Return the head once it is past ``beyond`` (appends from any process)."""

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        """Call ``listener`` with the events each commit of *this* process wrote, in id
        order, before their publishers hear back: the hub delivers them without
        reading them back from the database."""


class LogWriter(Protocol):
    """What publishing needs."""

    async def append(self, drafts: Sequence[Draft]) -> list[Event]:
        """Append in one transaction; returns once durably committed."""

    async def append_once(self, key: str, fingerprint: str, drafts: Sequence[Draft]) -> Appended:
        """Append unless ``key`` was used in the last 24 h: then return the first receipt
        (``replayed``), or raise :class:`IdempotencyConflict` if the body differed."""


class TicketStore(Protocol):
    """One-use stream tickets, shared by every process that serves the log."""

    async def issue_ticket(
        self,
        digest: str,
        channel: str,
        expires_at: float,
        credential_expires_at: float | None = None,
    ) -> None:
        """Remember a stream ticket (by its digest) until ``expires_at`` (Unix time),
        with the expiry of the credential that minted it (``None``: it lasts)."""

    async def redeem_ticket(self, digest: str, channel: str, now: float) -> RedeemedTicket | None:
        """Use a ticket once: ``None`` unless it existed for ``channel`` and had not expired."""


class Maintenance(Protocol):
    """Housekeeping that runs in the background and from the command line."""

    async def trim(self, retention: Retention) -> int:
        """Delete what the retention policy no longer keeps; returns how many."""

    async def purge_expired(self, now: float) -> int:
        """Forget idempotency keys older than 24 h and expired tickets."""

    async def count(self) -> int: ...


class LogTree(Protocol):
    """The log's Merkle tree and signing key: what checkpoints and proofs need.
    The tree's size is the head (``bounds().latest_id``): both move in one commit."""

    async def read_nodes(self, nodes: Sequence[Node]) -> list[bytes]:
        """The stored hashes of these complete subtrees, in the order asked
        (:data:`app.tlog.ReadNodes`); one read, never a scan."""

    @property
    def signer(self) -> SignerKey:
        """The key checkpoints are signed with (set when the store opens)."""


class Store(LogReader, LogWriter, TicketStore, Maintenance, LogTree, Protocol):
    """A whole engine: each part above, plus its lifetime and health."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, event_id: int) -> Event | None: ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""


class HeadWatch:
    """The newest id this process knows of, a way to wait for it to move, and the
    listeners that get this process's own commits."""

    def __init__(self, head: int = 0) -> None:
        self.head = head
        self._moved = asyncio.Event()
        self._listeners: list[Callable[[list[Event]], None]] = []

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        self._listeners.append(listener)

    def committed(self, events: list[Event]) -> None:
        """A commit of this process wrote ``events``: tell the listeners, move the head."""
        for listener in self._listeners:
            listener(events)
        self.advance(events[-1].id)

    def advance(self, head: int) -> None:
        if head > self.head:
            self.head = head
            moved, self._moved = self._moved, asyncio.Event()
            moved.set()

    async def wait_beyond(self, known: int) -> int:
        while self.head <= known:
            await self._moved.wait()
        return self.head
