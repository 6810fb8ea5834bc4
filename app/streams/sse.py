"""``GET /sse/{channel}``: the log as a ``text/event-stream``.

Never break the browser's reconnect loop for a passing problem: any non-200
answer makes ``EventSource`` give up for good (WHATWG HTML §9.2), so store
outages, overload and shutdown are answered ``200`` with a ``retry:`` hint
and an error event.  Non-200 is kept for the client's own mistakes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from app.errors import CLIENT_CLOSED, WRITE_TIMEOUT, ApiError, EndReason
from app.events import Control, Frame, error_frame, jitter_ms
from app.query import StreamRequest
from app.runtime import Runtime
from app.scope import DISCONNECT_NOTICE, Receive, Scope, Send, header
from app.security.origins import cors_origin
from app.streams.connection import Connection, send_error
from app.streams.session import Live, serve

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),
]


def passing_problem(error: ApiError) -> bool:
    """Overload, rate limits, outages and restarts pass; EventSource must keep its
    reconnect loop for them."""
    return error.status in (429, 503)


class SseWire(Connection):
    """The SSE side of a stream: one chunk per write, frames pre-encoded."""

    __slots__ = ()

    transport = "sse"
    prefix = "/sse/"

    async def opened(self) -> bool:
        return True  # the request is all there is

    def check(self, request: StreamRequest, client: str) -> None:
        """Any page may read an SSE stream it has credentials for: CORS headers on the
        answer decide which pages see it (see :meth:`_start_response`)."""

    async def refuse(self, error: ApiError) -> None:
        if not passing_problem(error):
            await send_error(self._send, error)
            return
        retry_ms = int(error.headers.get("Retry-After", "3")) * 1000
        await self._start_response()
        notice = error_frame(error.code, error.detail)
        await self._write(f"retry: {jitter_ms(retry_ms)}\n".encode() + notice.sse, more=False)

    async def start(self, hello: Control) -> None:
        await self._start_response()
        await self._write(f"retry: {self._settings.retry_ms}\n".encode() + hello.sse)

    async def write(self, frames: list[Frame]) -> None:
        await self._write(b"".join(frame.sse for frame in frames))

    def listen(self, live: Live) -> Awaitable[EndReason]:
        """The client says nothing on an SSE stream: only its disconnect matters.
        Livefeed's server tells of it through a future (no task reading ``receive``
        for the stream's life); any other ASGI server is read until it says so."""
        notice = (self.scope.get("extensions") or {}).get(DISCONNECT_NOTICE)
        if notice is None:
            return self._until_disconnect()
        closed: asyncio.Future[EndReason] = asyncio.get_running_loop().create_future()
        notice["notify"](closed, CLIENT_CLOSED)
        return closed

    async def _until_disconnect(self) -> EndReason:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        return CLIENT_CLOSED

    async def end(self, reason: EndReason, notice: Control | None) -> None:
        if reason is CLIENT_CLOSED or reason is WRITE_TIMEOUT:
            return  # nobody is reading: nothing more to say
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.write_timeout_s):
                await self._write(notice.sse if notice is not None else b"", more=False)

    async def _start_response(self) -> None:
        headers = SSE_HEADERS
        allowed = cors_origin(header(self.scope, b"origin"), self._settings)
        if allowed is not None:  # a dashboard served from another allowed origin
            headers = [
                *headers,
                (b"access-control-allow-origin", allowed.encode()),
                (b"vary", b"Origin"),
            ]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _write(self, body: bytes, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": more})


def serve_sse(scope: Scope, receive: Receive, send: Send, runtime: Runtime) -> Awaitable[None]:
    """The coroutine serving one SSE stream (a plain function: no frame of its own
    for the stream's life)."""
    return serve(SseWire(scope, receive, send, runtime.settings), runtime)
