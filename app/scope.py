"""Plain-ASGI types and the two lookups every layer needs from a request's scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.http import parse_options_header

Scope = Mapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: A scope extension and send message of Livefeed's own server: once a WebSocket is
#: accepted, ``{"type": WEBSOCKET_FRAMES, "data": bytes}`` writes ready-made frames
#: (:func:`app.events.websocket_text_frame`) to the socket as they are.  A frame
#: shared by every subscriber is then built once and written with no per-client
#: framing, and several frames go out in one write.
WEBSOCKET_FRAMES = "livefeed.websocket.frames"

#: A scope extension of Livefeed's own server, on HTTP requests:
#: ``scope["extensions"][DISCONNECT_NOTICE]["notify"](future, value)`` sets the
#: future's result to ``value`` when the client disconnects (at once if it has).
#: A stream that only waits for the disconnect then needs no task of its own
#: reading ``receive`` for its whole life.
DISCONNECT_NOTICE = "livefeed.http.disconnect_notice"


def header(scope: Scope, name: bytes) -> str | None:
    """The last value of a (lower-case) request header, decoded as Latin-1."""
    value = None
    for key, raw in scope.get("headers", ()):
        if key == name:
            value = raw.decode("latin-1")
    return value


def query_params(scope: Scope) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    raw = scope.get("query_string", b"").decode("utf-8", "replace")
    for key, value in parse_qsl(raw, keep_blank_values=True):
        params.setdefault(key, []).append(value)
    return params


def declares_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` declares JSON in UTF-8 (the only body a publish takes)."""
    if content_type is None:
        return False
    mimetype, params = parse_options_header(content_type)
    charset = params.get("charset", "utf-8").lower()
    return mimetype.lower() == "application/json" and charset in ("utf-8", "utf8")
