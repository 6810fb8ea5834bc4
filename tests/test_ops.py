"""Operations: health, readiness, metrics, stats, OpenAPI, graceful shutdown, the CLI."""

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

from tests.sse_parser import SSEParser
from tests.support import ROOT, ServerProcess, collect_sse, event_ids, eventually


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_health_readiness_stats_and_metrics(server: ServerProcess):
    """The operational endpoints answer JSON / Prometheus text with live figures."""
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    server.publish([{"type": "t"}] * 3)

    async def with_stream() -> tuple[dict, str]:
        async with connect(server.ws_url + "/ws/validation_updates?last_event_id=0") as ws:
            for _ in range(4):
                await ws.recv()
            server.publish({"type": "live"})
            await ws.recv()
            async with httpx.AsyncClient() as client:
                stats = (await client.get(server.url + "/api/stats")).json()
                metrics = (await client.get(server.url + "/metrics")).text
        return stats, metrics

    stats, metrics = asyncio.run(with_stream())
    assert stats["connections"] == {"websocket": 1, "sse": 0, "poll": 0}
    assert stats["latest_id"] == 4 and stats["events_stored"] == 4 and stats["oldest_id"] == 1
    assert 'livefeed_connections{transport="websocket"} 1.0' in metrics
    assert "livefeed_events_published_total 4.0" in metrics
    assert 'livefeed_events_delivered_total{transport="websocket"} 4.0' in metrics
    assert 'livefeed_events_replayed_total{transport="websocket"} 3.0' in metrics
    assert 'livefeed_delivery_lag_seconds_count{transport="websocket"} 1.0' in metrics
    assert "livefeed_publish_latency_seconds_count" in metrics


def test_openapi_document_and_docs_page_are_served(server: ServerProcess):
    """quart-schema's OpenAPI document lists the API; /docs renders it."""
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/api/events", "/api/events/{event_id}", "/api/diag/ws/{channel}"} <= set(spec["paths"])
    assert "post" in spec["paths"]["/api/events"] and "get" in spec["paths"]["/api/events"]
    assert httpx.get(server.url + "/docs").status_code == 200


def test_root_redirects_to_the_dashboard(server: ServerProcess):
    """GET / sends people to the dashboard."""
    response = httpx.get(server.url + "/")
    assert response.status_code == 302 and response.headers["location"].endswith("/dashboard/")


def test_unknown_host_is_421(server: ServerProcess):
    """DNS rebinding: a Host that is not ours is refused before anything else."""
    response = httpx.get(server.url + "/api/stats", headers={"Host": "attacker.example:8080"})
    assert response.status_code == 421 and response.json()["error"] == "host_not_allowed"


def test_sigterm_says_goodbye_with_a_jittered_retry_and_clients_resume(server: ServerProcess):
    """On SIGTERM SSE gets retry:+error and ends, WS gets a frame and close 1012;
    after the restart both resume from their last id without loss."""
    ids = server.publish([{"type": "t"}] * 3)

    async def scenario() -> None:
        async with (
            httpx.AsyncClient(timeout=20) as client,
            client.stream(
                "GET", server.url + "/sse/validation_updates?last_event_id=0"
            ) as response,
        ):
            async with connect(server.ws_url + "/ws/validation_updates?last_event_id=0") as ws:
                ws_frames = [orjson.loads(await ws.recv()) for _ in range(4)]
                parser, sse = SSEParser(), []
                stream = response.aiter_raw()
                while len(event_ids(sse)) < 3:
                    sse.extend(parser.feed(await anext(stream)))
                started = time.monotonic()
                server.process.terminate()
                farewell = orjson.loads(await ws.recv())
                await ws.wait_closed()
                assert ws.close_code == 1012
                assert farewell["error"] == "shutting_down"
                assert 3000 <= farewell["reconnect_after_ms"] < 6000
                async for chunk in stream:
                    sse.extend(parser.feed(chunk))
                assert sse[-1].event == "stream_error" and sse[-1].retry is not None
                assert 3000 <= sse[-1].retry < 6000
                assert [f.get("id") for f in ws_frames[1:]] == ids
        assert server.process.wait(15) == 0
        assert time.monotonic() - started < 10

    asyncio.run(scenario())
    server.start()
    after = server.publish({"type": "after_restart"})
    messages = asyncio.run(
        collect_sse(
            server.url + f"/sse/validation_updates?last_event_id={ids[-1]}",
            lambda ms: len(event_ids(ms)) == 1,
        )
    )
    assert event_ids(messages) == after


def test_cli_publish_export_migrate_and_trim(server: ServerProcess, tmp_path):
    """The CLI talks to a running server and to the database directly."""
    published = run_cli(
        "publish",
        "validation_created",
        "--workflow-id",
        "wf_cli",
        "--data",
        '{"file": "a.md"}',
        "--count",
        "3",
        "--url",
        server.url,
    )
    assert published.returncode == 0, published.stderr
    assert published.stdout.split() == ["1", "2", "3"]
    out = tmp_path / "audit.csv"
    exported = run_cli("export", "--format", "csv", "-o", str(out), "--url", server.url)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert [r[0] for r in rows] == ["id", "1", "2", "3"] and rows[1][2] == "wf_cli"
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert run_cli("migrate", "--database-url", fresh).returncode == 0
    bad = run_cli("trim", "--database-url", fresh, "--retention", "soon")
    assert bad.returncode == 2 and "--retention soon is not valid" in bad.stderr


def test_cli_tail_follows_a_channel(server: ServerProcess):
    """run.py tail prints each event's JSON as it arrives."""
    tail = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "tail", "wf_t", "--url", server.url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        eventually(  # it follows live (no cursor): publish once it is connected
            lambda: sum(httpx.get(server.url + "/api/stats").json()["connections"].values()) > 0,
            timeout_s=60,
            what="tail connected",
        )
        [event_id] = server.publish({"type": "t", "workflow_id": "wf_t"})
        lines = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any('"id"' in line for line in lines):
            lines.append(tail.stdout.readline())
    finally:
        tail.kill()
        tail.wait()
        tail.stdout.close()
    assert any(orjson.loads(line).get("id") == event_id for line in lines if line.strip())


@pytest.mark.parametrize(
    "env",
    [
        {"LIVEFEED_ALLOWED_ORIGINS": "ws://localhost:8000"},
        {"LIVEFEED_ALLOWED_ORIGINS": "http://x/"},
        {"LIVEFEED_ALLOWED_ORIGINS": "http://x/path"},
        {"LIVEFEED_ALLOWED_ORIGINS": "*", "LIVEFEED_READ_TOKEN": "r"},
        {"LIVEFEED_ALLOWED_ORIGINS": "*", "LIVEFEED_TOKEN_SECRET": "s" * 32},
        {"LIVEFEED_PORT": "eighty"},
        {"LIVEFEED_RETENTION": "forever"},
        {"LIVEFEED_METRICS_TOKEN": "same", "LIVEFEED_PUBLISH_TOKEN": "same"},
    ],
)
def test_bad_configuration_stops_start_up_with_a_message(env, tmp_path):
    """Configuration mistakes stop the start with the setting's name and the fix."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert all(name in result.stderr for name in env) and "configuration error" in result.stderr


def test_demo_traffic_follows_the_workflow_sequence(start_server):
    """LIVEFEED_DEMO_RATE publishes realistic workflows (counted as published) for the dashboard."""
    server = start_server(LIVEFEED_DEMO_RATE="200")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(server.events()) < 40:
        time.sleep(0.1)
    events = server.events()
    by_workflow: dict[str, list[str]] = {}
    for event in events:
        by_workflow.setdefault(event["workflow_id"], []).append(event["type"])
    assert len(by_workflow) >= 2  # several workflows interleaved
    for types in by_workflow.values():
        if types[0] == "workflow_started" and len(types) > 1:
            assert types[1] == "validation_created"
    assert httpx.get(server.url + "/api/stats").json()["events_published"] >= len(events)
