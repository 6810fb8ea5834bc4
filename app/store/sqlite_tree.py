"""The Merkle tree's SQL on SQLite: every function runs on a connection's own
thread (see :mod:`app.store.sqlite`), so none of them awaits."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from app.events import Event
from app.store.base import COLUMNS
from app.store.tree import (
    BUILD_PAGE,
    LAST_ROW_SQL,
    NodeRows,
    TreeBuild,
    TreeEdge,
    caught_up,
    chunks_of,
    grow,
    pick,
    stored_size,
)
from app.tlog import Frontier, MissingNodesError, Node

#: Append a run of hashes to its row (a new row starts empty).  SQLite's ``||``
#: makes text of two blobs, byte for byte in a UTF-8 database; the cast makes it a
#: blob again (reading it back as text would fail to decode).
APPEND_NODES_SQL = (
    "INSERT INTO tree_nodes (chunk, hashes) VALUES (?, ?)"
    " ON CONFLICT (chunk) DO UPDATE SET hashes = CAST(hashes || excluded.hashes AS BLOB)"
)


def read_nodes(conn: sqlite3.Connection, nodes: Sequence[Node]) -> list[bytes]:
    """The stored hashes of ``nodes``, in the order asked; one statement."""
    chunks = chunks_of(nodes)
    marks = ",".join("?" * len(chunks))
    rows = conn.execute(
        f"SELECT chunk, hashes FROM tree_nodes WHERE chunk IN ({marks})", chunks
    ).fetchall()
    return pick(nodes, dict(rows))


def write_nodes(conn: sqlite3.Connection, rows: NodeRows) -> None:
    conn.executemany(APPEND_NODES_SQL, rows)


def extend_tree(
    conn: sqlite3.Connection, edge: TreeEdge, size: int, events: Sequence[Event]
) -> Frontier:
    """Inside an append transaction, holding the write lock, with the tree at
    ``size``: write the nodes ``events`` complete.  Returns the frontier for
    :meth:`TreeEdge.keep` once the transaction commits."""
    frontier = edge.take(size)
    if frontier is None:  # first append of this process, or another one appended since
        frontier = _stored_frontier(conn, size)
    write_nodes(conn, grow(frontier, events))
    return frontier


def _stored_frontier(conn: sqlite3.Connection, head: int) -> Frontier:
    """The frontier of the stored tree, which covers the log up to ``head``, unless a
    process that does not keep the tree appended around it: then those events are
    added to the tree first (:func:`app.store.tree.caught_up`)."""
    try:
        return Frontier.of(head, read_nodes(conn, Frontier.nodes(head)))
    except MissingNodesError:
        last = conn.execute(LAST_ROW_SQL).fetchone()
        size = stored_size(last)
        if size is None or size >= head:
            raise
    frontier = Frontier.of(size, read_nodes(conn, Frontier.nodes(size)))
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM events WHERE id > ? AND id <= ? ORDER BY id", (size, head)
    ).fetchall()
    write_nodes(conn, caught_up(frontier, head, rows))
    return frontier


def build_tree(conn: sqlite3.Connection) -> None:
    """Migration 0005's step: the tree of every event already in the log."""
    head = conn.execute("SELECT last_id FROM log_head").fetchone()[0]
    oldest = conn.execute("SELECT min(id) FROM events").fetchone()[0]
    build = TreeBuild(head, oldest)
    cursor = conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY id")
    while rows := cursor.fetchmany(BUILD_PAGE):
        write_nodes(conn, build.add(rows))
    build.finish()


def keep_signer(conn: sqlite3.Connection, make: Callable[[], str]) -> str:
    """The kept signing key, else ``make()``'s, kept (of racing processes, the first)."""
    row = conn.execute("SELECT signer_key FROM log_signer").fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO log_signer (singleton, signer_key) VALUES (1, ?) ON CONFLICT DO NOTHING",
            (make(),),
        )
        row = conn.execute("SELECT signer_key FROM log_signer").fetchone()
    kept: str = row[0]
    return kept
