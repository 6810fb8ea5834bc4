"""``/openapi.json`` describes the stream paths, and what they really send matches it.

The stream paths are served in front of Quart, so the document adds them by
hand (``app/http/stream_docs.py``); these tests hold that description to the
running server: its parameters and answers, and every frame a real WebSocket
and SSE client receives, validated against the served schemas.  schemathesis
(``tests/test_properties.py``) also runs the documented ``/sse`` operation,
reading each stream to its first event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.sse_parser import SSEMessage
from tests.support import ServerProcess, collect_sse

FRAME_TYPES = {
    "connection_established", "heartbeat", "replay_truncated", "stream_error", "pong",
    "subscribed", "published",
}  # fmt: skip
MESSAGE_TYPES = {"ping", "subscribe", "unsubscribe", "publish"}
SSE_PARAMETERS = {"channel", "types", "tail", "last_event_id", "Last-Event-ID", "ticket",
                  "access_token"}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with frequent heartbeats, so every stream shows one quickly."""
    process = ServerProcess(tmp_path_factory.mktemp("openapi"), {"LIVEFEED_HEARTBEAT_S": "0.3"})
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module")
def document(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(server.url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator for ``schema`` whose ``#/components/...`` references resolve."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


def assert_valid(check: jsonschema_rs.Validator, instance: Any) -> None:
    errors = [error.message for error in check.iter_errors(instance)]
    assert not errors, (instance, errors)


def frame_type(document: dict[str, Any], reference: dict[str, str]) -> str | None:
    """The ``type`` a referenced frame schema fixes (None for envelopes and arrays)."""
    if "$ref" not in reference:
        return None
    schema = document["components"]["schemas"][reference["$ref"].rsplit("/", 1)[1]]
    return schema["properties"].get("type", {}).get("const")


# --- the document --------------------------------------------------------------------------


def test_sse_operation_documents_its_stream_parameters_and_errors(document: dict[str, Any]):
    """GET /sse/{channel}: text/event-stream, the cursor/filter/credential parameters, and
    the 400/401/403/404 JSON errors."""
    operation = document["paths"]["/sse/{channel}"]["get"]
    assert {p["name"] for p in operation["parameters"]} == SSE_PARAMETERS
    assert {p["in"] for p in operation["parameters"] if p["name"] == "Last-Event-ID"} == {"header"}
    responses = operation["responses"]
    assert list(responses["200"]["content"]) == ["text/event-stream"]
    for status in ("400", "401", "403", "404"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    error = document["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "detail"}


@pytest.mark.parametrize("path", ["/ws/{channel}", "/ws"])
def test_websocket_operations_document_the_upgrade_frames_and_messages(
    document: dict[str, Any], path: str
):
    """GET /ws/{channel} and /ws: the 101 upgrade, JSON refusals, every frame the server
    sends and every message a client may send."""
    operation = document["paths"][path]["get"]
    responses = operation["responses"]
    assert "101" in responses
    assert {"400", "401", "403", "429", "503"} <= set(responses)
    names = {p["name"] for p in operation["parameters"]}
    assert names == SSE_PARAMETERS - ({"channel"} if path == "/ws" else set()) | {"batch"}
    frames = operation["x-websocket-frames"]["anyOf"]
    assert {frame_type(document, f) for f in frames} - {None} == FRAME_TYPES
    messages = operation["x-websocket-messages"]
    assert {frame_type(document, m) for m in messages["oneOf"]} == MESSAGE_TYPES
    assert set(messages["discriminator"]["mapping"]) == MESSAGE_TYPES


def test_the_contracts_client_messages_match_the_document(document: dict[str, Any]):
    """The client messages of docs/api.md are valid; a misspelt or unknown one is not."""
    check = validator(document, document["paths"]["/ws"]["get"]["x-websocket-messages"])
    for message in [
        {"type": "ping"},
        {"type": "subscribe", "channels": ["wf_c"]},
        {"type": "unsubscribe", "channels": ["wf_a"]},
        {"type": "publish", "ref": "r1", "events": [{"type": "validation_created"}]},
        {"type": "publish", "ref": "r2", "events": [{"type": "a.b", "workflow_id": "wf_a",
                                                     "data": {}}], "idempotency_key": "k"},
    ]:  # fmt: skip
        assert_valid(check, message)
    for message in [
        {"type": "ping", "extra": 1},
        {"type": "subscribe", "channels": []},
        {"type": "publish", "ref": "", "events": [{"type": "a"}]},
        {"type": "publish", "ref": "r", "events": [{"type": "Bad"}]},
        {"type": "shout"},
    ]:
        assert not check.is_valid(message), message


# --- what the server really sends ------------------------------------------------------------


async def frames_until(ws: ClientConnection, wanted: str) -> list[Any]:
    """Frames (parsed) up to and including the first whose type is ``wanted``."""
    frames: list[Any] = []
    async with asyncio.timeout(10):
        while True:
            frames.append(orjson.loads(await ws.recv()))
            if isinstance(frames[-1], dict) and frames[-1].get("type") == wanted:
                return frames


@pytest.mark.asyncio
async def test_websocket_frames_match_the_document(server: ServerProcess, document):
    """Every frame of a real WebSocket (hello, events, a batch, heartbeat, pong, a refused
    message, replay_truncated) validates against x-websocket-frames."""
    check = validator(document, document["paths"]["/ws/{channel}"]["get"]["x-websocket-frames"])
    ids = server.publish([{"type": "doc.frame", "workflow_id": "wf_doc", "data": {"n": 1}}] * 3)
    seen: list[Any] = []
    base = server.ws_url + "/ws/wf_doc"
    async with connect(f"{base}?last_event_id={ids[0]}&batch=1") as ws:
        seen += await frames_until(ws, "heartbeat")
        await ws.send('{"type":"ping"}')
        seen += await frames_until(ws, "pong")
        await ws.send('{"type":"shout"}')
        seen += await frames_until(ws, "stream_error")
    async with connect(f"{base}?last_event_id={10**15}") as ws:
        seen += await frames_until(ws, "replay_truncated")
    for frame in seen:
        assert_valid(check, frame)
    kinds = {f.get("type") if isinstance(f, dict) else "batch" for f in seen}
    assert {"connection_established", "batch", "heartbeat", "pong", "stream_error",
            "replay_truncated"} <= kinds  # fmt: skip


def sse_branch(schema: dict[str, Any], message: SSEMessage) -> dict[str, Any]:
    """The documented kind of event a message is: its control name, else a log event."""
    branches = schema["anyOf"]
    for branch in branches:
        if branch["properties"]["event"].get("const") == message.event:
            return dict(branch)
    return dict(next(b for b in branches if "pattern" in b["properties"]["event"]))


@pytest.mark.asyncio
async def test_sse_events_match_the_document(server: ServerProcess, document, tmp_path: Path):
    """Every event of a real SSE stream (hello, replayed events, heartbeat, and a cursor
    ahead of the log) matches the documented event, its data the documented JSON."""
    content = document["paths"]["/sse/{channel}"]["get"]["responses"]["200"]["content"]
    schema = content["text/event-stream"]["schema"]
    ids = server.publish([{"type": "doc.sse", "workflow_id": "wf_sse"}] * 2)
    messages = await collect_sse(
        f"{server.url}/sse/wf_sse?last_event_id={ids[0] - 1}",
        lambda seen: any(m.event == "heartbeat" for m in seen),
    )
    messages += await collect_sse(
        f"{server.url}/sse/wf_sse", lambda seen: len(seen) >= 2,
        headers={"Last-Event-ID": str(10**15)},
    )  # fmt: skip
    for message in messages:
        branch = sse_branch(schema, message)
        fields: dict[str, Any] = {"event": message.event, "data": message.data}
        if message.id:  # EventSource's last id, kept across control messages
            fields["id"] = message.id
        if message.retry is not None:
            fields["retry"] = message.retry
        assert_valid(validator(document, branch), fields)
        data_schema = branch["properties"]["data"]["contentSchema"]
        assert_valid(validator(document, data_schema), orjson.loads(message.data))
    events = [m.event for m in messages]
    assert events.count("doc.sse") == 2
    assert {"connection_established", "heartbeat", "replay_truncated"} <= set(events)
