"""``/sse/{channel}``, ``/ws/{channel}`` and ``/ws`` in ``/openapi.json``.

The stream paths are plain ASGI in front of Quart (:mod:`app.streams.router`),
so quart-schema, which documents Quart's routes, never sees them.  Its
documented hook, a subclass of ``OpenAPIProvider`` passed as
``openapi_provider_class``, adds them to the document it builds, with the
frames and client messages of :mod:`app.http.schemas` as component schemas.

OpenAPI 3.1 has no words for what follows a WebSocket upgrade: the upgrade is
a ``GET`` answered ``101``, and the frames are listed in ``x-websocket-frames``
(server to client) and ``x-websocket-messages`` (client to server).  An event
stream's ``schema`` describes one event as ``EventSource`` sees it (``event``,
``id``, ``retry``, and ``data`` holding JSON): what OpenAPI 3.2 calls
``itemSchema``, and how schemathesis reads a 3.1 document.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from quart_schema import OpenAPIProvider

from app.events import TYPE_PATTERN, WORKFLOW_ID_PATTERN
from app.http.schemas import (
    ConnectionEstablished,
    Envelope,
    Error,
    Heartbeat,
    PingMessage,
    Pong,
    PublishedFrame,
    PublishMessage,
    ReplayTruncated,
    StreamError,
    Subscribed,
    SubscribeMessage,
    UnsubscribeMessage,
)
from app.query import MAX_CURSOR, MAX_TAIL

REF = "#/components/schemas/"
CURSOR_PATTERN = "^[0-9]{1,19}$"
_ID, _TYPE = WORKFLOW_ID_PATTERN[1:-1], TYPE_PATTERN[1:-1]
Model = type[BaseModel]
SSE_CONTROLS: tuple[Model, ...] = (ConnectionEstablished, Heartbeat, ReplayTruncated, StreamError)
WS_FRAMES: tuple[Model, ...] = (*SSE_CONTROLS, Pong, Subscribed, PublishedFrame)
COMPONENTS: tuple[Model, ...] = (Envelope, Error)  # what the paths refer to besides frames
WS_MESSAGES: dict[str, Model] = {
    "ping": PingMessage,
    "subscribe": SubscribeMessage,
    "unsubscribe": UnsubscribeMessage,
    "publish": PublishMessage,
}
CLOSE_CODES = {
    "1003": "the client sent a binary frame",
    "1008": "more than 10 invalid messages, or more than 50 messages within one second",
    "1009": "a client message over 64 KiB (a publish from a connection that may publish: 1 MiB)",
    "1011": "an unexpected server error: reconnect",
    "1012": "shutdown, after a stream_error shutting_down with reconnect_after_ms",
    "1013": "no write progress for LIVEFEED_WRITE_TIMEOUT_S, or the store failed: reconnect",
}


class StreamDocs(OpenAPIProvider):
    """quart-schema's document, plus the stream paths it cannot see."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        document["paths"].update(stream_paths())
        known = document["components"]["schemas"]
        for name, schema in component_schemas().items():
            known.setdefault(name, schema)
        return document


def ref(model: Model) -> dict[str, str]:
    return {"$ref": REF + model.__name__}


def component_schemas() -> dict[str, Any]:
    """The frames (as sent) and client messages (as accepted), with what they refer to."""
    sent: list[tuple[Model, JsonSchemaMode]] = [
        (model, "serialization") for model in (*WS_FRAMES, *COMPONENTS)
    ]
    accepted: list[tuple[Model, JsonSchemaMode]] = [
        (model, "validation") for model in WS_MESSAGES.values()
    ]
    _, top = models_json_schema(sent + accepted, ref_template=REF + "{model}")
    definitions: dict[str, Any] = top["$defs"]
    return definitions


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(Error)}}}


def _parameter(name: str, where: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "schema": schema}


CHANNEL = {
    **_parameter(
        "channel",
        "path",
        "`validation_updates` (every event) or a workflow id; up to 50, comma-separated",
        {"type": "string", "pattern": f"^{_ID}(,{_ID}){{0,49}}$"},
    ),
    "required": True,
}
READ_PARAMETERS = [
    _parameter(
        "types",
        "query",
        "only these event types, comma-separated",
        {"type": "string", "pattern": f"^{_TYPE}(,{_TYPE})*$"},
    ),
    _parameter(
        "tail",
        "query",
        "with no cursor: start with the last N matching events, then live ones",
        {"type": "integer", "minimum": 0, "maximum": MAX_TAIL, "default": 0},
    ),
    _parameter(
        "last_event_id",
        "query",
        "the cursor: every matching event with a greater id, replayed then live "
        "(the Last-Event-ID header wins); none: live only",
        {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
    ),
    _parameter(
        "Last-Event-ID",
        "header",
        "the cursor, as EventSource sends it on reconnect; ASCII digits",
        {"type": "string", "pattern": CURSOR_PATTERN},
    ),
    _parameter(
        "ticket",
        "query",
        "a one-use stream ticket from POST /api/stream-tickets, when reading needs a "
        "credential and the client cannot send Authorization (browsers)",
        {"type": "string"},
    ),
    _parameter(
        "access_token",
        "query",
        "the read token or a read JWT, when Authorization cannot be sent (redacted from logs)",
        {"type": "string"},
    ),
]
BATCH = _parameter(
    "batch",
    "query",
    "1: the events of one write arrive as one frame, a JSON array of envelopes",
    {"type": "string", "enum": ["0", "1"]},
)
CREDENTIALS = (
    "When LIVEFEED_READ_TOKEN or LIVEFEED_TOKEN_SECRET is set, reading needs a credential: "
    "`Authorization: Bearer`, `ticket=` or `access_token=`."
)
REFUSALS = {
    "400": _error("bad_cursor, bad_parameter, bad_channel or too_many_channels"),
    "401": _error("unauthorized: a credential is needed, or it is wrong or expired"),
    "403": _error("forbidden: the credential does not cover the channel"),
}
NOT_FOUND = _error("not_found: a path of another shape; the answer lists the valid paths")


def _sse_event(event: dict[str, Any], data: Model, *, with_id: bool) -> dict[str, Any]:
    """One event of the stream, as its fields (``data`` carries ``data``'s JSON)."""
    return {
        "type": "object",
        "properties": {
            "event": event,
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": ref(data),
            },
            "id": {"type": "string", "pattern": CURSOR_PATTERN},
            "retry": {"type": "integer", "minimum": 0},
        },
        "required": ["event", "data", "id"] if with_id else ["event", "data"],
    }


def _literal(model: Model) -> str:
    """The ``type`` a frame model allows: its one literal."""
    (value,) = get_args(model.model_fields["type"].annotation)
    return str(value)


def _sse() -> dict[str, Any]:
    one_event = {
        "description": "one event of the stream: a control message (no id) or a log event",
        "anyOf": [
            *(_sse_event({"const": _literal(m)}, m, with_id=False) for m in SSE_CONTROLS),
            _sse_event({"type": "string", "pattern": TYPE_PATTERN}, Envelope, with_id=True),
        ],
    }
    return {
        "get": {
            "operationId": "get_sse",
            "summary": "Follow channels as Server-Sent Events",
            "description": (
                "The log as `text/event-stream`: `retry:` and `connection_established` "
                "first, then every matching event after the cursor (replayed, then live: "
                "`id:` the event id, `event:` its type, one `data:` line holding the "
                "envelope), `heartbeat` every LIVEFEED_HEARTBEAT_S and `replay_truncated` "
                "when the cursor is outside the log. Overload, rate limits, an outage or "
                "shutdown are answered `200` with a `retry:` hint and a `stream_error` event "
                "(then the stream ends), so that EventSource keeps reconnecting; non-200 "
                f"answers are the client's own mistakes. {CREDENTIALS}"
            ),
            "parameters": [CHANNEL, *READ_PARAMETERS],
            "responses": {
                "200": {
                    "description": "the stream; it ends only when the server stops it",
                    "headers": {
                        "Cache-Control": {
                            "schema": {"type": "string", "const": "no-cache, no-store"}
                        },
                        "X-Accel-Buffering": {"schema": {"type": "string", "const": "no"}},
                    },
                    "content": {"text/event-stream": {"schema": one_event}},
                },
                **REFUSALS,
                "404": NOT_FOUND,
            },
        }
    }


def _websocket(*, channel: bool) -> dict[str, Any]:
    refusals = {
        **REFUSALS,
        "403": _error(
            "origin_not_allowed: a browser page from an origin that is not this server's "
            "and not in LIVEFEED_ALLOWED_ORIGINS; forbidden: the credential does not cover "
            "the channel"
        ),
        "429": _error("rate_limited: too many new streams or failed credentials"),
        "503": _error("overloaded, unavailable or shutting_down: retry after Retry-After"),
    }
    if channel:
        refusals["404"] = NOT_FOUND
        refusals["426"] = _error("upgrade_required: a plain GET, not a WebSocket upgrade")
    follows = "the channels in the path" if channel else "nothing until a subscribe message"
    return {
        "get": {
            "operationId": "get_ws_channel" if channel else "get_ws",
            "summary": f"A WebSocket that follows {follows}",
            "description": (
                "A WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`, "
                "`Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`). The handshake is checked "
                "before it is accepted, and a refusal is a real HTTP answer with a JSON body. "
                "Then text frames, one JSON object each (`x-websocket-frames`): "
                "`connection_established`, the envelopes (a JSON array of them per write with "
                "`batch=1`), `heartbeat`, `replay_truncated`, `stream_error`, and the answers "
                "to client messages (`x-websocket-messages`): `pong`, `subscribed`, "
                "`published`. A refused message gets `stream_error` and the connection stays "
                "open. A browser's `Origin` must be this server's own or in "
                f"LIVEFEED_ALLOWED_ORIGINS; requests with no `Origin` pass. {CREDENTIALS}"
            ),
            "parameters": [*([CHANNEL] if channel else []), *READ_PARAMETERS, BATCH],
            "responses": {
                "101": {
                    "description": "switching to the WebSocket protocol",
                    "headers": {
                        "Upgrade": {"schema": {"type": "string", "const": "websocket"}},
                        "Sec-WebSocket-Accept": {"schema": {"type": "string"}},
                    },
                },
                **dict(sorted(refusals.items())),
            },
            "x-websocket-frames": {
                "anyOf": [
                    *(ref(model) for model in WS_FRAMES),
                    ref(Envelope),
                    {"type": "array", "items": ref(Envelope), "description": "batch=1"},
                ]
            },
            "x-websocket-messages": {
                "oneOf": [ref(model) for model in WS_MESSAGES.values()],
                "discriminator": {
                    "propertyName": "type",
                    "mapping": {name: REF + m.__name__ for name, m in WS_MESSAGES.items()},
                },
            },
            "x-websocket-close-codes": CLOSE_CODES,
        }
    }


def stream_paths() -> dict[str, Any]:
    """The path items of the three stream paths."""
    return {
        "/sse/{channel}": _sse(),
        "/ws/{channel}": _websocket(channel=True),
        "/ws": _websocket(channel=False),
    }
