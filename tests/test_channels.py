"""Several channels on one connection, changing them while it is open, and publishing
over WebSocket: real servers, real clients, the log as the judge."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.events import Draft, EventFilter
from app.hub import Hub
from app.store.sqlite import SqliteStore
from tests.support import ServerProcess, collect_sse, event_ids

pytestmark = pytest.mark.both_engines

WORKFLOWS = ("wf_a", "wf_b", "wf_c")


def publish_round(server: ServerProcess, count: int, batch: int = 1) -> None:
    """``count`` events spread over the workflows, in batches of ``batch``."""
    drafts = [
        {"type": "tick", "workflow_id": WORKFLOWS[n % 3], "data": {"n": n}} for n in range(count)
    ]
    for start in range(0, count, batch):
        server.publish(drafts[start : start + batch])


def of_channels(log: list[dict[str, Any]], channels: set[str], low: int, high: int) -> list[int]:
    """Ids in (low, high] of the log's events on ``channels``."""
    return [e["id"] for e in log if low < e["id"] <= high and e["workflow_id"] in channels]


async def frames(ws: ClientConnection, until: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
    """Frames (a batch frame is unpacked) until ``until(frames)``; 20 s at most."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while not until(seen):
            parsed = orjson.loads(await ws.recv())
            seen.extend(parsed if isinstance(parsed, list) else [parsed])
    return seen


def check_stream(
    seen: list[dict[str, Any]],
    log: list[dict[str, Any]],
    start: set[str],
    after: int,
    complete: bool = False,
) -> None:
    """The contract of a changing stream, against the log: between two ``subscribed``
    frames (at N1 < N2) the events are exactly the log's events in (N1, N2] of the
    channels followed then, in order, once; the last stretch is its part of the log
    (all of it when ``complete``, else a prefix)."""
    channels, low, stretch = set(start), after, []
    for frame in seen:
        if frame.get("type") == "subscribed":
            assert frame["cursor"] >= low, (frame, low)
            assert stretch == of_channels(log, channels, low, frame["cursor"]), frame
            channels, low, stretch = set(frame["channels"]), frame["cursor"], []
        elif "id" in frame:
            stretch.append(frame["id"])
    expected = of_channels(log, channels, low, 2**63)
    assert stretch == (expected if complete else expected[: len(stretch)]), (
        stretch[-5:],
        expected[-5:],
    )


def test_sse_ws_and_pages_follow_a_list_of_channels_once_in_order(server: ServerProcess):
    """/sse/wf_a,wf_b, /ws/wf_a,wf_b and ?workflow_id=wf_a,wf_b carry exactly the events of
    either workflow, in id order, once (replayed and live)."""
    publish_round(server, 30, batch=4)
    log = server.events()
    wanted = of_channels(log, {"wf_a", "wf_b"}, 0, 2**63)

    async def scenario() -> None:
        async with connect(server.ws_url + "/ws/wf_a,wf_b,wf_a?last_event_id=0") as ws:
            hello = orjson.loads(await ws.recv())
            assert hello["workflow_id"] == "wf_a,wf_b" and hello["channels"] == ["wf_a", "wf_b"]
            replayed = await frames(ws, lambda seen: len(seen) >= len(wanted))
            assert [f["id"] for f in replayed] == wanted
            await asyncio.to_thread(publish_round, server, 9)
            live_ids = of_channels(server.events(), {"wf_a", "wf_b"}, wanted[-1], 2**63)
            live = await frames(ws, lambda seen: len(seen) >= len(live_ids))
            assert [f["id"] for f in live] == live_ids
        messages = await collect_sse(
            server.url + "/sse/wf_b,wf_a?last_event_id=0",
            lambda ms: len(event_ids(ms)) >= len(wanted) + len(live_ids),
        )
        assert event_ids(messages) == wanted + live_ids

    asyncio.run(scenario())
    page = httpx.get(server.url + "/api/events", params={"workflow_id": "wf_a,wf_b"}).json()
    assert [e["id"] for e in page["events"]] == of_channels(
        server.events(), {"wf_a", "wf_b"}, 0, 2**63
    )


def test_validation_updates_in_a_list_means_every_event(server: ServerProcess):
    """A list naming the all-events channel carries every event."""
    publish_round(server, 6)
    messages = asyncio.run(
        collect_sse(
            server.url + "/sse/wf_a,validation_updates?last_event_id=0",
            lambda ms: len(event_ids(ms)) >= 6,
        )
    )
    assert event_ids(messages) == [e["id"] for e in server.events()]


@pytest.mark.parametrize(
    ("segment", "status", "error"),
    [
        ("wf_a,,wf_b", 400, "bad_channel"),
        ("wf_a,bad!name", 400, "bad_channel"),
        (",".join(f"wf_{n}" for n in range(51)), 400, "too_many_channels"),
        ("wf_a/wf_b", 404, "not_found"),
    ],
)
def test_a_bad_channel_list_is_refused_naming_it_on_every_surface(
    server: ServerProcess, segment: str, status: int, error: str
):
    """An empty or malformed name, or more than 50, is 400 JSON naming it (404 stays for
    paths of another shape), on SSE, WebSocket and the paged API."""
    answer = httpx.get(server.url + "/sse/" + segment)
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(_open(server.ws_url + "/ws/" + segment))
    assert refused.value.response.status_code == status
    assert orjson.loads(refused.value.response.body or b"{}")["error"] == error
    if "/" not in segment:
        page = httpx.get(server.url + "/api/events", params={"workflow_id": segment})
        assert (page.status_code, page.json()["error"]) == (400, error)
        if "bad" in segment:
            assert "bad!name" in page.json()["detail"]


async def _open(url: str) -> None:
    async with connect(url) as ws:
        await ws.recv()


def test_fifty_channels_are_fine_and_repeats_do_not_count(server: ServerProcess):
    """Up to 50 distinct names (repeats ignored) open a stream."""
    names = [f"wf_{n}" for n in range(50)] * 2
    hello = asyncio.run(_hello(server.ws_url + "/ws/" + ",".join(names)))
    assert len(hello["channels"]) == 50


async def _hello(url: str) -> dict[str, Any]:
    async with connect(url) as ws:
        return dict(orjson.loads(await ws.recv()))


def test_bare_ws_follows_nothing_until_it_subscribes(server: ServerProcess):
    """GET /ws follows nothing; subscribe answers the whole list and the cursor, and
    events after the cursor of the added channel follow; unsubscribe stops them."""

    async def scenario() -> None:
        async with connect(server.ws_url + "/ws") as ws:
            hello = orjson.loads(await ws.recv())
            assert hello["workflow_id"] is None and hello["channels"] == []
            await asyncio.to_thread(publish_round, server, 3)
            await ws.send('{"type":"subscribe","channels":["wf_b","wf_c"]}')
            seen = await frames(ws, lambda s: any(f.get("type") == "subscribed" for f in s))
            assert seen[-1]["channels"] == ["wf_b", "wf_c"] and seen[-1]["cursor"] == 3
            assert not [f for f in seen if "id" in f]
            [b] = await asyncio.to_thread(server.publish, {"type": "x", "workflow_id": "wf_b"})
            assert (await frames(ws, lambda s: bool(s)))[0]["id"] == b
            await ws.send('{"type":"unsubscribe","channels":["wf_b"]}')
            seen = await frames(ws, lambda s: any(f.get("type") == "subscribed" for f in s))
            assert seen[-1]["channels"] == ["wf_c"]
            await asyncio.to_thread(server.publish, {"type": "x", "workflow_id": "wf_b"})
            [c] = await asyncio.to_thread(server.publish, {"type": "x", "workflow_id": "wf_c"})
            assert (await frames(ws, lambda s: bool(s)))[0]["id"] == c

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "subscribe", "channels": ["bad name"]}, "bad_channel"),
        ({"type": "subscribe", "channels": []}, "bad_message"),
        ({"type": "subscribe", "channels": "wf_a"}, "bad_message"),
        ({"type": "subscribe", "channels": [f"wf_{n}" for n in range(50)]}, "too_many_channels"),
        ({"type": "teleport"}, "bad_message"),
    ],
)
def test_a_bad_subscribe_is_a_stream_error_and_the_connection_stays(
    server: ServerProcess, message: dict[str, Any], error: str
):
    """Malformed names, an empty list, or a list that would exceed 50 are stream_error;
    the connection stays open and keeps what it followed."""

    async def scenario() -> None:
        async with connect(server.ws_url + "/ws/wf_a") as ws:
            await ws.recv()
            await ws.send(orjson.dumps(message).decode())
            reply = orjson.loads(await ws.recv())
            assert reply["type"] == "stream_error" and reply["error"] == error, reply
            await ws.send('{"type":"ping"}')
            assert orjson.loads(await ws.recv()) == {"type": "pong"}

    asyncio.run(scenario())


def test_a_subscribe_the_token_does_not_cover_is_forbidden(start_server: Callable[..., Any]):
    """A channel outside the JWT's channels claim is stream_error forbidden."""
    import time

    import jwt

    secret = "s" * 32
    server = start_server(LIVEFEED_TOKEN_SECRET=secret)
    token = jwt.encode({"exp": int(time.time()) + 60, "channels": ["wf_a"]}, secret)

    async def scenario() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(server.ws_url + "/ws/wf_a", additional_headers=headers) as ws:
            await ws.recv()
            await ws.send('{"type":"subscribe","channels":["wf_b"]}')
            reply = orjson.loads(await ws.recv())
            assert reply["type"] == "stream_error" and reply["error"] == "forbidden"

    asyncio.run(scenario())


class Publisher:
    """Publishes to the three workflows without pause until stopped."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                size = random.choice((1, 1, 3, 20))
                batch = [
                    {"type": "tick", "workflow_id": random.choice(WORKFLOWS), "data": {"n": n + i}}
                    for i in range(size)
                ]
                n += size
                assert client.post("/api/events", json=batch).status_code == 201

    def __enter__(self) -> Publisher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


CHANGES = [
    ("subscribe", ["wf_b"]),
    ("unsubscribe", ["wf_a"]),
    ("subscribe", ["wf_c", "wf_a"]),
    ("unsubscribe", ["wf_b", "wf_c"]),
    ("subscribe", ["wf_b"]),
]


async def change_while_streaming(
    server: ServerProcess, url: str, pause_s: float = 0.0, reader_pause_s: float = 0.0
) -> tuple[list[dict[str, Any]], int]:
    """Open ``url`` on wf_a, send every change in CHANGES while events keep coming, then
    stop publishing and collect the stream until it has caught up with the log;
    optionally stop reading for ``reader_pause_s`` before each change (a backlog
    queues)."""
    with Publisher(server) as publisher:
        return await _change(url, publisher, pause_s, reader_pause_s)


async def _change(
    url: str, publisher: Publisher, pause_s: float, reader_pause_s: float
) -> tuple[list[dict[str, Any]], int]:
    async with connect(url, max_queue=None, max_size=None) as ws:
        hello = orjson.loads(await ws.recv())
        after = hello["resumed_from"] if hello["resumed_from"] is not None else hello["latest_id"]
        seen: list[dict[str, Any]] = []

        async def read(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    while True:
                        parsed = orjson.loads(await ws.recv())
                        seen.extend(parsed if isinstance(parsed, list) else [parsed])

        for kind, channels in CHANGES:
            await read(pause_s)
            if reader_pause_s:
                await asyncio.sleep(reader_pause_s)  # not reading: the server queues
            await ws.send(orjson.dumps({"type": kind, "channels": channels}).decode())
        publisher.stop.set()
        await asyncio.to_thread(publisher.thread.join, 10)
        log = await asyncio.to_thread(publisher.server.events)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):  # until the stream has caught up with the log
                while not caught_up(seen, log):
                    await read(0.2)
        await read(0.3)  # and nothing after it
        return seen, after


def caught_up(seen: list[dict[str, Any]], log: list[dict[str, Any]]) -> bool:
    """Whether the last change has been announced and every event it covers arrived."""
    changes = [frame for frame in seen if frame.get("type") == "subscribed"]
    if len(changes) < len(CHANGES):
        return False
    last = changes[-1]
    due = of_channels(log, set(last["channels"]), last["cursor"], 2**63)
    return not due or any(frame.get("id") == due[-1] for frame in seen[-50:])


def settle(server: ServerProcess, seen: list[dict[str, Any]], after: int) -> None:
    log = server.events()
    subscribed = [f for f in seen if f.get("type") == "subscribed"]
    assert [f["channels"] for f in subscribed] == [
        ["wf_a", "wf_b"],
        ["wf_b"],
        ["wf_b", "wf_c", "wf_a"],
        ["wf_a"],
        ["wf_a", "wf_b"],
    ]
    check_stream(seen, log, {"wf_a"}, after, complete=True)


@pytest.mark.parametrize("batch", ["0", "1"])
def test_changes_while_publishing_never_stops_leave_no_gap_or_duplicate(
    server: ServerProcess, batch: str
):
    """Subscribe/unsubscribe on a live, busy connection while publishing never stops: at
    each subscribed frame's cursor N the stream switches exactly (no gap, duplicate or
    reorder for what stays followed; nothing <= N for what is added)."""
    seen, after = asyncio.run(
        change_while_streaming(server, server.ws_url + f"/ws/wf_a?batch={batch}", 0.3)
    )
    settle(server, seen, after)


def test_changes_while_catching_up_beyond_the_ring_are_exact(server: ServerProcess):
    """Changes sent while the connection still replays from the log (more events than
    the hub keeps in memory) apply at its cursor in the replay, exactly."""
    publish_round(server, 9000, batch=1000)
    seen, after = asyncio.run(
        change_while_streaming(server, server.ws_url + "/ws/wf_a?last_event_id=0")
    )
    settle(server, seen, after)


def test_changes_while_the_client_is_not_reading_are_exact(start_server: Callable[..., Any]):
    """Changes sent while the client does not read (the server queues a backlog, here
    past its queue, so it falls back to the log) are exact too."""
    server = start_server(LIVEFEED_QUEUE_SIZE="50")
    seen, after = asyncio.run(
        change_while_streaming(server, server.ws_url + "/ws/wf_a", 0.1, reader_pause_s=0.5)
    )
    settle(server, seen, after)


# --- publishing over WebSocket ---------------------------------------------------------


async def publish_ws(ws: ClientConnection, ref: str, events: Any, **extra: Any) -> None:
    await ws.send(orjson.dumps({"type": "publish", "ref": ref, "events": events, **extra}).decode())


async def answer(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that answers a publish (events of the stream are skipped)."""
    async with asyncio.timeout(10):
        while True:
            parsed = orjson.loads(await ws.recv())
            if isinstance(parsed, dict) and parsed.get("type") in ("published", "stream_error"):
                return dict(parsed)


def test_publish_over_websocket_is_answered_in_order_and_lands_in_the_log(
    server: ServerProcess,
):
    """Pipelined publishes get `published` with their ref, in the order sent, after the
    commit; the events are in the log with those ids; the stream carries them too."""

    async def scenario() -> list[dict[str, Any]]:
        async with connect(server.ws_url + "/ws/wf_a") as ws:
            await ws.recv()
            for n in range(100):
                await publish_ws(
                    ws, f"r{n}", [{"type": "tick", "workflow_id": "wf_a", "data": {"n": n}}]
                )
            return [await answer(ws) for _ in range(100)]

    answers = asyncio.run(scenario())
    assert [a["ref"] for a in answers] == [f"r{n}" for n in range(100)]
    ids = [a["events"][0]["id"] for a in answers]
    assert ids == sorted(ids) and len(set(ids)) == 100
    log = {e["id"]: e for e in server.events()}
    assert [log[i]["data"]["n"] for i in ids] == list(range(100))


def test_publish_over_websocket_validates_like_post_and_the_connection_stays(
    server: ServerProcess,
):
    """Bad events, a bad key, a missing ref: stream_error with the same codes as POST
    (and the ref), nothing written; the connection stays; an idempotent repeat replays."""
    bad_type = [{"type": "Bad Type"}]
    post = httpx.post(server.url + "/api/events", json=bad_type)

    async def scenario() -> list[dict[str, Any]]:
        async with connect(server.ws_url + "/ws/wf_a") as ws:
            await ws.recv()
            await publish_ws(ws, "bad", bad_type)
            await publish_ws(ws, "empty", [])
            await publish_ws(ws, "key", [{"type": "x"}], idempotency_key="bad key")
            await ws.send('{"type":"publish","events":[{"type":"x"}]}')
            await publish_ws(ws, "first", [{"type": "x"}], idempotency_key="k1")
            await publish_ws(ws, "again", [{"type": "x"}], idempotency_key="k1")
            await publish_ws(ws, "other", [{"type": "y"}], idempotency_key="k1")
            got = [await answer(ws) for _ in range(7)]
            await ws.send('{"type":"ping"}')
            assert orjson.loads(await ws.recv()) == {"type": "pong"}
            return got

    bad, empty, key, no_ref, first, again, other = asyncio.run(scenario())
    assert (bad["error"], bad["ref"]) == (post.json()["error"], "bad")
    assert empty["error"] == "invalid_event" and key["error"] == "bad_idempotency_key"
    assert no_ref["error"] == "bad_message" and no_ref["ref"] is None
    assert first["type"] == "published" and "replayed" not in first
    assert again["events"] == first["events"] and again["replayed"] is True
    assert other["error"] == "idempotency_key_reused" and other["ref"] == "other"
    assert len(server.events()) == 1


def test_publishing_needs_publish_rights_and_is_rate_limited(start_server: Callable[..., Any]):
    """With a publish token set, a connection without it gets stream_error forbidden; with
    it, publishes go through until the publish rate limit says rate_limited."""
    server = start_server(LIVEFEED_PUBLISH_TOKEN="p" * 24, LIVEFEED_PUBLISH_RATE="3/minute")

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with connect(server.ws_url + "/ws/wf_a") as ws:
            await ws.recv()
            await publish_ws(ws, "no", [{"type": "x"}])
            refused = await answer(ws)
        headers = {"Authorization": "Bearer " + "p" * 24}
        async with connect(server.ws_url + "/ws/wf_a", additional_headers=headers) as ws:
            await ws.recv()
            for n in range(4):
                await publish_ws(ws, f"r{n}", [{"type": "x"}])
            return refused, [await answer(ws) for _ in range(4)]

    refused, answers = asyncio.run(scenario())
    assert (refused["error"], refused["ref"]) == ("forbidden", "no")
    assert [a["type"] for a in answers] == ["published"] * 3 + ["stream_error"]
    assert answers[3]["error"] == "rate_limited"


def test_a_publish_frame_may_be_up_to_1_mib_other_frames_64_kib(server: ServerProcess):
    """A publishing connection's publish of ~900 KB is accepted; a 65 KB ping still
    closes 1009."""
    events = [{"type": "big", "data": {"blob": "x" * 60_000}} for _ in range(15)]

    async def scenario() -> int | None:
        async with connect(server.ws_url + "/ws/wf_a", max_size=None) as ws:
            await ws.recv()
            await publish_ws(ws, "big", events)
            reply = await answer(ws)
            assert reply["type"] == "published" and len(reply["events"]) == 15
            await ws.send('{"type":"ping"}' + " " * 66_000)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(scenario()) == 1009


# --- the hub: a subscription under several workflows ------------------------------------


def test_hub_offers_a_several_channel_subscription_each_event_once_in_order(tmp_path: Path):
    """A live subscription indexed under two workflows gets every event of either once,
    in id order, even when one commit interleaves them."""

    async def scenario() -> list[int]:
        store = SqliteStore(f"sqlite:///{tmp_path / 'hub.db'}")
        await store.open()
        hub = Hub(store, queue_size=1000, heartbeat_s=60)
        await hub.start()
        try:
            wanted = EventFilter(workflow_ids=frozenset({"wf_a", "wf_b"}))
            async with hub.subscribe(wanted, None) as sub:
                batch = [Draft("t", WORKFLOWS[n % 3], "{}") for n in range(30)]
                await store.append(batch)
                await store.append(batch)
                got: list[int] = []
                async with asyncio.timeout(5):
                    async for frames_ in sub:
                        got += [f.id for f in frames_ if f.id is not None]
                        if len(got) >= 40:
                            return got
                return got
        finally:
            await hub.stop()
            await store.close()

    got = asyncio.run(scenario())
    assert got == [n + 1 for n in range(60) if WORKFLOWS[n % 3] != "wf_c"]
