"""app.client.Publisher and publish() against a real server."""

from __future__ import annotations

import asyncio

import pytest

from app.client import Published, Publisher, PublishError, publish
from tests.support import ServerProcess

pytestmark = pytest.mark.asyncio


async def test_one_event_and_a_batch_are_committed_with_their_receipts(server: ServerProcess):
    """One event answers one receipt, a list answers one per event, in the log's order."""
    async with Publisher(server.url) as publisher:
        one = await publisher.publish({"type": "a", "workflow_id": "wf_1", "data": {"k": 1}})
        many = await publisher.publish([{"type": "b"}, {"type": "c", "data": None}])
    logged = server.events()
    assert isinstance(one, Published) and [one, *many] == [
        Published(event["id"], event["ts"]) for event in logged
    ]
    assert [(e["type"], e["workflow_id"], e["data"]) for e in logged] == [
        ("a", "wf_1", {"k": 1}),
        ("b", None, {}),
        ("c", None, {}),
    ]


async def test_an_idempotency_key_makes_a_repeat_write_nothing(server: ServerProcess):
    """The same key and body returns the first receipts and adds no event."""
    body = [{"type": "t", "data": {"n": 1}}, {"type": "t", "data": {"n": 2}}]
    first = await publish(server.url, body, idempotency_key="order-17")
    again = await publish(server.url, body, idempotency_key="order-17")
    assert first == again and len(server.events()) == 2


async def test_refusals_raise_publish_error_with_the_server_code(start_server):
    """A bad event or a wrong token is not retried: PublishError carries status and code."""
    server = start_server(LIVEFEED_PUBLISH_TOKEN="p" * 32)
    with pytest.raises(PublishError) as unauthorized:
        await publish(server.url, {"type": "t"}, token="wrong")
    assert (unauthorized.value.status, unauthorized.value.error) == (401, "unauthorized")
    async with Publisher(server.url, token="p" * 32) as publisher:
        with pytest.raises(PublishError) as bad:
            await publisher.publish({"type": "Not A Type"})
        assert bad.value.status == 400 and bad.value.detail
        assert (await publisher.publish({"type": "t"})).id == 1


async def test_a_publish_waits_out_a_restart_when_it_may_retry(server: ServerProcess):
    """With nothing listening, publishes are retried (they never reached the
    server), so a publish started while the server is down lands once it is back."""
    await asyncio.to_thread(server.kill)
    async with Publisher(server.url, retries=40) as publisher:
        pending = asyncio.create_task(publisher.publish({"type": "t"}, idempotency_key="k1"))
        await asyncio.sleep(1)
        assert not pending.done()
        await asyncio.to_thread(server.start)
        receipt = await pending
    assert [event["id"] for event in server.events()] == [receipt.id]


async def test_an_unknown_transport_is_refused_not_replaced():
    """Only "http" and "ws" are transports: anything else is a ValueError, never a fallback."""
    with pytest.raises(ValueError, match="'http' or 'ws'"):
        Publisher("http://127.0.0.1:9", transport="pigeon")  # type: ignore[arg-type]
