"""WebSocket frames built once per event and written as they are: the bytes are
valid RFC 6455 server frames (decoded here by wsproto, not by our code), and a
real client gets the same messages, one frame per event or batched."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from websockets.asyncio.client import connect
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import TextMessage

from app.events import Control, Event, websocket_text_frame
from app.streams.ws import frame_bytes, frame_texts
from tests.support import ServerProcess

#: Payload sizes around each length encoding's edge (7 bit, 16 bit, 64 bit).
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]
#: Event data sizes whose envelopes fall on either side of those edges (the data of
#: one event is at most 64 KiB, so the biggest envelope needs the 64-bit length).
PADS = [0, 30, 60, 65400, 65440, 65526]


def decoded(data: bytes) -> list[str]:
    """The text messages a client reads from ``data``; each must be one whole frame."""
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    messages = []
    for event in client.events():
        assert isinstance(event, TextMessage)
        assert event.frame_finished and event.message_finished
        messages.append(event.data)
    return messages


@pytest.mark.parametrize("size", SIZES)
def test_a_text_frame_of_any_length_decodes_to_its_payload(size: int) -> None:
    payload = ("é" * (size // 2) + "x" * (size % 2)).encode()
    assert len(payload) == size
    assert decoded(websocket_text_frame(payload)) == [payload.decode()]


def frames() -> list[Event | Control]:
    ts = "2026-12-04T00:00:00.000000Z"
    events = [Event.build(n, "t", None, ts, f'{{"n":{n}}}') for n in (1, 2, 3)]
    lone = Event.build(4, "t", "wf", ts, "{}")
    marker = Control.build("subscribed", channels=["wf"])
    return [*events, marker, lone, Control.build("heartbeat")]


@pytest.mark.parametrize("batch", [False, True])
def test_ready_made_frames_carry_the_same_messages_as_text_sends(batch: bool) -> None:
    """The server path that writes bytes and the one that lets the server frame
    text (when Livefeed's Hypercorn fixes are not installed) say the same thing."""
    texts = frame_texts(frames(), batch)
    assert decoded(frame_bytes(frames(), batch)) == texts
    if batch:
        assert orjson.loads(texts[0]) == [orjson.loads(f.json) for f in frames()[:3]]
        assert orjson.loads(texts[2])["id"] == 4  # a run of one stays an envelope
    else:
        assert texts == [f.text for f in frames()]


def test_events_of_every_frame_length_reach_a_websocket_client(server: ServerProcess) -> None:
    """Envelopes around the 126 and 65536 byte edges arrive whole and in order,
    one frame per event and batched."""
    ids = server.publish([{"type": "big", "data": {"pad": "x" * size}} for size in PADS])

    async def receive(batch: bool) -> list[dict[str, object]]:
        query = "?last_event_id=0" + ("&batch=1" if batch else "")
        url = server.ws_url + "/ws/validation_updates" + query
        async with connect(url, max_size=None) as ws:
            assert orjson.loads(await ws.recv())["type"] == "connection_established"
            got: list[dict[str, object]] = []
            async with asyncio.timeout(10):
                while len(got) < len(ids):
                    message = orjson.loads(await ws.recv())
                    if isinstance(message, list):
                        got.extend(message)
                    elif message.get("id") is not None:  # not a control
                        got.append(message)
            return got

    for batch in (False, True):
        got = asyncio.run(receive(batch))
        assert [e["id"] for e in got] == ids
        assert [len(e["data"]["pad"]) for e in got] == PADS  # type: ignore[index]
