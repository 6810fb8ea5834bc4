"""``GET /ws/{channel}``: the log as WebSocket text frames.

The handshake is checked (path, cursor, origin, credentials) before it is
accepted, and a refusal is a real HTTP answer whose JSON body says why.
After accepting, the client's side is read all the time: it answers pings
and refuses bad frames (a client that floods a server that never reads
would otherwise grow memory without bound).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from app.config import Settings
from app.errors import (
    BINARY_FRAME,
    CLIENT_CLOSED,
    ApiError,
    CloseCode,
    EndReason,
    closed_by_policy,
)
from app.events import Control, Frame, websocket_text_frame
from app.query import StreamRequest
from app.runtime import Runtime
from app.scope import WEBSOCKET_FRAMES, Receive, Scope, Send, header
from app.security.hosts import request_origin_parts
from app.security.origins import origin_refusal
from app.streams.connection import Connection, refuse_websocket
from app.streams.messages import KNOWN, PONG, Publishing, Refused, Subscriptions, parse_message
from app.streams.session import Live, serve

log = logging.getLogger(__name__)

MAX_BAD_MESSAGES = 10
MAX_MESSAGES_PER_S = 50
CLOSE_TIMEOUT_S = 1.0
DRAIN_TIMEOUT_S = 5.0
#: Client messages above this close 1009, but for a ``publish`` from a connection that
#: may publish (up to the server's frame limit, 1 MiB).
MAX_MESSAGE_CHARS = 64 * 1024
MESSAGE_TOO_BIG = EndReason(
    "message_too_big", CloseCode.MESSAGE_TOO_BIG, "message too big: the limit is 64 KiB"
)


def batched(frames: list[Frame]) -> list[Frame | list[Frame]]:
    """With ``?batch=1``: each run of events in one write becomes one frame, a JSON
    array of envelopes (a run of one stays a plain envelope); controls stay separate
    frames, in their place (a ``subscribed`` frame marks a position in the stream).
    Each WebSocket frame costs a client about as much as the bytes it carries, so
    this is the fast path for clients that can take it."""
    out: list[Frame | list[Frame]] = []
    run: list[Frame] = []
    for frame in frames:
        if frame.id is not None:
            run.append(frame)
            continue
        if run:
            out.append(run[0] if len(run) == 1 else run)
            run = []
        out.append(frame)
    if run:
        out.append(run[0] if len(run) == 1 else run)
    return out


def frame_bytes(frames: list[Frame], batch: bool) -> bytes:
    """The WebSocket frames for one write, ready-made: each event's shared frame,
    or with ``batch`` an array frame per run of events."""
    if not batch:
        return b"".join(frame.ws for frame in frames)
    return b"".join(
        piece.ws
        if not isinstance(piece, list)
        else websocket_text_frame(b"[" + b",".join(frame.json for frame in piece) + b"]")
        for piece in batched(frames)
    )


def frame_texts(frames: list[Frame], batch: bool) -> list[str]:
    """The same messages as :func:`frame_bytes`, as text for a server that frames
    them itself."""
    if not batch:
        return [frame.text for frame in frames]
    return [
        piece.text
        if not isinstance(piece, list)
        else "[" + ",".join(frame.text for frame in piece) + "]"
        for piece in batched(frames)
    ]


class WebSocketWire(Connection):
    """The WebSocket side of a stream: text frames, a reader that never stops."""

    __slots__ = ("_batch", "_ready_made")
    transport = "websocket"
    prefix = "/ws/"

    def __init__(self, scope: Scope, receive: Receive, send: Send, settings: Settings) -> None:
        super().__init__(scope, receive, send, settings)
        self._batch = False  # ?batch=1: several events per frame (set by check())
        self._ready_made = False  # the server writes frames built once (set by start())

    async def opened(self) -> bool:
        first: str = (await self._receive())["type"]
        return first == "websocket.connect"

    def check(self, request: StreamRequest, client: str) -> None:
        """Browsers must come from an allowed origin: CORS does not cover WebSockets."""
        scheme, host = request_origin_parts(self.scope, self._settings)
        origin = header(self.scope, b"origin")
        refusal = origin_refusal(origin, scheme, host, self._settings)
        if refusal is not None:
            log.warning(
                "websocket refused channel=%s client=%s origin=%r: %s",
                request.channel,
                client,
                (origin or "")[:200],
                refusal.code,
            )
            raise refusal
        self._batch = request.batch

    async def refuse(self, error: ApiError) -> None:
        await refuse_websocket(self.scope, self._send, error)

    async def start(self, hello: Control) -> None:
        await self._send({"type": "websocket.accept"})
        self._ready_made = WEBSOCKET_FRAMES in (self.scope.get("extensions") or {})
        await self.write([hello])

    async def write(self, frames: list[Frame]) -> None:
        if self._ready_made:
            data = frame_bytes(frames, self._batch)
            await self._send({"type": WEBSOCKET_FRAMES, "data": data})
            return
        for text in frame_texts(frames, self._batch):
            await self._send_text(text)

    async def listen(self, live: Live) -> EndReason:
        """Answer the client's messages; close on abuse.  Publishes by a connection
        that may publish are limited by the publish rate, not the flood limit."""
        handshake = live.handshake
        authorization = header(self.scope, b"authorization")
        publishing = Publishing(
            live.runtime,
            handshake.client,
            live.runtime.access.may_publish(handshake.client, authorization),
            self._send_text,
        )
        following = Subscriptions(
            handshake.request.channels, handshake.request.filter.types, handshake.grant
        )
        try:
            return await self._listen(live, publishing, following)
        finally:
            await publishing.close()

    async def _listen(
        self, live: Live, publishing: Publishing, following: Subscriptions
    ) -> EndReason:
        bad = 0
        recent: list[float] = []  # a deque would take 760 bytes before the first message
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return CLIENT_CLOSED
            text = message.get("text")
            if text is None:  # binary, including an empty binary frame (bytes None)
                return BINARY_FRAME
            oversized = len(text) > MAX_MESSAGE_CHARS  # only a publish may be bigger
            if oversized and not publishing.allowed:
                return MESSAGE_TOO_BIG
            try:
                parsed = parse_message(text)
                if oversized and parsed["type"] != "publish":
                    return MESSAGE_TOO_BIG
                if parsed["type"] == "publish":
                    if not publishing.allowed and _flooding(recent):
                        return closed_by_policy("too many messages per second")
                    if not await publishing.publish(text, parsed):
                        bad += 1  # no ref: abuse, like any bad message
                    if bad > MAX_BAD_MESSAGES:
                        return closed_by_policy("too many invalid messages")
                    continue
                if _flooding(recent):
                    return closed_by_policy("too many messages per second")
                await self._answer(parsed, live, publishing, following)
            except Refused as refused:
                if oversized:
                    return MESSAGE_TOO_BIG
                bad += 1
                if bad > MAX_BAD_MESSAGES:
                    return closed_by_policy("too many invalid messages")
                await self._send_text(refused.frame.text)

    async def _answer(
        self, message: dict[str, Any], live: Live, publishing: Publishing, following: Subscriptions
    ) -> None:
        kind = message["type"]
        if kind == "ping" and len(message) == 1:
            await self._send_text(PONG.text)
        elif kind in ("subscribe", "unsubscribe"):
            live.sub.change(*following.change(message))
        else:
            raise Refused("bad_message", f"unknown message type {kind[:40]!r}: {KNOWN}")

    async def end(self, reason: EndReason, notice: Control | None) -> None:
        if reason is CLIENT_CLOSED:
            return
        with contextlib.suppress(TimeoutError):  # a client that never reads may block this
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if notice is not None:
                    await self._send_text(notice.text)
                await self._send(
                    {"type": "websocket.close", "code": int(reason.close), "reason": reason.reason}
                )
        await self._drain_until_disconnect()

    async def _send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def _drain_until_disconnect(self) -> None:
        """Read what the client still sends until the server's side learns it is gone.

        Hypercorn hands a closing connection's last frames and its disconnect to
        the app through a small queue; an app that stops reading leaves that queue
        full, and the connection (socket, task) is never released."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                while (await self._receive())["type"] != "websocket.disconnect":
                    pass


def _flooding(recent: list[float]) -> bool:
    """Count one message; whether more than ``MAX_MESSAGES_PER_S`` came in a second
    (``recent``: the times of the messages of the last second, oldest first)."""
    now = time.monotonic()
    recent.append(now)
    del recent[: bisect.bisect_left(recent, now - 1)]
    return len(recent) > MAX_MESSAGES_PER_S


def serve_ws(scope: Scope, receive: Receive, send: Send, runtime: Runtime) -> Awaitable[None]:
    """The coroutine serving one WebSocket stream (a plain function: no frame of its
    own for the stream's life)."""
    return serve(WebSocketWire(scope, receive, send, runtime.settings), runtime)
