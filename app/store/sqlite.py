"""The embedded default: one SQLite file in WAL mode, durable on commit.

Why not one ``await`` per statement: each sqlite3 connection lives on its own
thread (sqlite3 objects must stay on the thread that made them), and every
operation is one function run there, so a whole group commit or a whole
replay page costs one thread hop instead of one per statement.

Group commit: publishes that arrive while a transaction is being written
wait and are then committed together, so N concurrent publishers cost one
fsync, not N.  The same transaction writes the Merkle tree's new nodes
(:mod:`app.store.sqlite_tree`), so events and tree never disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.config import Retention
from app.errors import StoreUnavailable
from app.events import EVERYTHING, Draft, Event, EventFilter, utc_timestamp
from app.store.base import (
    COLUMNS,
    IDEMPOTENCY_WINDOW_S,
    TRIM_CHUNK,
    Appended,
    Bounds,
    HeadWatch,
    Page,
    RedeemedTicket,
    count_cutoff,
)
from app.store.group import AppendRequest, EarlierKeys, GroupCommitter, plan_group
from app.store.migrate import apply_sqlite_migrations
from app.store.nudge import Doorbell, Nudges
from app.store.seek import Seek, Window, id_range
from app.store.signing import opened, resolve_signer
from app.store.sqlite_thread import SqliteThread, read_only
from app.store.sqlite_tree import build_tree, extend_tree, keep_signer, read_nodes
from app.store.tree import TreeEdge
from app.tlog import Node, SignerKey

log = logging.getLogger(__name__)


def sqlite_path(url: str) -> str:
    """``sqlite:///./data/x.db`` -> ``./data/x.db``; ``sqlite:////abs`` -> ``/abs``."""
    path = url.removeprefix("sqlite://")
    return path[1:] if path.startswith("/") else path


#: The index each kind of keyed page reads (by: workflow ids given, types given).
#: Named, because SQLite's planner, left alone, sometimes reads a workflow's whole
#: range through (workflow_id, id) and checks each row's type.
_INDEXES = {
    (True, False): "events_workflow_id_id",
    (False, True): "events_type_id",
    (True, True): "events_workflow_id_type_id",
}


def _head(conn: sqlite3.Connection) -> int:
    head: int = conn.execute("SELECT last_id FROM log_head").fetchone()[0]
    return head


def _moved(conn: sqlite3.Connection, version: int | None) -> tuple[int, int | None]:
    """``PRAGMA data_version`` (it moves when another connection commits) and, if it
    moved since ``version``, the head: one thread hop for both."""
    current: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return current, None if current == version else _head(conn)


def _glance_connection(path: str) -> sqlite3.Connection:
    """A connection the poll uses on the event loop itself: ``PRAGMA data_version``
    and the one-row head come from the shared WAL index and a page always in
    cache, cheaper than the thread hop (a futex wake-up and a GIL hand-over) that
    every other worker's commit cost. It never waits: busy is an error, and the
    poll asks its thread instead. Made with the store and read at once, so its
    files (the WAL and its index) are open from the start, not from the first
    poll on."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 0")
    _moved(conn, None)
    return conn


def _first_at(conn: sqlite3.Connection, moment: str | None, head: int) -> int | None:
    """The first id stamped at or after ``moment`` (``head + 1``: none yet), from
    the ts index alone: it is ordered by (ts, rowid)."""
    if moment is None:
        return None
    row = conn.execute(
        "SELECT id FROM events WHERE ts >= ? ORDER BY ts, id LIMIT 1", (moment,)
    ).fetchone()
    return head + 1 if row is None else int(row[0])


def _select(seek: Seek, window: Window, limit: int, newest: bool) -> tuple[str, list[Any]]:
    """The page's rows in ``window``: by id order, or the page's ids from the
    workflow/type index alone (at most ``limit`` per range) and then their rows."""
    order = "DESC" if newest else "ASC"
    clauses = ["id > ?", "id <= ?"]
    params: list[Any] = [window.start, window.stop]
    for column, values in (("workflow_id", seek.workflow_ids), ("type", seek.types)):
        if values is not None:
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
    where = " AND ".join(clauses)
    params.append(limit)
    if not seek.keyed or seek.windowed:  # the id order bounds it: limit rows, or the window
        return f"SELECT {COLUMNS} FROM events WHERE {where} ORDER BY id {order} LIMIT ?", params
    index = _INDEXES[seek.workflow_ids is not None, seek.types is not None]
    ids = f"SELECT id FROM events INDEXED BY {index} WHERE {where} ORDER BY id {order} LIMIT ?"
    return f"SELECT {COLUMNS} FROM events WHERE id IN ({ids}) ORDER BY id {order}", params


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: the head, the id bounds and the rows agree."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:  # a read: ending it either way changes nothing
            conn.execute("COMMIT")


def _page(
    conn: sqlite3.Connection, after: int, limit: int, filt: EventFilter, newest: bool
) -> tuple[list[Event], int, Window]:
    """A page's events (in the order read), the head, and the window it looked at."""
    seek = Seek.plan(filt, limit)
    with _snapshot(conn):
        head = _head(conn)  # rows up to the head are committed, so none can appear later
        lo, hi = id_range(
            after, head, _first_at(conn, filt.since, head), _first_at(conn, filt.until, head)
        )
        window = seek.window(lo, hi, newest)
        if seek.matches_nothing or window.start >= window.stop:
            return [], head, window
        rows = conn.execute(*_select(seek, window, limit, newest)).fetchall()
    return [Event.build(*row) for row in rows], head, window


def read_page(conn: sqlite3.Connection, after: int, limit: int, filt: EventFilter) -> Page:
    """:meth:`SqliteStore.read` on a connection (the store runs it on a reader thread)."""
    events, head, window = _page(conn, after, limit, filt, newest=False)
    return Page.read(events, limit, after, head, window.stop if window.short else None)


def read_tail_page(conn: sqlite3.Connection, count: int, filt: EventFilter) -> Page:
    """:meth:`SqliteStore.read_tail` on a connection."""
    events, head, _ = _page(conn, 0, count, filt, newest=True)
    return Page(events[::-1], head)


def _earlier_keys(conn: sqlite3.Connection, keys: list[str], now: float) -> EarlierKeys:
    marks = ",".join("?" * len(keys))
    rows = conn.execute(
        "SELECT key, fingerprint, receipt FROM idempotency_keys"
        f" WHERE key IN ({marks}) AND created_at >= ?",
        [*keys, now - IDEMPOTENCY_WINDOW_S],
    ).fetchall()
    return {key: (fingerprint, receipt) for key, fingerprint, receipt in rows}


#: Migration steps that SQL cannot do: 0005 hashes the existing events into the tree.
MIGRATION_STEPS = {5: build_tree}


def _commit(
    conn: sqlite3.Connection, requests: list[AppendRequest], edge: TreeEdge
) -> list[Appended | Exception]:
    """One transaction for the whole group, events and tree; ids and ts come from
    log_head."""
    frontier = None
    conn.execute("BEGIN IMMEDIATE")
    try:
        last_id, last_ts = conn.execute("SELECT last_id, last_ts FROM log_head").fetchone()
        ts = max(utc_timestamp(), last_ts)  # never earlier than the previous event
        now = time.time()
        keys = [request.key for request in requests if request.key]
        earlier = _earlier_keys(conn, keys, now) if keys else {}  # read under the lock
        plan = plan_group(requests, last_id, ts, earlier, now)
        if plan.events:
            conn.executemany(
                f"INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                [(e.id, e.type, e.workflow_id, e.ts, e.data) for e in plan.events],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO idempotency_keys"
                " (key, fingerprint, receipt, created_at) VALUES (?, ?, ?, ?)",
                plan.keys,
            )
            frontier = extend_tree(conn, edge, last_id, plan.events)
            conn.execute("UPDATE log_head SET last_id = ?, last_ts = ?", (plan.events[-1].id, ts))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if frontier is not None:
        edge.keep(frontier, ts)
    return plan.outcomes


def _probe_write_lock(conn: sqlite3.Connection, path: str) -> None:
    """Fails (after the busy timeout) while another process holds the write lock, and
    when the file became read-only (taking the lock writes nothing, so it would pass)."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("ROLLBACK")
    if read_only(path):
        raise sqlite3.OperationalError("attempt to write a readonly database")


def _purge(conn: sqlite3.Connection, now: float) -> int:
    keys = conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < ?", (now - IDEMPOTENCY_WINDOW_S,)
    ).rowcount
    return keys + conn.execute("DELETE FROM stream_tickets WHERE expires_at < ?", (now,)).rowcount


def _trim(conn: sqlite3.Connection, retention: Retention) -> int:
    cutoff_id = count_cutoff(_head(conn), retention)
    if retention.max_age_s is not None:
        cutoff_ts = utc_timestamp(datetime.now(UTC) - timedelta(seconds=retention.max_age_s))
        row = conn.execute("SELECT max(id) FROM events WHERE ts < ?", (cutoff_ts,)).fetchone()
        cutoff_id = max(cutoff_id, row[0] or 0)
    deleted = 0
    while True:  # in chunks, so publishers never wait long for the write lock
        cursor = conn.execute(
            "DELETE FROM events WHERE id IN"
            " (SELECT id FROM events WHERE id <= ? ORDER BY id LIMIT ?)",
            (cutoff_id, TRIM_CHUNK),
        )
        deleted += cursor.rowcount
        if cursor.rowcount < TRIM_CHUNK:
            return deleted


class SqliteStore:
    """:class:`~app.store.base.Store` on one SQLite file."""

    def __init__(
        self,
        url: str,
        *,
        poll_interval_s: float = 0.05,
        readers: int = 2,
        max_bytes: int | None = None,
        signing_key: str | None = None,
        log_origin: str | None = None,
        wake_dir: str | None = None,
    ) -> None:
        self.path = sqlite_path(url)
        self._signing = (signing_key, log_origin)
        self._signer: SignerKey | None = None
        self._edge = TreeEdge()  # used on the writer thread only
        self._poll_interval_s = poll_interval_s
        self._writer = SqliteThread(self.path, "livefeed-sqlite-writer", max_bytes)
        self._readers = [
            SqliteThread(self.path, f"livefeed-sqlite-reader{n}") for n in range(readers)
        ]
        # Point lookups (bounds for a handshake, one event, the head poll) never queue
        # behind pages: each page is bounded, but many readers' pages add up.
        self._lookup = SqliteThread(self.path, "livefeed-sqlite-lookup")
        self._watch = HeadWatch()
        self._committer = GroupCommitter(self._commit_group, self._committed)
        # Another worker's commit rings the doorbell, so the poll checks at once.
        self._doorbell = Doorbell()
        self._nudges = Nudges(wake_dir, self._doorbell.ring) if wake_dir else None
        self._tasks: list[asyncio.Task[None]] = []
        self._glance: sqlite3.Connection | None = None  # the poll's, on the loop thread

    async def open(self) -> None:
        if self.path not in ("", ":memory:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await self._writer.start()
        await self._writer.run(apply_sqlite_migrations, MIGRATION_STEPS)
        self._signer = await resolve_signer(
            *self._signing, lambda make: self._writer.run(keep_signer, make)
        )
        for reader in [*self._readers, self._lookup]:
            await reader.start()
        if self._nudges is not None:  # before the head is read: no append slips between
            self._nudges.open()
        self._watch.advance((await self.bounds()).latest_id)
        self._committer.start()
        self._glance = glance = _glance_connection(self.path)
        self._tasks = [asyncio.create_task(self._poll_loop(glance), name="livefeed-sqlite-poll")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._committer.stop()
        if self._nudges is not None:
            self._nudges.close()
        for thread in [self._writer, *self._readers, self._lookup]:
            await thread.close()
        if self._glance is not None:
            self._glance.close()

    def _reader(self) -> SqliteThread:
        """The page reader with the fewest calls waiting: a page waits for as few
        others as possible (each is bounded by its page, :mod:`app.store.seek`)."""
        return min(self._readers, key=lambda reader: reader.busy)

    async def append(self, drafts: Sequence[Draft]) -> list[Event]:
        return (await self._committer.submit(AppendRequest(drafts))).events

    async def append_once(self, key: str, fingerprint: str, drafts: Sequence[Draft]) -> Appended:
        return await self._committer.submit(AppendRequest(drafts, key, fingerprint))

    async def _commit_group(self, requests: list[AppendRequest]) -> list[Appended | Exception]:
        return await self._writer.run(_commit, requests, self._edge)

    def _committed(self, events: list[Event]) -> None:
        """Nudge the other workers first, so that their delivery starts as ours does."""
        if self._nudges is not None:
            self._nudges.send()
        self._watch.committed(events)

    async def issue_ticket(
        self,
        digest: str,
        channel: str,
        expires_at: float,
        credential_expires_at: float | None = None,
    ) -> None:
        await self._writer.run(
            lambda c: c.execute(
                "INSERT INTO stream_tickets (digest, channel, expires_at, credential_expires_at)"
                " VALUES (?, ?, ?, ?)",
                (digest, channel, expires_at, credential_expires_at),
            )
        )

    async def redeem_ticket(self, digest: str, channel: str, now: float) -> RedeemedTicket | None:
        # one DELETE: of two redemptions racing, on any machine, only one sees a row
        # (RETURNING needs SQLite 3.35; fetchall steps the statement to its end)
        rows = await self._writer.run(
            lambda c: c.execute(
                "DELETE FROM stream_tickets WHERE digest = ? AND channel = ? AND expires_at >= ?"
                " RETURNING credential_expires_at",
                (digest, channel, now),
            ).fetchall()
        )
        return RedeemedTicket(rows[0][0]) if rows else None

    async def purge_expired(self, now: float) -> int:
        return await self._writer.run(_purge, now)

    async def _poll_loop(self, glance: sqlite3.Connection) -> None:
        """Notice appends made by other processes (``PRAGMA data_version`` moves): every
        poll interval, and at once when another worker nudges (:mod:`app.store.nudge`)."""
        version = None
        while True:
            await self._doorbell.wait(self._poll_interval_s)
            try:
                version, head = _moved(glance, version)
            except sqlite3.Error:  # busy (say, a recovery), or gone: ask the thread
                try:
                    version, head = await self._lookup.run(_moved, version)
                except StoreUnavailable as exc:
                    log.warning("polling the log head failed: %s", exc)
                    continue
            if head is not None:
                self._watch.advance(head)

    async def read(self, after: int, limit: int, filter: EventFilter = EVERYTHING) -> Page:
        return await self._reader().run(read_page, after, limit, filter)

    async def read_tail(self, count: int, filter: EventFilter = EVERYTHING) -> Page:
        return await self._reader().run(read_tail_page, count, filter)

    async def get(self, event_id: int) -> Event | None:
        def fetch(conn: sqlite3.Connection) -> Event | None:
            row = conn.execute(f"SELECT {COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
            return Event.build(*row) if row else None

        return await self._lookup.run(fetch)

    async def bounds(self) -> Bounds:
        def fetch(conn: sqlite3.Connection) -> Bounds:
            head = _head(conn)
            oldest = conn.execute("SELECT min(id) FROM events").fetchone()[0]
            return Bounds(oldest_id=oldest if oldest is not None else head + 1, latest_id=head)

        return await self._lookup.run(fetch)

    async def read_nodes(self, nodes: Sequence[Node]) -> list[bytes]:
        return await self._reader().run(read_nodes, nodes)

    @property
    def signer(self) -> SignerKey:
        return opened(self._signer)

    async def count(self) -> int:
        return await self._reader().run(
            lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]
        )

    async def trim(self, retention: Retention) -> int:
        started = time.monotonic()
        deleted = await self._writer.run(_trim, retention)
        log.info("trimmed %d events in %.3f s", deleted, time.monotonic() - started)
        return deleted

    async def wait_for_head(self, beyond: int) -> int:
        return await self._watch.wait_beyond(beyond)

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        self._watch.on_commit(listener)

    async def ping(self) -> None:
        await self._lookup.run(lambda c: c.execute("SELECT 1 FROM log_head").fetchone())
        await self._writer.run(_probe_write_lock, self.path)
        failure = self._committer.recent_failure
        if failure is not None:
            raise StoreUnavailable(f"the last append failed: {failure}")
