"""app.client.Publisher(transport="ws") against a real server: one socket, refs, refusals."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.client import Published, Publisher, PublishError, publish
from tests.support import ServerProcess

pytestmark = pytest.mark.asyncio


async def test_concurrent_publishes_share_one_websocket_and_get_their_own_receipts(
    server: ServerProcess,
):
    """200 publishes at once travel on one socket; each call gets the receipt of its event."""
    async with Publisher(server.url, transport="ws") as publisher:
        receipts = await asyncio.gather(
            *(publisher.publish({"type": "t", "data": {"n": n}}) for n in range(200))
        )
        batch = await publisher.publish([{"type": "b"}, {"type": "c", "workflow_id": "wf_1"}])
        async with httpx.AsyncClient() as http:
            stats = (await http.get(f"{server.url}/api/stats")).json()
    assert stats["connections"]["websocket"] == 1
    logged = {event["id"]: event for event in server.events()}
    assert len(logged) == 202
    for n, receipt in enumerate(receipts):
        assert isinstance(receipt, Published) and logged[receipt.id]["data"] == {"n": n}
        assert logged[receipt.id]["ts"] == receipt.ts
    assert [logged[r.id]["type"] for r in batch] == ["b", "c"] and batch[0].id + 1 == batch[1].id


async def test_a_refusal_raises_publish_error_with_the_http_code_and_the_socket_stays(
    server: ServerProcess,
):
    """An invalid event is refused with the code POST gives; the next publish still lands."""
    async with Publisher(server.url, transport="ws") as publisher:
        with pytest.raises(PublishError) as bad:
            await publisher.publish({"type": "Not A Type"})
        good = await publisher.publish({"type": "t"})
    assert (bad.value.status, bad.value.error) == (None, "invalid_event") and bad.value.detail
    assert [event["id"] for event in server.events()] == [good.id]


async def test_publish_rights_come_from_the_publish_token(start_server):
    """With a publish token set, a wrong one is refused (forbidden) and the right one publishes."""
    server = start_server(LIVEFEED_PUBLISH_TOKEN="p" * 32)
    with pytest.raises(PublishError) as wrong:
        await publish(server.url, {"type": "t"}, token="wrong", transport="ws")
    assert wrong.value.error == "forbidden"
    receipt = await publish(server.url, {"type": "t"}, token="p" * 32, transport="ws")
    assert [event["id"] for event in server.events()] == [receipt.id]


async def test_a_refused_handshake_is_the_same_publish_error_as_over_http(start_server):
    """When reading needs a token, a missing one is the handshake's 401 unauthorized."""
    server = start_server(LIVEFEED_READ_TOKEN="r" * 32)
    with pytest.raises(PublishError) as refused:
        await publish(server.url, {"type": "t"}, transport="ws")
    assert (refused.value.status, refused.value.error) == (401, "unauthorized")
    receipt = await publish(server.url, {"type": "t"}, token="r" * 32, transport="ws")
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {'r' * 32}"}) as http:
        logged = (await http.get(f"{server.url}/api/events")).json()["events"]
    assert [event["id"] for event in logged] == [receipt.id]


async def test_an_idempotency_key_repeated_over_websocket_writes_nothing(server: ServerProcess):
    """The same key returns the first receipts, over WebSocket as over HTTP."""
    body = [{"type": "t", "data": {"n": 1}}, {"type": "t", "data": {"n": 2}}]
    first = await publish(server.url, body, idempotency_key="order-9", transport="ws")
    again = await publish(server.url, body, idempotency_key="order-9")
    async with Publisher(server.url, transport="ws") as publisher:
        third = await publisher.publish(body, idempotency_key="order-9")
    assert first == again == third and len(server.events()) == 2


async def test_a_keyed_publish_is_retried_across_a_restart_and_lands_once(server: ServerProcess):
    """The socket dies with the server; the keyed publish reconnects once it is back."""
    async with Publisher(server.url, transport="ws", retries=40) as publisher:
        await publisher.publish({"type": "first"})
        await asyncio.to_thread(server.kill)
        pending = asyncio.create_task(publisher.publish({"type": "t"}, idempotency_key="k1"))
        await asyncio.sleep(1)
        assert not pending.done()
        await asyncio.to_thread(server.start)
        receipt = await pending
    assert [event["type"] for event in server.events()] == ["first", "t"]
    assert server.events()[-1]["id"] == receipt.id


async def test_publishes_refused_as_rate_limited_are_retried_and_land_once(start_server):
    """rate_limited means "not read": each refused publish is repeated until it lands, once."""
    server = start_server(LIVEFEED_PUBLISH_RATE="3/second")
    async with Publisher(server.url, transport="ws", retries=20) as publisher:
        receipts = await asyncio.gather(
            *(publisher.publish({"type": "t", "data": {"n": n}}) for n in range(8))
        )
    logged = server.events()
    assert sorted(event["data"]["n"] for event in logged) == list(range(8))
    assert sorted(r.id for r in receipts) == [event["id"] for event in logged]
