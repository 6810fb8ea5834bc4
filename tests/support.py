"""Everything the tests share: servers, clients, waiting, and the CI rule.

``ServerProcess`` runs ``python run.py serve`` as a subprocess (through
:mod:`harness`, which the benchmarks use too) on a port it binds itself, with
its own SQLite file, so tests exercise exactly what users run, including
restarts, SIGTERM and ``kill -9``.

A missing mechanism (PostgreSQL, Chromium, nginx, ...) skips a test on a
developer machine and fails it in CI (``CI=true``): CI can never pass without
having tested it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import orjson
import pytest

import harness
from harness import ROOT
from tests.sse_parser import SSEMessage, SSEParser

__all__ = ["ROOT"]

IN_CI = os.environ.get("CI") == "true"
SLOW = float(os.environ.get("LIVEFEED_E2E_SLOWDOWN", "1"))  # scales browser-test timeouts


def skip_or_fail(reason: str) -> NoReturn:
    """A missing mechanism skips on a developer machine and fails in CI."""
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def ms(seconds: float) -> float:
    """A Playwright timeout (milliseconds) for ``seconds``, scaled by SLOW."""
    return seconds * 1000 * SLOW


def eventually(check: Callable[[], bool], timeout_s: float = 10, what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail after ``timeout_s`` (scaled by SLOW)."""
    deadline = time.monotonic() + timeout_s * SLOW
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class ServerProcess(harness.ServerProcess):
    """One Livefeed server; stop/start keeps the port and the database."""

    def __init__(
        self, workdir: Path, env: dict[str, str] | None = None, database_url: str | None = None
    ) -> None:
        self.database_url = database_url or f"sqlite:///{workdir / 'livefeed.db'}"
        defaults = {"LIVEFEED_HEARTBEAT_S": "30", "LIVEFEED_DATABASE_URL": self.database_url}
        super().__init__(workdir, {**defaults, **(env or {})})

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


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The answer is a JSON ``{"error", "detail"}`` error with ``status`` (and ``code``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    if code is not None:
        assert body["error"] == code
    return body


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value in a /metrics page (0 if it is not there)."""
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + ("{" + selector + "}" if labels else "")) + r" ([0-9.e+]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def fresh_postgres_url() -> str:
    """A new, empty PostgreSQL database of its own (:func:`harness.fresh_database`);
    none reachable skips, or fails in CI."""
    try:
        return harness.fresh_database()
    except harness.PostgresUnavailable as exc:
        skip_or_fail(str(exc))


def listening_socket() -> socket.socket:
    """A loopback socket bound to a port the kernel chose, already listening: for a
    server in the test's own process (``fd://`` for Hypercorn) or a proxy."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it) and
    never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


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


async def read_sse(
    url: str,
    into: list[SSEMessage],
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    opened: asyncio.Event | None = None,
) -> None:
    """Every message, appended to ``into`` as it arrives, until the server ends the
    response; ``opened`` is set once the first one is in."""
    async for message in sse_messages(url, headers=headers, timeout=timeout):
        into.append(message)
        if opened is not None:
            opened.set()


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


async def ws_on_every_worker(
    url: str, workers: int, at_least: int, timeout_s: float = 30
) -> tuple[list[Any], set[str]]:
    """Open WebSockets to `url` until `at_least` are open and the hellos name
    `workers` distinct nodes (or `timeout_s` passed). Which worker accepts a
    connection on a shared listening socket is the kernel's choice: on a loaded
    machine one worker can take a run of them, and a worker still starting takes
    none, so a fixed number of sockets spreads only usually."""
    from websockets.asyncio.client import connect

    sockets: list[Any] = []
    nodes: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(sockets) >= at_least and len(nodes) >= workers:
            break
        if len(sockets) >= at_least:
            await asyncio.sleep(0.05)  # give a worker still starting time to listen
        ws = await connect(url)
        sockets.append(ws)
        nodes.add(orjson.loads(await ws.recv())["node"])
    return sockets, nodes


def every_worker_answers(url: str, workers: int, timeout_s: float = 30) -> set[str]:
    """The nodes that answer /api/stats on new connections, asked until `workers`
    answered or `timeout_s` passed (see :func:`ws_on_every_worker`)."""
    nodes: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(nodes) < workers and time.monotonic() < deadline:
        nodes.add(httpx.get(url + "/api/stats").json()["node"])
        if len(nodes) < workers:
            time.sleep(0.05)
    return nodes
