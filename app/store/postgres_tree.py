"""The Merkle tree on PostgreSQL: node reads, the migration step that builds
the tree of an existing log, and the signing key kept in the database."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import asyncpg

from app.errors import StoreUnavailable
from app.store.base import COLUMNS
from app.store.postgres_sql import BUILD_TREE_SQL, KEEP_SIGNER_SQL, READ_NODES_SQL
from app.store.tree import (
    BUILD_PAGE,
    LAST_ROW_SQL,
    NodeRows,
    TreeBuild,
    caught_up,
    chunks_of,
    pick,
    stored_size,
)
from app.tlog import Frontier, MissingNodesError, Node

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    #: A connection of its own (migrations) or from a pool.
    Connection = asyncpg.Connection | PoolConnectionProxy[asyncpg.Record]


async def read_nodes(conn: Connection, nodes: Sequence[Node]) -> list[bytes]:
    """The stored hashes of ``nodes``, in the order asked; one statement."""
    rows = await conn.fetch(READ_NODES_SQL, chunks_of(nodes))
    return pick(nodes, {row["chunk"]: row["hashes"] for row in rows})


async def load_frontier(conn: Connection, head: int) -> Frontier:
    """The frontier of the stored tree, which covers the log up to ``head``, unless a
    process that does not keep the tree appended around it: then those events are
    added to the tree first (:func:`app.store.tree.caught_up`).  Runs under the
    head lock, inside the append's transaction."""
    try:
        return Frontier.of(head, await read_nodes(conn, Frontier.nodes(head)))
    except MissingNodesError:
        last = await conn.fetchrow(LAST_ROW_SQL)
        size = stored_size(None if last is None else (last[0], last[1]))
        if size is None or size >= head:
            raise
    frontier = Frontier.of(size, await read_nodes(conn, Frontier.nodes(size)))
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM events WHERE id > $1 AND id <= $2 ORDER BY id", size, head
    )
    nodes = caught_up(frontier, head, [tuple(row) for row in rows])
    await conn.execute(BUILD_TREE_SQL, *node_columns(nodes))
    return frontier


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
