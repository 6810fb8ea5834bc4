"""app.client.follow against real servers: order, resume, restarts, notices."""

from __future__ import annotations

import ast
import asyncio
import signal
import subprocess
import sys
import time

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from app.client import Control, FeedRefused, follow
from tests.client_support import publish_steadily, take, take_until
from tests.support import ROOT, ServerProcess

pytestmark = pytest.mark.asyncio

TRANSPORTS = ["ws", "sse", "poll"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_event_arrives_once_in_order(server: ServerProcess, transport: str):
    """Replayed then live events, single and in batches, arrive once each in id order."""
    server.publish([{"type": "old", "data": {"n": n}} for n in range(30)])
    async with follow(server.url, last_event_id=0, transport=transport) as feed:
        replayed = await take(feed, 30)
        for size in (1, 7, 1, 40, 2):
            await asyncio.to_thread(server.publish, [{"type": "new"}] * size)
        live = await take(feed, 51)
        assert feed.transport == transport
    logged = [event["id"] for event in server.events()]
    assert [event.id for event in replayed + live] == logged
    assert live[0].type == "new" and live[0].workflow_id is None and live[0].ts.endswith("Z")
    assert replayed[0].data == {"n": 0}


async def test_resume_from_a_saved_cursor_gets_exactly_the_rest(server: ServerProcess):
    """A feed started from a saved cursor gets every later event and none before it."""
    ids = server.publish([{"type": "t"}] * 10)
    async with follow(server.url, last_event_id=0) as feed:
        await take(feed, 4)
        saved = feed.cursor
    assert saved == ids[3]
    more = server.publish([{"type": "t"}] * 5)
    async with follow(server.url, last_event_id=saved) as feed:
        rest = await take(feed, 11)
        assert feed.cursor == more[-1]
    assert [event.id for event in rest] == ids[4:] + more


async def test_without_a_cursor_tail_and_filters_give_the_newest_matching(server: ServerProcess):
    """With no cursor: the last ``tail`` events of the channel and types, then live ones."""
    server.publish(
        [{"type": t, "workflow_id": w} for t in ("a", "b") for w in ("wf_1", "wf_2")] * 3
    )
    async with follow(server.url, "wf_1", types=["a"], tail=2) as feed:
        first = await take(feed, 2)
        await asyncio.to_thread(
            server.publish,
            [{"type": "b", "workflow_id": "wf_1"}, {"type": "a", "workflow_id": "wf_1"}],
        )
        [latest] = await take(feed, 1)
    wanted = [e["id"] for e in server.events(workflow_id="wf_1", types="a")]
    assert [event.id for event in first] == wanted[-3:-1]
    assert latest.id == wanted[-1] and latest.type == "a"


@pytest.mark.parametrize("transport", ["ws", "sse", "poll"])
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_a_restart_mid_stream_loses_and_repeats_nothing(
    start_server, transport: str, how: str
):
    """The server killed (or stopped) and restarted while events are published:
    the feed resumes with no gap and no duplicate, and each publish is written once."""
    server = start_server(LIVEFEED_RETRY_MS="300")
    stop = asyncio.Event()
    async with follow(server.url, last_event_id=0, transport=transport, backoff_max_s=1) as feed:
        publishing = asyncio.create_task(publish_steadily(server.url, stop))
        before = await take(feed, 40)
        await asyncio.to_thread(server.kill if how == "SIGKILL" else server.stop)
        await asyncio.to_thread(server.start)
        after = await take(feed, 60)
        stop.set()
        published = await publishing
        final = await asyncio.to_thread(server.events)
        rest = await take_until(feed, lambda got: (after + got)[-1].id >= final[-1]["id"])
    assert [event.id for event in before + after + rest] == [event["id"] for event in final]
    assert [event["data"]["n"] for event in final] == list(range(published))


async def test_a_frozen_server_is_noticed_by_the_heartbeat_watchdog(start_server):
    """A server that goes silent (SIGSTOP) is dropped after two heartbeats, waited
    for on the same transport (a stopped server is not a blocked one), and resumed."""
    server = start_server(LIVEFEED_HEARTBEAT_S="0.5")
    hellos: list[Control] = []

    def seen(control: Control) -> None:
        if control.type == "connection_established":
            hellos.append(control)

    async with follow(
        server.url,
        last_event_id=0,
        on_control=seen,
        heartbeat_s=0.5,
        connect_timeout_s=1,
        backoff_max_s=1,
    ) as feed:
        ids = server.publish([{"type": "t"}] * 3)
        await take(feed, 3)
        reading = asyncio.create_task(take(feed, 3))  # the watchdog runs while a reader waits
        server.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(4)
        finally:
            server.process.send_signal(signal.SIGCONT)
        ids += await asyncio.to_thread(server.publish, [{"type": "t"}] * 3)
        got = await reading
        assert feed.transport == "ws" and not feed.problems
    assert [event.id for event in got] == ids[3:]
    assert len(hellos) >= 2, "the frozen connection was never replaced"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_cursor_ahead_of_the_log_is_surfaced_and_reset(
    server: ServerProcess, transport: str
):
    """replay_truncated "ahead" reaches the caller, and the feed goes on from the newest id."""
    server.publish([{"type": "t"}] * 3)
    notices: list[Control] = []
    async with follow(
        server.url, last_event_id=1000, transport=transport, on_control=notices.append
    ) as feed:
        reading = asyncio.create_task(take(feed, 2))
        while not any(n.type == "replay_truncated" for n in notices) and not reading.done():
            await asyncio.sleep(0.05)
        ids = await asyncio.to_thread(server.publish, [{"type": "t"}] * 2)
        got = await reading
        assert feed.truncated is not None and feed.truncated.reason == "ahead"
        assert feed.truncated.requested_after == 1000 and feed.cursor == ids[-1]
    assert [event.id for event in got] == ids


async def test_a_trimmed_log_is_surfaced_and_replay_starts_at_the_oldest_kept(
    server: ServerProcess,
):
    """Events the retention policy removed are reported (reason "trimmed"), the rest replayed."""
    ids = server.publish([{"type": "t"}] * 10)
    trim = [sys.executable, str(ROOT / "run.py"), "trim", "--retention", "4"]
    trim += ["--database-url", server.database_url]
    trimmed = await asyncio.to_thread(
        subprocess.run, trim, capture_output=True, text=True, timeout=60
    )
    assert trimmed.returncode == 0, trimmed.stderr
    async with follow(server.url, last_event_id=2, transport="sse") as feed:
        got = await take(feed, 4)
        assert feed.truncated is not None and feed.truncated.reason == "trimmed"
        assert feed.truncated.oldest_available == ids[6]
    assert [event.id for event in got] == ids[6:]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_read_token_is_sent_and_a_missing_one_refused(start_server, transport: str):
    """With LIVEFEED_READ_TOKEN set, the token (or a function giving it) opens the feed;
    without it the feed ends with FeedRefused 401 instead of retrying forever."""
    server = start_server(LIVEFEED_READ_TOKEN="r" * 32, LIVEFEED_PUBLISH_TOKEN="p" * 32)
    server.publish({"type": "t"}, headers={"Authorization": "Bearer " + "p" * 32})

    async def token() -> str:
        return "r" * 32

    async with follow(server.url, last_event_id=0, token=token, transport=transport) as feed:
        [event] = await take(feed, 1)
    assert event.id == 1
    with pytest.raises(FeedRefused) as refused:
        async with follow(server.url, last_event_id=0, transport=transport) as feed:
            await take(feed, 1)
    assert refused.value.status == 401 and refused.value.error == "unauthorized"


async def test_cli_tail_prints_each_event_once(server: ServerProcess):
    """run.py tail --transport poll prints replayed and live events as JSON lines."""
    ids = server.publish([{"type": "t", "workflow_id": "wf_cli"}] * 2)
    tail = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "run.py"),
        "tail",
        "wf_cli",
        "--transport",
        "poll",
        "--last-event-id",
        "0",
        "--url",
        server.url,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert tail.stdout is not None
        lines = [await asyncio.wait_for(tail.stdout.readline(), 20) for _ in ids]
        ids += await asyncio.to_thread(server.publish, {"type": "t", "workflow_id": "wf_cli"})
        lines.append(await asyncio.wait_for(tail.stdout.readline(), 20))
    finally:
        tail.kill()
        await tail.wait()
    assert [orjson.loads(line)["id"] for line in lines] == ids
    assert orjson.loads(lines[0]) == server.events()[0]


async def test_the_readme_consumer_runs_as_written(server: ServerProcess, capsys):
    """The README's three-line consumer prints each event (pointed at the test server)."""
    section = (ROOT / "README.md").read_text().split("## The Python client", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("http://127.0.0.1:8080", server.url)
    server.publish([{"type": "other"}, {"type": "t", "workflow_id": "wf_abc123", "data": {"n": 1}}])
    program = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    running = asyncio.ensure_future(eval(program, {}))
    printed = ""
    try:
        async with asyncio.timeout(20):
            while "2 t {'n': 1}" not in printed:
                await asyncio.sleep(0.05)
                printed += capsys.readouterr().out
    finally:
        running.cancel()
        await asyncio.wait({running})
    assert printed == "2 t {'n': 1}\n"


@pytest.mark.parametrize("name", ["stream_error", "error"])
async def test_the_error_message_is_understood_under_both_names(name: str):
    """stream_error (and its former name, error) with reconnect_after_ms sets the
    reconnection delay; the feed resumes after the last id it handed over."""
    requests: list[tuple[str, float]] = []

    def hello(latest: int) -> str:
        return orjson.dumps({"type": "connection_established", "latest_id": latest}).decode()

    def envelope(ident: int) -> str:
        return orjson.dumps({"id": ident, "type": "t", "workflow_id": None, "ts": "x"}).decode()

    async def scripted(ws: ServerConnection) -> None:
        """First connection: one event, then a restart notice; later ones: the next event."""
        requests.append((ws.request.path, time.monotonic()))
        if len(requests) == 1:
            await ws.send(hello(1))
            await ws.send(envelope(1))
            notice = {"type": name, "error": "shutting_down", "reconnect_after_ms": 200}
            await ws.send(orjson.dumps(notice).decode())
            await ws.close(1012, "the server is restarting")
        else:
            await ws.send(hello(2))
            await ws.send(f"[{envelope(1)},{envelope(2)}]")  # a repeat, then a new one
            await ws.wait_closed()

    controls: list[Control] = []
    async with serve(scripted, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with follow(url, on_control=controls.append, transport="ws") as feed:
            got = await take(feed, 2)
    assert [event.id for event in got] == [1, 2]
    assert name in [control.type for control in controls]
    first, second = requests
    assert "last_event_id=1" in second[0] and "batch=1" in second[0]
    assert 0.1 <= second[1] - first[1] <= 1.0, "the server's reconnect_after_ms was not used"
