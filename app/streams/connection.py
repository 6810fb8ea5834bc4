"""What a stream endpoint answers before (or instead of) streaming.

``/sse`` and ``/ws`` are served as plain ASGI in front of the Quart app:
Quart's streaming response and ``websocket.send`` add a timeout wrapper, a
signal and a loop pass per write, which the fan-out path cannot afford.  So
the JSON error answers that Quart gives every other endpoint are written
here by hand, for an HTTP request and for a refused WebSocket handshake.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.config import Settings
from app.errors import JSON_HEADERS, ApiError
from app.scope import Receive, Scope, Send


class Connection:
    """One plain-ASGI connection: its scope, its two channels, and the settings that
    shape what is written on it.  The wires of :mod:`app.streams` build on it.
    Slotted, as the wires are: every open stream keeps one for its whole life."""

    __slots__ = ("_receive", "_send", "_settings", "scope")

    def __init__(self, scope: Scope, receive: Receive, send: Send, settings: Settings) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self._settings = settings


def _encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer an HTTP request with a JSON body and the API's headers."""
    length = (b"content-length", str(len(body)).encode())
    start = {"type": "http.response.start", "status": status}
    await send({**start, "headers": [*JSON_HEADERS, *headers, length]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: ApiError) -> None:
    """Answer an HTTP request with the JSON error body."""
    await send_json(send, error.status, error.body(), _encode_headers(error.headers.items()))


async def refuse_websocket(scope: Scope, send: Send, error: ApiError) -> None:
    """Refuse a handshake with a real HTTP answer whose body says why (when the
    server supports it; otherwise a policy-violation close)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status,
                "headers": [*JSON_HEADERS, *_encode_headers(error.headers.items())],
            }
        )
        await send({"type": "websocket.http.response.body", "body": error.body()})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.detail[:120]})
