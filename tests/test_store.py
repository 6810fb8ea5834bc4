"""The store contract on both engines: SQLite and the real PostgreSQL.

Every test that takes ``store`` or ``stores`` runs once per engine (the
``engine`` fixture of ``tests/conftest.py``).  A
second store on the same database stands in for another process or
machine.  PostgreSQL tests share one fresh database per session (emptied
before each test); tests that need an untouched database make their own.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from app.config import Retention, Settings
from app.errors import IdempotencyConflict, StoreUnavailable
from app.events import Draft, Event, EventFilter
from app.store import Store, open_store
from app.store.base import IDEMPOTENCY_WINDOW_S, Bounds, Page
from app.store.migrate import load_migrations
from app.store.postgres import PostgresStore, apply_postgres_migrations
from tests.support import fresh_postgres_url, refused_port

pytestmark = pytest.mark.both_engines

TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
OpenStore = Callable[[], Awaitable[Store]]


def drafts(
    count: int, *, type: str = "validation_created", workflow_id: str | None = None, tag: str = ""
) -> list[Draft]:
    return [Draft(type, workflow_id, f'{{"tag":"{tag}","n":{n}}}') for n in range(count)]


def ids(events: list[Event]) -> list[int]:
    return [event.id for event in events]


def same(event: Event) -> tuple[int, str, str | None, str, str, bytes, bytes]:
    """Everything a reader sees of an event (Event compares by identity)."""
    return (event.id, event.type, event.workflow_id, event.ts, event.data, event.json, event.sse)


async def read_all(store: Store, after: int = 0) -> list[Event]:
    found: list[Event] = []
    while True:
        page = await store.read(after, 100)
        found.extend(page.events)
        if page.scanned_to == after:
            return found
        after = page.scanned_to


async def empty_postgres(url: str) -> None:
    """Migrate if needed, then empty every table and reset the head (no store is open)."""
    conn = await asyncpg.connect(url)
    try:
        await apply_postgres_migrations(conn)
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename NOT IN ('schema_version', 'log_head')"
        )
        await conn.execute(f"TRUNCATE {', '.join(row[0] for row in tables)}")
        await conn.execute("UPDATE log_head SET last_id = 0, last_ts = ''")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """This session's own database (skips, or fails in CI, without a server)."""
    return fresh_postgres_url()


@pytest_asyncio.fixture
async def pg_url(postgres_url: str) -> str:
    await empty_postgres(postgres_url)
    return postgres_url


@pytest.fixture
def engine_url(engine: str, request: pytest.FixtureRequest, tmp_path: object) -> str:
    if engine == "sqlite":
        return f"sqlite:///{tmp_path}/livefeed.db"
    return request.getfixturevalue("postgres_url")


@pytest_asyncio.fixture
async def database_url(engine_url: str) -> str:
    if not engine_url.startswith("sqlite"):
        await empty_postgres(engine_url)
    return engine_url


@pytest_asyncio.fixture
async def stores(database_url: str) -> AsyncIterator[OpenStore]:
    """Open another store on the test's database (another process, as far as it knows)."""
    opened: list[Store] = []

    async def open_one() -> Store:
        store = open_store(Settings(database_url=database_url))
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()


@pytest_asyncio.fixture
async def store(stores: OpenStore) -> Store:
    return await stores()


# Both engines


@pytest.mark.asyncio
async def test_append_read_get_bounds_count(store: Store) -> None:
    assert await store.bounds() == Bounds(oldest_id=1, latest_id=0)
    assert await store.count() == 0
    assert await store.read(0, 10) == Page([], 0)

    data = '{"b":1,"a":["é","€","😀"],"z":null}'  # bytes kept exactly, key order too
    appended = await store.append(
        [Draft("validation_created", "wf_1", data), *drafts(2, type="workflow_started")]
    )

    assert ids(appended) == [1, 2, 3]
    assert TS.fullmatch(appended[0].ts) and len({e.ts for e in appended}) == 1
    assert appended[0].text == (
        f'{{"id":1,"type":"validation_created","workflow_id":"wf_1",'
        f'"ts":"{appended[0].ts}","data":{data}}}'
    )
    page = await store.read(0, 10)
    assert [same(e) for e in page.events] == [same(e) for e in appended]
    assert page.scanned_to == 3
    assert ids((await store.read(1, 1)).events) == [2]
    fetched = await store.get(1)
    assert fetched is not None and same(fetched) == same(appended[0])
    assert await store.get(4) is None
    assert await store.bounds() == Bounds(oldest_id=1, latest_id=3)
    assert await store.count() == 3
    await store.ping()


@pytest.mark.asyncio
async def test_read_tail(store: Store) -> None:
    assert await store.read_tail(5) == Page([], 0)
    for n in range(6):
        await store.append(drafts(1, workflow_id="wf_a" if n % 2 else "wf_b"))

    assert await_ids(await store.read_tail(2)) == ([5, 6], 6)
    only_b = EventFilter(workflow_ids=frozenset({"wf_b"}))
    assert await_ids(await store.read_tail(2, only_b)) == ([3, 5], 6)
    assert await_ids(await store.read_tail(100)) == ([1, 2, 3, 4, 5, 6], 6)


def await_ids(page: Page) -> tuple[list[int], int]:
    return ids(page.events), page.scanned_to


@pytest.mark.asyncio
async def test_group_commit_under_concurrent_appenders(store: Store) -> None:
    """8 publishers at once: every id once, in order, ts never going back."""
    appends_each = 25
    sizes = [[random.randint(1, 3) for _ in range(appends_each)] for _ in range(8)]

    async def publisher(number: int) -> list[list[Event]]:
        return [
            await store.append(drafts(size, tag=f"p{number}.{n}"))
            for n, size in enumerate(sizes[number])
        ]

    results = await asyncio.gather(*(publisher(n) for n in range(8)))

    total = sum(map(sum, sizes))
    everything = await read_all(store)
    assert ids(everything) == list(range(1, total + 1))
    assert [e.ts for e in everything] == sorted(e.ts for e in everything)
    by_id = {e.id: e for e in everything}
    for number, batches in enumerate(results):
        mine = [e.id for batch in batches for e in batch]
        assert mine == sorted(mine)  # each publisher's appends in its own order
        for n, batch in enumerate(batches):
            assert ids(batch) == list(range(batch[0].id, batch[0].id + len(batch)))
            assert all(f'"tag":"p{number}.{n}"' in e.data for e in batch)
            assert all(same(by_id[e.id]) == same(e) for e in batch)
    transactions = len({e.ts for e in everything})
    assert transactions < 8 * appends_each, "concurrent appends were never committed together"


@pytest.mark.asyncio
async def test_scanned_to_with_filters(store: Store) -> None:
    await store.append(drafts(3, type="workflow_started", workflow_id="wf_a"))
    await asyncio.sleep(0.002)  # a later transaction, so a later ts
    later = await store.append(drafts(3, type="workflow_completed", workflow_id="wf_b"))

    def wf(name: str) -> EventFilter:
        return EventFilter(workflow_ids=frozenset({name}))

    # Fewer matches than the limit: the scan covered everything up to the head.
    assert await_ids(await store.read(0, 10, wf("wf_a"))) == ([1, 2, 3], 6)
    # The limit was reached: only up to the last event returned.
    assert await_ids(await store.read(0, 2, wf("wf_b"))) == ([4, 5], 5)
    assert await_ids(await store.read(5, 2, wf("wf_b"))) == ([6], 6)
    assert await_ids(await store.read(0, 10, EventFilter(types=frozenset({"nope"})))) == ([], 6)
    types = EventFilter(types=frozenset({"workflow_completed", "nope"}))
    assert await_ids(await store.read(0, 10, types)) == ([4, 5, 6], 6)
    # A cursor beyond the head stays where it is.
    assert await_ids(await store.read(10, 5)) == ([], 10)
    since, until = EventFilter(since=later[0].ts), EventFilter(until=later[0].ts)
    assert await_ids(await store.read(0, 10, since)) == ([4, 5, 6], 6)
    assert await_ids(await store.read(0, 10, until)) == ([1, 2, 3], 6)
    assert await_ids(await store.read_tail(1, until)) == ([3], 6)


@pytest.mark.asyncio
async def test_trim_by_count(store: Store) -> None:
    await store.append(drafts(10))

    assert await store.trim(Retention(max_events=4)) == 6
    assert await store.bounds() == Bounds(oldest_id=7, latest_id=10)
    assert await store.count() == 4
    assert ids(await read_all(store)) == [7, 8, 9, 10]
    assert await store.trim(Retention(max_events=4)) == 0
    assert ids(await store.append(drafts(1))) == [11]


@pytest.mark.asyncio
async def test_trim_by_age(store: Store) -> None:
    await store.append(drafts(3))
    await asyncio.sleep(0.5)
    await store.append(drafts(2))

    assert await store.trim(Retention(max_age_s=0.25)) == 3
    assert await store.bounds() == Bounds(oldest_id=4, latest_id=5)
    assert ids(await read_all(store)) == [4, 5]


@pytest.mark.asyncio
async def test_wait_for_head_wakes_on_local_append(store: Store) -> None:
    waiter = asyncio.create_task(store.wait_for_head(0))
    await asyncio.sleep(0.05)
    assert not waiter.done()

    [event] = await store.append(drafts(1))

    async with asyncio.timeout(1):
        assert await waiter == event.id


@pytest.mark.asyncio
async def test_wait_for_head_sees_appends_of_another_store(stores: OpenStore) -> None:
    """Another process or machine appends: noticed promptly (NOTIFY, not the 1 s poll)."""
    reader, writer = await stores(), await stores()
    waiter = asyncio.create_task(reader.wait_for_head(0))
    await asyncio.sleep(0.05)
    assert not waiter.done()

    started = time.monotonic()
    [event] = await writer.append(drafts(1))

    async with asyncio.timeout(2):
        assert await waiter == event.id
    assert time.monotonic() - started < 0.5
    assert ids((await reader.read(0, 10)).events) == [event.id]


@pytest.mark.asyncio
async def test_ids_and_ts_continue_after_reopen_even_when_trimmed_empty(
    stores: OpenStore,
) -> None:
    first = await stores()
    appended = await first.append(drafts(3))
    assert await first.trim(Retention(max_events=0)) == 3
    assert await first.bounds() == Bounds(oldest_id=4, latest_id=3)
    await first.close()

    second = await stores()
    assert await second.bounds() == Bounds(oldest_id=4, latest_id=3)
    assert await second.read(0, 10) == Page([], 3)
    [event] = await second.append(drafts(1))
    assert event.id == 4 and event.ts >= appended[-1].ts


@pytest.mark.asyncio
async def test_idempotency_keys_replay_once_and_refuse_another_body(store: Store) -> None:
    first = await store.append_once("key-1", "body-a", drafts(2))
    assert not first.replayed and ids(first.events) == [1, 2]
    assert first.receipt == [(e.id, e.ts) for e in first.events]

    again = await store.append_once("key-1", "body-a", drafts(2))
    assert again.replayed and again.events == [] and again.receipt == first.receipt
    with pytest.raises(IdempotencyConflict):
        await store.append_once("key-1", "body-b", drafts(2))
    # Two attempts in one group commit: written once, both get the same receipt.
    one, two = await asyncio.gather(
        store.append_once("key-2", "body-a", drafts(1)),
        store.append_once("key-2", "body-a", drafts(1)),
    )
    assert one.receipt == two.receipt and [one.replayed, two.replayed].count(True) == 1
    assert await store.count() == 3


@pytest.mark.asyncio
async def test_idempotency_key_racing_on_two_nodes_writes_once(stores: OpenStore) -> None:
    node_a, node_b = await stores(), await stores()
    for attempt in range(5):
        key = f"race-{attempt}"
        one, two = await asyncio.gather(
            node_a.append_once(key, "body", drafts(2)), node_b.append_once(key, "body", drafts(2))
        )
        assert one.receipt == two.receipt and [one.replayed, two.replayed].count(True) == 1
    assert await node_a.count() == 10


@pytest.mark.asyncio
async def test_purge_forgets_old_keys_and_expired_tickets(store: Store) -> None:
    now = time.time()
    await store.append_once("old-key", "body", drafts(1))
    await store.issue_ticket("expired", "validation_updates", now - 1)
    await store.issue_ticket("valid", "validation_updates", now + 30)

    assert await store.purge_expired(now) == 1  # the expired ticket only
    assert await store.purge_expired(now + IDEMPOTENCY_WINDOW_S + 60) == 2
    again = await store.append_once("old-key", "body", drafts(1))
    assert not again.replayed and ids(again.events) == [2]


@pytest.mark.asyncio
async def test_stream_tickets_work_once_for_their_channel(stores: OpenStore) -> None:
    node_a, node_b = await stores(), await stores()
    now = time.time()
    await node_a.issue_ticket("t1", "validation_updates", now + 30)
    await node_a.issue_ticket("t2", "wf_1", now - 0.001)

    assert not await node_b.redeem_ticket("t1", "wf_1", now)  # another channel
    assert not await node_b.redeem_ticket("t2", "wf_1", now)  # expired
    assert not await node_b.redeem_ticket("nope", "validation_updates", now)
    results = await asyncio.gather(
        node_a.redeem_ticket("t1", "validation_updates", now),
        node_b.redeem_ticket("t1", "validation_updates", now),
    )
    assert sorted(result is not None for result in results) == [False, True]


# PostgreSQL only


@pytest.mark.asyncio
async def test_postgres_reader_never_skips_an_id_that_commits_late(pg_url: str) -> None:
    """8 connections append at once while a reader tails: every id, in order, none skipped."""
    writers = [PostgresStore(pg_url, pool_size=1) for _ in range(8)]
    reader = PostgresStore(pg_url)
    await asyncio.gather(*(s.open() for s in [*writers, reader]))
    sizes = [[random.randint(1, 4) for _ in range(30)] for _ in writers]
    total = sum(map(sum, sizes))

    async def write(store: PostgresStore, mine: list[int]) -> None:
        for size in mine:
            await store.append(drafts(size))

    async def tail() -> list[Event]:
        seen: list[Event] = []
        after = 0
        while after < total:
            page = await reader.read(after, 50)
            seen.extend(page.events)
            after = page.scanned_to
        return seen

    try:
        async with asyncio.timeout(30):
            seen, *_ = await asyncio.gather(
                tail(), *(write(s, mine) for s, mine in zip(writers, sizes, strict=True))
            )
    finally:
        await asyncio.gather(*(s.close() for s in [*writers, reader]))
    assert ids(seen) == list(range(1, total + 1))
    assert [e.ts for e in seen] == sorted(e.ts for e in seen)


@pytest.mark.asyncio
async def test_postgres_nodes_starting_together_migrate_once() -> None:
    url = fresh_postgres_url()  # untouched: no tables at all
    nodes = [PostgresStore(url) for _ in range(4)]
    try:
        await asyncio.gather(*(node.open() for node in nodes))
        appended = await asyncio.gather(*(node.append(drafts(1)) for node in nodes))
    finally:
        await asyncio.gather(*(node.close() for node in nodes))

    assert sorted(e.id for events in appended for e in events) == [1, 2, 3, 4]
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_version ORDER BY version")
        known = load_migrations("postgresql")
        assert [tuple(row) for row in rows] == [(m.version, m.name) for m in known]
        assert await apply_postgres_migrations(conn) == []
    finally:
        await conn.close()


class TcpRelay:
    """A loopback relay in front of PostgreSQL that a test can cut and restore."""

    def __init__(self, target: str) -> None:
        self._parts = urlsplit(target)
        self.target = (self._parts.hostname or "127.0.0.1", self._parts.port or 5432)
        self.port = 0  # the kernel chooses at the first start; restarts keep it
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return self._parts._replace(netloc=f"{self._parts.username}@127.0.0.1:{self.port}").geturl()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop every open one, as a dead network would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0.05)  # let both sides notice

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        await asyncio.gather(
            self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


@pytest.mark.asyncio
async def test_postgres_outage_is_unavailable_then_recovers(pg_url: str) -> None:
    """The network to the database dies and comes back: errors meanwhile, then nothing lost."""
    relay = TcpRelay(pg_url)
    await relay.start()
    node_a = PostgresStore(relay.url, connect_timeout_s=1.0)
    node_b = PostgresStore(pg_url)
    await node_a.open()
    await node_b.open()
    try:
        [first] = await node_a.append(drafts(1))
        await relay.cut()

        with pytest.raises(StoreUnavailable, match=r"PostgreSQL at 127\.0\.0\.1"):
            await node_a.ping()
        with pytest.raises(StoreUnavailable):
            await node_a.append(drafts(1))
        with pytest.raises(StoreUnavailable):
            await node_a.read(0, 10)
        [missed] = await node_b.append(drafts(1))  # the database itself is fine

        await relay.start()
        async with asyncio.timeout(5):  # the listener reconnects and reads the head
            assert await node_a.wait_for_head(first.id) == missed.id
        await node_a.ping()
        assert ids((await node_a.read(0, 10)).events) == [first.id, missed.id]

        waiter = asyncio.create_task(node_a.wait_for_head(missed.id))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        [later] = await node_b.append(drafts(1))
        async with asyncio.timeout(2):
            assert await waiter == later.id
        assert time.monotonic() - started < 0.5  # listening again, not just polling
    finally:
        await node_a.close()
        await node_b.close()
        await relay.cut()


@pytest.mark.asyncio
async def test_postgres_unreachable_or_missing_database_is_unavailable(pg_url: str) -> None:
    with refused_port() as port:
        refused = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/livefeed")
        with pytest.raises(StoreUnavailable, match=r"cannot reach PostgreSQL at 127\.0\.0\.1"):
            await refused.open()

    missing = urlsplit(pg_url)._replace(path="/livefeed_no_such_database").geturl()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await PostgresStore(missing).open()

    accepted: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answers; closed by the test, before its loop ends
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        mute = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/x", connect_timeout_s=0.3)
        with pytest.raises(StoreUnavailable, match="did not answer in time"):
            await mute.open()
    finally:
        for writer in accepted:
            writer.transport.abort()
        server.close()
