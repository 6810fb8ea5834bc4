"""Connection caps and rate limits (FAULTS 29, 35): documented statuses, nobody else hurt."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.sse_parser import parse_all
from tests.support import ServerProcess


def test_sse_over_the_connection_cap_gets_200_retry_and_an_error_event(start_server):
    """EventSource must keep reconnecting, so a full server answers 200 + retry: + error."""
    server = start_server(LIVEFEED_MAX_CONNECTIONS="2")

    async def scenario() -> None:
        async with connect(server.ws_url + "/ws/validation_updates"), \
                connect(server.ws_url + "/ws/validation_updates"):
            async with httpx.AsyncClient() as client:
                refused = await client.get(server.url + "/sse/validation_updates")
                assert refused.status_code == 200
                messages = parse_all(refused.content)
                assert messages[-1].event == "stream_error"
                assert orjson.loads(messages[-1].data)["error"] == "overloaded"
                assert messages[-1].retry is not None and messages[-1].retry >= 5000
            with pytest.raises(InvalidStatus) as ws_refused:
                async with connect(server.ws_url + "/ws/validation_updates"):
                    pass
            response = ws_refused.value.response
            assert response.status_code == 503 and response.headers["Retry-After"] == "5"
            assert orjson.loads(response.body)["error"] == "overloaded"
        await asyncio.sleep(0.2)
        async with connect(server.ws_url + "/ws/validation_updates") as ws:
            assert orjson.loads(await ws.recv())["type"] == "connection_established"

    asyncio.run(scenario())


def test_per_client_cap_and_trusted_proxy_addresses(start_server):
    """Behind a trusted proxy each X-Forwarded-For client has its own quota."""
    server = start_server(LIVEFEED_MAX_CONNECTIONS_PER_CLIENT="1", LIVEFEED_TRUST_PROXY="127.0.0.1")

    async def scenario() -> None:
        first = {"X-Forwarded-For": "203.0.113.7"}
        other = {"X-Forwarded-For": "203.0.113.8"}
        async with connect(server.ws_url + "/ws/validation_updates", additional_headers=first):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.ws_url + "/ws/validation_updates",
                                   additional_headers=first):
                    pass
            assert "203.0.113.7" in orjson.loads(refused.value.response.body)["detail"]
            async with connect(server.ws_url + "/ws/validation_updates",
                               additional_headers=other) as ws:
                assert orjson.loads(await ws.recv())["type"] == "connection_established"

    asyncio.run(scenario())


def test_forwarded_non_loopback_client_may_not_publish_without_a_token(start_server):
    """Behind a local proxy not every client looks like loopback."""
    server = start_server(LIVEFEED_TRUST_PROXY="127.0.0.1")
    response = httpx.post(server.url + "/api/events", content=b'{"type":"a"}',
                          headers={"Content-Type": "application/json",
                                   "X-Forwarded-For": "198.51.100.4"})
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    untrusted = start_server()  # without TRUST_PROXY the header is ignored
    assert untrusted.publish({"type": "a"}, headers={"X-Forwarded-For": "198.51.100.4"}) == [1]


def test_publish_rate_limit_is_429_with_retry_after(start_server):
    """Publishing faster than LIVEFEED_PUBLISH_RATE gets 429 and Retry-After."""
    server = start_server(LIVEFEED_PUBLISH_RATE="3/minute")
    for _ in range(3):
        server.publish({"type": "a"})
    response = httpx.post(server.url + "/api/events", content=b'{"type":"a"}',
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited" and int(response.headers["Retry-After"]) >= 1
    assert len(server.events()) == 3


def test_repeated_wrong_tokens_are_rate_limited(start_server):
    """Guessing tokens is slowed down: after the allowed failures even the right one waits."""
    server = start_server(LIVEFEED_READ_TOKEN="right", LIVEFEED_AUTH_FAILURE_RATE="3/minute")
    wrong = {"Authorization": "Bearer wrong"}
    statuses = [httpx.get(server.url + "/api/events", headers=wrong).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    right = httpx.get(server.url + "/api/events", headers={"Authorization": "Bearer right"})
    assert right.status_code == 429


def test_read_token_gates_streams_and_replay(start_server):
    """With LIVEFEED_READ_TOKEN, streams and replay need it (header or access_token)."""
    server: ServerProcess = start_server(LIVEFEED_READ_TOKEN="r-token")
    response = httpx.get(server.url + "/sse/validation_updates")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert httpx.get(server.url + "/api/events").status_code == 401
    assert httpx.get(server.url + "/api/events?access_token=r-token").status_code == 200

    async def ws() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url + "/ws/validation_updates"):
                pass
        assert refused.value.response.status_code == 401
        async with connect(server.ws_url + "/ws/validation_updates",
                           additional_headers={"Authorization": "Bearer r-token"}) as socket:
            assert orjson.loads(await socket.recv())["type"] == "connection_established"

    asyncio.run(ws())
    assert "r-token" not in server.log()
