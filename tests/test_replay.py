"""GET /api/events: pages, long-poll, export, follow; cursors and truncation on every surface."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
import time

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support import ROOT, ServerProcess, assert_error, collect_sse, event_ids

pytestmark = pytest.mark.both_engines


def get(server: ServerProcess, **params) -> httpx.Response:
    return httpx.get(server.url + "/api/events", params=params, timeout=40)


def test_pages_follow_next_after_until_has_more_is_false(server: ServerProcess):
    """Paging returns every event once; next_after is the last id returned."""
    ids = server.publish([{"type": "t", "data": {"n": n}} for n in range(25)])
    page = get(server, after=0, limit=10).json()
    assert [e["id"] for e in page["events"]] == ids[:10]
    assert page["next_after"] == ids[9] and page["has_more"] is True
    page = get(server, after=ids[19], limit=10).json()
    assert [e["id"] for e in page["events"]] == ids[20:] and page["has_more"] is False
    empty = get(server, after=ids[-1]).json()
    assert empty == {"events": [], "next_after": ids[-1], "has_more": False, "notices": []}


def test_filters_by_workflow_types_and_time(server: ServerProcess):
    """workflow_id, types and since/until (ISO 8601 with a timezone) combine."""
    server.publish([{"type": "a", "workflow_id": "wf_1"}, {"type": "b", "workflow_id": "wf_2"}])
    time.sleep(0.05)
    [mid] = server.publish({"type": "a", "workflow_id": "wf_1"})
    ts = get(server, after=mid - 1).json()["events"][0]["ts"]
    assert [e["id"] for e in get(server, workflow_id="wf_1").json()["events"]] == [1, 3]
    assert [e["id"] for e in get(server, types="b").json()["events"]] == [2]
    assert [e["id"] for e in get(server, since=ts).json()["events"]] == [3]
    assert [e["id"] for e in get(server, until=ts).json()["events"]] == [1, 2]
    offset = ts.replace("Z", "+00:00")
    assert [e["id"] for e in get(server, since=offset).json()["events"]] == [3]


@pytest.mark.parametrize(
    "params",
    [
        {"after": "-1"},
        {"after": "abc"},
        {"after": " 42"},
        {"after": "4_2"},
        {"after": "١٢"},
        {"after": "99999999999999999999"},
        {"limit": "0"},
        {"limit": "1001"},
        {"wait": "31"},
        {"wait": "x"},
        {"since": "2026-01-01T00:00:00"},
        {"since": "yesterday"},
        {"format": "xml"},
        {"follow": "1"},
        {"workflow_id": "a/b"},
        {"types": "A"},
        {"afterr": "1"},
    ],
)
def test_bad_parameters_are_400_never_clamped(server: ServerProcess, params):
    """Out-of-range or malformed parameters get a JSON 400."""
    assert_error(get(server, **params), 400)


def test_long_poll_returns_as_soon_as_an_event_commits(server: ServerProcess):
    """wait= holds the request and answers when a matching event arrives."""
    server.publish({"type": "old"})

    async def scenario() -> tuple[dict, float]:
        async with httpx.AsyncClient(timeout=40) as client:
            started = time.monotonic()
            request = asyncio.create_task(
                client.get(
                    server.url + "/api/events", params={"after": 1, "wait": 20, "types": "wanted"}
                )
            )
            await asyncio.sleep(0.5)
            server.publish([{"type": "unwanted"}, {"type": "wanted"}])
            response = await request
            return response.json(), time.monotonic() - started

    page, elapsed = asyncio.run(scenario())
    assert [e["id"] for e in page["events"]] == [3]
    assert elapsed < 10  # it did not wait for the 20 s timeout


def test_long_poll_times_out_with_an_empty_page(server: ServerProcess):
    """Nothing arrives: an empty page after the wait, next_after unchanged."""
    page = get(server, after=0, wait="0.3").json()
    assert page == {"events": [], "next_after": 0, "has_more": False, "notices": []}


def test_cursor_ahead_of_the_log_is_announced_on_every_surface(server: ServerProcess):
    """A client from another database learns the latest id and gets live events."""
    server.publish([{"type": "t"}] * 3)
    page = get(server, after=100).json()
    assert page["notices"][0]["reason"] == "ahead" and page["notices"][0]["latest_id"] == 3

    async def streams() -> None:
        sse = asyncio.create_task(
            collect_sse(
                server.url + "/sse/validation_updates?last_event_id=100",
                lambda ms: len(event_ids(ms)) == 1,
            )
        )
        async with connect(server.ws_url + "/ws/validation_updates?last_event_id=100") as ws:
            assert orjson.loads(await ws.recv())["type"] == "connection_established"
            notice = orjson.loads(await ws.recv())
            assert notice == {
                "type": "replay_truncated",
                "reason": "ahead",
                "requested_after": 100,
                "latest_id": 3,
            }
            await asyncio.sleep(0.3)
            server.publish({"type": "new"})
            assert orjson.loads(await ws.recv())["id"] == 4
        messages = await sse
        assert [m.event for m in messages][1] == "replay_truncated"
        assert event_ids(messages) == [4]

    asyncio.run(streams())


@pytest.mark.parametrize(
    "cursor",
    ["abc", "-1", "4.2", "0x10", "", " 42", "+42", "4_2", "42\n", "١٢", "99999999999999999999"],
)
def test_malformed_cursor_is_400_on_sse_and_ws(server: ServerProcess, cursor: str):
    """SSE answers 400 JSON (no stream); the WebSocket handshake is refused with 400.

    HTTP strips the blanks around a header value, so " 42" is tested in the query."""
    query = {"last_event_id": cursor}
    assert_error(httpx.get(server.url + "/sse/validation_updates", params=query), 400, "bad_cursor")
    if cursor.strip() == cursor and cursor.isascii():
        header = {"Last-Event-ID": cursor}
        response = httpx.get(server.url + "/sse/validation_updates", headers=header)
        assert_error(response, 400, "bad_cursor")

    async def handshake() -> None:
        url = str(httpx.URL(server.ws_url + "/ws/validation_updates", params=query))
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 400
        assert orjson.loads(refused.value.response.body)["error"] == "bad_cursor"

    asyncio.run(handshake())


def test_replay_truncated_after_trim(server: ServerProcess):
    """A cursor older than the retained log is told so, then replays from the oldest kept."""
    ids = server.publish([{"type": "t"} for _ in range(10)])
    trim = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "trim",
            "--retention",
            "4",
            "--database-url",
            server.database_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert trim.returncode == 0, trim.stderr
    assert [e["id"] for e in server.events()] == ids[-4:]
    messages = asyncio.run(
        collect_sse(
            server.url + "/sse/validation_updates?last_event_id=2",
            lambda ms: len(event_ids(ms)) == 4,
        )
    )
    notice = orjson.loads(next(m for m in messages if m.event == "replay_truncated").data)
    assert notice == {
        "type": "replay_truncated",
        "reason": "trimmed",
        "requested_after": 2,
        "oldest_available": ids[-4],
    }
    assert event_ids(messages) == ids[-4:]
    page = get(server, after=2, wait=5).json()  # answers at once; next_after moves on
    assert page["notices"][0]["reason"] == "trimmed"
    assert [e["id"] for e in page["events"]] == ids[-4:] and page["next_after"] == ids[-1]
    assert get(server, after=ids[-1], wait="0.2").json()["notices"] == []
    assert [e["id"] for e in get(server, workflow_id="validation_updates").json()["events"]] == ids[
        -4:
    ]


def test_export_20000_events_as_ndjson_and_csv(server: ServerProcess):
    """The audit export streams every event, byte-identical to the envelopes."""
    for start in range(0, 20_000, 1000):
        server.publish(
            [
                {
                    "type": "audit",
                    "workflow_id": f"wf_{start}",
                    "data": {"n": n, "text": 'a,b\n"c"'},
                }
                for n in range(start, start + 1000)
            ]
        )
    ndjson = httpx.get(server.url + "/api/events", params={"format": "ndjson"}, timeout=60)
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    lines = ndjson.content.splitlines()
    assert len(lines) == 20_000
    first = orjson.loads(lines[0])
    assert first["id"] == 1 and first["data"] == {"n": 0, "text": 'a,b\n"c"'}
    assert [orjson.loads(line)["id"] for line in lines] == list(range(1, 20_001))
    as_csv = httpx.get(server.url + "/api/events", headers={"Accept": "text/csv"}, timeout=60)
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0] == ["id", "type", "workflow_id", "ts", "data"]
    assert len(rows) == 20_001
    assert rows[1][:3] == ["1", "audit", "wf_0"]
    assert orjson.loads(rows[1][4]) == first["data"]
    filtered = get(server, format="ndjson", workflow_id="wf_19000", after=19_500).content
    assert len(filtered.splitlines()) == 500


def test_ndjson_follow_replays_then_streams_live(server: ServerProcess):
    """format=ndjson&follow=1 is tail -f over HTTP."""
    server.publish([{"type": "t"}] * 2)

    async def follow() -> list[int]:
        seen: list[int] = []
        async with (
            httpx.AsyncClient(timeout=20) as client,
            client.stream(
                "GET",
                server.url + "/api/events",
                params={"format": "ndjson", "follow": 1, "after": 1},
            ) as response,
        ):
            async for line in response.aiter_lines():
                if line.strip():
                    seen.append(orjson.loads(line)["id"])
                if len(seen) == 1:
                    server.publish({"type": "live"})
                if len(seen) == 2:
                    return seen
        return seen

    assert asyncio.run(follow()) == [2, 3]


def test_get_one_event(server: ServerProcess):
    """GET /api/events/{id} is the stored envelope."""
    [event_id] = server.publish({"type": "one", "data": {"k": "v"}})
    body = httpx.get(f"{server.url}/api/events/{event_id}").json()
    assert body["type"] == "one" and body["data"] == {"k": "v"}


def test_background_retention_trims_by_count(server: ServerProcess):
    """LIVEFEED_RETENTION trims in the background (at start, then about once a minute)."""
    ids = server.publish([{"type": "t"} for _ in range(10)])
    server.stop()
    server.env["LIVEFEED_RETENTION"] = "5"
    server.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(server.events()) != 5:
        time.sleep(0.1)
    assert [e["id"] for e in server.events()] == ids[-5:]
