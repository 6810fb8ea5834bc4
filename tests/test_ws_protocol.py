"""WebSocket at the protocol level (FAULTS 63, 65, 66, 67, 68): no compression, so no
compression bomb; malformed handshakes refused with JSON; a close that always finishes;
a cap on tiny frames.  What these rely on is app/hypercorn_fixes/websocket.py and
app/hypercorn_fixes/frames.py, for HTTP/1.1 and HTTP/2 alike."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import zlib

import h2.config
import h2.connection
import h2.events
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.hypercorn_fixes.frames import MAX_FRAMES_PER_S, TOO_MANY_FRAMES
from app.hypercorn_fixes.websocket import CLOSE_REPLY_TIMEOUT_S
from app.server import MAX_CLIENT_FRAME_BYTES
from tests.support import ServerProcess
from tests.test_hostile import (
    KEEP_ALIVE_S,
    RawSocket,
    assert_alive,
    bystander,
    proc_status,
    ws_client_frame,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.serial]  # closes are timed

HYPERCORN_LIMIT = 16 * 1024 * 1024  # Hypercorn's default websocket_max_message_size
# Livefeed sets Hypercorn's limit to MAX_CLIENT_FRAME_BYTES (a publish); app/streams/ws.py
# holds other messages to 64 KiB.
RSV1_TEXT = 0x40 | 0x1  # a text frame with RSV1 set: "compressed" (RFC 7692)


def handshake(server: ServerProcess, *extra: str, path: str = "/ws/validation_updates") -> bytes:
    lines = [
        f"GET {path}?types=quiet HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def deflated(size: int) -> bytes:
    """A permessage-deflate payload (RFC 7692 §7.2.1) inflating to ``size`` spaces."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(b" " * size) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]  # without the 00 00 ff ff tail


async def websocket_count(server: ServerProcess) -> int:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        stats = (await http.get("/api/stats")).json()
    return int(stats["connections"]["websocket"])


async def test_compression_is_never_negotiated_so_a_bomb_takes_no_memory(server):
    """FAULTS 63: offered permessage-deflate (as browsers do), the server accepts without
    it; clients that send deflated frames anyway (six that inflate to 64 MiB each, on
    three sockets) are dropped, the server's peak RSS grows < 20 MB, others are served."""
    async with connect(server.ws_url + "/ws/validation_updates", compression="deflate") as ws:
        assert ws.request.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert orjson.loads(await ws.recv())["type"] == "connection_established"

    bomb = ws_client_frame(deflated(64 * 1024 * 1024), opcode=RSV1_TEXT)
    assert len(bomb) < 70_000

    async def attack() -> bytes:
        async with RawSocket.open(server) as raw:
            offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
            await raw.send(handshake(server, offer))
            head = await raw.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101") and b"sec-websocket-extensions" not in head
            await raw.ws_frame()  # connection_established
            with contextlib.suppress(ConnectionError):
                await raw.send(bomb * 2)
            answer = b""
            while chunk := await raw.read_available(5):
                answer += chunk
            assert chunk == b"", "still open 5 s after the frames"
            return answer

    peak_before = proc_status(server, "VmHWM")
    async with bystander(server, rounds=2):
        answers = await asyncio.gather(attack(), attack(), attack())
    growth_mb = (proc_status(server, "VmHWM") - peak_before) / 1000
    assert growth_mb < 20, f"peak RSS grew {growth_mb:.0f} MB"
    assert all(b"pong" not in answer for answer in answers)
    assert await websocket_count(server) == 0
    assert_alive(server)


async def test_frame_over_hypercorns_16_mib_limit_closes_1009(server):
    """FAULTS 66, 31: a 17 MiB text frame from a normal client gets close 1009 and the
    closing handshake completes at once; the 64 KiB limit still closes 1009 too."""
    for size in (HYPERCORN_LIMIT + 1024 * 1024, 64 * 1024 + 1):
        async with connect(server.ws_url + "/ws/validation_updates", compression=None) as ws:
            await ws.recv()
            started = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    await ws.send("x" * size)
                    while True:
                        await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, size
            assert time.monotonic() - started < 3, size  # not cut later by a timeout
    assert await websocket_count(server) == 0
    assert_alive(server)


async def test_client_that_never_answers_the_1009_is_cut(server):
    """FAULTS 66: a client that sends part of a 17 MiB frame, gets 1009 and then neither
    replies nor closes is disconnected after the close-reply timeout, and its stream ends."""
    async with RawSocket.open(server) as raw:
        await raw.ws_handshake(server)
        size = HYPERCORN_LIMIT + 1024 * 1024
        head = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big") + b"\x00" * 4  # zero mask
        await raw.send(head + b"x" * (MAX_CLIENT_FRAME_BYTES + 256 * 1024))  # past Hypercorn's
        code, _, _ = await raw.ws_until_close()
        assert code == 1009
        assert await websocket_count(server) == 1  # the stream still waits for the reply
        closed_after = await raw.seconds_until_closed(CLOSE_REPLY_TIMEOUT_S + 3)
    assert CLOSE_REPLY_TIMEOUT_S - 1 <= closed_after <= CLOSE_REPLY_TIMEOUT_S + 2, closed_after
    await asyncio.sleep(0.2)
    assert await websocket_count(server) == 0


MALFORMED_OFFERS = [
    "permessage-deflate; client_max_window_bits=x",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; client_no_context_takeover=1",
    "permessage-deflate; max_window_bits=10",
    "permessage-deflate; client_max_window_bits=10; client_max_window_bits=10",
    "permessage-deflate; client_max_window_bits=010",
    "perm essage-deflate",
    "x-custom; a b",
    "permessage-deflate; client_max_window_bits=\xe9",
]
ACCEPTED_OFFERS = [
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
    'permessage-deflate; client_max_window_bits="12", permessage-deflate',
    "x-webkit-deflate-frame",
]


async def test_malformed_extension_offer_is_400_json_and_one_log_line(server):
    """FAULTS 65: a Sec-WebSocket-Extensions offer that breaks RFC 6455 or RFC 7692 gets
    400 JSON and one log line (no traceback), and the socket is closed; valid offers of
    any extension are accepted without one."""
    for offer in MALFORMED_OFFERS:
        log_before = len(server.log())
        async with RawSocket.open(server) as raw:
            await raw.send(handshake(server, f"Sec-WebSocket-Extensions: {offer}"))
            status, headers, body = await asyncio.wait_for(raw.http_response(), 5)
            after = await raw.read_available(2)
        assert status == 400 and headers["content-type"] == "application/json", offer
        error = orjson.loads(body)
        assert set(error) == {"error", "detail"} and error["error"] == "bad_request"
        assert "Sec-WebSocket-Extensions" in error["detail"]
        assert after == b"", (offer, after)
        new_lines = server.log()[log_before:].splitlines()
        assert len(new_lines) == 1 and "Sec-WebSocket-Extensions" in new_lines[0], new_lines
    for offer in ACCEPTED_OFFERS:
        async with RawSocket.open(server) as raw:
            await raw.send(handshake(server, f"Sec-WebSocket-Extensions: {offer}"))
            head = await asyncio.wait_for(raw.read_until(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101") and b"sec-websocket-extensions" not in head
    assert "Traceback" not in server.log()
    assert_alive(server)


async def test_handshakes_hypercorn_refuses_are_json_and_closed(server):
    """FAULTS 67: Hypercorn's own refusals (a wrong Sec-WebSocket-Version; frames sent
    before the 101) are JSON naming the rule, the socket is closed, and no stream is left
    open for a client that is gone."""
    cases = {
        "version 8": handshake(server).replace(b"Version: 13", b"Version: 8"),
        "frame before the 101": handshake(server) + ws_client_frame(b'{"type":"ping"}'),
    }
    for name, payload in cases.items():
        async with RawSocket.open(server) as raw:
            await raw.send(payload)
            status, headers, body = await asyncio.wait_for(raw.http_response(), 5)
            assert await raw.seconds_until_closed(KEEP_ALIVE_S) < 1, name
        assert status == 400 and headers["content-type"] == "application/json", name
        assert set(orjson.loads(body)) == {"error", "detail"}, name
        if name == "version 8":
            assert headers["sec-websocket-version"] == "13"
    await asyncio.sleep(0.5)
    assert await websocket_count(server) == 0
    assert_alive(server)


TINY_FRAMES = {  # 6 bytes each (masked, empty): what costs the client least
    "pings": (b"", bytes([0x89, 0x80]) + bytes(4)),
    "continuations of a message that never ends": (
        bytes([0x01, 0x80]) + bytes(4),
        bytes([0x00, 0x80]) + bytes(4),
    ),
}


@pytest.mark.parametrize("kind", list(TINY_FRAMES))
async def test_flood_of_tiny_frames_is_closed_1008_and_never_stalls_others(server, kind):
    """FAULTS 68: past 1000 frames a second (pings Hypercorn answers itself, pieces of a
    message that never ends) the client gets close 1008 naming the reason and is cut;
    a sustained flood of them never keeps other clients waiting (it stalled them 2-4 s)."""
    first, frame = TINY_FRAMES[kind]
    burst = first + frame * (10 * MAX_FRAMES_PER_S)  # < 64 KiB: read at once, no reset
    async with RawSocket.open(server) as raw:
        await raw.ws_handshake(server)
        await raw.send(burst)
        code, reason, seen = await raw.ws_until_close()
        assert (code, reason) == (1008, TOO_MANY_FRAMES), seen
        assert seen["op 10"] <= MAX_FRAMES_PER_S  # pongs: it stopped parsing at the cap
        assert await raw.seconds_until_closed(2) < 1
    async with RawSocket.open(server) as raw, bystander(server, rounds=2):
        await raw.ws_handshake(server)
        sent = await raw.flood(first + frame * 10_000, 1000, limit=4)
    assert sent < 100, f"{sent} bursts of 10,000 frames were taken"
    assert await websocket_count(server) == 0
    assert_alive(server)


def h2_websocket(server: ServerProcess, offer: str) -> list[object]:
    """Open a WebSocket over HTTP/2 (RFC 8441) offering these extensions: the events."""
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        client.initiate_connection()
        sock.sendall(client.data_to_send())
        events = client.receive_data(sock.recv(65536))  # the server's SETTINGS
        client.send_headers(
            1,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":path", "/ws/validation_updates"),
                (":authority", f"127.0.0.1:{server.port}"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-extensions", offer),
            ],
        )
        sock.sendall(client.data_to_send())
        while not any(isinstance(e, h2.events.DataReceived) for e in events):
            events += client.receive_data(sock.recv(65536))
    return events


async def test_websocket_over_http2_is_served_the_same_way(server):
    """FAULTS 63, 65: over HTTP/2 (RFC 8441) permessage-deflate is not negotiated either,
    and a malformed offer is a 400 JSON answer (without HTTP/1.1's Connection header)."""
    events = await asyncio.to_thread(h2_websocket, server, "permessage-deflate")
    [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert dict(response.headers)[":status"] == "200"
    assert "sec-websocket-extensions" not in dict(response.headers)
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data[0] == 0x81 and b"connection_established" in data  # a plain text frame

    events = await asyncio.to_thread(
        h2_websocket, server, "permessage-deflate; client_max_window_bits=x"
    )
    [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    headers = dict(response.headers)
    assert headers[":status"] == "400" and headers["content-type"] == "application/json"
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert orjson.loads(body)["error"] == "bad_request"
    assert_alive(server)
