"""Real servers and real clients for the tests.

``ServerProcess`` runs ``python run.py serve`` as a subprocess on a free
loopback port with its own SQLite file, so tests exercise exactly what users
run, including restarts, SIGTERM and ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.sse_parser import SSEMessage, SSEParser

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One Livefeed server; stop/start keeps the port and the database."""

    def __init__(
        self, workdir: Path, env: dict[str, str] | None = None, database_url: str | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.database_url = database_url or f"sqlite:///{workdir / 'livefeed.db'}"
        self.env = {
            "LIVEFEED_HEARTBEAT_S": "30",
            "LIVEFEED_DATABASE_URL": self.database_url,
            **(env or {}),
        }
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LIVEFEED_")}
        env = {**inherited, **self.env, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py"), "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so kill() also reaches workers under --workers
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        """SIGKILL the server and every process it started."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def publish(self, events: list[dict[str, Any]] | dict[str, Any], **kwargs: Any) -> list[int]:
        """POST events; returns their ids."""
        response = httpx.post(
            self.url + "/api/events",
            content=orjson.dumps(events),
            headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
            timeout=10,
            **kwargs,
        )
        if response.status_code != 201:
            raise AssertionError(f"publish failed: {response.status_code} {response.text}")
        answer = response.json()
        return [e["id"] for e in answer["events"]] if "events" in answer else [answer["id"]]

    def events(self, **params: Any) -> list[dict[str, Any]]:
        """Every event in the log (paging through /api/events)."""
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            page = httpx.get(
                self.url + "/api/events",
                params={"after": after, "limit": 1000, **params},
                timeout=10,
            ).json()
            found.extend(page["events"])
            after = page["next_after"]
            if not page["has_more"]:
                return found


async def sse_messages(
    url: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> AsyncIterator[SSEMessage]:
    """Stream an SSE endpoint through the spec-strict parser."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout)) as client:
        async with client.stream("GET", url, headers=headers or {}) as response:
            if response.status_code != 200:
                body = await response.aread()
                raise AssertionError(f"SSE answered {response.status_code}: {body!r}")
            parser = SSEParser()
            async for chunk in response.aiter_raw():
                for message in parser.feed(chunk):
                    yield message


async def collect_sse(
    url: str,
    stop: Callable[[list[SSEMessage]], bool],
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> list[SSEMessage]:
    """Messages until ``stop(messages)`` is true (fails after ``timeout``)."""
    messages: list[SSEMessage] = []
    async with asyncio.timeout(timeout):
        async for message in sse_messages(url, headers=headers, timeout=timeout):
            messages.append(message)
            if stop(messages):
                return messages
    return messages


def event_ids(messages: list[SSEMessage]) -> list[int]:
    return [int(m.id) for m in messages if m.event not in CONTROL_TYPES and m.id]


CONTROL_TYPES = {"connection_established", "heartbeat", "replay_truncated", "stream_error", "pong"}


def fresh_postgres_url() -> str:
    """A new, empty PostgreSQL database of its own; dropped when the process exits.

    One database per caller keeps test runs (and parallel runs) from seeing
    each other's events.  The server is found at ``LIVEFEED_TEST_POSTGRES_URL``
    or on 127.0.0.1:5432 with trust auth (user ``postgres``, else ``root``).
    No reachable server skips on a developer machine but fails in CI
    (``CI=true``), so CI can never pass without having tested PostgreSQL.
    """
    import atexit
    import secrets
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlsplit

    import asyncpg
    import pytest

    configured = os.environ.get("LIVEFEED_TEST_POSTGRES_URL")
    candidates = (
        [configured]
        if configured
        else [
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql://root@127.0.0.1:5432/test",
        ]
    )
    name = f"livefeed_test_{secrets.token_hex(6)}"

    async def execute(statement: str, admins: list[str]) -> tuple[str | None, list[str]]:
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

    # A loop of its own in a thread of its own: the caller may be inside a running loop.
    with ThreadPoolExecutor(1) as pool:
        create = f"CREATE DATABASE {name} TEMPLATE template0"
        admin, errors = pool.submit(lambda: asyncio.run(execute(create, candidates))).result()
    if admin is None:
        message = (
            f"PostgreSQL is not reachable ({'; '.join(errors)}); start it with: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    atexit.register(lambda: asyncio.run(execute(drop, [admin])))  # no loop runs at exit
    return urlsplit(admin)._replace(path=f"/{name}").geturl()
