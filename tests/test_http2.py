"""HTTP/2 by prior knowledge on the cleartext port (FAULTS 69): a client flooding control
frames is sent GOAWAY ENHANCE_YOUR_CALM and cut, and never keeps others waiting.  What
this relies on is app/hypercorn_fixes/http2.py."""

from __future__ import annotations

import asyncio
import socket

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest

from app.hypercorn_fixes.http2 import MAX_CONTROL_FRAMES_PER_S, TOO_MANY_CONTROL_FRAMES
from tests.support import ServerProcess
from tests.test_hostile import assert_alive, bystander

pytestmark = pytest.mark.asyncio


def ping_burst(server: ServerProcess, pings: int) -> list[h2.events.Event]:
    """Open HTTP/2 by prior knowledge, send ``pings`` PINGs at once (under 64 KiB, so
    the server reads them in one go) and read until the server ends the connection."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    for _ in range(pings):
        client.ping(b"12345678")
    burst = client.data_to_send()
    assert len(burst) < 64 * 1024
    events: list[h2.events.Event] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(burst)
        while not any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
            data = sock.recv(65536)
            if not data:
                break
            events += client.receive_data(data)
    return events


async def test_http2_ping_flood_gets_goaway_and_never_stalls_others(server):
    """FAULTS 69: past 500 control frames a second the client gets GOAWAY with
    ENHANCE_YOUR_CALM and a reason, and is cut; a sustained PING flood (it kept others
    waiting 1.1-1.8 s) is cut at once; ordinary HTTP/2 requests are served."""
    events = await asyncio.to_thread(ping_burst, server, 6 * MAX_CONTROL_FRAMES_PER_S)
    [goaway] = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway.additional_data == TOO_MANY_CONTROL_FRAMES

    async def flood() -> int:
        """PINGs in bursts of 3,000 for up to 4 s, reading the answers; how many bursts
        the server took."""
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answers = asyncio.create_task(reader.read(-1))  # to the end: the server's ACKs
        bursts = 0
        try:
            async with asyncio.timeout(4):
                while True:
                    for _ in range(3000):
                        client.ping(b"12345678")
                    writer.write(client.data_to_send())
                    await writer.drain()
                    bursts += 1
        except (TimeoutError, ConnectionError):
            pass
        writer.close()
        answers.cancel()
        await asyncio.gather(answers, return_exceptions=True)
        return bursts

    async with bystander(server, rounds=2):
        bursts = await flood()
    assert bursts < 100, f"{bursts} bursts of 3,000 PINGs were taken"
    async with httpx.AsyncClient(http1=False, http2=True) as prior_knowledge:
        responses = await asyncio.gather(
            *(prior_knowledge.get(server.url + "/healthz") for _ in range(50))
        )
    assert {(r.http_version, r.status_code) for r in responses} == {("HTTP/2", 200)}
    assert_alive(server)
