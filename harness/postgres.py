"""A PostgreSQL database of the caller's own, dropped when the process exits.

One database per caller keeps runs (and parallel runs) from seeing each
other's events.  The server is found at ``LIVEFEED_TEST_POSTGRES_URL`` or on
127.0.0.1:5432 with trust auth (user ``postgres``, else ``root``).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import asyncpg

CANDIDATES = [
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/test",
]
START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


class PostgresUnavailable(Exception):
    """No PostgreSQL server answered; the message says which were tried and how to start one."""


async def _execute(statement: str, admins: list[str]) -> tuple[str | None, list[str]]:
    """Run ``statement`` on the first server that answers; returns its URL."""
    errors = []
    for admin in admins:
        try:
            conn = await asyncpg.connect(admin, timeout=3)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            errors.append(f"{urlsplit(admin).netloc}: {exc}")
            continue
        try:
            await conn.execute(statement)
        finally:
            await conn.close()
        return admin, errors
    return None, errors


def fresh_database() -> str:
    """The URL of a new, empty database; raises :class:`PostgresUnavailable`."""
    configured = os.environ.get("LIVEFEED_TEST_POSTGRES_URL")
    candidates = [configured] if configured else CANDIDATES
    name = f"livefeed_test_{secrets.token_hex(6)}"
    # A loop of its own in a thread of its own: the caller may be inside a running loop.
    with ThreadPoolExecutor(1) as pool:
        create = f"CREATE DATABASE {name} TEMPLATE template0"
        admin, errors = pool.submit(lambda: asyncio.run(_execute(create, candidates))).result()
    if admin is None:
        raise PostgresUnavailable(
            f"PostgreSQL is not reachable ({'; '.join(errors)}); start it with: {START_HINT}"
        )
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    atexit.register(lambda: asyncio.run(_execute(drop, [admin])))  # no loop runs at exit
    return urlsplit(admin)._replace(path=f"/{name}").geturl()
