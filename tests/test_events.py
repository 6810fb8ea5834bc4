"""The envelope's encodings, without a server: one JSON text, one SSE frame, same bytes."""

from __future__ import annotations

import orjson
import pytest

from app.events import Event
from app.sse import ServerSentEvent
from tests.sse_parser import parse_all

SAMPLES = [
    (1, "validation_created", "wf_abc123", {"file": "a.md"}),
    (2**63 - 1, "a", None, {}),
    (
        42,
        "x.y-z_9",
        "A:b.c-d_e",
        {"text": "line1\nline2\r\nline3\u2028\u0085</script>", "n": [1, 2.5]},
    ),
]


@pytest.mark.parametrize(("event_id", "type", "workflow_id", "data"), SAMPLES)
def test_fast_sse_frame_equals_the_general_encoder(event_id, type, workflow_id, data):
    """Event.build's hand-formatted frame is what ServerSentEvent would encode."""
    event = Event.build(
        event_id, type, workflow_id, "2026-11-25T18:00:00.123456Z", orjson.dumps(data).decode()
    )
    general = ServerSentEvent(event.text, id=event_id, event=type, sep="\n").encode()
    assert event.sse == general
    [message] = parse_all(event.sse)
    assert message.data.encode() == event.json and message.id == str(event_id)
    assert orjson.loads(event.json) == {
        "id": event_id,
        "type": type,
        "workflow_id": workflow_id,
        "ts": "2026-11-25T18:00:00.123456Z",
        "data": data,
    }
