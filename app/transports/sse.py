"""``GET /sse/{channel}``: the log as a ``text/event-stream``.

Never break the browser's reconnect loop for a passing problem: any non-200
answer makes ``EventSource`` give up for good (WHATWG HTML §9.2), so store
outages and shutdown are answered ``200`` with a ``retry:`` hint and an
``event: error``.  Non-200 is kept for the client's own mistakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from app.errors import ApiError
from app.events import Control
from app.hub import Subscription
from app.runtime import Runtime
from app.security import ReadGrant, cors_origin
from app.store import StoreUnavailable
from app.tickets import authorize_stream
from app.transports.asgi import (
    Receive,
    Scope,
    Send,
    header,
    jitter_ms,
    query_params,
    race,
    scope_client,
    send_error,
)
from app.transports.expiry import TOKEN_EXPIRED, TOKEN_EXPIRED_FRAME, until_expiry
from app.transports.request import StreamRequest, parse_stream_request

log = logging.getLogger(__name__)

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),
]


def connection_established(
    channel: str, transport: str, sub: Subscription, cursor: int | None, runtime: Runtime
) -> Control:
    """The first frame of every stream; ``node`` says which server process answered."""
    return Control.build(
        "connection_established",
        workflow_id=channel,
        message="Connected to workflow progress updates",
        transport=transport,
        latest_id=sub.latest_id,
        resumed_from=cursor,
        node=runtime.node,
    )


INTERNAL_ERROR_FRAME = Control.build(
    "error",
    error="internal_error",
    detail="the server failed while streaming; reconnect with your last event id",
)


def unavailable(detail: str) -> Control:
    return Control.build("error", error="unavailable", detail=detail)


async def _start(send: Send, scope: Scope, runtime: Runtime) -> None:
    headers = SSE_HEADERS
    allowed = cors_origin(header(scope, b"origin"), runtime.settings)
    if allowed is not None:  # a dashboard served from another allowed origin
        headers = [
            *headers,
            (b"access-control-allow-origin", allowed.encode()),
            (b"vary", b"Origin"),
        ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _write(send: Send, body: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def _goodbye(
    send: Send, scope: Scope, runtime: Runtime, retry_ms: int, frame: Control
) -> None:
    """Answer 200 with a jittered retry hint and one error event, then end."""
    await _start(send, scope, runtime)
    await _write(send, f"retry: {jitter_ms(retry_ms)}\n".encode() + frame.sse, more=False)


def passing_problem(error: ApiError) -> bool:
    """Overload and rate limits pass; EventSource must keep its reconnect loop."""
    return error.status in (429, 503)


async def _refuse(send: Send, scope: Scope, runtime: Runtime, error: ApiError) -> None:
    if passing_problem(error):
        retry_ms = int(error.headers.get("Retry-After", "3")) * 1000
        notice = Control.build("error", error=error.code, detail=error.detail)
        await _goodbye(send, scope, runtime, retry_ms, notice)
    else:
        await send_error(send, error)


async def _bounded_write(send: Send, body: bytes, runtime: Runtime, more: bool = False) -> None:
    """Write ``body`` (by default the response's end) outside the pump, bounded by the
    write timeout, since the client may not be reading; rare, so a timer of its own."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(runtime.settings.write_timeout_s):
            await _write(send, body, more=more)


async def _wait_disconnect(receive: Receive) -> str:
    while (await receive())["type"] != "http.disconnect":
        pass
    return "client_closed"


async def _pump(send: Send, sub: Subscription, runtime: Runtime) -> str:
    guard = runtime.writes.guard()
    meter = runtime.metrics.meter("sse")
    try:
        async for frames in sub:
            body = b"".join(frame.sse for frame in frames)
            guard.begin()
            await _write(send, body)
            guard.end()
            meter.record(frames, sub.replaying)
    except asyncio.CancelledError:
        if guard.expired():
            return "write_timeout"
        raise
    except StoreUnavailable as exc:
        await _bounded_write(send, unavailable(str(exc)).sse, runtime, more=True)
        return "store_unavailable"
    finally:
        guard.close()
    return "shutdown"


async def serve_sse(scope: Scope, receive: Receive, send: Send, runtime: Runtime) -> None:
    params = query_params(scope)
    client = scope_client(scope, runtime.settings)
    try:
        request = parse_stream_request(
            scope["path"], "/sse/", params, header(scope, b"last-event-id")
        )
        grant = await authorize_stream(
            runtime, client, header(scope, b"authorization"), params, request.channel
        )
        await runtime.admission.acquire(client)
    except ApiError as error:
        await _refuse(send, scope, runtime, error)
        return
    await runtime.run_admitted(
        client, "sse", _stream(scope, receive, send, runtime, request, grant)
    )


async def _stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    runtime: Runtime,
    request: StreamRequest,
    grant: ReadGrant,
) -> str:
    if runtime.hub.closing:
        await _goodbye(send, scope, runtime, runtime.settings.retry_ms, runtime.farewell())
        return "shutdown"
    started = time.monotonic()
    connections = runtime.metrics.connections.labels("sse")
    try:
        async with runtime.hub.subscribe(request.filter, request.cursor, request.tail) as sub:
            connections.inc()
            log.info(
                "sse opened channel=%s client=%s cursor=%s",
                request.channel,
                scope_client(scope, runtime.settings),
                request.cursor,
            )
            try:
                await _start(send, scope, runtime)
                hello = connection_established(request.channel, "sse", sub, request.cursor, runtime)
                await _write(send, f"retry: {runtime.settings.retry_ms}\n".encode() + hello.sse)
                del hello  # not kept by every idle stream's frame
                try:
                    reason = await race(
                        _pump(send, sub, runtime),
                        _wait_disconnect(receive),
                        *until_expiry(grant, TOKEN_EXPIRED),
                    )
                except Exception:  # a bug: say so, and end cleanly so the client resumes
                    log.exception("sse stream failed")
                    reason = "internal_error"
                if reason == TOKEN_EXPIRED:
                    await _bounded_write(send, TOKEN_EXPIRED_FRAME.sse, runtime)
                elif reason == "internal_error":
                    await _bounded_write(send, INTERNAL_ERROR_FRAME.sse, runtime)
                elif reason in ("shutdown", "store_unavailable"):
                    await _write(send, b"", more=False)
            finally:
                connections.dec()
    except StoreUnavailable as exc:
        reason = "store_unavailable"
        await _goodbye(send, scope, runtime, runtime.settings.retry_ms, unavailable(str(exc)))
    log.info(
        "sse closed channel=%s client=%s duration=%.1fs reason=%s",
        request.channel,
        scope_client(scope, runtime.settings),
        time.monotonic() - started,
        reason,
    )
    return reason
