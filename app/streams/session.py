"""The lifecycle every stream shares, whatever its wire.

handshake (path, cursor, credentials) -> admit (caps, rate) -> subscribe ->
hello -> run (the pump races the client's side and the credential's expiry)
-> one :class:`~app.errors.EndReason` -> goodbye -> metrics and one log line.

A transport supplies only a :class:`Wire`: how it accepts, writes frames,
listens to the client and says goodbye.  Everything a stream must get right
(the write timeout, counting, the closing frame, a bug that must not look
like a normal end) is written once, here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from app.errors import (
    INTERNAL_ERROR,
    SHUTDOWN,
    TOKEN_EXPIRED,
    WRITE_TIMEOUT,
    ApiError,
    EndReason,
    StoreUnavailable,
    as_api_error,
    store_failed,
)
from app.events import Control, Frame, end_notice
from app.hub import Subscription
from app.query import StreamRequest, parse_stream_request
from app.runtime import Runtime
from app.scope import Scope, header, query_params
from app.security.expiry import until_expiry
from app.security.hosts import scope_client
from app.security.tokens import ReadGrant
from app.streams.race import race

log = logging.getLogger(__name__)

SHUTTING_DOWN = ApiError(503, "shutting_down", "the server is restarting; reconnect shortly")


class Wire(Protocol):
    """One transport's side of a stream: bytes in and out, nothing else."""

    transport: str  # "sse" or "websocket": metrics label and log name
    prefix: str  # the path prefix before the channel: "/sse/" or "/ws/"
    scope: Scope

    async def opened(self) -> bool:
        """Whether the client still wants the stream (a WebSocket's first message is
        its connect; a client gone before it is not answered)."""

    def check(self, request: StreamRequest, client: str) -> None:
        """Raise :class:`ApiError` if this transport refuses the request (before
        credentials are checked: a browser's origin, for instance)."""

    async def refuse(self, error: ApiError) -> None:
        """Answer instead of streaming (nothing has been sent yet)."""

    async def start(self, hello: Control) -> None:
        """Accept, and send the first frame."""

    async def write(self, frames: list[Frame]) -> None:
        """Send frames in order; may wait while the client is slow."""

    def listen(self, live: Live) -> Awaitable[EndReason]:
        """Follow the client's side until it leaves or misbehaves (``live``: what its
        messages may act on): a coroutine, run as a task beside the pump, or a future
        the server completes (then no task is needed)."""

    async def end(self, reason: EndReason, notice: Control | None) -> None:
        """Say goodbye (``notice`` first, if any), bounded in time: the client may not
        be reading."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """A stream request that passed every check: what to send, and to whom."""

    request: StreamRequest
    grant: ReadGrant
    client: str


@dataclass(frozen=True, slots=True)
class Live:
    """An open stream, for a wire whose client may act on it (WebSocket messages)."""

    handshake: Handshake
    sub: Subscription
    runtime: Runtime


async def serve(wire: Wire, runtime: Runtime) -> None:
    """Serve one stream from handshake to goodbye."""
    if not await wire.opened():
        return
    try:
        handshake = await _handshake(wire, runtime)
        slot = await runtime.admit(handshake.client, wire.transport)
    except (ApiError, StoreUnavailable) as exc:
        error = as_api_error(exc)
        if error is None:
            raise
        await wire.refuse(error)
        return
    async with slot:
        slot.ended = await _stream(wire, runtime, handshake)


async def _handshake(wire: Wire, runtime: Runtime) -> Handshake:
    scope, params = wire.scope, query_params(wire.scope)
    client = scope_client(scope, runtime.settings)
    request = parse_stream_request(
        scope["path"], wire.prefix, params, header(scope, b"last-event-id")
    )
    wire.check(request, client)
    grant = await runtime.access.stream(
        client, header(scope, b"authorization"), params, request.channels
    )
    if runtime.hub.closing:
        raise SHUTTING_DOWN
    return Handshake(request, grant, client)


def connection_established(
    request: StreamRequest, transport: str, sub: Subscription, node: str
) -> Control:
    """The first frame of every stream; ``node`` says which server process answered."""
    return Control.build(
        "connection_established",
        workflow_id=request.channel or None,
        channels=list(request.channels),
        message="Connected to workflow progress updates",
        transport=transport,
        latest_id=sub.latest_id,
        resumed_from=request.cursor,
        node=node,
    )


async def _stream(wire: Wire, runtime: Runtime, handshake: Handshake) -> EndReason:
    request, started = handshake.request, time.monotonic()
    try:
        async with runtime.hub.subscribe(request.filter, request.cursor, request.tail) as sub:
            await wire.start(connection_established(request, wire.transport, sub, runtime.node))
            _log_opened(wire.transport, handshake)
            try:
                reason: EndReason = await race(
                    _pump(wire, sub, runtime),
                    wire.listen(Live(handshake, sub, runtime)),
                    *until_expiry(handshake.grant, TOKEN_EXPIRED),
                )
            except Exception:  # a bug: say so, and end cleanly so the client resumes
                log.exception("%s stream failed", wire.transport)
                reason = INTERNAL_ERROR
            await wire.end(reason, end_notice(reason))
    except StoreUnavailable as exc:  # before anything was sent: refuse, as at the handshake
        reason = store_failed(exc, opened=False)
        error = as_api_error(exc)
        if error is not None:
            await wire.refuse(error)
    log.info(
        "%s closed channel=%s client=%s duration=%.1fs reason=%s (%s)",
        wire.transport,
        request.channel,
        handshake.client,
        time.monotonic() - started,
        reason.name,
        reason.reason,
    )
    return reason


def _log_opened(transport: str, handshake: Handshake) -> None:
    """Logged from a plain function, not from the stream's coroutine: logging looks
    up its caller's frame, and the frame object it makes for a coroutine lives as
    long as the coroutine (300 bytes of every open stream)."""
    request = handshake.request
    log.info(
        "%s opened channel=%s client=%s cursor=%s",
        transport,
        request.channel,
        handshake.client,
        request.cursor,
    )


async def _pump(wire: Wire, sub: Subscription, runtime: Runtime) -> EndReason:
    """Write what the subscription hands out until it ends (shutdown: its farewell
    frame was the last), the store fails, or a write makes no progress in time."""
    guard = runtime.writes.guard()
    meter = runtime.meter(wire.transport)
    try:
        async for frames in sub:
            guard.begin()
            await wire.write(frames)
            guard.end()
            meter.record(frames, sub.replaying)
    except asyncio.CancelledError:
        if guard.expired():
            return WRITE_TIMEOUT
        raise
    except StoreUnavailable as exc:
        return store_failed(exc)
    finally:
        guard.close()
    return SHUTDOWN
