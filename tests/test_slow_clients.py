"""Slow and stuck readers: nothing lost, nobody else slowed (FAULTS 33-34)."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support import ServerProcess, metric


def stuck_socket(server: ServerProcess, transport: str = "sse") -> socket.socket:
    """A client that sends a request and never reads: its TCP window fills up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    path, upgrade = "/sse/validation_updates", ""
    if transport == "websocket":
        path = "/ws/validation_updates"
        upgrade = (
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        )
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{upgrade}\r\n".encode())
    return sock


@pytest.mark.asyncio
async def test_queue_overflow_falls_back_to_the_log_and_loses_nothing(start_server):
    """A reader slower than the publisher overflows its queue, reads the log, misses nothing."""
    server = start_server(LIVEFEED_QUEUE_SIZE="5")
    seen: list[int] = []
    async with connect(server.ws_url + "/ws/validation_updates") as ws:
        await ws.recv()
        for _ in range(5):
            server.publish([{"type": "burst", "data": {"pad": "x" * 100}}] * 100)
        async with asyncio.timeout(20):
            while len(seen) < 500:
                frame = orjson.loads(await ws.recv())
                if "id" in frame:
                    seen.append(frame["id"])
                    if len(seen) % 50 == 0:
                        await asyncio.sleep(0.05)  # a slow reader
    assert seen == list(range(1, 501))
    async with httpx.AsyncClient() as client:
        stats = (await client.get(server.url + "/api/stats")).json()
        metrics = (await client.get(server.url + "/metrics")).text
    assert stats["fell_behind"] >= 1
    assert metric(metrics, "livefeed_fell_behind_total") == stats["fell_behind"]


@pytest.mark.parametrize(
    ("transport", "reason"), [("sse", "write_timeout"), ("websocket", "try_again_later")]
)
def test_stuck_client_is_disconnected_after_the_write_timeout(start_server, transport, reason):
    """A client that never reads is cut off after LIVEFEED_WRITE_TIMEOUT_S: SSE ends, a
    WebSocket closes 1013 (counted as try_again_later), and its slot is freed."""
    server = start_server(LIVEFEED_WRITE_TIMEOUT_S="1", LIVEFEED_QUEUE_SIZE="50")
    sock = stuck_socket(server, transport)
    try:
        time.sleep(0.3)
        for _ in range(20):
            server.publish([{"type": "fill", "data": {"pad": "x" * 8000}}] * 50)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            metrics = httpx.get(server.url + "/metrics").text
            if metric(metrics, "livefeed_disconnects_total", transport=transport, reason=reason):
                break
            time.sleep(0.2)
        assert (
            metric(metrics, "livefeed_disconnects_total", transport=transport, reason=reason) == 1
        )
        assert httpx.get(server.url + "/api/stats").json()["connections"][transport] == 0
        if transport == "websocket":
            assert "write timeout: the client is not reading" in server.log()
    finally:
        sock.close()


async def read_sse_ids(reader: asyncio.StreamReader, latencies: list[float], count: int) -> None:
    """Parse just enough SSE to time each event (its data carries the publish time)."""
    got = 0
    while got < count:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b'data: {"id"'):
            sent = orjson.loads(line[6:])["data"]["t"]
            latencies.append(time.time() - sent)
            got += 1


@pytest.mark.asyncio
async def test_one_stuck_client_does_not_slow_200_others(start_server):
    """With a never-reading socket connected, 200 readers get every event without
    waiting on it: a fan-out that waited for the stuck socket would hold each event
    until the write timeout (60 s) cut it. How fast they get it is a benchmark's
    question (bench/fanout.py), not a timed assertion that a loaded machine fails."""
    write_timeout_s = 60
    server = start_server(LIVEFEED_WRITE_TIMEOUT_S=str(write_timeout_s))
    stuck = stuck_socket(server)
    latencies: list[float] = []
    events = 40
    readers: list[asyncio.StreamReader] = []
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(200):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                f"GET /sse/validation_updates HTTP/1.1\r\nHost: 127.0.0.1:{server.port}"
                "\r\n\r\n".encode()
            )
            readers.append(reader)
            writers.append(writer)
        tasks = [asyncio.create_task(read_sse_ids(r, latencies, events)) for r in readers]
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient(base_url=server.url) as client:
            for n in range(events):
                pad = "x" * 4000  # fills the stuck client's window quickly
                body = orjson.dumps(
                    {"type": "tick", "data": {"t": time.time(), "n": n, "pad": pad}}
                )
                response = await client.post(
                    "/api/events", content=body, headers={"Content-Type": "application/json"}
                )
                assert response.status_code == 201
                await asyncio.sleep(0.05)
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)
        async with httpx.AsyncClient(base_url=server.url) as client:
            stats = (await client.get("/api/stats")).json()
    finally:
        stuck.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    assert stats["connections"]["sse"] == 201, "the stuck client was still connected, unread"
    assert len(latencies) == 200 * events
    assert max(latencies) < write_timeout_s / 6, f"a reader waited {max(latencies):.1f} s"


def test_stuck_websocket_is_closed_1013_after_the_write_timeout(start_server):
    """FAULTS 34 on WebSocket: a client that never reads gets close 1013 (try again later)."""
    server = start_server(LIVEFEED_WRITE_TIMEOUT_S="1", LIVEFEED_QUEUE_SIZE="50")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        f"GET /ws/validation_updates HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
    )
    try:
        time.sleep(0.3)
        for _ in range(20):
            server.publish([{"type": "fill", "data": {"pad": "x" * 8000}}] * 50)
        deadline = time.monotonic() + 20
        labels = {"transport": "websocket", "reason": "try_again_later"}
        while time.monotonic() < deadline:
            metrics = httpx.get(server.url + "/metrics").text
            if metric(metrics, "livefeed_disconnects_total", **labels):
                break
            time.sleep(0.2)
        assert metric(metrics, "livefeed_disconnects_total", **labels) == 1
        assert httpx.get(server.url + "/api/stats").json()["connections"]["websocket"] == 0
    finally:
        sock.close()
