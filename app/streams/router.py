"""The plain-ASGI front door: ``/sse``, ``/ws`` and most publishes skip Quart, the
rest enters it.

It also checks ``Host`` before anything else, so that DNS rebinding cannot
make a foreign page look like a loopback publisher or a same-origin reader.
"""

from __future__ import annotations

from collections.abc import Callable

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
    request to Quart."""

    def __init__(
        self, inner: ASGIApp, settings: Settings, runtime: Callable[[], Runtime | None]
    ) -> None:
        self._inner = inner
        self._settings = settings
        self._current_runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http" and scope["path"].startswith("/sse/"):
            await self._sse(scope, receive, send)
        elif kind == "http":
            try:
                check_host(header(scope, b"host"), self._settings)
                runtime = self._runtime() if takes_fast_path(scope) else None
            except ApiError as error:
                await send_error(send, error)
                return
            if runtime is not None:
                await serve_publish(scope, receive, send, runtime)
            else:
                await self._inner(scope, receive, send)
        else:
            await self._inner(scope, receive, send)

    def _runtime(self) -> Runtime:
        runtime = self._current_runtime()
        if runtime is None:
            raise ApiError(503, "unavailable", "the server is starting; try again shortly")
        return runtime

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            check_host(header(scope, b"host"), self._settings)
            if scope["path"] != "/ws" and not scope["path"].startswith("/ws/"):
                raise not_found_stream(f"no WebSocket endpoint at {scope['path'][:100]!r}")
            runtime = self._runtime()
        except ApiError as error:
            await receive()  # websocket.connect
            await refuse_websocket(scope, send, error)
            return
        await serve_ws(scope, receive, send, runtime)

    async def _sse(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            await send_error(send, error)
            return
        await serve_sse(scope, receive, send, runtime)
