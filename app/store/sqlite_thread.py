"""One sqlite3 connection on a thread of its own, and what its errors mean.

sqlite3 objects must stay on the thread that made them, and every operation
is one function run there: a whole group commit or a whole page costs one
thread hop, not one per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from app.errors import StoreUnavailable

T = TypeVar("T")
BUSY_TIMEOUT_MS = 5000


class SqliteThread:
    """A sqlite3 connection confined to a thread of its own."""

    def __init__(self, path: str, name: str, max_bytes: int | None = None) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._path = path
        self._max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self.busy = 0  # calls queued or running here (that a caller still awaits)

    def _connect(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        if self._max_bytes is not None:  # a full "disk": appends fail, nothing half-written
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, self._max_bytes // page_size)}")
        self._conn = conn

    async def start(self) -> None:
        await self.run(lambda _conn: None)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            if self._conn is None:
                self._connect()
            return fn(self._conn, *args)

        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.Error as exc:
            raise StoreUnavailable(explain(exc, self._path)) from exc
        finally:
            self.busy -= 1

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()

        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)


def read_only(path: str) -> bool:
    """The database file or its WAL can no longer be written (made read-only or
    immutable, or its file system remounted read-only), even though it is open."""
    if path in ("", ":memory:"):
        return False
    return any(os.path.exists(f) and not os.access(f, os.W_OK) for f in (path, path + "-wal"))


def explain(exc: sqlite3.Error, path: str) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return "the database is locked by another process; try again shortly"
    if "full" in text:
        return "the disk holding the database is full"
    if "readonly" in text or ("disk I/O" in text and read_only(path)):
        return "the database file is read-only"
    return f"the database failed: {text}"
