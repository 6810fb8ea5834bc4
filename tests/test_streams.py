"""SSE and WebSocket: the same events, the same ids, the same bytes, resumable."""

from __future__ import annotations

import asyncio
import random

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support import ServerProcess, collect_sse, event_ids

pytestmark = [pytest.mark.asyncio, pytest.mark.both_engines]


async def ws_frames(url: str, count: int, timeout: float = 10.0, **kwargs) -> list[dict]:
    """The first ``count`` log events received on a WebSocket (controls skipped)."""
    received = []
    async with asyncio.timeout(timeout), connect(url, **kwargs) as ws:
        async for raw in ws:
            frame = orjson.loads(raw)
            if "id" in frame:
                received.append(frame)
                if len(received) == count:
                    return received
    return received


async def test_one_event_reaches_sse_ws_and_long_poll_with_the_same_id_and_bytes(
    server: ServerProcess,
):
    """A publish arrives on all three surfaces; the WS frame equals the SSE data line."""
    sse = asyncio.create_task(
        collect_sse(server.url + "/sse/validation_updates", lambda ms: len(event_ids(ms)) == 1)
    )
    raw_ws: list[str] = []

    async def websocket() -> None:
        async with connect(server.ws_url + "/ws/validation_updates") as ws:
            hello = orjson.loads(await ws.recv())
            assert hello["type"] == "connection_established" and hello["transport"] == "websocket"
            raw_ws.append(await ws.recv())

    ws_task = asyncio.create_task(websocket())
    async with httpx.AsyncClient() as client:
        poll = asyncio.create_task(client.get(server.url + "/api/events?after=0&wait=10"))
        await asyncio.sleep(0.5)
        [event_id] = server.publish(
            {
                "type": "validation_created",
                "workflow_id": "wf_1",
                "data": {"file": "a.md", "line": "\u2028</script>\r\n"},
            }
        )
        page = (await poll).json()
    messages = await sse
    await ws_task
    sse_event = next(m for m in messages if m.event == "validation_created")
    assert int(sse_event.id) == event_id
    assert raw_ws[0] == sse_event.data
    assert orjson.loads(raw_ws[0])["data"] == {"file": "a.md", "line": "\u2028</script>\r\n"}
    assert [e["id"] for e in page["events"]] == [event_id]
    assert orjson.dumps(page["events"][0]) == sse_event.data.encode()


async def test_sse_stream_starts_with_retry_and_connection_established(server: ServerProcess):
    """The preamble carries retry:, the channel name and the newest id."""
    server.publish([{"type": "a"}, {"type": "b"}])
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", server.url + "/sse/wf_9") as response,
    ):
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["x-accel-buffering"] == "no"
        assert "no-cache" in response.headers["cache-control"]
        first = b""
        async for chunk in response.aiter_raw():
            first += chunk
            if b"\n\n" in first:
                break
    head, _, _ = first.partition(b"\n\n")
    lines = head.split(b"\n")
    assert lines[0] == b"retry: 3000"
    assert lines[1] == b"event: connection_established"
    hello = orjson.loads(lines[2].removeprefix(b"data: "))
    assert (
        hello["workflow_id"] == "wf_9" and hello["latest_id"] == 2 and hello["resumed_from"] is None
    )


@pytest.mark.parametrize("how", ["header", "query"])
async def test_sse_resume_gets_exactly_the_missed_events(server: ServerProcess, how: str):
    """Reconnecting with the last id seen replays what was missed, in order, once."""
    ids = server.publish([{"type": "t", "data": {"n": n}} for n in range(10)])
    cursor = ids[3]
    url = server.url + "/sse/validation_updates"
    headers = {}
    if how == "header":
        headers["Last-Event-ID"] = str(cursor)
    else:
        url += f"?last_event_id={cursor}"
    messages = await collect_sse(url, lambda ms: len(event_ids(ms)) == 6, headers=headers)
    assert event_ids(messages) == ids[4:]


@pytest.mark.parametrize("how", ["header", "query"])
async def test_ws_resume_gets_exactly_the_missed_events(server: ServerProcess, how: str):
    """The same cursor rules hold on the WebSocket."""
    ids = server.publish([{"type": "t"} for _ in range(10)])
    url = server.ws_url + "/ws/validation_updates"
    kwargs = {}
    if how == "header":
        kwargs["additional_headers"] = {"Last-Event-ID": str(ids[5])}
    else:
        url += f"?last_event_id={ids[5]}"
    frames = await ws_frames(url, 4, **kwargs)
    assert [f["id"] for f in frames] == ids[6:]


async def test_header_cursor_wins_over_query_cursor(server: ServerProcess):
    """Browsers send Last-Event-ID on reconnect; it beats a stale query value."""
    ids = server.publish([{"type": "t"} for _ in range(5)])
    messages = await collect_sse(
        server.url + f"/sse/validation_updates?last_event_id={ids[0]}",
        lambda ms: len(event_ids(ms)) == 1,
        headers={"Last-Event-ID": str(ids[3])},
    )
    assert event_ids(messages) == [ids[4]]


async def test_workflow_channel_and_types_filter(server: ServerProcess):
    """A workflow channel carries only its events; types= narrows further."""
    server.publish(
        [
            {"type": "validation_created", "workflow_id": "wf_a"},
            {"type": "validation_created", "workflow_id": "wf_b"},
            {"type": "recommendation_created", "workflow_id": "wf_a"},
            {"type": "validation_approved", "workflow_id": "wf_a"},
        ]
    )
    wf = await collect_sse(
        server.url + "/sse/wf_a?last_event_id=0", lambda ms: len(event_ids(ms)) == 3
    )
    assert event_ids(wf) == [1, 3, 4]
    typed = await ws_frames(
        server.ws_url + "/ws/wf_a?last_event_id=0&types=validation_created,validation_approved", 2
    )
    assert [f["id"] for f in typed] == [1, 4]
    live = asyncio.create_task(ws_frames(server.ws_url + "/ws/wf_b?types=workflow_failed", 1))
    await asyncio.sleep(0.3)
    server.publish(
        [
            {"type": "workflow_failed", "workflow_id": "wf_a"},
            {"type": "validation_created", "workflow_id": "wf_b"},
            {"type": "workflow_failed", "workflow_id": "wf_b"},
        ]
    )
    assert [f["id"] for f in await live] == [7]


async def test_tail_starts_with_the_last_n_matching_events(server: ServerProcess):
    """tail=N paints the last N events first when there is no cursor."""
    ids = server.publish([{"type": "t", "workflow_id": "wf_t"} for _ in range(8)])
    frames = await ws_frames(server.ws_url + "/ws/wf_t?tail=3", 3)
    assert [f["id"] for f in frames] == ids[-3:]


async def test_heartbeats_arrive_without_an_id(start_server):
    """Heartbeats keep idle streams alive and never carry an id."""
    server = start_server(LIVEFEED_HEARTBEAT_S="0.2")
    messages = await collect_sse(
        server.url + "/sse/validation_updates",
        lambda ms: sum(m.event == "heartbeat" for m in ms) == 2,
    )
    beats = [m for m in messages if m.event == "heartbeat"]
    assert all(m.id == "" for m in beats)  # the parser keeps no last id: none was sent
    assert orjson.loads(beats[0].data)["type"] == "heartbeat"
    async with connect(server.ws_url + "/ws/validation_updates") as ws:
        frames = [orjson.loads(await ws.recv()) for _ in range(2)]
    assert frames[1]["type"] == "heartbeat" and "id" not in frames[1]


async def test_ws_ping_is_answered_and_bad_messages_get_error_frames(server: ServerProcess):
    """Only {"type":"ping"} is a valid client message; others get an error, the socket stays."""
    async with connect(server.ws_url + "/ws/validation_updates") as ws:
        await ws.recv()  # connection_established
        for bad in ["{", "[]", '{"type":"pong"}', "hello"]:
            await ws.send(bad)
            reply = orjson.loads(await ws.recv())
            assert reply["type"] == "stream_error" and reply["detail"]
        await ws.send('{"type":"ping"}')
        assert orjson.loads(await ws.recv()) == {"type": "pong"}
        [event_id] = server.publish({"type": "still_open"})
        assert orjson.loads(await ws.recv())["id"] == event_id


@pytest.mark.parametrize("payload", [b"\x00\x01", b""])
async def test_ws_binary_frame_closes_with_1003_and_others_are_unaffected(server, payload):
    """A binary frame (even an empty one) closes that socket with 1003 only."""
    async with connect(server.ws_url + "/ws/validation_updates") as other:
        await other.recv()
        async with connect(server.ws_url + "/ws/validation_updates") as ws:
            await ws.recv()
            await ws.send(payload)
            await ws.wait_closed()
            assert ws.close_code == 1003
        [event_id] = server.publish({"type": "after_abuse"})
        assert orjson.loads(await other.recv())["id"] == event_id


async def test_ws_repeated_abuse_closes_with_1008(server: ServerProcess):
    """Too many invalid messages end the connection with a policy violation."""
    async with connect(server.ws_url + "/ws/validation_updates") as ws:
        await ws.recv()
        for _ in range(20):
            await ws.send("garbage")
        await ws.wait_closed()
        assert ws.close_code == 1008


async def test_seam_twenty_clients_connecting_during_publishing_see_no_gap_no_duplicate(
    server: ServerProcess,
):
    """Replay-to-live hand-over under load: every client sees every id once, in order."""
    total = 600
    server.publish([{"type": "warmup"} for _ in range(50)])
    rng = random.Random(7)
    done = asyncio.Event()

    async def publisher() -> None:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for n in range(total // 5):
                body = orjson.dumps([{"type": "load", "data": {"n": n, "k": k}} for k in range(5)])
                response = await client.post(
                    "/api/events", content=body, headers={"Content-Type": "application/json"}
                )
                assert response.status_code == 201
                await asyncio.sleep(0.005)
        done.set()

    async def client(index: int) -> tuple[int, list[int]]:
        await asyncio.sleep(rng.uniform(0, 1.0))
        async with httpx.AsyncClient() as http:
            latest = (await http.get(server.url + "/api/stats")).json()["latest_id"]
        cursor = rng.randint(0, latest)
        last_id = 650  # 50 warm-up + 600 load events
        if index % 2:
            messages = await collect_sse(
                server.url + f"/sse/validation_updates?last_event_id={cursor}",
                lambda ms: bool(event_ids(ms)) and event_ids(ms)[-1] >= last_id,
                timeout=30,
            )
            return cursor, event_ids(messages)
        seen: list[int] = []
        async with (
            asyncio.timeout(30),
            connect(server.ws_url + f"/ws/validation_updates?last_event_id={cursor}") as ws,
        ):
            async for raw in ws:
                frame = orjson.loads(raw)
                if "id" in frame:
                    seen.append(frame["id"])
                    if frame["id"] >= last_id:
                        break
        return cursor, seen

    results = await asyncio.gather(publisher(), *(client(i) for i in range(20)))
    all_ids = [e["id"] for e in server.events()]
    assert len(all_ids) == 650
    for cursor, seen in results[1:]:
        assert seen == [i for i in all_ids if i > cursor]


async def test_restart_keeps_ids_increasing_and_clients_resume(server: ServerProcess):
    """After a restart on the same database ids continue and a resume loses nothing."""
    before = server.publish([{"type": "t"} for _ in range(5)])
    assert server.stop() == 0
    server.start()
    after = server.publish([{"type": "t"} for _ in range(3)])
    assert after[0] > before[-1]
    frames = await ws_frames(server.ws_url + f"/ws/validation_updates?last_event_id={before[2]}", 5)
    assert [f["id"] for f in frames] == before[3:] + after


async def test_disconnected_clients_leave_no_subscriber_behind(server: ServerProcess):
    """Closing SSE and WS clients frees their subscriptions promptly."""
    async with httpx.AsyncClient(timeout=10) as client:
        streams = []
        for _ in range(10):
            cm = client.stream("GET", server.url + "/sse/validation_updates")
            await cm.__aenter__()
            streams.append(cm)
        sockets = [await connect(server.ws_url + "/ws/validation_updates") for _ in range(10)]
        stats = (await client.get(server.url + "/api/stats")).json()
        assert stats["subscribers"] == 20
        assert stats["connections"]["sse"] == 10 and stats["connections"]["websocket"] == 10
        for cm in streams:
            await cm.__aexit__(None, None, None)
        for ws in sockets:
            await ws.close()
        for _ in range(50):
            stats = (await client.get(server.url + "/api/stats")).json()
            if stats["subscribers"] == 0:
                break
            await asyncio.sleep(0.05)
        assert stats["subscribers"] == 0
        assert stats["connections"] == {"websocket": 0, "sse": 0, "poll": 0}


async def test_an_sse_client_sending_an_endless_body_is_still_seen_leaving(
    server: ServerProcess,
):
    """An SSE GET that keeps sending body chunks (nobody reads them) and then
    disconnects: its stream ends and frees its subscription like any other."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /sse/validation_updates HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    received = b""
    async with asyncio.timeout(10):
        while b"connection_established" not in received:
            received += await reader.read(65536)
    for _ in range(200):  # far more than the request's queue holds
        writer.write(b"1\r\nx\r\n")
    await writer.drain()
    async with httpx.AsyncClient(timeout=10) as client:
        stats = (await client.get(server.url + "/api/stats")).json()
        assert stats["connections"]["sse"] == 1
        writer.close()
        for _ in range(100):
            stats = (await client.get(server.url + "/api/stats")).json()
            if stats["connections"]["sse"] == 0:
                break
            await asyncio.sleep(0.05)
    assert stats["connections"]["sse"] == 0 and stats["subscribers"] == 0


async def test_ws_batch_mode_sends_several_events_per_frame(server: ServerProcess):
    """With ?batch=1 the events of one write arrive as a JSON array in one frame."""
    ids = server.publish([{"type": "t", "data": {"n": n}} for n in range(10)])
    received: list[int] = []
    frames = 0
    async with connect(server.ws_url + "/ws/validation_updates?last_event_id=0&batch=1") as ws:
        assert orjson.loads(await ws.recv())["type"] == "connection_established"
        async with asyncio.timeout(10):
            while len(received) < 10:
                message = orjson.loads(await ws.recv())
                frames += 1
                received.extend(
                    e["id"] for e in (message if isinstance(message, list) else [message])
                )
    assert received == ids
    assert frames < 10  # the replayed page travelled in fewer frames than events
