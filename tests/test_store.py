"""The store contract on both engines: SQLite and the real PostgreSQL.

Every test that takes ``store`` or ``stores`` runs once per engine (the
``engine`` fixture of ``tests/conftest.py``).  A
second store on the same database stands in for another process or
machine.  PostgreSQL tests share one fresh database per session (emptied
before each test); tests that need an untouched database make their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from app.config import Retention, Settings
from app.errors import IdempotencyConflict, StoreUnavailable
from app.events import Draft, Event, EventFilter, utc_timestamp
from app.store import Store, open_store
from app.store.base import IDEMPOTENCY_WINDOW_S, Bounds, Page
from app.store.migrate import load_migrations
from app.store.postgres import PostgresStore, apply_postgres_migrations
from app.store.postgres_sql import page_query
from app.store.seek import SCAN_BUDGET
from app.store.sqlite import SqliteStore, read_page, read_tail_page
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
async def test_since_and_until_bound_the_ids_a_page_reads(store: Store) -> None:
    """since/until as id bounds: inclusive and exclusive, with a cursor, and with no
    event at the moment yet; a page past them is scanned to the head."""
    first = await store.append(drafts(3))
    await asyncio.sleep(0.002)
    second = await store.append(drafts(3))
    between = utc_timestamp(datetime.fromisoformat(first[0].ts) + timedelta(microseconds=1))
    assert first[0].ts < between < second[0].ts

    async def read(after: int, **bounds: str) -> tuple[list[int], int]:
        return await_ids(await store.read(after, 10, EventFilter(**bounds)))

    assert await read(0, since=between) == ([4, 5, 6], 6)
    assert await read(0, until=between) == ([1, 2, 3], 6)
    assert await read(2, since=first[0].ts, until=second[0].ts) == ([3], 6)
    assert await read(5, since=first[0].ts) == ([6], 6)
    assert await read(0, since=FUTURE) == ([], 6)
    assert await read(0, until=FUTURE) == ([1, 2, 3, 4, 5, 6], 6)
    assert await read(0, until=PAST) == ([], 6)
    assert await_ids(await store.read_tail(2, EventFilter(since=between))) == ([5, 6], 6)
    assert await_ids(await store.read_tail(2, EventFilter(until=between))) == ([2, 3], 6)


PAST, FUTURE = "0001-01-02T00:00:00.000000Z", "9999-01-01T00:00:00.000000Z"
FEW = [Draft(t, w, "{}") for t in ("a", "b", "c") for w in ("wf_1", "wf_2", "wf_3")]
#: Matches none of the shapes below, and makes each single index range grow: the
#: workflow wf_1's, wf_2's, and the types noise's and other's.
NOISE = [Draft("noise", "wf_1", "{}"), Draft("other", "wf_2", "{}")] * 2500
#: Many types: too many ranges for one page of 1000, so the page is windowed.
MANY_TYPES = frozenset({f"t{n}" for n in range(20)} | {"a"})
#: (name, limit, filter, newest): page shapes that once scanned the log, and others.
SHAPES: list[tuple[str, int, EventFilter, bool]] = [
    ("until in the past", 101, EventFilter(until=PAST), False),
    ("until in the past, four types", 101, EventFilter(until=PAST, types=frozenset("abcd")), False),
    ("since in the future", 101, EventFilter(since=FUTURE), False),
    ("until the noise", 1000, EventFilter(until="noise"), False),
    ("a workflow, a type it lacks", 1000, EventFilter(frozenset({"wf_1"}), frozenset("x")), False),
    ("another's type", 1000, EventFilter(frozenset({"wf_2"}), frozenset({"noise"})), False),
    ("workflows x types", 1000, EventFilter(frozenset({"wf_1", "wf_2"}), frozenset("ab")), False),
    ("four types", 101, EventFilter(types=frozenset({"a", "b", "c", "nope"})), False),
    ("two workflows", 1000, EventFilter(workflow_ids=frozenset({"wf_2", "wf_3"})), False),
    ("many types (windowed)", 1000, EventFilter(types=MANY_TYPES), False),
    ("tail of a workflow's type", 50, EventFilter(frozenset({"wf_1"}), frozenset("a")), True),
]


async def visits(store: Store, after: int, limit: int, filt: EventFilter, newest: bool) -> int:
    """The work one page costs in the database: SQLite virtual machine steps, or
    PostgreSQL rows that scan nodes produced or filtered out (EXPLAIN ANALYZE)."""
    if isinstance(store, SqliteStore):
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn = sqlite3.connect(store.path, isolation_level=None)
        conn.set_progress_handler(step, 1)
        try:
            if newest:
                read_tail_page(conn, limit, filt)
            else:
                read_page(conn, after, limit, filt)
        finally:
            conn.close()
        return steps
    assert isinstance(store, PostgresStore)
    sql, params = page_query(after, limit, filt, newest)
    conn = await asyncpg.connect(store.url)
    try:
        await conn.execute("ANALYZE events")  # statistics as autovacuum keeps them
        plan = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *params))
    finally:
        await conn.close()

    def rows(node: dict[str, Any]) -> float:
        here = 0.0
        if "Scan" in node["Node Type"]:
            seen = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            here = seen * node["Actual Loops"]
        return here + sum(rows(child) for child in node.get("Plans", []))

    return round(rows(plan[0]["Plan"]))


@pytest.mark.asyncio
async def test_a_page_costs_the_same_however_long_the_log(store: Store) -> None:
    """Each page shape visits about as much with 40,000 non-matching events in the log
    as without them: filters read index ranges, never the log around them."""
    for _ in range(30):
        await store.append(FEW)
    await asyncio.sleep(0.002)
    noise = await store.append(NOISE)
    shapes = [
        (name, limit, replace(f, until=noise[0].ts) if f.until == "noise" else f, newest)
        for name, limit, f, newest in SHAPES
    ]

    async def measure() -> dict[str, tuple[int, list[int]]]:
        found: dict[str, tuple[int, list[int]]] = {}
        for name, limit, f, newest in shapes:
            page = await (store.read_tail(limit, f) if newest else store.read(0, limit, f))
            found[name] = (await visits(store, 0, limit, f, newest), ids(page.events))
        return found

    small = await measure()
    for _ in range(7):
        await store.append(NOISE)
    large = await measure()

    for name, (cost, found) in small.items():
        assert large[name][1] == found, name  # the same events either way
        assert large[name][0] <= 2 * cost + 500, f"{name}: {cost} -> {large[name][0]}"


@pytest.mark.asyncio
async def test_a_page_with_too_many_ranges_stops_at_its_budget_and_says_so(store: Store) -> None:
    """A windowed page looks at SCAN_BUDGET ids: empty, more, scanned_to moved on; the
    next page goes on from there; with few ranges the same event is found at once."""
    await store.append([Draft("x", None, "{}")] * 5000)
    await store.append([Draft("x", None, "{}")] * 5000)
    (late,) = await store.append([Draft("a", None, "{}")])
    many = EventFilter(types=MANY_TYPES)

    assert await store.read(0, 1000, many) == Page([], SCAN_BUDGET, more=True)
    page = await store.read(SCAN_BUDGET, 1000, many)
    assert ids(page.events) == [late.id] and (page.scanned_to, page.more) == (late.id, False)
    assert ids((await store.read_tail(1000, many)).events) == [late.id]
    one = await store.read(0, 1000, EventFilter(types=frozenset({"a"})))
    assert ids(one.events) == [late.id] and not one.more


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


# SQLite only


@contextlib.asynccontextmanager
async def busy(readers: list[Any]) -> AsyncIterator[None]:
    """Hold each of these SQLite reader threads in a call until the block ends."""
    release = threading.Event()
    held = [asyncio.create_task(reader.run(lambda _conn: release.wait(10))) for reader in readers]
    await asyncio.sleep(0.05)  # the calls are running
    try:
        yield
    finally:
        release.set()
        await asyncio.gather(*held)


@pytest.mark.sqlite_only
@pytest.mark.asyncio
async def test_lookups_are_answered_while_every_page_reader_is_busy(store: Store) -> None:
    """A handshake's bounds, one event and readiness never queue behind pages."""
    assert isinstance(store, SqliteStore)
    await store.append(drafts(3))
    async with busy(store._readers), asyncio.timeout(2):
        assert await store.bounds() == Bounds(oldest_id=1, latest_id=3)
        assert await store.get(2) is not None
        await store.ping()


@pytest.mark.sqlite_only
@pytest.mark.asyncio
async def test_a_page_goes_to_the_reader_with_the_fewest_calls_waiting(store: Store) -> None:
    """With one reader held by a long call, every page is read by the other."""
    assert isinstance(store, SqliteStore)
    await store.append(drafts(3))
    async with busy(store._readers[:1]), asyncio.timeout(2):
        for _ in range(4):
            assert ids((await store.read(0, 10)).events) == [1, 2, 3]


@pytest.mark.sqlite_only
@pytest.mark.asyncio
async def test_sqlite_workers_nudge_and_dead_or_full_peers_never_hold_a_publish(
    tmp_path: Path,
) -> None:
    """Two stores sharing a wake directory (two workers): each append wakes the other
    at once though its poll is 60 s away. A dead worker's socket, one that never reads
    (its queue full after a few commits) and a stray file cost the publisher nothing."""
    wake = tmp_path / "wake"
    wake.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(str(wake / "1.dead.sock"))  # its file stays: sending to it is refused
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(str(wake / "2.deaf.sock"))
    (wake / "3.stray.sock").touch()
    url = f"sqlite:///{tmp_path}/livefeed.db"
    writer = SqliteStore(url, poll_interval_s=60, wake_dir=str(wake))
    reader = SqliteStore(url, poll_interval_s=60, wake_dir=str(wake))
    await writer.open()
    await reader.open()
    try:
        for _ in range(40):  # Linux queues 10 datagrams per socket by default
            [event] = await writer.append(drafts(1))
            async with asyncio.timeout(5):
                assert await reader.wait_for_head(event.id - 1) == event.id
    finally:
        await reader.close()
        await writer.close()
        deaf.close()
    assert sorted(os.listdir(wake)) == ["1.dead.sock", "2.deaf.sock", "3.stray.sock"]


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
