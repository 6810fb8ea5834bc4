"""How a group commit is written on PostgreSQL: events, idempotency keys, the
Merkle tree's new nodes, the head and the NOTIFY, in one transaction.

The nodes depend on the events' bytes, so on their ids and ts, which the
database assigns under the head lock.  Three ways to write a group:

- **One statement proposed by this node** (``APPEND_SQL``), when it appended
  last and the group has no idempotency keys: the node still holds the
  tree's frontier, so it proposes the ids (after the head it left) and the
  ts (its estimate of the database's clock, :class:`DatabaseClock`) with the
  nodes they make; the statement writes only if the head has not moved and
  the ts is the database's time to within ``CLOCK_LEEWAY_S``.  One round
  trip, as before the tree existed.
- **One statement computed by the database** (``SERVER_APPEND_SQL``), for a
  group without keys otherwise (another node appended meanwhile, a first
  append, a refused proposal): the database numbers, stamps and hashes the
  group and answers the new frontier, so the head lock is held for that
  statement only, however the nodes take turns, and this node's next commit
  can propose again.  A proposal likely to be refused is not even sent
  (:class:`Appender` says when).
- **Under the head lock**, for a group with idempotency keys: ``BEGIN``,
  lock the head and read ids, ts and keys (and the frontier when this node
  does not hold it), write, ``COMMIT``.  The keys must be read under the
  lock before the group is planned, which one statement cannot do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from app.errors import StoreUnavailable
from app.events import utc_timestamp
from app.store.base import IDEMPOTENCY_WINDOW_S, Appended
from app.store.group import AppendRequest, plan_group
from app.store.postgres_sql import (
    APPEND_SQL,
    EARLIER_KEYS_SQL,
    LOCK_HEAD_SQL,
    SERVER_APPEND_SQL,
    TREE_BEHIND,
    WRITE_SQL,
)
from app.store.postgres_tree import load_frontier, node_columns
from app.store.tree import TreeEdge, grow
from app.tlog import Frontier
from app.tlog.merkle import split_hashes

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Outcomes = list[Appended | Exception]
    #: The group committer's connection, acquired for one commit.
    Acquire = Callable[[], AbstractAsyncContextManager[PoolConnectionProxy[asyncpg.Record]]]


def one_row(row: asyncpg.Record | None) -> asyncpg.Record:
    """A statement's one row (log_head always has one; its absence is a broken schema)."""
    if row is None:
        raise StoreUnavailable("the log_head row is missing: the database was not migrated")
    return row


class DatabaseClock:
    """This node's estimate of the database's clock, learnt from the answer of each
    one-statement append (of either kind), so the ts it proposes is the database's
    time to within the round trip even when this machine's own clock is off."""

    __slots__ = ("_offset",)

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self, not_before: str) -> str:
        """A ts for an append now: the database's time, never before ``not_before``."""
        moment = datetime.fromtimestamp(time.time() + self._offset, UTC)
        return max(utc_timestamp(moment), not_before)

    def learn(self, database_time: float, sent: float) -> None:
        """The database read ``database_time`` (Unix) during a statement sent at
        ``sent`` (this machine's Unix time) and answered now."""
        self._offset = database_time - (sent + time.time()) / 2


class Appender:
    """Writes the group committer's groups; it alone touches its frontier.

    A refused proposal costs a round trip and the hashing done for it, so
    none is sent when it would likely be refused: when the newest head this
    node has heard of (``known_head``: its own commits, the NOTIFY listener,
    the poll) is past its frontier, or when another node wrote between its
    last two commits (nodes publishing together keep doing so, and a NOTIFY
    can still be on its way).  Once this node writes alone again, the
    database's answer shows it and the next commit proposes."""

    def __init__(self, acquire: Acquire, known_head: Callable[[], int]) -> None:
        self._acquire = acquire
        self._known_head = known_head
        self._edge = TreeEdge()
        self._clock = DatabaseClock()
        self._contended = False  # another node wrote between this node's last two commits

    async def commit(self, requests: list[AppendRequest]) -> Outcomes:
        now = time.time()
        if any(request.key for request in requests):
            return await self._under_lock(requests, now)
        size = self._edge.size
        if size is not None and not self._contended and size >= self._known_head():
            outcomes = await self._one_statement(requests, now)
            if outcomes is not None:
                return outcomes
        return await self._in_database(requests, now, size)

    async def _one_statement(
        self, requests: Sequence[AppendRequest], now: float
    ) -> Outcomes | None:
        """None when the proposal was refused (the head moved): nothing was written."""
        frontier = self._edge.take()
        if frontier is None:
            return None
        ts = self._clock.now(self._edge.last_ts)
        plan = plan_group(requests, frontier.size, ts, {}, now)
        events = plan.events
        sent = time.time()
        async with self._acquire() as conn:
            clock, moved = one_row(
                await conn.fetchrow(
                    APPEND_SQL,
                    frontier.size,
                    ts,
                    [e.type for e in events],
                    [e.workflow_id for e in events],
                    [e.data for e in events],
                    len(events),
                    *node_columns(grow(frontier, events)),
                )
            )
        self._clock.learn(clock, sent)
        if not moved:
            return None
        self._edge.keep(frontier, ts)
        return plan.outcomes

    async def _in_database(
        self, requests: Sequence[AppendRequest], now: float, size: int | None
    ) -> Outcomes:
        """The database numbers, stamps and hashes the group (migration 0006's
        ``livefeed_append``); the answer is planned here the same way, after the
        head it followed, so the events built match the bytes it hashed.
        ``size``: where this node's previous commit left the head, if it knows."""
        drafts = [draft for request in requests for draft in request.drafts]
        sent = time.time()
        async with self._acquire() as conn:
            try:
                answer = await conn.fetchrow(
                    SERVER_APPEND_SQL,
                    [d.type for d in drafts],
                    [d.workflow_id for d in drafts],
                    [d.data for d in drafts],
                )
            except asyncpg.PostgresError as exc:  # inside: _acquire makes it StoreUnavailable
                if exc.sqlstate != TREE_BEHIND:
                    raise
                answer = None
        if answer is None:  # events were appended around the tree; nothing was written
            return await self._under_lock(requests, now)  # load_frontier adds them
        after, ts, clock, frontier = answer
        self._clock.learn(clock, sent)
        self._contended = size is not None and after != size
        self._edge.keep(Frontier.of(after + len(drafts), split_hashes(frontier)), ts)
        return plan_group(requests, after, ts, {}, now).outcomes

    async def _under_lock(self, requests: Sequence[AppendRequest], now: float) -> Outcomes:
        """One transaction holding the head lock from first to last: the ids, ts and
        idempotency keys are read under it, then the group is written."""
        keys = [request.key for request in requests if request.key]
        frontier = None
        async with self._acquire() as conn, conn.transaction():
            last_id, last_ts, clock = one_row(await conn.fetchrow(LOCK_HEAD_SQL))
            earlier: dict[str, tuple[str, str]] = {}
            if keys:  # read after the lock: sees every key committed before us
                rows = await conn.fetch(EARLIER_KEYS_SQL, keys, now - IDEMPOTENCY_WINDOW_S)
                earlier = {row["key"]: (row["fingerprint"], row["receipt"]) for row in rows}
            ts = max(clock, last_ts)  # never earlier than the previous event
            plan = plan_group(requests, last_id, ts, earlier, now)
            events = plan.events
            if events:
                frontier = self._edge.take(last_id) or await load_frontier(conn, last_id)
                key_columns = [list(column) for column in zip(*plan.keys, strict=True)]
                await conn.execute(
                    WRITE_SQL,
                    [e.id for e in events],
                    [e.type for e in events],
                    [e.workflow_id for e in events],
                    [e.data for e in events],
                    ts,
                    *(key_columns or [[], [], [], []]),  # key, fingerprint, receipt, created_at
                    events[-1].id,
                    *node_columns(grow(frontier, events)),
                )
        if frontier is not None:
            self._edge.keep(frontier, ts)
        return plan.outcomes
