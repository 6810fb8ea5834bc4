"""The Merkle tree kept by the store, on both engines, checked against RFC 9162.

Every root and proof the stored tree gives is compared with
``tests/rfc9162.py`` (the RFC's own recursive definitions, over the events'
envelopes as read back from the log); a second store on the same database
stands in for another process or machine.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from app.config import ConfigError, Retention, Settings
from app.errors import StoreUnavailable
from app.events import Draft, Event
from app.store import Store, open_store
from app.store.migrate import MigrationError, load_migrations, split_statements
from app.tlog import MissingNodesError, SignerKey, consistency_proof, inclusion_proof, root_hash
from tests import rfc9162
from tests.support import fresh_postgres_url

pytestmark = pytest.mark.both_engines

OpenStore = Callable[..., Awaitable[Store]]
KEY = SignerKey.generate("audit.example/log")


def drafts(count: int, tag: str) -> list[Draft]:
    return [Draft("step.done", f"wf_{n % 3}", f'{{"tag":"{tag}","n":{n}}}') for n in range(count)]


@pytest.fixture
def database_url(engine: str, tmp_path: Path) -> str:
    """A new, empty database for this test."""
    return f"sqlite:///{tmp_path}/log.db" if engine == "sqlite" else fresh_postgres_url()


@pytest_asyncio.fixture
async def stores(database_url: str) -> AsyncIterator[OpenStore]:
    """Open a store on the test's database (each one another process, as far as it knows)."""
    opened: list[Store] = []

    async def open_one(**settings: str) -> Store:
        store = open_store(Settings(database_url=database_url, **settings))  # type: ignore[arg-type]
        try:
            await store.open()
        except BaseException:
            await store.close()
            raise
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()


async def leaves(store: Store) -> list[bytes]:
    """Every event's envelope, ids 1..head, read back from the log."""
    found: list[Event] = []
    after = 0
    while page := (await store.read(after, 1000)).events:
        found += page
        after = page[-1].id
    assert [event.id for event in found] == list(range(1, len(found) + 1))
    return [event.json for event in found]


async def assert_tree_is_rfc9162(store: Store, entries: list[bytes]) -> None:
    """Every root, a sample of inclusion proofs and consistency proofs, as the RFC says."""
    read = store.read_nodes
    size = len(entries)
    for n in range(size + 1):
        assert await root_hash(n, read) == rfc9162.mth(entries[:n]), n
    for n in sorted({1, 2, 3, size // 2 or 1, size - 1 or 1, size}):
        root = rfc9162.mth(entries[:n])
        for index in range(n):
            proof = await inclusion_proof(index, n, read)
            assert proof == rfc9162.path(index, entries[:n])
            leaf = rfc9162.sha256(b"\x00" + entries[index])
            assert rfc9162.verify_inclusion(index, n, leaf, proof, root)
        for first in range(1, n):
            proof = await consistency_proof(first, n, read)
            assert proof == rfc9162.proof(first, entries[:n])
            old = rfc9162.mth(entries[:first])
            assert rfc9162.verify_consistency(first, n, old, root, proof)


@pytest.mark.asyncio
async def test_group_commits_of_every_size_build_the_rfc9162_tree(stores: OpenStore) -> None:
    """Concurrent publishes of 1..40 events, with and without keys, grow one RFC 9162 tree."""
    store = await stores()
    rng = random.Random(9162)

    async def publisher(number: int) -> None:
        for turn in range(6):
            batch = drafts(rng.randint(1, 40), f"{number}.{turn}")
            if turn % 3 == 2:  # the idempotent path takes the head lock first
                await store.append_once(f"key-{number}-{turn}", "fp", batch)
            else:
                await store.append(batch)

    await asyncio.gather(*(publisher(n) for n in range(8)))
    await assert_tree_is_rfc9162(store, await leaves(store))


@pytest.mark.asyncio
async def test_two_stores_appending_in_turn_keep_one_tree(stores: OpenStore) -> None:
    """Another process appending between a store's commits leaves the tree whole."""
    first, second = await stores(), await stores()
    for turn in range(12):
        await (first if turn % 3 else second).append(drafts(turn % 5 + 1, str(turn)))
    await asyncio.gather(*(s.append(drafts(7, f"race{n}")) for n, s in enumerate([first, second])))
    assert await first.read_nodes([]) == []
    await assert_tree_is_rfc9162(second, await leaves(first))


@pytest.mark.asyncio
async def test_trimming_keeps_every_proof(stores: OpenStore) -> None:
    """Retention removes event bodies, never the tree: old ids keep their proofs."""
    store = await stores()
    for n in range(5):
        await store.append(drafts(9, str(n)))
    entries = await leaves(store)
    assert await store.trim(Retention(max_events=4)) == len(entries) - 4
    assert (await store.bounds()).oldest_id == len(entries) - 3
    await assert_tree_is_rfc9162(store, entries)


@pytest.mark.asyncio
async def test_a_generated_key_is_kept_for_every_process_and_restart(
    stores: OpenStore, database_url: str
) -> None:
    """The first store generates the key; the others and a reopened one sign with it."""
    first = await stores()
    second = await stores()
    assert first.signer.encode() == second.signer.encode()
    assert first.signer.name.startswith("livefeed/")
    await first.close()
    again = open_store(Settings(database_url=database_url))
    await again.open()
    try:
        assert again.signer.encode() == second.signer.encode()
    finally:
        await again.close()


@pytest.mark.asyncio
async def test_the_configured_key_and_origin_are_used(stores: OpenStore) -> None:
    """LIVEFEED_SIGNING_KEY wins over the kept key; LIVEFEED_LOG_ORIGIN names a new one."""
    named = await stores(log_origin="audit.example/feed")
    assert named.signer.name == "audit.example/feed"
    configured = await stores(signing_key=KEY.encode())
    assert configured.signer.encode() == KEY.encode()
    kept = await stores()
    assert kept.signer.encode() == named.signer.encode()


@pytest.mark.asyncio
async def test_an_origin_that_contradicts_the_key_stops_the_start(stores: OpenStore) -> None:
    """An origin other than the key's name, or a malformed key, is a configuration error."""
    await stores(log_origin="first/name")
    with pytest.raises(ConfigError, match="LIVEFEED_LOG_ORIGIN='other/name' differs"):
        await stores(log_origin="other/name")
    with pytest.raises(ConfigError, match="differs from the name in LIVEFEED_SIGNING_KEY"):
        await stores(signing_key=KEY.encode(), log_origin="first/name")
    with pytest.raises(ConfigError, match="LIVEFEED_SIGNING_KEY is not a C2SP signer key"):
        await stores(signing_key="PRIVATE+KEY+x+00000000+AAAA")


@pytest.mark.asyncio
async def test_an_origin_that_cannot_name_a_key_stops_the_start(stores: OpenStore) -> None:
    """A new key's name holds no space or '+': such an origin is a configuration error."""
    with pytest.raises(ConfigError, match="LIVEFEED_LOG_ORIGIN cannot name a signing key"):
        await stores(log_origin="has space")


# A log written before the tree existed


EVENTS_BEFORE = [
    (
        n,
        "old.event",
        None if n % 2 else "wf_old",
        f"2026-11-01T00:00:{n:02}.000000Z",
        f'{{"n":{n}}}',
    )
    for n in range(1, 38)
]


async def write_old_log(url: str, keep_from: int) -> None:
    """A database at the schema before 0005, holding EVENTS_BEFORE from ``keep_from``."""
    rows = EVENTS_BEFORE[keep_from - 1 :]
    head = (len(EVENTS_BEFORE), EVENTS_BEFORE[-1][3])
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name, applied_at)")
        for migration in load_migrations("sqlite"):
            if migration.version < 5:
                for statement in split_statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?, '')", (migration.version, "x")
                )
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
        conn.execute("UPDATE log_head SET last_id = ?, last_ts = ?", head)
        conn.close()
        return
    pg = await asyncpg.connect(url)
    try:
        await pg.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
        )
        for migration in load_migrations("postgresql"):
            if migration.version < 5:
                await pg.execute(migration.sql)
                await pg.execute(
                    "INSERT INTO schema_version VALUES ($1, 'x', '')", migration.version
                )
        await pg.executemany("INSERT INTO events VALUES ($1, $2, $3, $4, $5)", rows)
        await pg.execute("UPDATE log_head SET last_id = $1, last_ts = $2", *head)
    finally:
        await pg.close()


@pytest.mark.asyncio
async def test_migration_builds_the_tree_of_an_existing_log(
    stores: OpenStore, database_url: str
) -> None:
    """Upgrading an untrimmed log hashes its events into the tree; appends then continue it."""
    await write_old_log(database_url, keep_from=1)
    store = await stores()
    await store.append(drafts(5, "after"))
    entries = await leaves(store)
    assert entries[0] == Event.build(*EVENTS_BEFORE[0]).json
    await assert_tree_is_rfc9162(store, entries)


@pytest.mark.asyncio
async def test_migration_refuses_a_log_trimmed_before_the_tree(
    stores: OpenStore, database_url: str
) -> None:
    """A log that lost events 1..k before the tree existed is refused, saying so, untouched."""
    await write_old_log(database_url, keep_from=11)
    for _ in range(2):  # refused each time: the failed migration left nothing behind
        with pytest.raises(MigrationError, match=r"trimmed before .* events 1\.\.10 are gone"):
            await stores()


# Events appended around the tree: a process of a version before it, still running


async def append_without_tree(url: str, ids: list[int]) -> None:
    """Append events ``ids`` and move the head to the last, as a process that does not
    keep the tree would: no node written."""
    rows = [(n, "old.writer", None, f"2026-12-01T00:00:{n % 60:02}.000000Z", "{}") for n in ids]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
        conn.execute("UPDATE log_head SET last_id = ?", (ids[-1],))
        conn.execute("COMMIT")
        conn.close()
        return
    pg = await asyncpg.connect(url)
    try:
        async with pg.transaction():
            await pg.executemany("INSERT INTO events VALUES ($1, $2, $3, $4, $5)", rows)
            await pg.execute("UPDATE log_head SET last_id = $1", ids[-1])
    finally:
        await pg.close()


@pytest.mark.asyncio
async def test_events_appended_around_the_tree_join_it_at_the_next_append(
    stores: OpenStore, database_url: str
) -> None:
    """Ids 34..40 written with no tree nodes (across a 32-node row's end) are hashed in,
    in order, by the next append, under its lock: every root and proof is then the RFC's."""
    store = await stores()
    await store.append(drafts(33, "before"))
    await append_without_tree(database_url, list(range(34, 41)))
    appended = await store.append(drafts(3, "after"))
    assert [event.id for event in appended] == [41, 42, 43]
    await assert_tree_is_rfc9162(store, await leaves(store))


@pytest.mark.asyncio
async def test_a_gap_around_the_tree_is_refused_and_nothing_is_written(
    stores: OpenStore, database_url: str
) -> None:
    """If an event written around the tree is gone too, the tree cannot take the rest:
    the append is refused, naming the missing id, and writes nothing."""
    store = await stores()
    await store.append(drafts(5, "before"))
    await append_without_tree(database_url, [6, 8])  # 7 trimmed, or never written
    with pytest.raises(StoreUnavailable, match=r"stops at event 5 .* head is 8.* event 7 is"):
        await store.append(drafts(1, "refused"))
    assert (await store.bounds()).latest_id == 8
    kept = [event.json for event in (await store.read(0, 5)).events]
    assert await root_hash(5, store.read_nodes) == rfc9162.mth(kept)
    with pytest.raises(MissingNodesError):  # no node of event 6 or later was written
        await root_hash(6, store.read_nodes)
