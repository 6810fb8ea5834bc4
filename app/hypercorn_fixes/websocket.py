"""Hypercorn's WebSocket stream, as Livefeed serves it (HTTP/1.1 and HTTP/2 alike).

Why each change:

1. **No compression.**  Hypercorn accepts ``permessage-deflate`` whenever a client
   offers it (every browser does), and wsproto inflates each received chunk whole
   before Hypercorn's size check sees it: a 65 KB compressed frame became ~64 MB in
   memory, a 1 MB one 1.25 GB.  Without it nothing a client sends is larger in memory
   than on the wire, an idle socket costs ~25 KiB instead of ~117 KiB (no zlib
   streams), and a server frame is the same bytes for every subscriber.  Hypercorn
   negotiates from the client's offer it kept on the handshake
   (``Handshake.extensions``); that is cleared at accept, so nothing is negotiated.
2. **A malformed extension offer is a 400 JSON answer and one log line**, decided
   by :mod:`app.hypercorn_fixes.extensions` before the application runs (wsproto
   used to raise from inside the application's accept: no answer, tracebacks).
3. **Refusals are JSON, and end the stream.**  Hypercorn's 400 for an invalid
   handshake had an empty body and said ``connection: close``, then kept the socket
   open until the client left.  Its 400 for frames sent before the ``101`` did the
   same, and if the application was still checking the handshake it was never told:
   the stream then ran, subscribed, for a client that was gone.
4. **After a close the server sent, only the client's close reply matters.**
   Hypercorn closes with 1009 when a message passes the size limit and then stops
   reading that batch of frames; a client that had sent the rest of a big frame
   and then its close reply was never heard, so neither side ever finished (a
   17 MiB frame: no close seen within 10 s).  Here the rest is read and dropped
   until the client's close, and a client that never replies to Hypercorn's own
   close is cut after ``CLOSE_REPLY_TIMEOUT_S`` (the application was never told).
5. **Ready-made frames.**  Every event's WebSocket frame is the same bytes for every
   subscriber (no compression, 1.), so the application builds it once and sends it
   as :data:`~app.scope.WEBSOCKET_FRAMES` (announced in the scope's extensions at
   accept); it is written as it is, several frames in one write, instead of a
   wsproto encoding and a write per frame and subscriber.
"""

from __future__ import annotations

import logging

from hypercorn.protocol.events import Body, Data, EndBody, Event, Request, Response, StreamClosed
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.typing import ASGISendEvent, WebsocketAcceptEvent
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection
from wsproto.events import Event as WSProtoEvent

from app.errors import HTTP_CODES, JSON_HEADERS, error_body
from app.hypercorn_fixes.extensions import offer_problem
from app.scope import WEBSOCKET_FRAMES

log = logging.getLogger(__name__)

#: How long a client may take to answer a close Hypercorn sent on its own.
CLOSE_REPLY_TIMEOUT_S = 5.0
WEBSOCKET_VERSION = b"13"

_DETAILS = {
    400: "this is not a valid WebSocket handshake: send GET over HTTP/1.1 with "
    "Upgrade: websocket, Connection: Upgrade, a Sec-WebSocket-Key and "
    "Sec-WebSocket-Version: 13",
    403: "the WebSocket handshake was refused",
    404: "this server does not serve that host name",
    500: "the server failed before it could accept the WebSocket; reconnect shortly",
}
EARLY_DATA = (
    "WebSocket data arrived before the handshake was answered; wait for the 101 "
    "response before sending frames (RFC 6455 section 4.1)"
)


def extensions_detail(problem: str) -> str:
    return (
        f"the Sec-WebSocket-Extensions header is not valid ({problem}); this server "
        "never uses WebSocket extensions, so the header can be left out"
    )


class LivefeedWSStream(WSStream):
    """Hypercorn's ``WSStream`` without compression, with JSON refusals that end the
    stream, and a close handshake that always finishes."""

    _http_version = "1.1"  # the handshake's, once it has arrived

    async def handle(self, event: Event) -> None:
        if self.closed:
            await super().handle(event)  # ignores it
        elif isinstance(event, Request):
            await self._handshake(event)
        elif isinstance(event, Body | Data) and not self.handshake.accepted:
            # Hypercorn answered 400 here but left the socket open and, if the
            # application was checking the handshake, never told it: a stream for no one.
            await self._refuse(400, EARLY_DATA)
        elif isinstance(event, Body | Data) and self._closing():
            await self._until_close_reply(event.data)
        else:
            await super().handle(event)

    async def _handshake(self, request: Request) -> None:
        self._http_version = request.http_version
        problem = offer_problem(
            value for name, value in request.headers if name.lower() == b"sec-websocket-extensions"
        )
        if problem is not None:
            await self._refuse(400, extensions_detail(problem))
            return
        await super().handle(request)  # Hypercorn's own checks, then the application
        if self.closed:  # Hypercorn refused it, and left the socket open
            await self.send(StreamClosed(stream_id=self.stream_id))

    async def _refuse(self, status: int, detail: str) -> None:
        """Answer, then end the stream (which tells a running application)."""
        await self._answer(status, detail)
        await self.send(StreamClosed(stream_id=self.stream_id))

    async def _send_error_response(self, status_code: int) -> None:
        """Hypercorn's own refusals (invalid handshake, failure before accept), as JSON;
        an invalid handshake also names the protocol version served (RFC 6455 §4.4)."""
        version = [(b"sec-websocket-version", WEBSOCKET_VERSION)] if status_code == 400 else []
        await self._answer(status_code, _DETAILS.get(status_code, "the handshake failed"), version)

    async def _answer(
        self, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """A JSON refusal and its one log line."""
        log.warning(
            "websocket handshake refused client=%s: %d %s",
            self.client[0] if self.client else "unknown",
            status,
            detail,
        )
        body = error_body(HTTP_CODES.get(status, "bad_request"), detail)
        headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(body)), *(extra or [])]
        if self._http_version.startswith("1"):
            headers.append((b"connection", b"close"))  # HTTP/2 forbids this header
        await self.send(Response(stream_id=self.stream_id, status_code=status, headers=headers))
        await self.send(Body(stream_id=self.stream_id, data=body))
        await self.send(EndBody(stream_id=self.stream_id))

    async def _accept(self, message: WebsocketAcceptEvent) -> None:
        self.handshake.extensions = None  # the client's offer: never negotiated
        await super()._accept(message)
        self.scope["extensions"][WEBSOCKET_FRAMES] = {}

    async def app_send(self, message: ASGISendEvent | None) -> None:
        if message is None or message["type"] != WEBSOCKET_FRAMES:
            await super().app_send(message)
        elif not self.closed and self.connection.state is ConnectionState.OPEN:
            # as wsproto would send them; after a close they are dropped, as it drops them
            data: bytes = message["data"]  # type: ignore[typeddict-item]
            await self.send(Data(stream_id=self.stream_id, data=data))

    def _closing(self) -> bool:
        """The server sent its close and waits for the client's."""
        return self.handshake.accepted and self.connection.state is ConnectionState.LOCAL_CLOSING

    async def _until_close_reply(self, data: bytes) -> None:
        """Read what the client still sends, keeping none of it, until its close."""
        self.connection.receive_data(data)
        for event in self.connection.events():
            if isinstance(event, CloseConnection):
                await self.send(StreamClosed(stream_id=self.stream_id))
                return

    async def _send_wsproto_event(self, event: WSProtoEvent) -> None:
        opening = self.connection.state is ConnectionState.OPEN
        closes = isinstance(event, CloseConnection) and opening
        await super()._send_wsproto_event(event)
        if closes and self.state is ASGIWebsocketState.CONNECTED and self._closing():
            # Hypercorn closed on its own (1009): the application does not know
            self.task_group.spawn(self._cut_if_unanswered)

    async def _cut_if_unanswered(self) -> None:
        await self.context.sleep(CLOSE_REPLY_TIMEOUT_S)
        if not self.closed:
            await self.send(StreamClosed(stream_id=self.stream_id))
