"""sse-starlette usage that app.sse now serves unchanged: sync content, data senders, HEAD.

Each runs through a real Hypercorn server, from a Quart view and as a plain
ASGI app, or calls the response directly where the point is its own timing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from functools import partial
from typing import Any

import anyio
import httpx
import pytest

from app.sse import EventSourceResponse
from tests.sse_parser import iter_sse
from tests.sse_servers import SERVERS, http_scope, never_disconnects, served


async def _read_events(base: str, limit: int | None = None) -> list[str]:
    """The data of the events at base/sse: all of them, or the first ``limit``."""
    data: list[str] = []
    async with (
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", f"{base}/sse") as response,
    ):
        assert response.status_code == 200
        async for message in iter_sse(response.aiter_raw()):
            data.append(message.data)
            if len(data) == limit:
                break
    return data


@pytest.mark.asyncio
@pytest.mark.parametrize("build", SERVERS)
async def test_sync_iterables_stream_like_async_ones(build):
    """A range and a plain generator are streamed item by item, as sse-starlette does."""

    def numbers():
        yield from ({"data": n, "event": "n"} for n in range(3))

    async with served(build(lambda: EventSourceResponse(range(1, 4), ping=0))) as base:
        assert await _read_events(base) == ["1", "2", "3"]
    async with served(build(lambda: EventSourceResponse(numbers(), ping=0))) as base:
        assert await _read_events(base) == ["0", "1", "2"]


@pytest.mark.asyncio
async def test_blocking_sync_content_runs_in_a_worker_thread():
    """A generator that blocks between items does not stall the event loop meanwhile."""
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def slow():
        for n in range(3):
            time.sleep(0.1)
            threads.append(threading.get_ident())
            yield n

    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    sent: list[bytes] = []

    async def send(message):
        sent.append(message.get("body", b""))

    ticker = asyncio.create_task(tick())
    await EventSourceResponse(slow(), ping=0)(http_scope(), never_disconnects, send)
    ticker.cancel()
    assert b"".join(sent) == b"data: 0\r\n\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n"
    assert loop_thread not in threads
    assert ticks >= 10  # ~30 in 0.3 s; a blocked loop would manage 0


@pytest.mark.asyncio
@pytest.mark.parametrize("build", SERVERS)
async def test_sync_generator_is_closed_when_the_client_leaves(build):
    """A client that goes away runs the sync generator's finally, even mid-next()."""
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                time.sleep(0.01)
                n += 1
                yield n
        finally:
            closed.set()

    async with served(build(lambda: EventSourceResponse(endless(), ping=0))) as base:
        assert await _read_events(base, limit=2) == ["1", "2"]
        assert await asyncio.to_thread(closed.wait, 3)


async def _produce(channel: Any, count: int) -> None:
    async with channel:
        for n in range(count):
            await anyio.sleep(0.01)
            await channel.send({"data": n, "id": str(n)})


@pytest.mark.asyncio
@pytest.mark.parametrize("build", SERVERS)
async def test_data_sender_callable_feeds_the_stream(build):
    """data_sender_callable runs beside the response and fills the channel it streams."""

    def make():
        send_channel, receive_channel = anyio.create_memory_object_stream(10)
        return EventSourceResponse(
            receive_channel, ping=0, data_sender_callable=partial(_produce, send_channel, 3)
        )

    async with served(build(make)) as base:
        assert await _read_events(base) == ["0", "1", "2"]


@pytest.mark.asyncio
async def test_data_sender_failure_ends_the_stream_with_its_error():
    """An error in data_sender_callable ends the stream, is raised, and closes the content."""
    send_channel, receive_channel = anyio.create_memory_object_stream(10)

    async def sender():
        async with send_channel:  # closed on the way out, as upstream's examples do
            await send_channel.send({"data": "one"})
            raise RuntimeError("the sender broke")

    bodies: list[bytes] = []

    async def send(message):
        bodies.append(message.get("body", b""))

    response = EventSourceResponse(receive_channel, ping=0, data_sender_callable=sender)
    with pytest.raises(RuntimeError, match="the sender broke"):
        await asyncio.wait_for(response(http_scope(), never_disconnects, send), 3)
    assert b"data: one\r\n\r\n" in bodies
    with pytest.raises(anyio.ClosedResourceError):
        receive_channel.receive_nowait()


@pytest.mark.asyncio
@pytest.mark.parametrize("build", SERVERS)
async def test_head_request_gets_headers_without_starting_content(build):
    """HEAD answers with the stream's headers and completes; the content never starts.

    An endless stream on HEAD would never complete, and the keep-alive connection,
    reused by the next request, would hang (sse-starlette issue #218).
    """
    started: list[str] = []

    async def endless():
        started.append("started")
        while True:
            yield "tick"
            await asyncio.sleep(0.01)

    async with served(build(lambda: EventSourceResponse(endless(), ping=0))) as base:
        async with httpx.AsyncClient(timeout=3, limits=httpx.Limits(max_connections=1)) as client:
            head = await client.head(f"{base}/sse")
            again = await client.head(f"{base}/sse")  # the same connection, reused
    assert head.status_code == again.status_code == 200
    assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert started == []
