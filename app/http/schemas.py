"""Pydantic models that document the HTTP API in the OpenAPI document.

Request bodies are validated by :mod:`app.events` (strict JSON first, then
the same :class:`~app.events.EventIn` model); these describe the answers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from app.events import EventIn


class PublishedEvent(BaseModel):
    id: int
    ts: str


class PublishedBatch(BaseModel):
    events: list[PublishedEvent]


class PublishBody(RootModel[EventIn | list[EventIn]]):
    """One event, or an array of 1..1000 published in one transaction."""


class Published(RootModel[PublishedEvent | PublishedBatch]):
    """``{"id", "ts"}`` for one event, ``{"events": [...]}`` for an array."""


class Envelope(BaseModel):
    id: int
    type: str
    workflow_id: str | None
    ts: str
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[Envelope]
    next_after: int
    has_more: bool
    notices: list[dict[str, Any]] = Field(default_factory=list)


class EventQuery(BaseModel):
    after: int | None = Field(None, description="cursor: events with id > after")
    limit: int | None = Field(None, description="1..1000, default 100")
    workflow_id: str | None = None
    types: str | None = Field(None, description="comma-separated event types")
    since: str | None = Field(None, description="ISO 8601 with timezone, inclusive")
    until: str | None = Field(None, description="ISO 8601 with timezone, exclusive")
    wait: float | None = Field(None, description="long-poll: 0..30 seconds")
    format: Literal["json", "ndjson", "csv"] | None = None
    follow: Literal["0", "1"] | None = Field(None, description="with format=ndjson: keep open")
    tail: int | None = Field(
        None, description="follow=1 without after: start with the last N (0..1000, default 10)"
    )


class Error(BaseModel):
    error: str
    detail: str


class Diagnosis(BaseModel):
    ok: bool
    reason: str | None = None
    detail: str | None = None


# --- /sse and /ws: what the stream paths send and receive (app.http.stream_docs) ------


class ConnectionEstablished(BaseModel):
    """The first message of every stream."""

    type: Literal["connection_established"]
    workflow_id: str | None = Field(description="the channel(s) as requested; null for GET /ws")
    channels: list[str] | None = Field(None, description="the channels followed, de-duplicated")
    message: str
    transport: Literal["sse", "websocket"]
    latest_id: int = Field(description="the newest id in the whole log (0 when empty)")
    resumed_from: int | None = Field(description="the cursor given; null: live only or tail")
    node: str | None = Field(None, description="the server process that answered")


class Heartbeat(BaseModel):
    """Every LIVEFEED_HEARTBEAT_S; no id, never replayed."""

    type: Literal["heartbeat"]
    ts: str


class ReplayTruncated(BaseModel):
    """The cursor was older than the oldest event kept (trimmed), or newer than the
    newest (ahead: the client remembers another database)."""

    type: Literal["replay_truncated"]
    reason: Literal["trimmed", "ahead"]
    requested_after: int
    oldest_available: int | None = Field(None, description="trimmed: where replay starts")
    latest_id: int | None = Field(None, description="ahead: the newest id; live from there")


class StreamError(BaseModel):
    """Why something failed; on a WebSocket the connection stays open unless a close
    frame follows."""

    type: Literal["stream_error"]
    error: str
    detail: str
    ref: str | None = Field(None, description="a refused publish: its ref (null if invalid)")
    reconnect_after_ms: int | None = Field(None, description="shutting_down: come back after")


class Pong(BaseModel):
    """The answer to a ping."""

    type: Literal["pong"]


class Subscribed(BaseModel):
    """A subscribe or unsubscribe took effect at ``cursor``: every event before this
    frame has ``id <= cursor``, every event after it ``id > cursor``."""

    type: Literal["subscribed"]
    channels: list[str]
    cursor: int


class PublishedFrame(BaseModel):
    """A publish was durably committed."""

    type: Literal["published"]
    ref: str
    events: list[PublishedEvent]
    replayed: bool | None = Field(None, description="true: an idempotent repeat, nothing written")


class _ClientMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PingMessage(_ClientMessage):
    """Answered with a pong."""

    type: Literal["ping"]


class _ChannelsMessage(_ClientMessage):
    channels: list[str] = Field(min_length=1, max_length=50)


class SubscribeMessage(_ChannelsMessage):
    """Follow these channels too, without reconnecting."""

    type: Literal["subscribe"]


class UnsubscribeMessage(_ChannelsMessage):
    """Stop following these channels."""

    type: Literal["unsubscribe"]


class PublishMessage(_ClientMessage):
    """Publish 1..1000 events in one transaction (needs publish rights at the handshake)."""

    type: Literal["publish"]
    ref: str = Field(min_length=1, max_length=64, description="the client's own, echoed back")
    events: list[EventIn] = Field(min_length=1, max_length=1000)
    idempotency_key: str | None = Field(None, min_length=1, max_length=128)
