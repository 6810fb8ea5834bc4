"""PostgreSQL, for several machines serving one log (asyncpg).

Ids in commit order: every group commit starts by locking the single
``log_head`` row (``SELECT ... FOR UPDATE``) and holds it until it commits,
so appenders on every node take turns and a transaction commits only after
the one holding the ids below its own.  Ids therefore become visible in id
order, and a reader that first reads ``log_head.last_id`` and then the rows
up to it never skips an id that commits late (a sequence would not promise
that).  The same lock makes idempotency keys exact: a key is looked up after
taking it, so two attempts with one key, on any nodes, write once.

Group commit (shared with SQLite, :mod:`app.store.group`): publishes that
arrive while a transaction is in flight are written together in the next
one, whose inserts, Merkle tree nodes, head update and NOTIFY are a single
statement unless the group has idempotency keys: proposed by this node when
it appended last (``APPEND_SQL``), else computed by the database
(``SERVER_APPEND_SQL``); :mod:`app.store.postgres_append` says how.

"The log advanced": the append statement calls ``pg_notify`` (delivered on
commit; the payload is the new head id).  A dedicated connection listens and
reads ``log_head`` every second, so a lost NOTIFY or a reconnect delays an
event by at most that long; it reconnects with backoff.  Every other query
goes through a pool (readers; one connection for the group committer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg

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
from app.store.group import AppendRequest, GroupCommitter
from app.store.migrate import VERSION_TABLE, load_migrations, pending
from app.store.postgres_append import Appender
from app.store.postgres_sql import (
    AGED_OUT_SQL,
    CHANNEL,
    ISSUE_TICKET_SQL,
    PURGE_SQL,
    REDEEM_TICKET_SQL,
    TRIM_SQL,
    page_query,
    page_rows,
)
from app.store.postgres_tree import build_tree, keep_signer, read_nodes
from app.store.signing import opened, resolve_signer
from app.tlog import Node, SignerKey

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    PooledConnection = PoolConnectionProxy[asyncpg.Record]

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key held while migrating: the bytes "livefeed".
MIGRATION_LOCK_KEY = int.from_bytes(b"livefeed", "big")
APPLICATION_NAME = "livefeed"
CONNECT_TIMEOUT_S = 5.0
QUERY_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 2.0
SAFETY_POLL_S = 1.0
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
CLOSE_TIMEOUT_S = 5.0

DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def describe_url(url: str) -> str:
    """``postgresql://u:secret@db:5432/feed?x=1`` -> ``db:5432/feed``: no credentials in logs."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] + parts.path


def _explain(exc: BaseException, where: str) -> str:
    """A sentence an operator can act on, naming the database but never its password."""
    if isinstance(exc, TimeoutError):
        return f"PostgreSQL at {where} did not answer in time"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"the database {where} does not exist; create it or fix LIVEFEED_DATABASE_URL"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"PostgreSQL at {where} refused the credentials in LIVEFEED_DATABASE_URL: {exc}"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return f"PostgreSQL at {where} has no free connections: {exc}"
    if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.AdminShutdownError):
        return f"PostgreSQL at {where} is starting up or shutting down"
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return f"PostgreSQL at {where} is read-only (a standby?); point the URL at the primary"
    if isinstance(exc, asyncpg.DiskFullError):
        return f"the disk holding the database {where} is full"
    if isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return f"cannot reach PostgreSQL at {where}: {exc or type(exc).__name__}"
    return f"PostgreSQL at {where} failed: {exc}"


@contextlib.contextmanager
def translated(where: str) -> Iterator[None]:
    """Turn driver and network errors into :class:`StoreUnavailable`."""
    try:
        yield
    except DB_ERRORS as exc:
        raise StoreUnavailable(_explain(exc, where)) from exc


#: Migration steps that SQL cannot do: 0005 hashes the existing events into the tree.
MIGRATION_STEPS: dict[int, Callable[[asyncpg.Connection], Awaitable[None]]] = {5: build_tree}


async def apply_postgres_migrations(conn: asyncpg.Connection) -> list[int]:
    """Apply what is pending; returns the versions applied.

    One transaction holding a transaction-level advisory lock: nodes that
    start together on an empty database queue up on the lock, and each then
    sees what the previous one recorded, so every migration runs once.  DDL
    is transactional in PostgreSQL, so a failed migration leaves nothing.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(VERSION_TABLE)
        applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_version")}
        todo = pending(load_migrations("postgresql"), applied)
        for migration in todo:
            await conn.execute(migration.sql)  # no arguments: a multi-statement script
            step = MIGRATION_STEPS.get(migration.version)
            if step is not None:
                await step(conn)
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                utc_timestamp(),
            )
    return [m.version for m in todo]


async def _end_transaction(conn: asyncpg.Connection) -> None:
    """The writer's release: roll back only if something was left open.  asyncpg's
    default reset (UNLISTEN, RESET ALL, ...) costs a round trip on every commit, and
    the writer keeps no session state to reset."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class PostgresStore:
    """:class:`~app.store.base.Store` on one PostgreSQL database, shared by many nodes."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        safety_poll_s: float = SAFETY_POLL_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        signing_key: str | None = None,
        log_origin: str | None = None,
    ) -> None:
        self.url = url
        self._signing = (signing_key, log_origin)
        self._signer: SignerKey | None = None
        self.where = describe_url(url)
        self._pool_size = pool_size
        self._safety_poll_s = safety_poll_s
        self._connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._write_pool: asyncpg.Pool | None = None
        self._closing = False
        self._watch = HeadWatch()
        self._appender = Appender(lambda: self._connection(write=True), lambda: self._watch.head)
        self._committer = GroupCommitter(self._appender.commit, self._watch.committed)
        self._tasks: list[asyncio.Task[None]] = []

    # Life cycle

    async def open(self) -> None:
        """Migrate, learn the head, then start the group-commit and listener tasks."""
        with translated(self.where):
            conn = await self._connect()  # no query timeout: a migration may take long
            try:
                await apply_postgres_migrations(conn)
                self._signer = await resolve_signer(
                    *self._signing, lambda make: keep_signer(conn, make)
                )
                head = await conn.fetchval("SELECT last_id FROM log_head")
            finally:
                await conn.close(timeout=CLOSE_TIMEOUT_S)
            try:
                # Readers and the group committer get separate pools, so that a storm
                # of catching-up subscribers never queues a publish behind its reads.
                self._pool = await self._create_pool(self._pool_size)
                self._write_pool = await self._create_pool(1, reset=_end_transaction)
            except BaseException:
                await self._close_pools()
                raise
        self._watch.advance(head)
        self._committer.start()
        self._tasks = [asyncio.create_task(self._follow_loop(), name="livefeed-pg-listener")]

    async def close(self) -> None:
        """Stop listening, fail what waits for a commit, close the pool; safe twice."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._committer.stop()
        await self._close_pools()

    async def _close_pools(self) -> None:
        pools = [self._pool, self._write_pool]
        self._pool = self._write_pool = None
        for pool in pools:
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
                except DB_ERRORS:
                    pool.terminate()

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.url,
            timeout=self._connect_timeout_s,
            server_settings={"application_name": APPLICATION_NAME},
        )

    async def _create_pool(
        self, size: int, reset: Callable[[asyncpg.Connection], Awaitable[None]] | None = None
    ) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=size,
            reset=reset,
            timeout=self._connect_timeout_s,
            command_timeout=QUERY_TIMEOUT_S,
            server_settings={"application_name": APPLICATION_NAME},
        )

    @contextlib.asynccontextmanager
    async def _connection(self, *, write: bool = False) -> AsyncIterator[PooledConnection]:
        """A pooled connection (which the pool replaces if it broke); every driver
        or network failure is StoreUnavailable."""
        pool = self._write_pool if write else self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        with translated(self.where):
            async with pool.acquire(timeout=self._connect_timeout_s) as conn:
                yield conn

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            return await conn.fetch(sql, *args)

    async def _number(self, sql: str, *args: Any) -> int:
        """The integer in the first column of the first row (0 for NULL)."""
        rows = await self._fetch(sql, *args)
        value = rows[0][0] if rows else None
        return int(value or 0)

    # Appends: group commit

    def _check_open(self) -> None:
        if self._closing:  # the committer is stopped: a request would wait forever
            raise StoreUnavailable("the server is shutting down")

    async def append(self, drafts: Sequence[Draft]) -> list[Event]:
        self._check_open()
        return (await self._committer.submit(AppendRequest(drafts))).events

    async def append_once(self, key: str, fingerprint: str, drafts: Sequence[Draft]) -> Appended:
        self._check_open()
        return await self._committer.submit(AppendRequest(drafts, key, fingerprint))

    # "The log advanced": LISTEN plus a safety poll, reconnecting with backoff

    async def _follow_loop(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            try:
                conn = await self._connect()
            except DB_ERRORS as exc:
                log.warning("cannot listen for appends (%s)", _explain(exc, self.where))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: nodes spread out
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_MIN_S
            try:
                await self._follow(conn)
            except DB_ERRORS as exc:
                log.warning("lost the listener connection (%s)", _explain(exc, self.where))
            finally:
                conn.terminate()  # close() could wait on a dead socket
            await asyncio.sleep(delay)

    async def _follow(self, conn: asyncpg.Connection) -> None:
        """Advance the head on NOTIFY, and read it after LISTEN and then every poll.

        Reading after LISTEN is active covers whatever committed while we
        were not listening; the periodic read covers a lost NOTIFY and also
        finds a dead connection that the OS has not reported.
        """
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._on_notify)
        while not lost.is_set():
            head = await conn.fetchval("SELECT last_id FROM log_head", timeout=PING_TIMEOUT_S)
            self._watch.advance(head)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._safety_poll_s)
        log.warning("the listener connection to PostgreSQL at %s closed", self.where)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload.isascii() and payload.isdigit():
            self._watch.advance(int(payload))

    # Stream tickets and expiry

    async def issue_ticket(
        self,
        digest: str,
        channel: str,
        expires_at: float,
        credential_expires_at: float | None = None,
    ) -> None:
        await self._fetch(ISSUE_TICKET_SQL, digest, channel, expires_at, credential_expires_at)

    async def redeem_ticket(self, digest: str, channel: str, now: float) -> RedeemedTicket | None:
        rows = await self._fetch(REDEEM_TICKET_SQL, digest, channel, now)
        return RedeemedTicket(rows[0][0]) if rows else None

    async def purge_expired(self, now: float) -> int:
        return await self._number(PURGE_SQL, now - IDEMPOTENCY_WINDOW_S, now)

    # Reads

    async def read(self, after: int, limit: int, filter: EventFilter = EVERYTHING) -> Page:
        sql, params = page_query(after, limit, filter, newest=False)
        head, stopped_at, events = page_rows(await self._fetch(sql, *params))
        return Page.read(events, limit, after, head, stopped_at)

    async def read_tail(self, count: int, filter: EventFilter = EVERYTHING) -> Page:
        sql, params = page_query(0, count, filter, newest=True)
        head, _, events = page_rows(await self._fetch(sql, *params))
        return Page(events, head)

    async def get(self, event_id: int) -> Event | None:
        rows = await self._fetch(f"SELECT {COLUMNS} FROM events WHERE id = $1", event_id)
        return Event.build(*rows[0]) if rows else None

    async def bounds(self) -> Bounds:
        rows = await self._fetch("SELECT last_id, (SELECT min(id) FROM events) FROM log_head")
        head, oldest = rows[0]
        return Bounds(oldest_id=oldest if oldest is not None else head + 1, latest_id=head)

    async def count(self) -> int:
        return await self._number("SELECT count(*) FROM events")

    async def read_nodes(self, nodes: Sequence[Node]) -> list[bytes]:
        async with self._connection() as conn:
            return await read_nodes(conn, nodes)

    @property
    def signer(self) -> SignerKey:
        return opened(self._signer)

    async def trim(self, retention: Retention) -> int:
        """Delete up to a cutoff id, in chunks so that no transaction grows large."""
        cutoff_id = await self._trim_cutoff(retention)
        deleted = 0
        while True:
            gone = await self._number(TRIM_SQL, cutoff_id, TRIM_CHUNK)
            deleted += gone
            if gone < TRIM_CHUNK:
                log.info("trimmed %d events", deleted)
                return deleted

    async def _trim_cutoff(self, retention: Retention) -> int:
        cutoff_id = count_cutoff((await self.bounds()).latest_id, retention)
        if retention.max_age_s is not None:  # the database's clock, which also set ts
            aged = await self._number(AGED_OUT_SQL, float(retention.max_age_s))
            cutoff_id = max(cutoff_id, aged)
        return cutoff_id

    async def wait_for_head(self, beyond: int) -> int:
        return await self._watch.wait_beyond(beyond)

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        self._watch.on_commit(listener)

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self._fetch("SELECT 1 FROM log_head")
        except TimeoutError as exc:
            raise StoreUnavailable(_explain(exc, self.where)) from exc
