"""The envelope's encodings, without a server: one JSON text, one SSE frame, same bytes."""

from __future__ import annotations

import orjson
import pytest

from app.errors import Rejected
from app.events import MAX_DATA_DEPTH, Event, drafts_from_body
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


def nested(depth: int) -> dict[str, object]:
    """``data`` nested ``depth`` levels deep (``data`` itself is level 1)."""
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [MAX_DATA_DEPTH + 1, 300])  # 300: past orjson's own limit
def test_data_nested_too_deep_is_refused_by_name(depth: int) -> None:
    deep = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)  # orjson would not write it
    body = b'[{"type": "t"}, {"type": "t", "data": ' + deep.encode() + b"}]"
    with pytest.raises(Rejected) as refused:
        drafts_from_body(body, 1 << 20)
    assert refused.value.code == "invalid_event"
    assert str(refused.value.detail) == f"events[1].data is nested deeper than {MAX_DATA_DEPTH}"


def test_data_at_the_depth_limit_or_full_of_brackets_in_strings_is_accepted() -> None:
    """Brackets inside strings are not nesting (the quick count over-counts them,
    and the walk that follows decides)."""
    deepest = nested(MAX_DATA_DEPTH)
    brackets = {"text": "[{" * 500}
    body = orjson.dumps([{"type": "t", "data": d} for d in (deepest, brackets)])
    drafts, batch = drafts_from_body(body, 1 << 20)
    assert batch and [orjson.loads(d.data) for d in drafts] == [deepest, brackets]
