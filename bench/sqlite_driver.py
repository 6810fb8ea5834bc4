"""aiosqlite against the SQLite store's own threads: publish and replay, in-process.

The store runs each sqlite3 connection on a thread of its own and sends a
whole group commit or a whole replay page there as one function call.
aiosqlite (which the design card names) also keeps one thread per
connection, but its API is one ``await`` per statement, so a group commit
costs five hops (BEGIN, read the head, insert, move the head, COMMIT) and a
replay page two (head, page).  This measures what that costs, with the same
SQL, the same group committer and the same durability (WAL,
``synchronous=FULL``), on disk and on tmpfs (where fsync is free and only the
driver's overhead remains):

    python3 bench/sqlite_driver.py              # ~1 min
    python3 bench/sqlite_driver.py --runs 3 --publishes 1000   # quicker

No HTTP is involved: the figures are the store's share of a publish or a
replay, not the service's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.events import Draft, Event, utc_timestamp
from app.store.base import Appended
from app.store.group import AppendRequest, GroupCommitter
from app.store.sqlite import SqliteStore

COLUMNS = "id, type, workflow_id, ts, data"
DRAFT = Draft("validation_created", "wf_bench", '{"file":"docs/a.md","validator":"links"}')


class Driver(Protocol):
    async def append(self, drafts: list[Draft]) -> list[Event]: ...
    async def read(self, after: int, limit: int) -> list[Event]: ...
    async def close(self) -> None: ...


class Threads:
    """The store as it is (its public API only)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    @classmethod
    async def open(cls, path: Path) -> Threads:
        store = SqliteStore(f"sqlite:///{path}")
        await store.open()
        return cls(store)

    async def append(self, drafts: list[Draft]) -> list[Event]:
        return await self._store.append(drafts)

    async def read(self, after: int, limit: int) -> list[Event]:
        return (await self._store.read(after, limit)).events

    async def close(self) -> None:
        await self._store.close()


class AioSqlite:
    """The same group commit and page read through aiosqlite, one await per statement."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer, self._reader = writer, reader
        self._committer = GroupCommitter(self._commit, lambda _events: None)
        self._committer.start()

    @staticmethod
    async def _connect(path: Path) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        for pragma in ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = FULL"):
            await conn.execute(f"PRAGMA {pragma}")
        return conn

    @classmethod
    async def open(cls, path: Path) -> AioSqlite:
        migrated = SqliteStore(f"sqlite:///{path}")  # the schema, as the store makes it
        await migrated.open()
        await migrated.close()
        return cls(await cls._connect(path), await cls._connect(path))

    async def _commit(self, requests: list[AppendRequest]) -> list[Appended | Exception]:
        conn = self._writer
        await conn.execute("BEGIN IMMEDIATE")
        try:
            async with conn.execute("SELECT last_id, last_ts FROM log_head") as cursor:
                row = await cursor.fetchone()
            assert row is not None
            last_id, last_ts = row
            ts = max(utc_timestamp(), last_ts)
            rows, outcomes = [], []
            for request in requests:
                events = []
                for draft in request.drafts:
                    last_id += 1
                    rows.append((last_id, draft.type, draft.workflow_id, ts, draft.data))
                    events.append(
                        Event.build(last_id, draft.type, draft.workflow_id, ts, draft.data)
                    )
                outcomes.append(Appended(events, [(e.id, e.ts) for e in events]))
            await conn.executemany(f"INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows)
            await conn.execute("UPDATE log_head SET last_id = ?, last_ts = ?", (last_id, ts))
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        return list(outcomes)

    async def append(self, drafts: list[Draft]) -> list[Event]:
        return (await self._committer.submit(AppendRequest(drafts))).events

    async def read(self, after: int, limit: int) -> list[Event]:
        [(head,)] = await self._reader.execute_fetchall("SELECT last_id FROM log_head")
        rows = await self._reader.execute_fetchall(
            f"SELECT {COLUMNS} FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (after, head, limit),
        )
        return [Event.build(*row) for row in rows]

    async def close(self) -> None:
        await self._committer.stop()
        await self._writer.close()
        await self._reader.close()


Opener = Callable[[Path], Awaitable[Any]]
DRIVERS: dict[str, Opener] = {"threads": Threads.open, "aiosqlite": AioSqlite.open}


async def publish_rate(driver: Driver, publishers: int, total: int) -> float:
    """Events/s with ``publishers`` concurrent single-event publishes (group commit)."""
    each = total // publishers

    async def publisher() -> None:
        for _ in range(each):
            await driver.append([DRAFT])

    started = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(publishers)))
    return each * publishers / (time.perf_counter() - started)


async def replay_rate(driver: Driver, page: int) -> float:
    """Events/s reading the whole log from the start in pages of ``page``."""
    after, read = 0, 0
    started = time.perf_counter()
    while events := await driver.read(after, page):
        after = events[-1].id
        read += len(events)
    return read / (time.perf_counter() - started)


async def measure(name: str, directory: Path, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        driver: Driver = await DRIVERS[name](Path(scratch) / "bench.db")
        try:
            figures = {
                f"publish c={c}": await publish_rate(driver, c, args.publishes)
                for c in args.publishers
            }
            while not await driver.read(args.log - 1, 1):  # fill the log up to args.log
                await driver.append([DRAFT] * 1000)
            for page in args.pages:
                figures[f"replay page={page}"] = await replay_rate(driver, page)
        finally:
            await driver.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="alternating runs per driver")
    parser.add_argument("--publishes", type=int, default=2000, help="events per publish run")
    parser.add_argument(
        "--publishers", type=int, nargs="+", default=[1, 16, 64], help="concurrencies"
    )
    parser.add_argument("--log", type=int, default=20_000, help="events in the replayed log")
    parser.add_argument("--pages", type=int, nargs="+", default=[100, 1000], help="page sizes")
    parser.add_argument(
        "--dirs", nargs="+", default=["/tmp", "/dev/shm"], help="where the database lives"
    )
    args = parser.parse_args()
    for directory in args.dirs:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in DRIVERS}
        for _ in range(args.runs):
            for name in DRIVERS:  # alternate, so drift hits both alike
                runs[name].append(asyncio.run(measure(name, Path(directory), args)))
        print(f"\n{directory} (median of {args.runs}, events/s)")
        print(f"{'':18} {'threads':>10} {'aiosqlite':>10} {'aiosqlite vs threads':>22}")
        for key in runs["threads"][0]:
            mine = statistics.median(r[key] for r in runs["threads"])
            theirs = statistics.median(r[key] for r in runs["aiosqlite"])
            print(f"{key:18} {mine:10,.0f} {theirs:10,.0f} {(theirs / mine - 1) * 100:+21.1f}%")


if __name__ == "__main__":
    main()
