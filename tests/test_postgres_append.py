"""The PostgreSQL append the database computes (migration 0006), held to Python's.

Two stores on one database are two nodes: when one finds that the other
appended last, it appends through ``livefeed_append``, which numbers, stamps
and hashes the group in SQL and hands back the frontier that its next
commit, proposed from Python, continues.  Hash agreement between the two is
the whole risk, so every log built here is checked against
``tests/rfc9162.py`` over the envelopes read back, and its stored node rows
against the rows Python's own path writes for the same events.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import asyncpg
import orjson
import pytest
import pytest_asyncio

from app.events import EVERYTHING, Draft, Event
from app.hub import Hub
from app.store import postgres_sql
from app.store.group import AppendRequest
from app.store.migrate import load_migrations
from app.store.postgres import PostgresStore
from app.store.postgres_append import Appender
from app.store.postgres_sql import (
    APPEND_SQL,
    CHANNEL,
    LOCK_HEAD_SQL,
    SERVER_APPEND_SQL,
    TS_FORMAT,
)
from app.store.tree import node_rows
from app.tlog import Frontier
from app.tlog.merkle import leaf_hashes
from tests.support import fresh_postgres_url
from tests.test_tlog_store import assert_tree_is_rfc9162, leaves

#: Every statement of the PostgreSQL store.
STATEMENTS = {sql for name, sql in vars(postgres_sql).items() if name.endswith("_SQL")}
TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
#: Group sizes around powers of two, and past one row of nodes (32: about 16 events).
SIZES = [1, 1, 2, 3, 1, 7, 8, 9, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 5, 1]
#: What data may hold that the SQL must carry byte for byte: UTF-8 of every width,
#: escapes compact JSON keeps (quote, backslash, control characters), U+2028.
TEXTS = [
    "plain",
    "héllo wörld",
    "中文 テキスト",
    "emoji 🎉🧪",
    'a " and a \\',
    "tab\tnl\n\x00",
    "\u2028",
]


def drafts(count: int, tag: str) -> list[Draft]:
    """Events of two types, a third without a workflow id, every kind of text in data."""
    return [
        Draft(
            "step.done" if n % 2 else "a.b-c_d",
            None if n % 3 == 0 else f"wf:{tag}.{n % 4}",
            orjson.dumps(
                {"tag": tag, "n": n, "text": TEXTS[n % len(TEXTS)], "x": [1.5, None]}
            ).decode(),
        )
        for n in range(count)
    ]


@pytest.fixture
def url() -> str:
    return fresh_postgres_url()


@pytest_asyncio.fixture
async def nodes(url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one new database: two nodes, as far as each knows."""
    async with AsyncExitStack() as stack:
        pair = []
        for _ in range(2):
            store = PostgresStore(url)
            await store.open()
            stack.push_async_callback(store.close)
            pair.append(store)
        yield pair[0], pair[1]


async def stored_rows(url: str) -> list[tuple[int, bytes]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT chunk, hashes FROM tree_nodes ORDER BY chunk")
    finally:
        await conn.close()
    return [(row["chunk"], row["hashes"]) for row in rows]


async def assert_log_is_pythons(store: PostgresStore, url: str, appended: list[Event]) -> None:
    """The events as appended (ids in order, no gap, ts never back), read back byte for
    byte; their tree as RFC 9162 says, and stored in exactly the rows Python writes."""
    entries = await leaves(store)  # asserts ids 1..head
    assert sorted(event.id for event in appended) == list(range(1, len(entries) + 1))
    assert [event.json for event in sorted(appended, key=lambda e: e.id)] == entries
    stamps = [orjson.loads(entry)["ts"] for entry in entries]
    assert stamps == sorted(stamps) and all(TS.fullmatch(ts) for ts in stamps)
    assert await stored_rows(url) == node_rows(0, Frontier().append(leaf_hashes(entries)))
    await assert_tree_is_rfc9162(store, entries)


def test_the_function_uses_the_stores_formats() -> None:
    """The migration spells the ts format and the NOTIFY channel as the Python does."""
    [migration] = [m for m in load_migrations("postgresql") if m.name == "server_append"]
    assert TS_FORMAT in migration.sql
    assert f"pg_notify('{CHANNEL}'," in migration.sql


@pytest.mark.asyncio
async def test_nodes_taking_turns_build_the_tree_python_builds(
    nodes: tuple[PostgresStore, PostgresStore], url: str
) -> None:
    """Three commits a node, the nodes alternating: the first two follow the other
    node's (the database computes them), the third is proposed from the frontier the
    database answered.  Sizes around powers of two and across rows of nodes."""
    appended: list[Event] = []
    for turn, size in enumerate(SIZES):
        node = nodes[turn // 3 % 2]
        appended += await node.append(drafts(size, f"t{turn}"))
    await assert_log_is_pythons(nodes[0], url, appended)


@pytest.mark.asyncio
async def test_nodes_appending_at_once_keep_one_log_that_each_sees(
    nodes: tuple[PostgresStore, PostgresStore], url: str
) -> None:
    """Publishers on both nodes at once, single events and batches up to 65: ids
    without gaps, one RFC 9162 tree, and one node's hub delivers the other's events."""
    rng = random.Random(9162)
    plans = [[rng.choice([1, 1, 1, 2, 5, 17, 33, 65]) for _ in range(8)] for _ in range(2 * 4)]
    total = sum(map(sum, plans))
    hub = Hub(nodes[1], queue_size=10 * total, heartbeat_s=3600)
    await hub.start()
    try:
        async with hub.subscribe(EVERYTHING, cursor=0) as sub:

            async def publish(number: int, sizes: list[int]) -> list[Event]:
                node = nodes[number % 2]
                written: list[Event] = []
                for turn, size in enumerate(sizes):
                    written += await node.append(drafts(size, f"p{number}.{turn}"))
                return written

            async def delivered() -> list[Event]:
                seen: list[Event] = []
                while len(seen) < total:
                    seen += [frame for frame in await anext(sub) if isinstance(frame, Event)]
                return seen

            async with asyncio.timeout(60):
                seen, *written = await asyncio.gather(
                    delivered(), *(publish(n, sizes) for n, sizes in enumerate(plans))
                )
    finally:
        await hub.stop()
    appended = [event for events in written for event in events]
    assert [event.id for event in seen] == list(range(1, total + 1))
    assert [event.json for event in seen] == [
        event.json for event in sorted(appended, key=lambda e: e.id)
    ]
    for node in nodes:
        async with asyncio.timeout(5):
            assert await node.wait_for_head(total - 1) == total
    await assert_log_is_pythons(nodes[0], url, appended)


@pytest.mark.asyncio
async def test_each_group_without_keys_is_one_statement_whoever_appended_last(
    nodes: tuple[PostgresStore, PostgresStore], url: str
) -> None:
    """The statements an appender sends: the database's append when it holds no
    frontier, has heard the head move or found another node writing at its last
    commit; a proposal otherwise (and, refused, then the database's); the head
    lock's transaction only for idempotency keys."""
    other = nodes[0]
    sent: list[str] = []
    known_head = 0

    async def log_queries(conn: asyncpg.Connection) -> None:
        """Record the store's statements (not the driver's own type lookups)."""
        conn.add_query_logger(lambda q: sent.append(q.query) if q.query in STATEMENTS else None)

    async def no_reset(conn: asyncpg.Connection) -> None:
        """As the store's writer pool: no reset statement after each commit."""

    appended: list[Event] = []

    async def commit(count: int, key: str | None = None) -> list[str]:
        sent.clear()
        request = AppendRequest(drafts(count, f"c{len(appended)}"), key, key and "fp")
        [outcome] = await appender.commit([request])
        assert not isinstance(outcome, Exception)
        appended.extend(outcome.events)
        return list(sent)

    async with asyncpg.create_pool(
        url, min_size=1, max_size=1, init=log_queries, reset=no_reset
    ) as pool:
        appender = Appender(pool.acquire, lambda: known_head)
        assert await commit(3) == [SERVER_APPEND_SQL]  # no frontier yet
        assert await commit(20) == [APPEND_SQL]  # it appended last
        appended += await other.append(drafts(5, "other1"))
        known_head = appended[-1].id  # the listener heard it
        assert await commit(1) == [SERVER_APPEND_SQL]
        # The other node wrote between its last two commits, so it may well again.
        assert await commit(4) == [SERVER_APPEND_SQL]
        assert await commit(40) == [APPEND_SQL]  # it wrote alone: proposing pays again
        appended += await other.append(drafts(2, "other2"))  # not heard of yet
        assert await commit(17) == [APPEND_SQL, SERVER_APPEND_SQL]
        assert await commit(1) == [SERVER_APPEND_SQL]
        assert await commit(1) == [APPEND_SQL]
        with_key = await commit(2, key="k1")
        assert LOCK_HEAD_SQL in with_key and APPEND_SQL not in with_key
        assert SERVER_APPEND_SQL not in with_key
    await assert_log_is_pythons(other, url, appended)
