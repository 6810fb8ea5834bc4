"""``Upgrade: h2c`` is never honoured (FAULTS 64): not by Livefeed, and not passed on by
the shipped nginx configuration, so nobody can smuggle requests past the proxy."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import httpx
import orjson
import pytest

from tests.nginx_proxy import non_loopback_address, shipped_nginx
from tests.support import ServerProcess
from tests.test_hostile import RawSocket, assert_alive

pytestmark = pytest.mark.asyncio

SPOOFED = "127.0.0.1"  # what a smuggled request claims to come from: loopback may publish


def h2c_upgrade(host: str, settings: bytes = b"AAMAAABkAARAAAAAAAIAAAAA") -> bytes:
    return (
        f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        f"Upgrade: h2c\r\nHTTP2-Settings: {settings.decode()}\r\n\r\n"
    ).encode()


def plain_publish(host: str) -> bytes:
    body = b'{"type":"smuggled_http1"}'
    return (
        f"POST /api/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-Forwarded-For: {SPOOFED}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def statuses(data: bytes) -> list[int]:
    """The status codes of the HTTP/1.1 answers in what came back."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3})", data)]


async def test_upgrade_h2c_is_answered_as_http_1_1(server):
    """FAULTS 64: a request with Upgrade: h2c is answered as plain HTTP/1.1 and the
    connection stays HTTP/1.1 for the next request; HTTP/2 by prior knowledge still works."""
    host = f"127.0.0.1:{server.port}"
    async with RawSocket.open(server) as raw:
        then = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"
        await raw.send(h2c_upgrade(host) + then.encode())
        first = await asyncio.wait_for(raw.http_response(), 5)
        second = await asyncio.wait_for(raw.http_response(), 5)
    assert first[0] == second[0] == 200
    assert orjson.loads(first[2]) == orjson.loads(second[2]) == {"status": "ok"}
    async with httpx.AsyncClient(http1=False, http2=True) as prior_knowledge:
        response = await prior_knowledge.get(server.url + "/healthz")
    assert (response.http_version, response.status_code) == ("HTTP/2", 200)


class SwitchingUpstream:
    """An upstream that switches protocols whenever asked (as Hypercorn did for h2c) and
    records each request head, and every byte received after a switch."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.tunnelled = bytearray()
        self.connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections[task] = writer
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                fields = dict(
                    line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if line
                )
                await reader.readexactly(int(fields.get(b"content-length", b"0")))
                if b"upgrade" in fields:
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n")
                    writer.write(b"Upgrade: " + fields[b"upgrade"] + b"\r\n\r\n")
                    while chunk := await reader.read(65536):
                        self.tunnelled += chunk
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        async with server:
            try:
                yield server.sockets[0].getsockname()[1]
            finally:  # end open tunnels: each reader then sees the end of its stream
                for writer in self.connections.values():
                    writer.close()
                await asyncio.gather(*self.connections)


async def exchange(port: int, *messages: bytes, source: str = "127.0.0.1") -> bytes:
    """Send each message on one connection to the proxy, reading what comes back after
    each (for up to a second), until it closes."""
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    loop = asyncio.get_running_loop()
    received = b""
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        for message in messages:
            await loop.sock_sendall(sock, message)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    while chunk := await loop.sock_recv(sock, 65536):
                        received += chunk
                    break  # closed
    except ConnectionError:
        pass
    finally:
        sock.close()
    return received


async def test_shipped_nginx_config_passes_upgrade_on_only_for_websocket(tmp_path: Path):
    """FAULTS 64: behind deploy/nginx-livefeed.conf, even an upstream that honours h2c is
    never asked to: the next request on that client connection goes through nginx
    (nginx's own X-Forwarded-For), not down a tunnel.  A WebSocket upgrade still works."""
    upstream = SwitchingUpstream()
    async with upstream.listening() as upstream_port:
        with shipped_nginx(tmp_path, [upstream_port]) as port:
            host = f"127.0.0.1:{port}"
            after = f"GET /after HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: {SPOOFED}\r\n\r\n"
            answers = await exchange(port, h2c_upgrade(host), after.encode())
            seen_h2c = list(upstream.heads)
            websocket = (
                f"GET /ws/validation_updates HTTP/1.1\r\nHost: {host}\r\nUpgrade: WebSocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            ws_answer = await exchange(port, websocket.encode(), b"frames")
    assert statuses(answers) == [200, 200], answers
    assert len(seen_h2c) == 2, seen_h2c  # else the second request went down a tunnel
    first, second = (head.lower() for head in seen_h2c)
    assert b"upgrade:" not in first and b"connection: upgrade" not in first, first
    assert second.startswith(b"get /after ")
    assert b"x-forwarded-for: 127.0.0.1, 127.0.0.1\r\n" in second  # nginx appended the peer
    assert statuses(ws_answer) == [101], ws_answer
    ws_head = upstream.heads[-1].lower()
    assert b"upgrade: websocket\r\n" in ws_head and b"connection: upgrade\r\n" in ws_head
    assert upstream.tunnelled == b"frames"


def smuggled_h2_publish(host: str) -> tuple[bytes, bytes]:
    """An h2c upgrade request, and the HTTP/2 bytes that would follow a 101: the
    preface and a publish claiming to come from loopback."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = client.initiate_upgrade_connection()
    client.send_headers(
        3,
        [
            (":method", "POST"),
            (":path", "/api/events"),
            (":scheme", "http"),
            (":authority", host),
            ("content-type", "application/json"),
            ("x-forwarded-for", SPOOFED),
        ],
    )
    client.send_data(3, b'{"type":"smuggled_h2"}', end_stream=True)
    return h2c_upgrade(host, settings), client.data_to_send()


async def test_h2c_smuggling_through_the_shipped_nginx_publishes_nothing(
    tmp_path: Path, start_server
):
    """FAULTS 64: a client that is not loopback, behind the shipped nginx config, cannot
    publish without a token by sending Upgrade: h2c and then requests (HTTP/2 or HTTP/1.1)
    that claim X-Forwarded-For: 127.0.0.1; the proxy and the node keep serving."""
    remote = non_loopback_address()
    node: ServerProcess = start_server(LIVEFEED_TRUST_PROXY="127.0.0.1")
    with shipped_nginx(tmp_path, [node.port]) as port:
        host = f"127.0.0.1:{port}"
        honest = await exchange(port, plain_publish(host), source=remote)
        assert statuses(honest) == [403], honest  # a remote client, and no token
        upgrade, h2_bytes = smuggled_h2_publish(host)
        answers = await exchange(port, upgrade, h2_bytes, plain_publish(host), source=remote)
        answers += await exchange(port, upgrade, plain_publish(host), source=remote)
        async with httpx.AsyncClient(base_url=f"http://{host}", timeout=5) as through_proxy:
            assert (await through_proxy.get("/healthz")).status_code == 200
    assert 201 not in statuses(answers) and 101 not in statuses(answers), answers
    assert b"smuggled" not in answers
    assert node.events() == []
    assert_alive(node)
