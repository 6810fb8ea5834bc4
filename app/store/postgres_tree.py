"""The Merkle tree on PostgreSQL: node reads, the migration step, the signing
key, and this node's estimate of the database's clock (for one-statement
appends, see ``APPEND_SQL`` in :mod:`app.store.postgres_sql`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from app.errors import StoreUnavailable
from app.events import utc_timestamp
from app.store.base import COLUMNS
from app.store.postgres_sql import BUILD_TREE_SQL, KEEP_SIGNER_SQL, READ_NODES_SQL
from app.store.tree import BUILD_PAGE, NodeRows, TreeBuild, chunks_of, pick
from app.tlog import Frontier, Node

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    #: A connection of its own (migrations) or from a pool.
    Connection = asyncpg.Connection | PoolConnectionProxy[asyncpg.Record]


async def read_nodes(conn: Connection, nodes: Sequence[Node]) -> list[bytes]:
    """The stored hashes of ``nodes``, in the order asked; one statement."""
    rows = await conn.fetch(READ_NODES_SQL, chunks_of(nodes))
    return pick(nodes, {row["chunk"]: row["hashes"] for row in rows})


async def load_frontier(conn: Connection, size: int) -> Frontier:
    return Frontier.of(size, await read_nodes(conn, Frontier.nodes(size)))


def node_columns(rows: NodeRows) -> tuple[list[int], list[bytes]]:
    """Node rows as the two arrays the statements unnest."""
    return [chunk for chunk, _ in rows], [hashes for _, hashes in rows]


async def build_tree(conn: Connection) -> None:
    """Migration 0005's step: the tree of every event already in the log."""
    head = await conn.fetchval("SELECT last_id FROM log_head")
    oldest = await conn.fetchval("SELECT min(id) FROM events")
    build = TreeBuild(head, oldest)
    after = 0
    while rows := await conn.fetch(
        f"SELECT {COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2", after, BUILD_PAGE
    ):
        await conn.execute(BUILD_TREE_SQL, *node_columns(build.add([tuple(r) for r in rows])))
        after = rows[-1]["id"]
    build.finish()


async def keep_signer(conn: Connection, make: Callable[[], str]) -> str:
    """The kept signing key, else ``make()``'s, kept (of racing processes, the first)."""
    kept: str | None = await conn.fetchval("SELECT signer_key FROM log_signer")
    if kept is None:
        await conn.execute(KEEP_SIGNER_SQL, make())
        kept = await conn.fetchval("SELECT signer_key FROM log_signer")
    if kept is None:
        raise StoreUnavailable("the log_signer row vanished while it was being kept")
    return kept


class DatabaseClock:
    """This node's estimate of the database's clock, learnt from each append's
    answer, so that the ts it proposes is the database's time to within the
    round trip, even on a machine whose own clock is off."""

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
