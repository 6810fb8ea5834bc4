"""Several workers on one SQLite file: every worker serves the whole log."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import orjson

from tests.support import ServerProcess, ws_on_every_worker


def test_two_workers_deliver_an_event_published_through_either(start_server):
    """16 subscribers spread over 2 workers all get events published through one
    connection, within 1 s, in order; /metrics sums both workers."""
    server: ServerProcess = start_server(LIVEFEED_WORKERS="2")
    answering: set[str] = set()
    deadline = time.monotonic() + 10
    while len(answering) < 2 and time.monotonic() < deadline:  # both workers up, one port
        answering.add(httpx.get(server.url + "/api/stats").json()["node"])
    assert len(answering) == 2

    async def scenario() -> None:
        sockets, nodes = await ws_on_every_worker(
            server.ws_url + "/ws/validation_updates", workers=2, at_least=16)
        try:
            assert len(nodes) == 2  # connections reached both workers
            async with httpx.AsyncClient(base_url=server.url) as client:
                metrics = (await client.get("/metrics")).text
                gauge = rf'livefeed_connections\{{transport="websocket"\}} {len(sockets)}\.0'
                assert re.search(gauge, metrics)
                sent = time.monotonic()
                for n in range(5):
                    response = await client.post(
                        "/api/events", content=orjson.dumps({"type": "t", "data": {"n": n}}),
                        headers={"Content-Type": "application/json"})
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
