"""Store faults and crashes (FAULTS 38, 40, 41): 503, nothing half-written, recovery."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support import ROOT, ServerProcess, collect_sse, event_ids


def post(server: ServerProcess, body: object) -> httpx.Response:
    return httpx.post(
        server.url + "/api/events",
        content=orjson.dumps(body),
        timeout=30,
        headers={"Content-Type": "application/json"},
    )


def test_locked_database_gives_503_keeps_streams_and_recovers(server: ServerProcess):
    """Another process holding the write lock: publish 503 + Retry-After, /readyz 503,
    open streams stay open; when the lock goes, everything works again by itself."""
    server.publish({"type": "before"})
    path = server.database_url.removeprefix("sqlite:///")

    async def scenario() -> None:
        async with connect(server.ws_url + "/ws/validation_updates?last_event_id=0") as ws:
            assert orjson.loads(await ws.recv())["type"] == "connection_established"
            assert orjson.loads(await ws.recv())["id"] == 1
            locker = sqlite3.connect(path, isolation_level=None, timeout=1)
            locker.execute("BEGIN IMMEDIATE")
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                    refused = await client.post(
                        "/api/events",
                        content=b'{"type":"during"}',
                        headers={"Content-Type": "application/json"},
                    )
                    assert refused.status_code == 503 and refused.json()["error"] == "unavailable"
                    assert "locked" in refused.json()["detail"]
                    assert refused.headers["retry-after"] == "1"
                    assert (await client.get("/readyz")).status_code == 503
                    await ws.send('{"type":"ping"}')
                    assert orjson.loads(await ws.recv()) == {"type": "pong"}
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            [after] = server.publish({"type": "after"})
            assert orjson.loads(await ws.recv())["id"] == after

    asyncio.run(scenario())
    assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
    assert [e["type"] for e in server.events()] == ["before", "after"]


def test_full_disk_gives_503_writes_nothing_partial_and_recovers_after_trim(start_server):
    """When the database cannot grow, batches fail whole; trimming makes room again."""
    server = start_server(LIVEFEED_SQLITE_MAX_BYTES="262144")
    statuses = []
    for n in range(60):
        response = post(server, [{"type": "fill", "data": {"batch": n, "pad": "x" * 2000}}] * 10)
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert "full" in response.json()["detail"]
            break
    assert statuses[-1] == 503 and statuses[0] == 201
    per_batch = Counter(e["data"]["batch"] for e in server.events())
    assert set(per_batch.values()) == {10}  # every stored batch is whole
    assert httpx.get(server.url + "/readyz").status_code == 503
    trim = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "trim",
            "--retention",
            "20",
            "--database-url",
            server.database_url,
        ],
        capture_output=True,
        timeout=60,
    )
    assert trim.returncode == 0, trim.stderr
    assert post(server, [{"type": "after", "data": {"pad": "y" * 2000}}] * 10).status_code == 201
    assert httpx.get(server.url + "/readyz").status_code == 200


@pytest.mark.parametrize(
    "batch_size",
    [lambda index: 1 + index * 3, lambda index: 1000],
    ids=["batches_of_1_to_10", "batches_of_1000"],
)
def test_kill_9_during_publishing_loses_no_acknowledged_event(
    server: ServerProcess, batch_size: Callable[[int], int]
):
    """FAULTS 38: kill -9 while 4 publishers publish (batches of 1-10 events, or of 1000,
    the largest allowed): every 201 is in the log after restart, batches are whole, ids
    still increase, and a client resuming with its last id gets the rest."""
    acknowledged: list[int] = []
    batches: dict[str, int] = {}
    cut_off: list[int] = []  # sizes of the batches whose request the kill cut off
    stop = threading.Event()

    def publisher(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not stop.is_set():
                batch_id, size = uuid.uuid4().hex, batch_size(index)
                batches[batch_id] = size
                body = orjson.dumps([{"type": "load", "data": {"batch": batch_id}}] * size)
                try:
                    response = client.post(
                        "/api/events", content=body, headers={"Content-Type": "application/json"}
                    )
                except httpx.HTTPError:
                    cut_off.append(size)
                    return
                if response.status_code == 201:
                    acknowledged.extend(e["id"] for e in response.json()["events"])

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join()
    server.start()
    stored = server.events()
    ids = [e["id"] for e in stored]
    assert len(acknowledged) > 100
    assert cut_off, "the server was not killed in the middle of publishing"
    assert set(acknowledged) <= set(ids)
    assert ids == sorted(set(ids))
    per_batch = Counter(e["data"]["batch"] for e in stored)
    assert all(count == batches[batch] for batch, count in per_batch.items())
    [new] = server.publish({"type": "after_crash"})
    assert new > ids[-1]
    resume_from = acknowledged[max(len(acknowledged) // 2, len(acknowledged) - 2500)]
    messages = asyncio.run(
        collect_sse(
            server.url + f"/sse/validation_updates?last_event_id={resume_from}",
            lambda ms: bool(event_ids(ms)) and event_ids(ms)[-1] == new,
            timeout=20,
        )
    )
    assert event_ids(messages) == [i for i in ids if i > resume_from] + [new]


def test_sigterm_with_a_thousand_open_streams_exits_within_the_graceful_timeout(start_server):
    """FAULTS 37 at scale: 1,000 SSE streams each get the jittered goodbye, and the server
    exits cleanly well within its 10 s graceful timeout."""
    server = start_server()

    async def scenario() -> tuple[int, float]:
        streams = []
        request = (
            f"GET /sse/validation_updates HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"
        ).encode()
        for _ in range(1000):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            streams.append((reader, writer))
        try:
            for reader, _ in streams:
                async with asyncio.timeout(10):
                    await reader.readuntil(b"connection_established")
            started = time.monotonic()
            server.process.terminate()

            async def farewell(reader: asyncio.StreamReader) -> bool:
                return b"shutting_down" in await reader.read()  # to the end of the stream

            async with asyncio.timeout(15):
                told = await asyncio.gather(*(farewell(reader) for reader, _ in streams))
            code = await asyncio.to_thread(server.process.wait, 15)
            return sum(told), time.monotonic() - started if code == 0 else float("inf")
        finally:
            for _, writer in streams:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for _, w in streams), return_exceptions=True)

    told, elapsed = asyncio.run(scenario())
    assert told == 1000
    assert elapsed < 10
