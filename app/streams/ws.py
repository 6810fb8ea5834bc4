"""``GET /ws/{channel}``: the log as WebSocket text frames.

The handshake is checked (path, cursor, origin, credentials) before it is
accepted, and a refusal is a real HTTP answer whose JSON body says why.
After accepting, the client's side is read all the time: it answers pings
and refuses bad frames (a client that floods a server that never reads
would otherwise grow memory without bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import orjson

from app.errors import BINARY_FRAME, CLIENT_CLOSED, ApiError, EndReason, closed_by_policy
from app.events import Control, Frame, error_frame
from app.query import StreamRequest
from app.runtime import Runtime
from app.scope import Receive, Scope, Send, header
from app.security.hosts import request_origin_parts
from app.security.origins import origin_refusal
from app.streams.connection import Connection, refuse_websocket
from app.streams.session import serve

log = logging.getLogger(__name__)

MAX_BAD_MESSAGES = 10
MAX_MESSAGES_PER_S = 50
CLOSE_TIMEOUT_S = 1.0
DRAIN_TIMEOUT_S = 5.0
PONG = Control.build("pong")
ONLY_PING = error_frame("bad_message", 'the only client message is {"type":"ping"}')


def batched_texts(frames: list[Frame]) -> list[str]:
    """With ``?batch=1``: the events of one write as one frame, a JSON array of
    envelopes (controls stay separate frames).  Each WebSocket frame costs the
    server about as much as the bytes it carries, so this is the fast path."""
    texts = [frame.text for frame in frames if frame.id is None]
    events = [frame.text for frame in frames if frame.id is not None]
    if len(events) == 1:
        texts.append(events[0])
    elif events:
        texts.append("[" + ",".join(events) + "]")
    return texts


class WebSocketWire(Connection):
    """The WebSocket side of a stream: text frames, a reader that never stops."""

    transport = "websocket"
    prefix = "/ws/"
    _batch = False  # ?batch=1: several events per frame (set by check())

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
        await self._send_text(hello.text)

    async def write(self, frames: list[Frame]) -> None:
        texts = batched_texts(frames) if self._batch else [frame.text for frame in frames]
        for text in texts:
            await self._send_text(text)

    async def listen(self) -> EndReason:
        """Answer pings; refuse anything else; close on abuse."""
        bad = 0
        recent: deque[float] = deque()
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return CLIENT_CLOSED
            now = time.monotonic()
            recent.append(now)
            while recent and recent[0] < now - 1:
                recent.popleft()
            if len(recent) > MAX_MESSAGES_PER_S:
                return closed_by_policy("too many messages per second")
            text = message.get("text")
            if text is None:  # binary, including an empty binary frame (bytes None)
                return BINARY_FRAME
            if _is_ping(text):
                await self._send_text(PONG.text)
                continue
            bad += 1
            if bad > MAX_BAD_MESSAGES:
                return closed_by_policy("too many invalid messages")
            await self._send_text(ONLY_PING.text)

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


def _is_ping(text: str) -> bool:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and parsed.get("type") == "ping" and len(parsed) == 1


async def serve_ws(scope: Scope, receive: Receive, send: Send, runtime: Runtime) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await serve(WebSocketWire(scope, receive, send, runtime.settings), runtime)
