"""Several workers on one SQLite file: every worker serves the whole log."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import ServerProcess, eventually, every_worker_answers, ws_on_every_worker

pytestmark = pytest.mark.serial  # spreading connections over workers needs both to run

JSON = {"Content-Type": "application/json"}
#: A poll this slow cannot deliver within the tests' limits: only a nudge can.
SLOW_POLL = {"LIVEFEED_POLL_INTERVAL_S": "60"}


def test_two_workers_deliver_an_event_published_through_either(start_server):
    """16 subscribers spread over 2 workers all get events published through one
    connection, within 1 s, in order; /metrics sums both workers."""
    server: ServerProcess = start_server(LIVEFEED_WORKERS="2")
    assert len(every_worker_answers(server.url, 2)) == 2  # both workers up, one port

    async def scenario() -> None:
        sockets, nodes = await ws_on_every_worker(
            server.ws_url + "/ws/validation_updates", workers=2, at_least=16
        )
        try:
            assert len(nodes) == 2  # connections reached both workers
            async with httpx.AsyncClient(base_url=server.url) as client:
                metrics = (await client.get("/metrics")).text
                gauge = rf'livefeed_connections\{{transport="websocket"\}} {len(sockets)}\.0'
                assert re.search(gauge, metrics)
                sent = time.monotonic()
                for n in range(5):
                    response = await client.post(
                        "/api/events",
                        content=orjson.dumps({"type": "t", "data": {"n": n}}),
                        headers={"Content-Type": "application/json"},
                    )
                    assert response.status_code == 201

            async def five(ws) -> tuple[list[int], float]:
                ids = [orjson.loads(await ws.recv())["id"] for _ in range(5)]
                return ids, time.monotonic() - sent

            async with asyncio.timeout(5):
                results = await asyncio.gather(*(five(ws) for ws in sockets))
        finally:
            for ws in sockets:
                await ws.close()
        for ids, elapsed in results:
            assert ids == [1, 2, 3, 4, 5]
            assert elapsed < 1.0

    asyncio.run(scenario())
    assert server.stop() == 0  # SIGTERM reaches both workers, which exit cleanly


async def publish_through(url: str) -> tuple[str, int, float]:
    """One event through one new connection: the worker that took it (its
    /api/stats on the same connection), the id, and when it was sent."""
    async with httpx.AsyncClient(base_url=url) as client:
        node = (await client.get("/api/stats")).json()["node"]
        sent = time.monotonic()
        response = await client.post("/api/events", content=b'{"type":"t"}', headers=JSON)
        assert response.status_code == 201, response.text
        return node, response.json()["id"], sent


async def delays_on_every_worker(server: ServerProcess) -> tuple[set[str], list[float]]:
    """Subscribers on both workers; events published through both (new connections
    until each worker has taken one); every subscriber must get every event. The
    workers that took a publish, and each delivery's delay."""
    sockets, nodes = await ws_on_every_worker(
        server.ws_url + "/ws/validation_updates", workers=2, at_least=4
    )
    try:
        assert len(nodes) == 2
        sent: dict[int, float] = {}
        via: set[str] = set()
        # Which worker accepts a connection is the kernel's choice: one at a time they
        # spread (73 / 127 of 200 in one count), but a run of dozens on one worker was
        # seen in a full CI run, so look until a deadline rather than for 64 tries.
        deadline = time.monotonic() + 30
        while via != nodes and time.monotonic() < deadline:
            node, event_id, at = await publish_through(server.url)
            via.add(node)
            sent[event_id] = at
            await asyncio.sleep(0.01)  # both workers back in epoll: a fair race

        async def delays(ws) -> list[float]:
            frames = [orjson.loads(await ws.recv()) for _ in sent]
            assert [frame["id"] for frame in frames] == sorted(sent)
            return [time.monotonic() - sent[frame["id"]] for frame in frames]

        async with asyncio.timeout(20):
            results = await asyncio.gather(*(delays(ws) for ws in sockets))
    finally:
        for ws in sockets:
            await ws.close()
    return via, [delay for result in results for delay in result]


def test_workers_nudge_each_other_so_delivery_does_not_wait_for_the_poll(start_server):
    """With the poll 60 s away, an event published through either worker reaches the
    subscribers of the other within seconds: the appending worker nudges the others.
    A worker killed with SIGKILL is restarted and nudges, and is nudged, the same way."""
    server: ServerProcess = start_server(LIVEFEED_WORKERS="2", **SLOW_POLL)

    via, delays = asyncio.run(delays_on_every_worker(server))
    assert len(via) == 2  # each worker published, so each was nudged
    assert max(delays) < 5.0, delays

    nodes = every_worker_answers(server.url, 2)
    assert len(nodes) == 2
    victim = int(sorted(nodes)[0].rsplit("/", 1)[1])
    os.kill(victim, signal.SIGKILL)
    eventually(
        lambda: len(every_worker_answers(server.url, 2, timeout_s=5) - nodes) == 1,
        timeout_s=30,
        what="a new worker",
    )

    via, delays = asyncio.run(delays_on_every_worker(server))
    assert len(via) == 2 and not any(node.endswith(f"/{victim}") for node in via)
    assert max(delays) < 5.0, delays
    assert server.stop() == 0


def test_separate_servers_on_one_file_see_each_others_events_through_the_poll(
    tmp_path: Path,
) -> None:
    """Two `serve` processes without a supervisor share no nudges: the poll of the
    database (50 ms by default) is how each learns of the other's appends."""
    database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = ServerProcess(tmp_path / "a", database_url=database_url)
    second = ServerProcess(tmp_path / "b", database_url=database_url)

    async def scenario() -> list[list[int]]:
        sockets, _ = await ws_on_every_worker(
            first.ws_url + "/ws/validation_updates", workers=1, at_least=1
        )
        more, _ = await ws_on_every_worker(
            second.ws_url + "/ws/validation_updates", workers=1, at_least=1
        )
        sockets += more
        try:
            ids = [(await publish_through(server.url))[1] for server in (first, second)]
            async with asyncio.timeout(5):
                return [[orjson.loads(await ws.recv())["id"] for _ in ids] for ws in sockets]
        finally:
            for ws in sockets:
                await ws.close()

    try:
        first.start()
        second.start()
        received = asyncio.run(scenario())
    finally:
        first.kill()
        second.kill()
    assert received == [[1, 2], [1, 2]]


def test_bursts_of_new_connections_spread_over_the_workers(start_server):
    """Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads
    connections by address; on one shared socket, the worker that woke first took
    nearly every connection of a burst (199 of 200 opened four at a time)."""
    server: ServerProcess = start_server(LIVEFEED_WORKERS="2")
    assert len(every_worker_answers(server.url, 2)) == 2  # both are up

    async def nodes_of_bursts() -> list[str]:
        async def one() -> str:
            async with httpx.AsyncClient(base_url=server.url) as client:
                return (await client.get("/api/stats")).json()["node"]

        taken: list[str] = []
        for _ in range(25):
            taken += await asyncio.gather(*(one() for _ in range(4)))
        return taken

    taken = asyncio.run(nodes_of_bursts())
    counts = sorted(taken.count(node) for node in set(taken))
    assert len(counts) == 2 and counts[0] >= 25, counts  # 50 / 50 expected of 100
    assert server.stop() == 0
