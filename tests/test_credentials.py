"""Idempotent publishing (FAULTS 39) and one-use stream tickets."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support import ServerProcess, assert_error, collect_sse, event_ids

pytestmark = pytest.mark.both_engines


def publish(server: ServerProcess, body: object, key: str, **headers: str) -> httpx.Response:
    return httpx.post(server.url + "/api/events", content=orjson.dumps(body), timeout=10,
                      headers={"Content-Type": "application/json", "Idempotency-Key": key,
                               **headers})


def test_retried_publish_with_the_same_key_writes_once(server: ServerProcess):
    """A retry after a lost 201 returns the original ids and writes nothing new."""
    first = publish(server, [{"type": "a"}, {"type": "b"}], "order-42")
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = publish(server, [{"type": "a"}, {"type": "b"}], "order-42")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(server.events()) == 2


def test_same_key_with_another_body_is_422(server: ServerProcess):
    """A key names one body; reusing it for another is a mistake, said clearly."""
    assert publish(server, {"type": "a"}, "k1").status_code == 201
    assert_error(publish(server, {"type": "b"}, "k1"), 422, "idempotency_key_reused")
    assert_error(publish(server, {"type": "a"}, "x" * 129), 400, "bad_idempotency_key")
    ordered = publish(server, {"type": "c", "data": {"x": 1, "y": 2}}, "k2")
    reordered = httpx.post(server.url + "/api/events", timeout=10,
                           content=b'{"data": {"y": 2, "x": 1}, "type": "c"}',
                           headers={"Content-Type": "application/json", "Idempotency-Key": "k2"})
    assert reordered.status_code == 201 and reordered.json() == ordered.json()
    assert len(server.events()) == 2


def test_concurrent_attempts_with_one_key_write_once(server: ServerProcess):
    """Two attempts in flight at once: one write, both get the same ids."""

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url) as client:
            body = orjson.dumps({"type": "once", "data": {"n": 1}})
            headers = {"Content-Type": "application/json", "Idempotency-Key": "same"}
            return await asyncio.gather(*(client.post("/api/events", content=body, headers=headers)
                                          for _ in range(10)))

    answers = asyncio.run(race())
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 9
    assert len(server.events()) == 1


def test_idempotency_keys_survive_a_restart(server: ServerProcess):
    """Keys live in the store, so a retry after a restart is still recognised."""
    first = publish(server, {"type": "a"}, "durable-key").json()
    server.stop()
    server.start()
    again = publish(server, {"type": "a"}, "durable-key")
    assert again.json() == first and again.headers["idempotent-replayed"] == "true"


@pytest.fixture
def secured(start_server) -> ServerProcess:
    return start_server(LIVEFEED_READ_TOKEN="reader", LIVEFEED_PUBLISH_TOKEN="writer")


def ticket(server: ServerProcess, channel: str = "validation_updates") -> str:
    response = httpx.post(server.url + "/api/stream-tickets",
                          content=orjson.dumps({"channel": channel}),
                          headers={"Authorization": "Bearer reader",
                                   "Content-Type": "application/json"})
    assert response.status_code == 201 and response.json()["expires_in"] == 30
    return response.json()["ticket"]


def test_a_ticket_opens_one_stream_once(secured: ServerProcess):
    """Browsers trade their token for a one-use ticket; a second use is refused."""
    assert httpx.post(secured.url + "/api/stream-tickets").status_code == 401
    one = ticket(secured)
    messages = asyncio.run(collect_sse(secured.url + f"/sse/validation_updates?ticket={one}",
                                       lambda ms: ms[0].event == "connection_established"))
    assert messages[0].event == "connection_established"
    again = httpx.get(secured.url + f"/sse/validation_updates?ticket={one}")
    assert_error(again, 401, "unauthorized")

    async def ws() -> None:
        fresh = ticket(secured)
        async with connect(secured.ws_url + f"/ws/validation_updates?ticket={fresh}") as socket:
            assert orjson.loads(await socket.recv())["type"] == "connection_established"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(secured.ws_url + f"/ws/validation_updates?ticket={fresh}"):
                pass
        assert refused.value.response.status_code == 401

    asyncio.run(ws())
    assert one not in secured.log()


def test_a_ticket_is_scoped_to_its_channel(secured: ServerProcess):
    """A ticket for one workflow does not open another channel."""
    scoped = ticket(secured, "wf_1")
    assert httpx.get(secured.url + f"/sse/wf_2?ticket={scoped}").status_code == 401
    secured.publish({"type": "t", "workflow_id": "wf_1"},
                    headers={"Authorization": "Bearer writer"})
    messages = asyncio.run(collect_sse(secured.url + f"/sse/wf_1?ticket={ticket(secured, 'wf_1')}"
                                       "&last_event_id=0", lambda ms: len(event_ids(ms)) == 1))
    assert event_ids(messages) == [1]


@pytest.mark.sqlite_only
def test_an_expired_ticket_is_refused(secured: ServerProcess):
    """Tickets last 30 s; the check uses the database, so it holds on every machine."""
    old = ticket(secured)
    path = secured.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE stream_tickets SET expires_at = ?", (time.time() - 1,))
    assert httpx.get(secured.url + f"/sse/validation_updates?ticket={old}").status_code == 401
