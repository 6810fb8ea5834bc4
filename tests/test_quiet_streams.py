"""Quiet streams outlive every server timeout (FAULTS 46).

Quart cuts a response after ``RESPONSE_TIMEOUT`` (60 s) unless it opts out,
and Hypercorn has keep-alive and read timeouts of its own.  With heartbeats
every 600 s nothing is written for more than 60 s, so only the absence of
those timeouts keeps the streams open.  Heartbeats are for proxies and for
the clients' silence watchdogs; the server itself does not need them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.sse_parser import SSEMessage
from tests.support import ServerProcess, read_sse

pytestmark = pytest.mark.asyncio

QUIET_S = 63.0  # longer than Quart's RESPONSE_TIMEOUT of 60 s
MAX_WAIT_S = 30  # the longest long-poll the server allows
CHANNEL = "validation_updates"
READ_TIMEOUT_S = QUIET_S + MAX_WAIT_S + 30


class Stream:
    """What one connection received, and whether (and how) it ended."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.ended: str | None = None


async def watch_sse(url: str, into: Stream) -> None:
    try:
        await read_sse(url, into.items, timeout=READ_TIMEOUT_S)
        into.ended = "the server ended the response"
    except httpx.HTTPError as exc:
        into.ended = repr(exc)


async def read_ndjson(client: httpx.AsyncClient, url: str, into: Stream) -> None:
    try:
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                into.items.append(orjson.loads(line) if line.strip() else None)
        into.ended = "the server ended the response"
    except httpx.HTTPError as exc:
        into.ended = repr(exc)


async def read_ws(url: str, into: Stream) -> None:
    try:
        # No client pings: the socket stays as quiet as the others.
        async with connect(url, ping_interval=None) as ws:
            async for raw in ws:
                into.items.append(orjson.loads(raw))
        into.ended = "closed"
    except Exception as exc:  # the close or error is the finding
        into.ended = repr(exc)


async def long_poll(client: httpx.AsyncClient, url: str, into: Stream) -> None:
    """Long-poll with the longest wait until a page brings an event."""
    after = 0
    while True:
        started = time.monotonic()
        response = await client.get(url, params={"after": after, "wait": MAX_WAIT_S})
        page = response.json()
        into.items.append((response.status_code, time.monotonic() - started, page))
        if response.status_code != 200 or page["events"]:
            into.ended = "answered"
            return
        after = page["next_after"]


async def until(check: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Wait for ``check()`` (a plain or an async function) to be true."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def sse_ids(messages: list[SSEMessage]) -> list[int]:
    return [int(m.id) for m in messages if m.event == "validation_created"]


async def test_quiet_streams_outlive_every_timeout_and_still_deliver(
    start_server: Callable[..., ServerProcess],
) -> None:
    """Nothing is written for 63 s on SSE, NDJSON follow and WebSocket; none of them is
    cut, and an event published afterwards arrives on the same connections. Long-polls
    of 30 s come back empty with 200 meanwhile, and the one waiting gets the event."""
    server = start_server(LIVEFEED_HEARTBEAT_S="600")
    sse, ndjson, ws, poll = Stream(), Stream(), Stream(), Stream()
    timeout = httpx.Timeout(10, read=READ_TIMEOUT_S)
    async with httpx.AsyncClient(timeout=timeout) as client:
        tasks = [
            asyncio.create_task(watch_sse(f"{server.url}/sse/{CHANNEL}", sse)),
            asyncio.create_task(
                read_ndjson(client, f"{server.url}/api/events?format=ndjson&follow=1", ndjson)
            ),
            asyncio.create_task(read_ws(f"{server.ws_url}/ws/{CHANNEL}", ws)),
            asyncio.create_task(long_poll(client, f"{server.url}/api/events", poll)),
        ]
        try:
            await until(lambda: len(sse.items) == 1 and len(ws.items) == 1, 10, "the hellos")

            async def all_open() -> bool:  # the NDJSON follow and the long-poll count as poll
                stats = (await client.get(server.url + "/api/stats")).json()
                return stats["connections"] == {"websocket": 1, "sse": 1, "poll": 2}

            await until(all_open, 10, "four open connections")
            await asyncio.sleep(QUIET_S)

            # Quiet until now: only the hellos, no heartbeat, and every stream still open.
            assert [m.event for m in sse.items] == ["connection_established"]
            assert [f["type"] for f in ws.items] == ["connection_established"]
            assert ndjson.items == []
            assert (sse.ended, ndjson.ended, ws.ended, poll.ended) == (None,) * 4
            empty_polls = poll.items
            assert len(empty_polls) == 2, empty_polls
            for status, took, page in empty_polls:
                assert status == 200 and page["events"] == [] and page["next_after"] == 0
                assert MAX_WAIT_S - 1 < took < MAX_WAIT_S + 5, took

            [event_id] = server.publish(
                {"type": "validation_created", "workflow_id": "wf_quiet", "data": {"n": 1}}
            )
            await until(
                lambda: (
                    sse_ids(sse.items) == [event_id]
                    and [f.get("id") for f in ws.items[1:]] == [event_id]
                    and [e and e["id"] for e in ndjson.items] == [event_id]
                    and poll.ended is not None
                ),
                5,
                "the event on every connection",
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    status, took, page = poll.items[-1]
    assert status == 200 and [e["id"] for e in page["events"]] == [event_id]
    assert (sse.ended, ndjson.ended, ws.ended) == (None, None, None)
    assert "Traceback" not in server.log()
