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
one, whose inserts, head update and NOTIFY are a single statement.

"The log advanced": the append statement calls ``pg_notify`` (delivered
when it commits; the payload is the new head id).  A dedicated connection
listens; the same connection reads ``log_head`` every second, so a lost
NOTIFY or a reconnect delays an event by at most that long and loses
nothing.  The listener reconnects with backoff when its connection drops;
every other query goes through a pool (one for readers, one connection for
the group committer), which replaces a broken connection on its next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

from app.config import Retention
from app.events import Draft, Event, utc_timestamp
from app.store.base import (
    EVERYTHING,
    IDEMPOTENCY_WINDOW_S,
    Appended,
    Bounds,
    EventFilter,
    HeadWatch,
    IdempotencyConflict,
    Page,
    RedeemedTicket,
    StoreUnavailable,
)
from app.store.group import AppendRequest, GroupCommitter
from app.store.migrate import VERSION_TABLE, load_migrations, pending

log = logging.getLogger(__name__)

CHANNEL = "livefeed_log"
# pg_advisory_xact_lock key held while migrating: the bytes "livefeed".
MIGRATION_LOCK_KEY = int.from_bytes(b"livefeed", "big")
APPLICATION_NAME = "livefeed"
TRIM_CHUNK = 10_000
CONNECT_TIMEOUT_S = 5.0
QUERY_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 2.0
SAFETY_POLL_S = 1.0
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
CLOSE_TIMEOUT_S = 5.0
COLUMNS = "id, type, workflow_id, ts, data"

# utc_timestamp() computed by the database: one clock for every node.
TS_FORMAT = """'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"""
DB_NOW = f"to_char(clock_timestamp() AT TIME ZONE 'UTC', {TS_FORMAT})"
DB_AGO = f"to_char((clock_timestamp() - make_interval(secs => $1)) AT TIME ZONE 'UTC', {TS_FORMAT})"

# The head row lock serialises appenders on every node until commit; the
# database's clock, read here, is one clock for all of them.
LOCK_HEAD_SQL = f"SELECT last_id, last_ts, {DB_NOW} FROM log_head FOR UPDATE"

EARLIER_KEYS_SQL = (
    "SELECT key, fingerprint, receipt FROM idempotency_keys"
    " WHERE key = ANY($1::text[]) AND created_at >= $2"
)

# One statement writes the whole group: events ($1-$5), idempotency keys
# ($6-$9), the new head ($10), and the NOTIFY that is delivered on commit.
WRITE_SQL = f"""
WITH written AS (
    INSERT INTO events ({COLUMNS})
    SELECT batch.id, batch.type, batch.workflow_id, $5, batch.data
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
         AS batch (id, type, workflow_id, data)
), remembered AS (
    INSERT INTO idempotency_keys (key, fingerprint, receipt, created_at)
    SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::float8[])
    ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
        receipt = EXCLUDED.receipt, created_at = EXCLUDED.created_at
)
UPDATE log_head SET last_id = $10, last_ts = $5 RETURNING pg_notify('{CHANNEL}', last_id::text)
"""

# A group without idempotency keys is one statement in its own transaction: it
# waits for the head lock, writes the events, moves the head and queues the NOTIFY;
# the lock is held for that statement and its commit, not across round trips.
# ($1-$3 the events' columns, $4 how many.)  Reading last_id under FOR UPDATE
# in READ COMMITTED sees the head as the previous appender committed it.
APPEND_SQL = f"""
WITH head AS (
    SELECT last_id, greatest(last_ts, {DB_NOW}) AS ts FROM log_head FOR UPDATE
), written AS (
    INSERT INTO events ({COLUMNS})
    SELECT head.last_id + batch.n, batch.type, batch.workflow_id, head.ts, batch.data
    FROM head, unnest($1::text[], $2::text[], $3::text[])
         WITH ORDINALITY AS batch (type, workflow_id, data, n)
), moved AS (
    UPDATE log_head SET last_id = head.last_id + $4, last_ts = head.ts FROM head
    RETURNING pg_notify('{CHANNEL}', log_head.last_id::text)
)
SELECT head.last_id, head.ts, (SELECT count(*) FROM moved) AS moved FROM head
"""

PURGE_SQL = """
WITH keys AS (DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING 1),
     tickets AS (DELETE FROM stream_tickets WHERE expires_at < $2 RETURNING 1)
SELECT (SELECT count(*) FROM keys) + (SELECT count(*) FROM tickets)
"""

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
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                utc_timestamp(),
            )
    return [m.version for m in todo]


def _filters(filt: EventFilter, params: list[Any]) -> str:
    """`` AND ...`` clauses for ``filt``, appending their values to ``params``."""
    clauses = []

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if filt.workflow_id is not None:
        clauses.append(f"workflow_id = {arg(filt.workflow_id)}")
    if filt.types is not None:
        clauses.append(f"type = ANY({arg(sorted(filt.types))}::text[])")
    if filt.since is not None:
        clauses.append(f"ts >= {arg(filt.since)}")
    if filt.until is not None:
        clauses.append(f"ts < {arg(filt.until)}")
    return "".join(f" AND {clause}" for clause in clauses)


def _page_query(after: int, limit: int, filt: EventFilter, newest: bool) -> tuple[str, list[Any]]:
    """The head and up to ``limit`` matching rows in ``(after, head]``, in one statement.

    One statement is one snapshot: every id up to the head it sees has
    committed in that snapshot (ids commit in order), so the rows read are
    exactly the committed ones and ``head`` is a safe ``scanned_to``.  The
    LEFT JOIN yields one row with a NULL id when nothing matches.
    """
    params: list[Any] = [after, limit]
    where = _filters(filt, params)
    order = "DESC" if newest else ""
    sql = (
        f"SELECT h.last_id AS head, e.id, e.type, e.workflow_id, e.ts, e.data"
        f" FROM log_head AS h LEFT JOIN LATERAL ("
        f"SELECT {COLUMNS} FROM events WHERE id > $1 AND id <= h.last_id{where}"
        f" ORDER BY id {order} LIMIT $2) AS e ON true ORDER BY e.id"
    )
    return sql, params


def _page_rows(rows: list[asyncpg.Record]) -> tuple[int, list[Event]]:
    events = [Event.build(*row[1:]) for row in rows if row["id"] is not None]
    return rows[0]["head"], events


def _plan_group(
    requests: list[AppendRequest],
    last_id: int,
    ts: str,
    earlier: dict[str, tuple[str, str]],
    now: float,
) -> tuple[list[Appended | Exception], list[Event], list[tuple[str, str, str, float]]]:
    """Each request's outcome (written, replayed, or a conflicting key), the events
    to insert and the keys to remember.  ``earlier`` maps a key still within its
    window to ``(fingerprint, receipt)``; a key used twice in one group counts too."""
    known = dict(earlier)
    outcomes: list[Appended | Exception] = []
    written: list[Event] = []
    keys: list[tuple[str, str, str, float]] = []
    for request in requests:
        if request.key and request.key in known:
            fingerprint, receipt = known[request.key]
            if fingerprint != request.fingerprint:
                message = f"Idempotency-Key {request.key!r} was used with another body"
                outcomes.append(IdempotencyConflict(message))
            else:
                pairs = [(pair[0], pair[1]) for pair in orjson.loads(receipt)]
                outcomes.append(Appended([], pairs, replayed=True))
            continue
        events = [
            Event.build(last_id + n, d.type, d.workflow_id, ts, d.data)
            for n, d in enumerate(request.drafts, start=1)
        ]
        last_id += len(events)
        pairs = [(event.id, event.ts) for event in events]
        if request.key:
            encoded = orjson.dumps(pairs).decode()
            known[request.key] = (request.fingerprint or "", encoded)
            keys.append((request.key, request.fingerprint or "", encoded, now))
        outcomes.append(Appended(events, pairs))
        written.extend(events)
    return outcomes, written, keys


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
    ) -> None:
        self.url = url
        self.where = describe_url(url)
        self._pool_size = pool_size
        self._safety_poll_s = safety_poll_s
        self._connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._write_pool: asyncpg.Pool | None = None
        self._closing = False
        self._watch = HeadWatch()
        self._committer = GroupCommitter(self._commit_group, self._watch.committed)
        self._tasks: list[asyncio.Task[None]] = []

    # Life cycle

    async def open(self) -> None:
        """Migrate, learn the head, then start the group-commit and listener tasks."""
        with translated(self.where):
            conn = await self._connect()  # no query timeout: a migration may take long
            try:
                await apply_postgres_migrations(conn)
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
    async def _connection(self, *, write: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (which the pool replaces if it broke); every driver
        or network failure is StoreUnavailable."""
        pool = self._write_pool if write else self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        with translated(self.where):
            async with pool.acquire(timeout=self._connect_timeout_s) as conn:
                yield conn

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection() as conn:
            return await conn.fetch(sql, *args)

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

    async def _commit_group(self, requests: list[AppendRequest]) -> list[Appended | Exception]:
        """One transaction for the group, holding the head lock from first to last."""
        now = time.time()
        keys = [request.key for request in requests if request.key]
        if not keys:
            return await self._append_group(requests, now)
        async with self._connection(write=True) as conn, conn.transaction():
            last_id, last_ts, clock = await conn.fetchrow(LOCK_HEAD_SQL)
            earlier: dict[str, tuple[str, str]] = {}
            if keys:  # read after the lock: sees every key committed before us
                rows = await conn.fetch(EARLIER_KEYS_SQL, keys, now - IDEMPOTENCY_WINDOW_S)
                earlier = {row["key"]: (row["fingerprint"], row["receipt"]) for row in rows}
            ts = max(clock, last_ts)  # never earlier than the previous event
            outcomes, events, remembered = _plan_group(requests, last_id, ts, earlier, now)
            if events:
                key_columns = [list(column) for column in zip(*remembered, strict=True)]
                await conn.execute(
                    WRITE_SQL,
                    [e.id for e in events],
                    [e.type for e in events],
                    [e.workflow_id for e in events],
                    [e.data for e in events],
                    ts,
                    *(key_columns or [[], [], [], []]),  # key, fingerprint, receipt, created_at
                    events[-1].id,
                )
        return outcomes

    async def _append_group(
        self, requests: list[AppendRequest], now: float
    ) -> list[Appended | Exception]:
        """A group with no idempotency keys: one statement, one round trip."""
        drafts = [draft for request in requests for draft in request.drafts]
        async with self._connection(write=True) as conn:
            last_id, ts, _ = await conn.fetchrow(
                APPEND_SQL,
                [d.type for d in drafts],
                [d.workflow_id for d in drafts],
                [d.data for d in drafts],
                len(drafts),
            )
        outcomes, _, _ = _plan_group(requests, last_id, ts, {}, now)
        return outcomes

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

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.isascii() and payload.isdigit():
            self._watch.advance(int(payload))

    # Stream tickets and expiry

    async def issue_ticket(
        self,
        digest: str,
        channel: str,
        expires_at: float,
        credential_expires_at: float | None = None,
    ) -> None:
        await self._fetch(
            "INSERT INTO stream_tickets (digest, channel, expires_at, credential_expires_at)"
            " VALUES ($1, $2, $3, $4)",
            digest,
            channel,
            expires_at,
            credential_expires_at,
        )

    async def redeem_ticket(self, digest: str, channel: str, now: float) -> RedeemedTicket | None:
        # one DELETE: of two redemptions racing, on any nodes, only one gets the row
        rows = await self._fetch(
            "DELETE FROM stream_tickets WHERE digest = $1 AND channel = $2 AND expires_at >= $3"
            " RETURNING credential_expires_at",
            digest,
            channel,
            now,
        )
        return RedeemedTicket(rows[0][0]) if rows else None

    async def purge_expired(self, now: float) -> int:
        return (await self._fetch(PURGE_SQL, now - IDEMPOTENCY_WINDOW_S, now))[0][0]

    # Reads

    async def read(self, after: int, limit: int, filter: EventFilter = EVERYTHING) -> Page:
        sql, params = _page_query(after, limit, filter, newest=False)
        head, events = _page_rows(await self._fetch(sql, *params))
        if len(events) == limit:
            return Page(events, events[-1].id if events else after)
        return Page(events, max(head, after))

    async def read_tail(self, count: int, filter: EventFilter = EVERYTHING) -> Page:
        sql, params = _page_query(0, count, filter, newest=True)
        head, events = _page_rows(await self._fetch(sql, *params))
        return Page(events, head)

    async def get(self, event_id: int) -> Event | None:
        rows = await self._fetch(f"SELECT {COLUMNS} FROM events WHERE id = $1", event_id)
        return Event.build(*rows[0]) if rows else None

    async def bounds(self) -> Bounds:
        rows = await self._fetch("SELECT last_id, (SELECT min(id) FROM events) FROM log_head")
        head, oldest = rows[0]
        return Bounds(oldest_id=oldest if oldest is not None else head + 1, latest_id=head)

    async def count(self) -> int:
        return (await self._fetch("SELECT count(*) FROM events"))[0][0]

    async def trim(self, retention: Retention) -> int:
        """Delete up to a cutoff id, in chunks so that no transaction grows large."""
        cutoff_id = await self._trim_cutoff(retention)
        deleted = 0
        while True:
            rows = await self._fetch(
                "WITH gone AS (DELETE FROM events WHERE id IN"
                " (SELECT id FROM events WHERE id <= $1 ORDER BY id LIMIT $2) RETURNING 1)"
                " SELECT count(*) FROM gone",
                cutoff_id,
                TRIM_CHUNK,
            )
            deleted += rows[0][0]
            if rows[0][0] < TRIM_CHUNK:
                log.info("trimmed %d events", deleted)
                return deleted

    async def _trim_cutoff(self, retention: Retention) -> int:
        cutoff_id = 0
        if retention.max_events is not None:
            rows = await self._fetch(
                "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET $1", retention.max_events
            )
            cutoff_id = rows[0][0] if rows else 0
        if retention.max_age_s is not None:  # the database's clock, which also set ts
            rows = await self._fetch(
                f"SELECT max(id) FROM events WHERE ts < {DB_AGO}", float(retention.max_age_s)
            )
            cutoff_id = max(cutoff_id, rows[0][0] or 0)
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
