"""HTTP/1.1 as app/hypercorn_fixes/http1.py serves it (llhttp, not h11), on a real server
over raw sockets: framing the clients of this API rely on, and what h11 used to refuse."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.support import ServerProcess
from tests.test_hostile import KEEP_ALIVE_S, RawSocket, assert_alive

pytestmark = pytest.mark.asyncio


def get(server: ServerProcess, path: str = "/healthz", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{extra}\r\n".encode()


def post(server: ServerProcess, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def test_pipelined_requests_are_answered_once_each_in_order(server: ServerProcess) -> None:
    """Three requests in one write: three answers, in the order asked, one event written."""
    async with RawSocket.open(server) as raw:
        await raw.send(get(server) + post(server, b'{"type":"piped"}') + get(server, "/nowhere"))
        answers = [await asyncio.wait_for(raw.http_response(), 5) for _ in range(3)]
    assert [status for status, _, _ in answers] == [200, 201, 404]
    assert [e["id"] for e in server.events()] == [orjson.loads(answers[1][2])["id"]]
    assert [e["type"] for e in server.events()] == ["piped"]


async def test_http_1_0_is_answered_then_closed(server: ServerProcess) -> None:
    async with RawSocket.open(server) as raw:
        await raw.send(f"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        status, headers, body = await asyncio.wait_for(raw.http_response(), 5)
        assert status == 200 and headers["connection"] == "close"
        assert orjson.loads(body) == {"status": "ok"}
        assert await raw.read_available(5) == b""


async def test_connection_close_is_honoured_and_keep_alive_is_the_default(
    server: ServerProcess,
) -> None:
    async with RawSocket.open(server) as raw:
        for _ in range(3):  # one connection, several requests
            await raw.send(get(server))
            status, headers, _ = await asyncio.wait_for(raw.http_response(), 5)
            assert status == 200 and "connection" not in headers
        await raw.send(get(server, extra="Connection: close\r\n"))
        status, headers, _ = await asyncio.wait_for(raw.http_response(), 5)
        assert status == 200 and headers["connection"] == "close"
        assert await raw.read_available(5) == b""


async def test_a_head_answer_has_no_body_and_the_connection_goes_on(server: ServerProcess) -> None:
    async with RawSocket.open(server) as raw:
        await raw.send(get(server).replace(b"GET", b"HEAD", 1) + get(server))
        head = await asyncio.wait_for(raw.read_until(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 15\r\n" in head
        status, _, body = await asyncio.wait_for(raw.http_response(), 5)  # right after it
        assert status == 200 and orjson.loads(body) == {"status": "ok"}


async def test_expect_100_continue_is_answered_before_the_body(server: ServerProcess) -> None:
    body = b'{"type":"after_continue"}'
    async with RawSocket.open(server) as raw:
        await raw.send(post(server, body, "Expect: 100-continue\r\n")[: -len(body)])
        interim = await asyncio.wait_for(raw.read_until(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        await raw.send(body)
        status, _, answer = await asyncio.wait_for(raw.http_response(), 5)
    assert status == 201 and orjson.loads(answer)["id"] == 1
    assert [e["type"] for e in server.events()] == ["after_continue"]


async def test_a_head_over_the_limit_gets_431_even_when_it_arrives_whole(
    server: ServerProcess,
) -> None:
    """h11 refused only a head still incomplete past 16 KiB; 20 KiB in one write passed."""
    async with RawSocket.open(server) as raw:
        await raw.send(get(server, extra="X-Big: " + "a" * 20_000 + "\r\n"))
        status, headers, body = await asyncio.wait_for(raw.http_response(), 5)
    assert status == 431 and headers["connection"] == "close" and "date" in headers
    assert orjson.loads(body)["error"] == "headers_too_large"
    assert_alive(server)


async def test_an_upgrade_request_with_a_body_is_refused_and_smuggles_nothing(
    server: ServerProcess,
) -> None:
    """llhttp hands over what follows an upgrade's head unparsed: read as requests, this
    body would publish.  It is refused instead, and the connection closed."""
    smuggled = post(server, b'{"type":"smuggled"}')
    async with RawSocket.open(server) as raw:
        await raw.send(
            f"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(smuggled)}\r\n\r\n".encode()
            + smuggled
        )
        status, _, body = await asyncio.wait_for(raw.http_response(), 5)
        assert status == 400 and "Upgrade request with a body" in orjson.loads(body)["detail"]
        assert await raw.read_available(KEEP_ALIVE_S) == b""
    assert server.events() == []
