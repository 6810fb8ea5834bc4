"""The plain-ASGI front door: ``/sse``, ``/ws`` and most publishes skip Quart, the
rest enters it.

It also checks ``Host`` before anything else, so that DNS rebinding cannot
make a foreign page look like a loopback publisher or a same-origin reader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.config import Settings
from app.errors import ApiError
from app.query import not_found_stream
from app.runtime import Runtime
from app.scope import ASGIApp, Receive, Scope, Send, header
from app.security.hosts import check_host
from app.streams.connection import refuse_websocket, send_error
from app.streams.publish import serve_publish, takes_fast_path
from app.streams.sse import serve_sse
from app.streams.ws import serve_ws


class StreamRouter:
    """Routes the two stream paths and plain publishes itself, and hands every other
    request to Quart.

    Its methods return the coroutine that serves the request rather than awaiting
    it: an open stream is suspended for its whole life, and each ``async def``
    between Hypercorn and the stream would keep a coroutine frame (a few hundred
    bytes) per connection for no work at all."""

    def __init__(
        self, inner: ASGIApp, settings: Settings, runtime: Callable[[], Runtime | None]
    ) -> None:
        self._inner = inner
        self._settings = settings
        self._current_runtime = runtime

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        kind = scope["type"]
        if kind == "websocket":
            return self._websocket(scope, receive, send)
        if kind == "http" and scope["path"].startswith("/sse/"):
            return self._sse(scope, receive, send)
        if kind == "http":
            try:
                check_host(header(scope, b"host"), self._settings)
                runtime = self._runtime() if takes_fast_path(scope) else None
            except ApiError as error:
                return send_error(send, error)
            if runtime is not None:
                return serve_publish(scope, receive, send, runtime)
        return self._inner(scope, receive, send)

    def _runtime(self) -> Runtime:
        runtime = self._current_runtime()
        if runtime is None:
            raise ApiError(503, "unavailable", "the server is starting; try again shortly")
        return runtime

    def _websocket(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        try:
            check_host(header(scope, b"host"), self._settings)
            if scope["path"] != "/ws" and not scope["path"].startswith("/ws/"):
                raise not_found_stream(f"no WebSocket endpoint at {scope['path'][:100]!r}")
            runtime = self._runtime()
        except ApiError as error:
            return _refuse_handshake(scope, receive, send, error)
        return serve_ws(scope, receive, send, runtime)

    def _sse(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        try:
            check_host(header(scope, b"host"), self._settings)
            if scope["method"] != "GET":
                raise ApiError(
                    405,
                    "method_not_allowed",
                    f"{scope['method']} is not allowed here; use GET",
                    {"Allow": "GET"},
                )
            runtime = self._runtime()
        except ApiError as error:
            return send_error(send, error)
        return serve_sse(scope, receive, send, runtime)


async def _refuse_handshake(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    await receive()  # websocket.connect
    await refuse_websocket(scope, send, error)
