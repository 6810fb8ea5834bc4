"""Expiring read credentials: JWTs signed with LIVEFEED_TOKEN_SECRET.

A stream opened with one (or with a ticket minted with one) is closed when
its ``exp`` passes: SSE with an ``error`` event ``token_expired`` and the end of
the response, WebSocket with that frame and close code 1008.  Bad, expired or
out-of-scope tokens are refused like a wrong read token.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.sse_parser import SSEMessage
from tests.support import (
    ROOT,
    ServerProcess,
    assert_error,
    collect_sse,
    event_ids,
    metric,
    read_sse,
)

pytestmark = pytest.mark.both_engines

SECRET = "expiring-read-credentials-test-key-0123456789"
WRITER = {"Authorization": "Bearer writer"}
EARLY_S = 0.2  # the server may close this much before exp (clock reads differ)
LATE_S = 1.5  # and at most this much after it (a loaded machine)


def token(exp: float, secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"exp": exp, **claims}, secret, algorithm="HS256")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def soon(seconds: int = 2) -> int:
    """An ``exp`` at least ``seconds`` ahead: enough to open a stream and publish."""
    return math.ceil(time.time()) + seconds


@pytest.fixture
def secured(start_server) -> ServerProcess:
    return start_server(
        LIVEFEED_TOKEN_SECRET=SECRET,
        LIVEFEED_READ_TOKEN="reader",
        LIVEFEED_PUBLISH_TOKEN="writer",
        LIVEFEED_AUTH_FAILURE_RATE="1000/minute",  # the refusal tests fail on purpose, often
    )


@dataclass
class Ended:
    """What a stream delivered before it ended, and when and how it ended."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    at: float = 0.0
    close_code: int | None = None
    close_reason: str | None = None

    @property
    def ids(self) -> list[int]:
        return [m["id"] for m in self.messages if "id" in m]


async def sse_to_end(url: str, opened: asyncio.Event, headers: dict[str, str]) -> Ended:
    """Every SSE message (its JSON data) until the server ends the response."""
    messages: list[SSEMessage] = []
    await read_sse(url, messages, headers=headers, opened=opened)
    return Ended([orjson.loads(message.data) for message in messages], at=time.time())


async def read_ws(url: str, opened: asyncio.Event, headers: dict[str, str]) -> Ended:
    """Every WebSocket frame until the server closes the connection."""
    ended = Ended()
    async with connect(url, additional_headers=headers) as ws:
        try:
            async for text in ws:
                ended.messages.append(orjson.loads(text))
                opened.set()
        except ConnectionClosed:
            pass
        ended.at = time.time()
        ended.close_code, ended.close_reason = ws.close_code, ws.close_reason
    return ended


async def open_then_publish(
    server: ServerProcess, sse_url: str, ws_url: str, headers: dict[str, str]
) -> tuple[Ended, Ended]:
    """Open an SSE and a WebSocket stream, publish one event, wait for both to end."""
    opened = [asyncio.Event(), asyncio.Event()]
    streams = asyncio.gather(
        sse_to_end(sse_url, opened[0], headers), read_ws(ws_url, opened[1], headers)
    )
    async with asyncio.timeout(10):
        await asyncio.gather(*(event.wait() for event in opened))
        await asyncio.to_thread(server.publish, {"type": "before_expiry"}, headers=WRITER)
        return await streams


def assert_closed_at_expiry(sse: Ended, ws: Ended, exp: int) -> None:
    """Both streams got the event, then token_expired, then ended at about exp."""
    for ended in (sse, ws):
        assert [m["type"] for m in ended.messages] == [
            "connection_established",
            "before_expiry",
            "stream_error",
        ], ended.messages
        assert ended.messages[-1]["error"] == "token_expired"
        assert ended.messages[-1]["detail"]
        assert exp - EARLY_S <= ended.at <= exp + LATE_S, (ended.at, exp)
    assert (ws.close_code, ws.close_reason) == (1008, "token_expired")


@pytest.mark.sqlite_only
def test_a_jwt_stream_gets_its_events_then_closes_at_exp(secured: ServerProcess):
    """SSE and WebSocket opened with a JWT deliver as usual and end when exp passes."""
    exp = soon()
    sse, ws = asyncio.run(
        open_then_publish(
            secured,
            secured.url + "/sse/validation_updates",
            secured.ws_url + "/ws/validation_updates",
            bearer(token(exp, channels=["validation_updates"])),
        )
    )
    assert_closed_at_expiry(sse, ws, exp)
    reader = bearer(token(int(time.time()) + 60))  # /metrics needs a read credential here
    metrics = httpx.get(secured.url + "/metrics", headers=reader).text
    for transport in ("sse", "websocket"):
        labels = {"transport": transport, "reason": "token_expired"}
        assert metric(metrics, "livefeed_disconnects_total", **labels) == 1


@pytest.mark.sqlite_only
def test_a_jwt_in_the_query_works_like_the_header(secured: ServerProcess):
    """access_token=<jwt> is accepted wherever the read token is, and expires the same way."""
    exp = soon()
    query = f"?access_token={token(exp)}"
    assert httpx.get(secured.url + "/api/events" + query).status_code == 200
    sse, ws = asyncio.run(
        open_then_publish(
            secured,
            secured.url + "/sse/validation_updates" + query,
            secured.ws_url + "/ws/validation_updates" + query,
            {},
        )
    )
    assert_closed_at_expiry(sse, ws, exp)


@pytest.mark.sqlite_only
def test_a_jwt_follow_ends_at_exp_with_one_error_line(secured: ServerProcess):
    """``format=ndjson&follow=1`` is a stream too: it ends at exp with token_expired."""
    exp = soon()
    secured.publish({"type": "before_expiry"}, headers=WRITER)

    async def follow() -> tuple[list[dict[str, Any]], float]:
        lines = []
        params = {"format": "ndjson", "follow": "1", "access_token": token(exp)}
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("GET", secured.url + "/api/events", params=params) as answer:
                assert answer.status_code == 200
                async for line in answer.aiter_lines():
                    if line:
                        lines.append(orjson.loads(line))
        return lines, time.time()

    lines, ended_at = asyncio.run(follow())
    assert [line["type"] for line in lines] == ["before_expiry", "stream_error"]
    assert lines[-1]["error"] == "token_expired"
    assert exp - EARLY_S <= ended_at <= exp + LATE_S


def refused_ws(server: ServerProcess, path: str, headers: dict[str, str]) -> httpx.Response:
    """The HTTP answer to a refused WebSocket handshake (as an httpx-like response)."""

    async def handshake() -> Any:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url + path, additional_headers=headers):
                pass
        return refused.value.response

    answer = asyncio.run(handshake())
    return httpx.Response(answer.status_code, headers=dict(answer.headers), content=answer.body)


def every_surface(server: ServerProcess, headers: dict[str, str], channel: str) -> list:
    """The answers of /sse, /ws, /api/events and POST /api/stream-tickets for ``channel``."""
    workflow = {} if channel == "validation_updates" else {"workflow_id": channel}
    return [
        httpx.get(server.url + f"/sse/{channel}", headers=headers),
        refused_ws(server, f"/ws/{channel}", headers),
        httpx.get(server.url + "/api/events", params=workflow, headers=headers),
        httpx.get(server.url + "/api/events", params={**workflow, "wait": "1"}, headers=headers),
        httpx.post(
            server.url + "/api/stream-tickets",
            content=orjson.dumps({"channel": channel}),
            headers={**headers, "Content-Type": "application/json"},
        ),
    ]


@pytest.mark.sqlite_only
def test_expired_forged_and_malformed_jwts_are_401(secured: ServerProcess):
    """A JWT that is expired, signed with another key, unsigned or without exp is refused."""
    now = math.floor(time.time())
    refused = {
        "expired": token(now - 1),
        "other key": token(now + 60, secret="another-key-that-is-long-enough-0123456789"),
        "alg none": jwt.encode({"exp": now + 60}, None, algorithm="none"),
        "no exp": jwt.encode({"channels": ["*"]}, SECRET, algorithm="HS256"),
        "bad channels": token(now + 60, channels="validation_updates"),
        "not a jwt": "not.a.jwt",
    }
    for why, credential in refused.items():
        for answer in every_surface(secured, bearer(credential), "validation_updates"):
            body = assert_error(answer, 401, "unauthorized")
            assert answer.headers["WWW-Authenticate"] == 'Bearer realm="livefeed"', why
            assert "exp" in body["detail"] or "token" in body["detail"], why
    expired = httpx.get(secured.url + "/api/events", params={"access_token": token(now - 1)})
    assert "expired" in assert_error(expired, 401, "unauthorized")["detail"]


@pytest.mark.sqlite_only
def test_a_channel_outside_the_claim_is_403(secured: ServerProcess):
    """``channels`` limits what a JWT opens; ["*"] or no claim opens every channel.
    (One event outside them is 404, as one that does not exist.)"""
    secured.publish(
        [{"type": "a", "workflow_id": "wf_1"}, {"type": "b", "workflow_id": "wf_2"}], headers=WRITER
    )
    wf_1 = bearer(token(soon(60), channels=["wf_1"]))
    for answer in every_surface(secured, wf_1, "wf_2") + every_surface(
        secured, wf_1, "validation_updates"
    ):
        assert "wf_1" in assert_error(answer, 403, "forbidden")["detail"]
    page = httpx.get(secured.url + "/api/events", params={"workflow_id": "wf_1"}, headers=wf_1)
    assert [e["id"] for e in page.json()["events"]] == [1]
    assert httpx.get(secured.url + "/api/events/1", headers=wf_1).status_code == 200
    # an event outside the claim is the 404 of a missing one: a 403 would name its workflow
    assert_error(httpx.get(secured.url + "/api/events/2", headers=wf_1), 404, "not_found")
    diagnosis = httpx.get(secured.url + "/api/diag/ws/wf_2", headers=wf_1).json()
    assert diagnosis["reason"] == "forbidden"
    assert httpx.get(secured.url + "/api/diag/ws/wf_1", headers=wf_1).json()["ok"] is True
    for scope in ({"channels": ["*"]}, {}):
        everything = bearer(token(soon(60), **scope))
        page = httpx.get(secured.url + "/api/events", headers=everything)
        assert [e["id"] for e in page.json()["events"]] == [1, 2]
        assert httpx.get(secured.url + "/api/events/2", headers=everything).status_code == 200


@pytest.mark.sqlite_only
def test_failed_jwts_count_toward_the_auth_failure_limit(start_server):
    """Guessing keys is as slow as guessing the read token; a 403 is not a failure."""
    server = start_server(LIVEFEED_TOKEN_SECRET=SECRET, LIVEFEED_AUTH_FAILURE_RATE="3/minute")
    scoped = bearer(token(soon(60), channels=["wf_1"]))
    for _ in range(3):
        assert_error(httpx.get(server.url + "/api/events", headers=scoped), 403, "forbidden")
    forged = bearer(token(soon(60), secret="a-guessed-key-that-is-long-enough-0123456"))
    for _ in range(3):
        assert_error(httpx.get(server.url + "/api/events", headers=forged), 401, "unauthorized")
    valid = httpx.get(server.url + "/api/events", headers=bearer(token(soon(60))))
    assert_error(valid, 429, "rate_limited")


@pytest.mark.sqlite_only
def test_the_secret_alone_makes_reading_need_a_credential(start_server):
    """With LIVEFEED_TOKEN_SECRET and no read token, reading needs a JWT."""
    server = start_server(LIVEFEED_TOKEN_SECRET=SECRET)
    assert_error(httpx.get(server.url + "/api/events"), 401, "unauthorized")
    assert_error(httpx.get(server.url + "/sse/validation_updates"), 401, "unauthorized")
    assert httpx.get(server.url + "/api/events", headers=bearer(token(soon()))).status_code == 200


def mint(server: ServerProcess, credential: str, channel: str = "validation_updates") -> dict:
    response = httpx.post(
        server.url + "/api/stream-tickets",
        content=orjson.dumps({"channel": channel}),
        headers={**bearer(credential), "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def static_streams_outlive(server: ServerProcess, jwt_streams: Any) -> list[list[int]]:
    """Run the JWT scenario while streams opened with the static token (header and
    ticket) stay open; after the JWT streams end, they still get a new event."""
    seen: list[list[int]] = [[], []]

    async def static_ws(ticket: str) -> None:
        url = server.ws_url + f"/ws/validation_updates?ticket={ticket}&last_event_id=0"
        async with connect(url) as ws:
            async for text in ws:
                if "id" in (frame := orjson.loads(text)):
                    seen[1].append(frame["id"])
                    if frame["id"] == 2:
                        return

    async def static_sse() -> None:
        messages = await collect_sse(
            server.url + "/sse/validation_updates?last_event_id=0",
            lambda ms: 2 in event_ids(ms),
            headers=bearer("reader"),
        )
        seen[0] = event_ids(messages)

    async with asyncio.timeout(15):
        ticket = mint(server, "reader")
        assert ticket["expires_in"] == 30
        static = asyncio.gather(static_sse(), static_ws(ticket["ticket"]))
        result = await jwt_streams
        await asyncio.to_thread(server.publish, {"type": "after_expiry"}, headers=WRITER)
        await static
    return [seen, result]


def test_a_ticket_minted_with_a_jwt_closes_at_its_exp(secured: ServerProcess):
    """A ticket never outlives the JWT it was minted with; static-token streams do."""
    exp = soon()
    credential = token(exp, channels=["validation_updates"])
    sse_ticket, ws_ticket = mint(secured, credential), mint(secured, credential)
    assert 1 <= sse_ticket["expires_in"] <= 3  # not 30: the JWT expires sooner
    scenario = open_then_publish(
        secured,
        secured.url + f"/sse/validation_updates?ticket={sse_ticket['ticket']}",
        secured.ws_url + f"/ws/validation_updates?ticket={ws_ticket['ticket']}",
        {},
    )
    seen, (sse, ws) = asyncio.run(static_streams_outlive(secured, scenario))
    assert_closed_at_expiry(sse, ws, exp)
    assert sse.ids == ws.ids == [1]
    assert seen == [[1, 2], [1, 2]]


def test_a_ticket_is_no_longer_redeemable_after_the_jwt_expires(secured: ServerProcess):
    """A ticket expires with its JWT even when that is sooner than 30 s."""
    exp = soon(1)
    ticket = mint(secured, token(exp))
    assert ticket["expires_in"] <= 2
    time.sleep(max(0.0, exp - time.time()) + 0.1)
    late = httpx.get(secured.url + f"/sse/validation_updates?ticket={ticket['ticket']}")
    assert_error(late, 401, "unauthorized")


@pytest.mark.sqlite_only
def test_a_short_token_secret_stops_the_start(tmp_path):
    """An HS256 key under 32 bytes is refused at start-up, without echoing it."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LIVEFEED_")},
        "LIVEFEED_TOKEN_SECRET": "tiny-secret-value",
        "LIVEFEED_DATABASE_URL": f"sqlite:///{tmp_path / 'livefeed.db'}",
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "configuration error: LIVEFEED_TOKEN_SECRET is 17 bytes" in result.stderr
    assert "at least 32" in result.stderr and "tiny-secret-value" not in result.stderr
