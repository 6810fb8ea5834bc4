"""Exports and ``follow=1`` are streams: the write timeout, the connection caps, the
metrics, and memory that does not grow with the size of what is exported."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from tests.support import ServerProcess
from tests.test_hostile import proc_status
from tests.test_publish import assert_error
from tests.test_slow_clients import metric

WRITE_TIMEOUT_S = 2.0
BIG_EVENT = {"type": "audit", "workflow_id": "wf_big", "data": {"pad": "x" * 16_000}}


def stuck_request(server: ServerProcess, query: str) -> socket.socket:
    """A client that asks for ``/api/events?<query>`` and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    head = f"GET /api/events?{query} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"
    sock.sendall(head.encode())
    return sock


def poll_connections(server: ServerProcess) -> int:
    return int(httpx.get(server.url + "/api/stats").json()["connections"]["poll"])


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def big_log(start_server: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """A server whose log holds 1000 events of 16 KB (16 MB), write timeout 2 s."""
    server = start_server(LIVEFEED_WRITE_TIMEOUT_S=str(WRITE_TIMEOUT_S))
    for _ in range(4):
        server.publish([BIG_EVENT] * 250)
    yield server


def test_never_reading_exports_are_counted_cut_and_hold_little_memory(big_log: ServerProcess):
    """Four clients that never read a 16 MB export: counted as poll connections, cut at
    the write timeout (counted as write_timeout), and the server's memory grows by a
    few MB, not by a page of events each (about 100 MB each before)."""
    server = big_log
    rss_before = proc_status(server, "VmRSS")
    queries = ["format=ndjson", "format=csv", "format=ndjson&follow=1&after=0", "format=ndjson"]
    stuck = [stuck_request(server, query) for query in queries]
    try:
        wait_for(lambda: poll_connections(server) == 4, 5, "four poll connections")
        time.sleep(WRITE_TIMEOUT_S / 2)
        growth_mib = (proc_status(server, "VmRSS") - rss_before) / 1024
        assert growth_mib < 60, f"RSS grew {growth_mib:.0f} MiB for four stalled exports"
        waited = wait_for(lambda: poll_connections(server) == 0, 10, "the exports to be cut")
        assert waited < WRITE_TIMEOUT_S + 2
        metrics = httpx.get(server.url + "/metrics").text
        labels = {"transport": "poll", "reason": "write_timeout"}
        assert metric(metrics, "livefeed_disconnects_total", **labels) == 4
    finally:
        for sock in stuck:
            sock.close()


def test_exports_and_follows_take_a_slot_under_the_per_client_cap(
    start_server: Callable[..., ServerProcess],
):
    """With LIVEFEED_MAX_CONNECTIONS_PER_CLIENT=2, a third export or follow is a 503 JSON
    answer with Retry-After, and a slot is free again once an export ends."""
    server = start_server(LIVEFEED_MAX_CONNECTIONS_PER_CLIENT="2")

    async def scenario() -> None:
        follow = {"format": "ndjson", "follow": "1"}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with contextlib.AsyncExitStack() as second:
                async with client.stream("GET", "/api/events", params=follow) as first:
                    assert first.status_code == 200
                    held = await second.enter_async_context(
                        client.stream("GET", "/api/events", params=follow)
                    )
                    assert held.status_code == 200
                    third = await client.get("/api/events", params={"format": "csv"})
                    assert_error(third, 503, "overloaded")
                    assert third.headers["retry-after"]
                    assert_error(await client.get("/api/events", params=follow), 503, "overloaded")
                for _ in range(50):  # the first follow closed: its slot comes back
                    answer = await client.get("/api/events", params={"format": "csv"})
                    if answer.status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the slot of the closed follow was never freed")

    asyncio.run(scenario())


async def follow_lines(server: ServerProcess, count: int, publish: bool, **params: str) -> list:
    """The first ``count`` NDJSON lines of a follow; publishes one live event once it opened."""
    lines: list[dict] = []
    query = {"format": "ndjson", "follow": "1", **params}
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", server.url + "/api/events", params=query) as answer,
    ):
        assert answer.status_code == 200
        if publish:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.publish, {"type": "live"})
        async for line in answer.aiter_lines():
            if line.strip():
                lines.append(orjson.loads(line))
            if len(lines) == count:
                break
    return lines


def test_follow_without_a_cursor_is_tail_f(server: ServerProcess):
    """Without after=, a follow starts with the last 10 matching events (tail=N chooses
    how many, tail=0 none), then live ones; after=0 still replays everything."""
    ids = server.publish([{"type": "old", "data": {"n": n}} for n in range(30)])
    last_ten = asyncio.run(follow_lines(server, 11, publish=True))
    assert [line["id"] for line in last_ten[:10]] == ids[-10:]
    assert last_ten[10]["type"] == "live"
    three = asyncio.run(follow_lines(server, 3, publish=False, tail="3"))
    assert [line["id"] for line in three] == [ids[-2], ids[-1], ids[-1] + 1]
    live_only = asyncio.run(follow_lines(server, 1, publish=True, tail="0"))
    assert [line["type"] for line in live_only] == ["live"]
    everything = asyncio.run(follow_lines(server, 30, publish=False, after="0"))
    assert [line["id"] for line in everything] == ids


def test_tail_is_only_for_follow(server: ServerProcess):
    """tail= on a page or a plain export is a 400, as any parameter that does not apply."""
    for params in ({"tail": "5"}, {"format": "csv", "tail": "5"}, {"follow": "1", "tail": "5"}):
        answer = httpx.get(server.url + "/api/events", params=params)
        assert_error(answer, 400, "bad_parameter")
    over = {"format": "ndjson", "follow": "1", "tail": "1001"}
    assert_error(httpx.get(server.url + "/api/events", params=over), 400, "bad_parameter")
