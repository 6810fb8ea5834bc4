"""What the client hands its caller: log events, publish receipts, control messages.

Parsing is strict about what the contract promises (an integer ``id`` > 0, a
string ``type``) and lenient about the rest, so that a server adding fields
to an envelope or a control message never breaks a deployed client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Required, TypedDict

import orjson

ALL_EVENTS_CHANNEL = "validation_updates"

#: ``stream_error`` was called ``error`` until 2026-12; servers of both ages exist.
ERROR_TYPES = frozenset({"stream_error", "error"})

TransportName = Literal["ws", "sse", "poll"]
TRANSPORT_LABELS: dict[TransportName, str] = {"ws": "WebSocket", "sse": "SSE", "poll": "long-poll"}

Message = dict[str, Any]


class EventDraft(TypedDict, total=False):
    """An event to publish: the server assigns ``id`` and ``ts``."""

    type: Required[str]
    workflow_id: str | None
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Event:
    """One log event, as every transport delivers it."""

    id: int
    type: str
    workflow_id: str | None
    ts: str  # exactly as the server wrote it: fixed-width ISO 8601 UTC with "Z"
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> datetime:
        """``ts`` as an aware datetime (UTC)."""
        return datetime.fromisoformat(self.ts.replace("Z", "+00:00"))

    def to_dict(self) -> dict[str, Any]:
        """The envelope, keys in the server's order."""
        return {
            "id": self.id,
            "type": self.type,
            "workflow_id": self.workflow_id,
            "ts": self.ts,
            "data": self.data,
        }

    def to_json(self) -> str:
        """The envelope as compact JSON (the bytes the server sends for it)."""
        return orjson.dumps(self.to_dict()).decode()


@dataclass(frozen=True, slots=True)
class Published:
    """The receipt of one durably committed event."""

    id: int
    ts: str


@dataclass(frozen=True, slots=True)
class ReplayTruncated:
    """The server could not replay from the cursor asked for.

    ``reason`` is ``"trimmed"`` (events after ``requested_after`` up to
    ``oldest_available`` are gone: the retention policy removed them) or
    ``"ahead"`` (the cursor is beyond the newest id: another database, or a
    reset one; the feed continues from ``latest_id``)."""

    reason: str
    requested_after: int | None
    oldest_available: int | None = None
    latest_id: int | None = None


@dataclass(frozen=True, slots=True)
class Control:
    """A control message (``connection_established``, ``heartbeat``,
    ``replay_truncated``, ``stream_error``, ``pong``...): never stored, no id.
    ``fields`` is the whole message as the server sent it."""

    type: str
    transport: TransportName
    fields: Message


def is_envelope(message: Message) -> bool:
    """Log events carry an integer id > 0; control messages carry none."""
    ident = message.get("id")
    return (
        isinstance(ident, int)
        and not isinstance(ident, bool)
        and ident > 0
        and isinstance(message.get("type"), str)
    )


def event_from(message: Message) -> Event:
    """An :class:`Event` from a message that :func:`is_envelope` accepted."""
    data = message.get("data")
    workflow_id = message.get("workflow_id")
    ts = message.get("ts")
    return Event(
        id=message["id"],
        type=message["type"],
        workflow_id=workflow_id if isinstance(workflow_id, str) else None,
        ts=ts if isinstance(ts, str) else "",
        data=data if isinstance(data, dict) else {},
    )


def optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def truncation_from(message: Message) -> ReplayTruncated:
    return ReplayTruncated(
        reason=str(message.get("reason", "trimmed")),
        requested_after=optional_int(message.get("requested_after")),
        oldest_available=optional_int(message.get("oldest_available")),
        latest_id=optional_int(message.get("latest_id")),
    )


def decode_messages(text: str | bytes) -> list[Message]:
    """One frame's messages: a JSON object, or (``?batch=1``) an array of them.
    Anything else is not a message and yields nothing."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    items = parsed if isinstance(parsed, list) else [parsed]
    return [item for item in items if isinstance(item, dict)]
