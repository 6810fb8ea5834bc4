"""The Merkle tree on PostgreSQL: node reads, the migration step that builds
the tree of an existing log, and the signing key kept in the database."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import asyncpg

from app.errors import StoreUnavailable
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
