"""WebSocket: ``/ws/<channels>?batch=1``, text frames of JSON (an array when
several events were sent in one write)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from app.client.errors import Down, ErrorBody, retry_after
from app.client.events import Message, TransportName, decode_messages
from app.client.options import FeedOptions
from app.client.transports.base import expect_established

#: A ``?batch=1`` frame holds one write's events: up to a page of 1000 events
#: of at most 64 KiB each.
MAX_FRAME_BYTES = 1000 * 65536 + 65536
#: Closing waits this long for the server's close frame: a frozen server must
#: not hold up the reconnection.
CLOSE_TIMEOUT_S = 1.0


class WsConnection:
    transport: TransportName = "ws"
    retry_hint_s: float | None = None

    def __init__(self, ws: ClientConnection, established: Message) -> None:
        self._ws = ws
        self.established = established

    async def batches(self) -> AsyncGenerator[list[Message], None]:
        try:
            while True:
                yield decode_messages(await self._ws.recv())
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def aclose(self) -> None:
        await self._ws.close()


def _closed(exc: ConnectionClosed) -> Down:
    frame = exc.rcvd
    if frame is None:
        return Down("ws", "WebSocket connection lost (no close frame)")
    reason = f": {frame.reason}" if frame.reason else ""
    return Down("ws", f"WebSocket closed with code {frame.code}{reason}", close_code=frame.code)


async def open_ws(
    options: FeedOptions, http: httpx.AsyncClient, cursor: int | None
) -> WsConnection:
    """Handshake and ``connection_established``, within the connect timeout."""
    del http  # the handshake is the websockets library's own request
    headers = await options.request_headers()
    try:
        async with asyncio.timeout(options.connect_timeout_s):
            ws = await connect(
                options.stream_url("ws", cursor),
                additional_headers=headers,
                open_timeout=None,  # the timeout above covers the whole opening
                ping_interval=None,  # the server's heartbeats and the feed's watchdog
                compression=None,  # per-connection deflate would undo the server's encode-once
                max_size=MAX_FRAME_BYTES,
                close_timeout=CLOSE_TIMEOUT_S,
            )
            try:
                established = expect_established("ws", decode_messages(await ws.recv()))
            except BaseException:
                await ws.close()
                raise
    except InvalidStatus as exc:
        body = ErrorBody.parse(bytes(exc.response.body or b""))
        detail = f"WebSocket refused: HTTP {exc.response.status_code}"
        detail += f" {body.error}" if body.error else ""
        detail += f": {body.detail}" if body.detail else ""
        raise Down(
            "ws",
            detail,
            status=exc.response.status_code,
            error=body.error,
            retry_after=retry_after(exc.response.headers),
        ) from exc
    except ConnectionClosed as exc:
        raise Down("ws", f"WebSocket closed before connection_established ({exc})") from exc
    except TimeoutError as exc:
        raise Down(
            "ws", f"WebSocket sent no connection_established in {options.connect_timeout_s:g} s"
        ) from exc
    except WebSocketException as exc:  # a proxy that does not speak WebSocket
        raise Down("ws", f"WebSocket handshake failed: {exc}") from exc
    except OSError as exc:  # refused or no such host: nothing listens there
        unreachable = isinstance(exc, ConnectionRefusedError | socket.gaierror)
        raise Down("ws", f"WebSocket could not connect: {exc}", network=unreachable) from exc
    return WsConnection(ws, established)
