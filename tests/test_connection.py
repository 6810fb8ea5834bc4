"""A connection as its transport's protocol (app/hypercorn_fixes/connection.py), on
real loopback sockets with a small ASGI app: what it hands Hypercorn's protocol,
how a write to a peer that does not read waits, and when it gives up.  Every server
test runs on these connections too; here the waits are set up exactly."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.handlers import format_date_time

import pytest
import pytest_asyncio
from hypercorn.events import Closed

from app.hypercorn_fixes.connection import Connection, LivefeedConfig, OpenConnections
from app.hypercorn_fixes.lean import LeanWorkerContext
from app.hypercorn_fixes.serve import DirectASGI

CHUNK = 64 * 1024
CHUNKS = 256  # 16 MiB: more than the kernel's and the transport's buffers hold


@dataclass
class Served:
    """A listening server whose app answers ``GET /big`` with CHUNKS chunks."""

    port: int
    open: OpenConnections
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    connections: list[Connection] = field(default_factory=list)


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(CHUNKS):
            await send({"type": "http.response.body", "body": b"x" * CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        state.finished.set()

    config = LivefeedConfig()
    config.send_timeout_s = 0.5
    open_connections = OpenConnections()
    context = LeanWorkerContext(None)

    def connection() -> Connection:
        made = Connection(DirectASGI(app), config, context, {}, open_connections)
        state.connections.append(made)
        return made

    server = await asyncio.get_running_loop().create_server(connection, "127.0.0.1", 0)
    state = Served(server.sockets[0].getsockname()[1], open_connections)
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
    return reader, writer


@pytest.mark.asyncio
async def test_a_write_to_a_peer_that_does_not_read_waits_and_goes_on_when_it_reads(
    served: Served,
) -> None:
    served.connections.clear()
    reader, writer = await request(served.port)
    await asyncio.sleep(0.2)
    assert not served.finished.is_set()  # the app waits in its send: the transport is full
    (connection,) = served.connections
    assert connection._paused and connection._drain_waiters
    body = 0
    while body < CHUNKS * CHUNK:
        data = await asyncio.wait_for(reader.read(1 << 20), 5)
        assert data, f"the connection ended after {body} bytes of the body"
        body += data.count(b"x")  # neither the headers nor the chunk sizes have one
    await asyncio.wait_for(served.finished.wait(), 5)
    writer.close()
    await asyncio.wait_for(served.open.all_closed(), 5)


@pytest.mark.asyncio
async def test_a_peer_that_takes_nothing_for_the_send_timeout_is_reset(served: Served) -> None:
    reader, writer = await request(served.port)
    await asyncio.wait_for(served.open.all_closed(), 5)  # 0.5 s without progress: aborted
    assert served.finished.is_set()  # the app's sends returned once the connection closed
    with pytest.raises(ConnectionResetError):
        while await reader.read(1 << 20):
            pass
    writer.close()


async def idle_connection(
    served: Served,
) -> tuple[Connection, asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has sent nothing yet: waiting for its first request."""
    served.connections.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    await asyncio.sleep(0.1)
    (connection,) = served.connections
    return connection, reader, writer


@pytest.mark.asyncio
async def test_an_idle_connection_keeps_no_task(served: Served) -> None:
    """Between bytes a connection is a protocol object: no task waits for it to read."""
    connection, _, writer = await idle_connection(served)
    gc.collect()
    names = [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]
    assert connection._worker is None
    assert connection._idle_timer is not None  # the keep-alive timeout is a timer
    assert not [n for n in names if "Connection." in n], names
    writer.close()
    await asyncio.wait_for(served.open.all_closed(), 5)


@pytest.mark.asyncio
async def test_shutdown_closes_a_connection_waiting_between_requests(served: Served) -> None:
    """Its keep-alive timer is not waited for: the peer sees the end at once."""
    connection, reader, writer = await idle_connection(served)
    assert connection._idle_timer is not None
    served.open.close_idle()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    await asyncio.wait_for(served.open.all_closed(), 2)
    assert connection._idle_timer is None
    writer.close()


def test_every_response_has_one_date_header_of_the_current_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = LivefeedConfig()
    now = [1_780_000_000.2]
    monkeypatch.setattr(time, "time", lambda: now[0])
    headers = config.response_headers("h11")
    assert [n for n, _ in headers].count(b"date") == 1 and (b"server", b"hypercorn-h11") in headers
    assert dict(headers)[b"date"] == format_date_time(1_780_000_000).encode()
    now[0] += 0.7  # same second: the formatted value is reused
    assert dict(config.response_headers("h11"))[b"date"] == format_date_time(1_780_000_000).encode()
    now[0] += 0.2
    assert dict(config.response_headers("h11"))[b"date"] == format_date_time(1_780_000_001).encode()


@pytest.mark.asyncio
async def test_a_close_goes_on_when_the_task_that_asked_for_it_is_cancelled(
    served: Served,
) -> None:
    """A request's task asks for the close, and its app may cancel it right after (Quart
    does once it hears the request is over): the close still ends the connection."""
    connection, _, writer = await idle_connection(served)
    connection.transport.write(b"x" * (4 << 20))  # more than a peer that reads nothing takes
    closing = asyncio.create_task(connection.protocol_send(Closed()))
    await asyncio.sleep(0.1)
    assert not closing.done()  # waiting for the peer to take the last bytes
    closing.cancel()
    await asyncio.wait_for(served.open.all_closed(), 5)  # reset after the 0.5 s send timeout
    writer.close()
