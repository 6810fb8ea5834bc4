"""Pydantic models that document the HTTP API in the OpenAPI document.

Request bodies are validated by :mod:`app.events` (strict JSON first, then
the same :class:`~app.events.EventIn` model); these describe the answers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

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
