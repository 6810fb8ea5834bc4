"""What an attacker found at the HTTP level (issue 11's low-severity list): each case is
refused or answered as documented, and nothing else changes for honest clients."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from tests.support import ServerProcess
from tests.test_publish import assert_error

SECRET = "http-hardening-test-secret-0123456789abcdef"
READ, PUBLISH, METRICS = "read-token", "publish-token", "metrics-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scoped_jwt(*channels: str, exp: Any = None) -> str:
    claims = {"exp": exp if exp is not None else int(time.time()) + 600, "channels": [*channels]}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture
def secured(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """Reading needs a credential: the read token, or a JWT; publishing the publish token."""
    return start_server(
        LIVEFEED_READ_TOKEN=READ,
        LIVEFEED_PUBLISH_TOKEN=PUBLISH,
        LIVEFEED_TOKEN_SECRET=SECRET,
        LIVEFEED_METRICS_TOKEN=METRICS,
    )


def raw_status(server: ServerProcess, path: str, host: str, extra: str = "") -> int:
    """The status of a hand-written request, since HTTP clients derive Host from the URL."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        return int(sock.recv(1024).split(b" ", 2)[1])


UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:1@evil.com",
        "127.0.0.1:80/evil",
        "127.0.0.1:80:80",
        "127.0.0.1:x",
        "localhost evil.com",
        "[::1]x",
        "[::1]:80@evil.com",
    ],
)
def test_a_host_with_junk_after_an_allowed_name_is_421(server: ServerProcess, host: str):
    """A Host that only starts like an allowed one is refused (421) on HTTP, SSE and WS."""
    assert raw_status(server, "/api/events", host) == 421
    assert raw_status(server, "/sse/validation_updates", host) == 421
    assert raw_status(server, "/ws/validation_updates", host, UPGRADE) == 421
    assert raw_status(server, "/api/events", f"127.0.0.1:{server.port}") == 200


@pytest.mark.parametrize("exp", [10**400, 10**20, 253_402_300_800])
def test_a_jwt_exp_beyond_the_year_9999_is_401(secured: ServerProcess, exp: int):
    """exp = 10^400 was a 500 (a float overflow): any exp after 9999-12-31 is a 401."""
    answer = httpx.get(secured.url + "/api/events", headers=bearer(scoped_jwt("*", exp=exp)))
    assert_error(answer, 401, "unauthorized")
    near = httpx.get(secured.url + "/api/events", headers=bearer(scoped_jwt("*", exp=10**10)))
    assert near.status_code == 200


def test_a_scoped_jwt_cannot_tell_other_workflows_events_from_missing_ones(
    secured: ServerProcess,
):
    """GET /api/events/{id} of an event outside the token's channels is the same 404 as
    an id never written (a 403 named the workflow); events it covers are 200."""
    [mine, theirs] = secured.publish(
        [{"type": "a", "workflow_id": "wf_mine"}, {"type": "a", "workflow_id": "wf_theirs"}],
        headers=bearer(PUBLISH),
    )
    token = bearer(scoped_jwt("wf_mine"))
    assert httpx.get(f"{secured.url}/api/events/{mine}", headers=token).status_code == 200
    hidden = assert_error(httpx.get(f"{secured.url}/api/events/{theirs}", headers=token), 404)
    missing = assert_error(httpx.get(f"{secured.url}/api/events/999", headers=token), 404)
    assert "wf_theirs" not in hidden["detail"]
    assert hidden["detail"].replace(str(theirs), "N") == missing["detail"].replace("999", "N")
    everything = bearer(scoped_jwt("validation_updates"))
    assert httpx.get(f"{secured.url}/api/events/{theirs}", headers=everything).status_code == 200


@pytest.mark.parametrize("event_id", ["abc", "-1", "1.5", "%D9%A1", "99999999999999999999"])
def test_a_malformed_event_id_is_400(server: ServerProcess, event_id: str):
    """GET /api/events/abc is a malformed id (400 bad_cursor), not a missing event."""
    assert_error(httpx.get(f"{server.url}/api/events/{event_id}"), 400, "bad_cursor")
    assert_error(httpx.get(f"{server.url}/api/events/12345"), 404, "not_found")


@pytest.mark.parametrize("dots", [".", ".."])
def test_dot_workflow_ids_are_refused_everywhere(server: ServerProcess, dots: str):
    """"." and ".." cannot be streamed by any browser (URLs resolve them away): refused at
    publish (400) and as a channel on every surface (400 bad_channel, like any bad
    channel name); "..." is a plain id."""
    one = httpx.post(
        server.url + "/api/events",
        json={"type": "a", "workflow_id": dots},
    )
    assert_error(one, 400, "invalid_event")
    batch = httpx.post(
        server.url + "/api/events",
        json=[{"type": "a", "workflow_id": "wf_ok"}, {"type": "a", "workflow_id": dots}],
    )
    assert "events[1].workflow_id" in assert_error(batch, 400, "invalid_event")["detail"]
    encoded = dots.replace(".", "%2E")
    assert_error(httpx.get(f"{server.url}/sse/{encoded}"), 400, "bad_channel")
    diag = httpx.get(f"{server.url}/api/diag/ws/{encoded}").json()
    assert diag["ok"] is False and diag["reason"] == "bad_channel"
    answer = httpx.get(server.url + "/api/events", params={"workflow_id": dots})
    assert_error(answer, 400, "bad_channel")
    ticket = httpx.post(server.url + "/api/stream-tickets", json={"channel": dots})
    assert_error(ticket, 400, "bad_channel")
    assert server.events() == []
    assert server.publish({"type": "a", "workflow_id": "..."})


def diagnosis(server: ServerProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(server.url + "/api/diag/ws/validation_updates", headers=headers or {})


def test_the_handshake_diagnosis_counts_failed_tokens(start_server: Callable[..., ServerProcess]):
    """/api/diag/ws goes through the failed-auth limiter: after the allowed failures it
    answers rate_limited even for the right token, and so does /api/events."""
    server = start_server(LIVEFEED_READ_TOKEN=READ, LIVEFEED_AUTH_FAILURE_RATE="3/minute")
    verdicts = [diagnosis(server, bearer(f"guess-{n}")).json()["reason"] for n in range(3)]
    assert verdicts == ["unauthorized"] * 3
    limited = diagnosis(server, bearer(READ)).json()
    assert limited["ok"] is False and limited["reason"] == "rate_limited"
    assert httpx.get(server.url + "/api/events", headers=bearer(READ)).status_code == 429


def test_the_handshake_diagnosis_never_confirms_the_publish_token(secured: ServerProcess):
    """The publish token gets the verdict of a wrong token there; the read token is ok."""
    assert diagnosis(secured, bearer(READ)).json() == {"ok": True, "reason": None, "detail": None}
    assert diagnosis(secured, bearer(PUBLISH)).json()["reason"] == "unauthorized"


def test_the_handshake_diagnosis_sends_the_apis_cors(start_server: Callable[..., ServerProcess]):
    """No Access-Control-Allow-Origin: * any more: an allowed origin gets its own name
    back, any other page gets no CORS header, as on every other endpoint."""
    server = start_server(LIVEFEED_ALLOWED_ORIGINS="https://app.example.com")
    allowed = diagnosis(server, {"Origin": "https://app.example.com"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    foreign = diagnosis(server, {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in foreign.headers
    plain = diagnosis(start_server(), {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_stats_and_metrics_need_a_credential_when_reading_does(secured: ServerProcess):
    """With a read token set, /api/stats and /metrics are 401 without a credential, and
    open to the read token, a JWT or the metrics token; the metrics token reads nothing else."""
    for path in ("/api/stats", "/metrics"):
        assert_error(httpx.get(secured.url + path), 401, "unauthorized")
        assert_error(httpx.get(secured.url + path, headers=bearer("wrong")), 401)
        for token in (READ, scoped_jwt("wf_1"), METRICS):
            assert httpx.get(secured.url + path, headers=bearer(token)).status_code == 200
    assert "livefeed_connections" in httpx.get(
        secured.url + "/metrics", headers=bearer(METRICS)
    ).text
    assert_error(httpx.get(secured.url + "/api/events", headers=bearer(METRICS)), 401)


def test_a_metrics_token_alone_protects_only_metrics(start_server: Callable[..., ServerProcess]):
    """Reading open, LIVEFEED_METRICS_TOKEN set: /metrics needs it, /api/stats stays open
    for the dashboard."""
    server = start_server(LIVEFEED_METRICS_TOKEN=METRICS)
    assert_error(httpx.get(server.url + "/metrics"), 401, "unauthorized")
    assert httpx.get(server.url + "/metrics", headers=bearer(METRICS)).status_code == 200
    assert httpx.get(server.url + "/api/stats").status_code == 200
    assert httpx.get(start_server().url + "/metrics").status_code == 200


def test_stream_tickets_need_json_and_are_rate_limited(start_server: Callable[..., ServerProcess]):
    """A ticket request that a cross-site form could send (text/plain, no type) is 415;
    tickets count against LIVEFEED_CONNECT_RATE, in a window of their own."""
    server = start_server(LIVEFEED_READ_TOKEN=READ, LIVEFEED_CONNECT_RATE="3/minute")
    url = server.url + "/api/stream-tickets"
    plain = httpx.post(url, content=b'{"channel":"validation_updates"}',
                       headers={"Content-Type": "text/plain", **bearer(READ)})
    assert_error(plain, 415, "unsupported_media_type")
    assert_error(httpx.post(url, headers=bearer(READ)), 415, "unsupported_media_type")
    assert httpx.post(url, json={}, headers=bearer(READ)).status_code == 201
    limited = httpx.post(url, json={}, headers=bearer(READ))
    assert_error(limited, 429, "rate_limited")
    assert limited.headers["retry-after"]
    stream = httpx.get(server.url + "/api/events?format=ndjson", headers=bearer(READ))
    assert stream.status_code == 200  # new streams have their own window


def test_json_answers_are_never_stored_by_caches(secured: ServerProcess):
    """Authenticated JSON answers (pages, one event, stats, tickets) send no-store."""
    [event_id] = secured.publish({"type": "a"}, headers=bearer(PUBLISH))
    token = bearer(READ)
    answers = [
        httpx.get(secured.url + "/api/events", headers=token),
        httpx.get(f"{secured.url}/api/events/{event_id}", headers=token),
        httpx.get(secured.url + "/api/stats", headers=token),
        httpx.post(secured.url + "/api/stream-tickets", json={}, headers=token),
        httpx.get(secured.url + "/api/diag/ws/validation_updates", headers=token),
    ]
    for answer in answers:
        assert answer.status_code in (200, 201), answer.text
        assert answer.headers["cache-control"] == "no-store", answer.request.url


def test_api_docs_are_served_from_this_server_under_the_strict_csp(server: ServerProcess):
    """/docs names no other host, its scripts and styles are served here, it sends the
    dashboard's CSP (no inline script or style); /redocs moved to /docs."""
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe" not in csp
    assert "://" not in page.text and "<script>" not in page.text
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css",
                  "/static/api-docs.js"):
        answer = httpx.get(server.url + asset)
        assert answer.status_code == 200 and len(answer.content) > 100, asset
    assert_error(httpx.get(server.url + "/docs/assets/index.html"), 404, "not_found")
    moved = httpx.get(server.url + "/redocs")
    assert moved.status_code == 301 and moved.headers["location"].endswith("/docs")


@pytest.mark.serial  # bounds /healthz delays while bodies are parsed
def test_a_huge_body_of_tiny_values_does_not_stall_other_clients(server: ServerProcess):
    """Three 8 MB bodies of ``[{},{},...]`` posted at once are refused (413), and /healthz
    answers meanwhile within 0.4 s (the body was parsed on the event loop: 1.4 s)."""
    body = b"[" + b",".join([b"{}"] * 2_666_666) + b"]"

    async def scenario() -> tuple[float, list[int]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            async def post() -> int:
                headers = {"Content-Type": "application/json"}
                return (await client.post("/api/events", content=body, headers=headers)).status_code

            posts = [asyncio.create_task(post()) for _ in range(3)]
            worst = 0.0
            while not all(task.done() for task in posts):
                started = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                worst = max(worst, time.monotonic() - started)
                await asyncio.sleep(0.01)
            return worst, [task.result() for task in posts]

    worst, statuses = asyncio.run(scenario())
    assert statuses == [413, 413, 413]
    assert worst < 0.4, f"/healthz took {worst:.3f} s while the bodies were parsed"
