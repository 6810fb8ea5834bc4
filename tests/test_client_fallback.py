"""app.client's transport ladder against real servers and a blocking proxy:
WebSocket, then SSE, then long-poll, each move logged with its reason."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.client import FeedRefused, follow
from tests.blocking_proxy import BlockingProxy
from tests.client_support import publish_steadily, take, take_until
from tests.support import ServerProcess

pytestmark = pytest.mark.asyncio


def fallback_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "app.client"
        and r.levelno == logging.WARNING
        and "falling back" in r.getMessage()
    ]


async def test_a_websocket_refused_for_its_origin_falls_back_to_sse(
    start_server, caplog: pytest.LogCaptureFixture
):
    """A foreign Origin gets the WebSocket handshake refused (403): the feed reads
    SSE instead, and the server's reason is logged and kept in feed.problems."""
    server = start_server(LIVEFEED_ALLOWED_ORIGINS="http://app.example")
    caplog.set_level(logging.INFO, logger="app.client")
    ids = server.publish([{"type": "t"}] * 3)
    foreign = {"Origin": "http://elsewhere.example"}
    async with follow(server.url, last_event_id=0, headers=foreign) as feed:
        got = await take(feed, 3)
        assert feed.transport == "sse"
        assert "origin_not_allowed" in feed.problems["ws"]
    assert [event.id for event in got] == ids
    [logged] = fallback_records(caplog)
    assert "HTTP 403 origin_not_allowed" in logged and logged.endswith("falling back to SSE")


async def test_with_websocket_and_sse_blocked_the_feed_long_polls(
    server: ServerProcess, caplog: pytest.LogCaptureFixture
):
    """A proxy that refuses /ws/ and /sse/ leaves long-poll, which still delivers
    replayed and live events once each, in order."""
    caplog.set_level(logging.INFO, logger="app.client")
    ids = server.publish([{"type": "t"}] * 3)
    async with BlockingProxy(server.port, {"/ws/", "/sse/"}) as proxy:
        async with follow(proxy.url, last_event_id=0, poll_wait_s=5) as feed:
            got = await take(feed, 3)
            ids += await asyncio.to_thread(server.publish, [{"type": "t"}] * 4)
            got += await take(feed, 4)
            assert feed.transport == "poll" and set(feed.problems) == {"ws", "sse"}
        assert {path.split("?")[0] for path in proxy.refused} == {
            "/ws/validation_updates",
            "/sse/validation_updates",
        }
    assert [event.id for event in got] == ids
    logged = fallback_records(caplog)
    assert [line.rsplit(" ", 1)[-1] for line in logged] == ["SSE", "long-poll"]


@pytest.mark.parametrize("blocked", [{"/ws/"}, {"/ws/", "/sse/"}])
async def test_a_better_transport_is_tried_again_and_taken_back(
    server: ServerProcess, blocked: set[str]
):
    """While on a fallback, WebSocket is tried again; once the proxy lets it through
    the feed moves back to it, with no gap and no duplicate at the switch."""
    stop = asyncio.Event()
    async with BlockingProxy(server.port, blocked) as proxy:
        async with follow(
            proxy.url, last_event_id=0, upgrade_interval_s=0.5, poll_wait_s=2
        ) as feed:
            publishing = asyncio.create_task(publish_steadily(server.url, stop, every_s=0.02))
            got = await take(feed, 10)
            assert feed.transport == ("sse" if blocked == {"/ws/"} else "poll")
            proxy.blocked.clear()
            got += await take_until(feed, lambda _: feed.transport == "ws")
            got += await take(feed, 10)
            stop.set()
            await publishing
            final = await asyncio.to_thread(server.events)
            got += await take_until(feed, lambda more: (got + more)[-1].id >= final[-1]["id"])
            assert not feed.problems
    assert [event.id for event in got] == [event["id"] for event in final]


async def test_a_pinned_transport_that_is_blocked_ends_the_feed(server: ServerProcess):
    """transport="ws" behind a proxy that refuses WebSockets raises FeedRefused,
    since no other transport may be tried."""
    async with BlockingProxy(server.port, {"/ws/"}) as proxy:
        with pytest.raises(FeedRefused) as refused:
            async with follow(proxy.url, transport="ws") as feed:
                await take(feed, 1)
    assert refused.value.status == 403 and "Blocked by the proxy" in refused.value.detail


async def test_a_stopped_server_is_waited_for_on_websocket(server: ServerProcess):
    """A server that is down refuses connections: the feed keeps to WebSocket and
    resumes there when the server is back, instead of falling back."""
    async with follow(server.url, last_event_id=0, backoff_max_s=1) as feed:
        ids = server.publish([{"type": "t"}] * 2)
        await take(feed, 2)
        reading = asyncio.create_task(take(feed, 2))
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(3)  # several attempts find nothing listening
        await asyncio.to_thread(server.start)
        ids += await asyncio.to_thread(server.publish, [{"type": "t"}] * 2)
        got = await reading
        assert feed.transport == "ws" and not feed.problems
    assert [event.id for event in got] == ids[2:]
