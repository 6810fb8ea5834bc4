"""HTTP/1.1 parsed by llhttp (``httptools``), in place of Hypercorn's h11 protocol.

Why: with h11 (pure Python) and Hypercorn's protocol around it, a single-event
publish cost about 350 µs of server CPU; the same app under an llhttp-based server
took about 225 µs (3,900 publishes/s on one core against 2,500; ``bench/README.md``).
Hypercorn's ASGI side stays: each request is its ``HTTPStream`` or WebSocket stream,
which send this protocol their response events, and HTTP/2 is Hypercorn's.

What it does as Hypercorn's protocol did, with Livefeed's changes:

1. Errors answered before the application sees a request (``431`` for a request
   head over ``h11_max_incomplete_size``, ``400`` for malformed HTTP/1.1, ``501`` for
   a ``Transfer-Encoding`` other than ``chunked``) are JSON ``{"error", "detail"}``,
   and the connection closes.  The detail names the rule broken, never the client's
   bytes.  The head limit now holds for a head that arrives in one read too (h11
   refused only a head still incomplete past it).
2. An HTTP/2 prior-knowledge connection (the ``PRI * HTTP/2.0`` preface) is handed
   to Hypercorn's HTTP/2 protocol; its keep-alive timer keeps running meanwhile, so a
   silent one is closed.
3. ``Upgrade: h2c`` is never honoured: the request is answered as plain HTTP/1.1.
   Behind a proxy that forwards ``Upgrade``, a ``101`` turned the proxy's connection
   into a blind tunnel, and every request after it reached Livefeed unchecked by the
   proxy.  An upgrade request with a body (other than a WebSocket's) is refused: llhttp
   hands over what follows an upgrade's head unparsed, and re-reading it as requests
   would let a body smuggle one.
4. A response's head waits for its first body bytes and goes out with them in one
   write, if they come in the same turn of the event loop (ASGI lets a server wait:
   it "must not start sending the response to the client until it has received at
   least one Response Body event"); a stream that waits for its first event gets its
   head at once.
5. Pipelined requests are answered one at a time, in order; reading pauses meanwhile
   (the connection stops draining its inbox, as under h11).

As h11 did: HTTP/1.1 needs exactly one ``Host``; HTTP/1.0 is answered and closed
(no keep-alive); header names are lower-cased and values stripped; response headers
are checked for characters that would split them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from itertools import chain

import httptools
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import (
    Body,
    Data,
    EndBody,
    Request,
    Response,
    StreamClosed,
)
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h11 import H2ProtocolAssumedError
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.typing import AppWrapper, ConnectionState, TaskGroup, WorkerContext

from app.errors import HTTP_CODES, JSON_HEADERS, error_body
from app.hypercorn_fixes.websocket import LivefeedWSStream

log = logging.getLogger(__name__)

STREAM_ID = 1
H2_PREFACE = b"PRI * HTTP/2.0\r\n"
#: Bytes of a request line beyond its target: method, version, spaces, CRLF.
REQUEST_LINE_OVERHEAD = 16
NO_BODY_STATUSES = frozenset({204, 304})
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


class Refusal(Exception):
    """A request refused before the application sees it: the status and the rule broken
    (our own words: they go into the answer)."""

    def __init__(self, status: int, reason: str | None, in_body: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.in_body = in_body  # of the request being read, not of a next one


def describe(status: int, config: Config, reason: str | None) -> tuple[str, str]:
    """The error code and the sentence for a request refused before the app sees it."""
    if status == 431:
        limit = config.h11_max_incomplete_size
        return HTTP_CODES[431], (
            f"the request line and headers together are larger than this server's limit "
            f"of {limit} bytes ({limit / 1024:g} KiB); send fewer or smaller headers"
        )
    if status == 501:
        return HTTP_CODES[501], (
            "the request uses a Transfer-Encoding this server does not support; "
            "send a Content-Length, or Transfer-Encoding: chunked alone"
        )
    what = f" ({reason})" if reason else ""
    return HTTP_CODES.get(status, "bad_request"), (
        f"the request is not valid HTTP/1.1{what}: check the request line, the header "
        "lines and the message framing (Content-Length or Transfer-Encoding)"
    )


def parser_refusal(error: httptools.HttpParserError, in_body: bool) -> Refusal:
    """What llhttp's error means, in h11's words (llhttp's message is only matched)."""
    message = str(error)
    if in_body:
        reason = "illegal chunk header" if "chunk" in message else "malformed message body"
        return Refusal(400, reason, in_body=True)
    if "Transfer-Encoding" in message and "invalid" in message:
        return Refusal(501, "unsupported Transfer-Encoding")
    if "Content-Length" in message:
        return Refusal(400, "bad Content-Length")
    if "Transfer-Encoding" in message:
        return Refusal(400, "both Content-Length and Transfer-Encoding")
    line_errors = (httptools.HttpParserInvalidMethodError, httptools.HttpParserInvalidURLError)
    if isinstance(error, line_errors) or any(
        word in message for word in ("version", "HTTP/", "PRI", "method", "URL")
    ):
        return Refusal(400, "illegal request line")
    return Refusal(400, "illegal header line")


class Http1Protocol:
    """One HTTP/1.1 connection: llhttp parses, Hypercorn's streams run each request.

    Hypercorn's ``ProtocolWrapper`` builds it (as ``H11Protocol``) and hands it what
    arrives; its streams call :meth:`stream_send` with their response events.  Every
    open stream keeps one, so it has slots and makes no deque (760 bytes empty)."""

    __slots__ = (
        "_chunked", "_closed", "_first_bytes", "_head_began", "_head_carried",
        "_head_request", "_head_sender", "_head_size", "_headers", "_held_head", "_http_10",
        "_in_body", "_in_head", "_keep_alive", "_length", "_our_done", "_parsed", "_parser",
        "_reading_done", "_refusal", "_response_started", "_started", "_their_done",
        "_upgraded", "_url", "app", "can_read", "client", "config", "connection_state",
        "context", "keep_alive_requests", "send", "server", "ssl", "stream", "task_group",
    )  # fmt: skip

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        task_group: TaskGroup,
        connection_state: ConnectionState,
        ssl: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        send: Callable[[Event], Awaitable[None]],
    ) -> None:
        self.app = app
        self.config = config
        self.context = context
        self.task_group = task_group
        self.connection_state = connection_state
        self.ssl = ssl
        self.client = client
        self.server = server
        self.send = send
        self.stream: HTTPStream | WSStream | None = None
        self.keep_alive_requests = 0
        self.can_read = context.event_class()
        self._parser = httptools.HttpRequestParser(self)
        self._parsed: list[Request | Body | EndBody | Data | Refusal] = []
        self._refusal: Refusal | None = None  # raised by a callback below
        self._first_bytes = b""  # until it is clear whether they are HTTP/2's preface
        self._started = False
        self._reading_done = False  # refused, or the peer left: nothing more is parsed
        self._closed = False  # Closed was sent or received: nothing more is answered
        self._upgraded = False  # a WebSocket: what arrives is the stream's
        # the request being parsed
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0  # counted from the parser's callbacks
        self._head_carried = 0  # bytes of reads that ended inside the head
        self._in_head = self._head_began = self._in_body = False
        # the request being answered (one at a time)
        self._head_request = self._keep_alive = self._chunked = False
        self._http_10 = False
        self._their_done = self._our_done = self._response_started = False
        self._held_head = b""
        self._head_sender: asyncio.Task[None] | None = None
        self._length: int | None = None  # bytes the response still owes, if declared

    async def initiate(self) -> None:
        """Nothing to do before the first bytes (the keep-alive timer is the connection's)."""

    # ---- what arrives -----------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        if isinstance(event, RawData):
            if self._upgraded:  # after the upgrade request, which may still be queued
                self._parsed.append(Data(stream_id=STREAM_ID, data=event.data))
                await self._dispatch()
                return
            if self._reading_done:
                return
            data = event.data
            if not self._started:
                data = self._first_bytes + data
                if len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
                    self._first_bytes = data  # could still be HTTP/2's preface
                    return
                self._started, self._first_bytes = True, b""
                if data.startswith(H2_PREFACE):
                    raise H2ProtocolAssumedError(data)
            self._feed(data)
            await self._dispatch()
        elif isinstance(event, Closed):
            self._reading_done = self._closed = True
            if self.stream is not None:
                await self._close_stream()

    def _feed(self, data: bytes) -> None:
        """Parse what arrived; the callbacks below queue what it means, in order."""
        self._head_began = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data[upgrade.args[0] :])
            return
        except httptools.HttpParserCallbackError:
            if self._refusal is None:
                raise  # a bug of ours, not the client's
            self._refuse(self._refusal)
            return
        except httptools.HttpParserError as error:
            self._refuse(parser_refusal(error, self._in_body))
            return
        if self._in_head:
            if not self._head_began:
                self._head_carried += len(data)  # all of it is head
            if max(self._head_size, self._head_carried) > self.config.h11_max_incomplete_size:
                self._refuse(Refusal(431, None))

    def _upgrade(self, rest: bytes) -> None:
        """llhttp stopped after an upgrade request: a WebSocket's takes the connection,
        any other upgrade is not honoured and HTTP/1.1 goes on (without a body)."""
        request = self._last_request()
        if request is not None and _is_websocket(request):
            self._upgraded = True
            if rest:
                self._parsed.append(Data(stream_id=STREAM_ID, data=rest))
            return
        if request is not None and _has_body(request.headers):
            while not isinstance(self._parsed.pop(), Request):
                pass  # it is not run: its body would be read as requests
            self._refuse(Refusal(400, "an Upgrade request with a body"))
            return
        self._parser = httptools.HttpRequestParser(self)
        if rest:
            self._feed(rest)

    def _last_request(self) -> Request | None:
        for item in reversed(self._parsed):
            if isinstance(item, Request):
                return item
        return None

    def _refuse(self, refusal: Refusal) -> None:
        self._parsed.append(refusal)
        self._reading_done = True

    # llhttp's callbacks (synchronous, during feed_data)

    def on_message_begin(self) -> None:
        self._url, self._headers = b"", []
        self._head_size, self._head_carried = REQUEST_LINE_OVERHEAD, 0
        self._in_head = self._head_began = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        self._headers.append((name.lower(), value.strip(b" \t")))

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        version = self._parser.get_http_version()
        self._refusal = _head_refusal(self._head_size, self.config, version, self._headers)
        if self._refusal is not None:
            raise self._refusal  # llhttp stops; _feed answers it
        self._parsed.append(
            Request(
                stream_id=STREAM_ID,
                headers=self._headers,
                http_version=version,
                method=self._parser.get_method().decode("ascii").upper(),
                raw_path=self._url,
                state=self.connection_state,
            )
        )

    def on_body(self, body: bytes) -> None:
        self._parsed.append(Body(stream_id=STREAM_ID, data=body))

    def on_message_complete(self) -> None:
        self._in_body = False
        self._parsed.append(EndBody(stream_id=STREAM_ID))

    # ---- handing it to the streams, one request at a time -------------------------------

    async def _dispatch(self) -> None:
        while self._parsed:
            item = self._parsed[0]
            starts_anew = isinstance(item, Request) or (
                isinstance(item, Refusal) and not item.in_body
            )
            if starts_anew and self.stream is not None:
                await self.can_read.clear()  # pipelined: after the current answer
                await self.can_read.wait()
                continue
            if starts_anew and self._closed:
                self._parsed.clear()  # the last answer closed the connection
                return
            del self._parsed[0]
            if isinstance(item, Refusal):
                self._parsed.clear()
                await self._answer_refusal(item)
                return
            if isinstance(item, Request):
                await self._start(item)
            elif self.stream is not None:
                if isinstance(item, EndBody):
                    self._their_done = True
                await self.stream.handle(item)

    async def _start(self, request: Request) -> None:
        await self.send(Updated(idle=False))
        headers = request.headers
        self._head_request = request.method == "HEAD"
        self._http_10 = request.http_version == "1.0"
        self._keep_alive = not self._http_10 and not _asks_to_close(headers)
        self._their_done = self._our_done = self._response_started = False
        self._held_head, self._chunked, self._length = b"", False, None
        if _is_websocket(request):
            self._keep_alive = False  # refused or not, nothing follows it on this connection
            self.stream = self._new_stream(LivefeedWSStream)
        else:
            self.stream = self._new_stream(HTTPStream)
        await self.stream.handle(request)
        self.keep_alive_requests += 1
        await self.context.mark_request()
        if _expects_continue(headers) and not (self._parsed and isinstance(self._parsed[0], Body)):
            await self._write(self._informational(100, []))

    def _new_stream(self, kind: type[HTTPStream] | type[WSStream]) -> HTTPStream | WSStream:
        return kind(
            self.app,
            self.config,
            self.context,
            self.task_group,
            self.ssl,
            self.client,
            self.server,
            self.stream_send,
            STREAM_ID,
        )

    async def _answer_refusal(self, refusal: Refusal) -> None:
        """The JSON error (an empty body if that cannot be built), then close."""
        if not self._response_started:
            self._our_done = self._response_started = True
            try:
                body = error_body(*describe(refusal.status, self.config, refusal.reason))
            except Exception:
                log.exception("could not build a JSON body for the %d", refusal.status)
                body, headers = b"", [(b"content-length", b"0")]
            else:
                headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(body))]
            headers += [(b"connection", b"close"), *self.config.response_headers("h11")]
            await self._write(self._status_line(refusal.status, headers) + body)
        self._closed = True
        await self._close_stream()
        await self.can_read.set()
        await self.send(Closed())

    # ---- what the streams send ----------------------------------------------------------

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, Response):
            if self._our_done:
                return  # answered already (a refusal)
            if event.status_code < 200:
                await self._write(self._informational(event.status_code, event.headers))
                if event.status_code == 101:
                    self._upgraded = True
                return
            self._response_started = True
            self._held_head = self._response_head(event)
            asyncio.get_running_loop().call_soon(self._send_head_if_held)
        elif isinstance(event, Body):
            if not self._our_done:
                await self._write_body(event.data)
        elif isinstance(event, EndBody):
            if not self._our_done:
                await self._end_body()
        elif isinstance(event, Data):
            await self._write(event.data)
        elif isinstance(event, StreamClosed):
            await self._maybe_recycle()
        # Early hints, EndData, trailers and pushes have no HTTP/1.1 form here (as under h11).

    def _response_head(self, response: Response) -> bytes:
        status = response.status_code
        headers = list(chain(response.headers, self.config.response_headers("h11")))
        names = {name.lower() for name, _ in headers}
        if self._head_request or status in NO_BODY_STATUSES:
            pass
        elif b"content-length" in names:
            self._length = _declared_length(headers)
        elif b"transfer-encoding" in names or not self._http_10:
            self._chunked = True
            if b"transfer-encoding" not in names:
                headers.append((b"transfer-encoding", b"chunked"))
        else:
            self._keep_alive = False  # HTTP/1.0: the body ends where the connection does
        if _asks_to_close(headers):
            self._keep_alive = False
        if self.keep_alive_requests >= self.config.keep_alive_max_requests:
            self._keep_alive = False
        if not self._keep_alive and b"connection" not in names:
            headers.append((b"connection", b"close"))
        return self._status_line(status, headers)

    def _status_line(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        for name, value in headers:
            if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
                raise ValueError(f"a response header that HTTP/1.1 cannot carry: {name!r}")
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        return b"".join(lines)

    def _informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        return self._status_line(status, [*headers, *self.config.response_headers("h11")])

    def _send_head_if_held(self) -> None:
        """A body not sent in the same turn of the loop (a stream waiting for its first
        event) must not keep the head back: it goes alone."""
        if self._held_head:
            self._head_sender = asyncio.get_running_loop().create_task(self._write(b""))

    async def _write_body(self, data: bytes) -> None:
        if not data:
            return
        if self._head_request:
            data = b""
        elif self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        elif self._length is not None:
            if len(data) > self._length:
                raise ValueError("the response body is longer than its Content-Length")
            self._length -= len(data)
        await self._write(data)

    async def _end_body(self) -> None:
        self._our_done = True
        if self._length:  # fewer bytes than declared: the peer cannot find the next answer
            self._keep_alive = False
        await self._write(b"0\r\n\r\n" if self._chunked and not self._head_request else b"")

    async def _write(self, data: bytes) -> None:
        if self._held_head:
            data, self._held_head = self._held_head + data, b""
        if data:
            await self.send(RawData(data=data))

    async def _maybe_recycle(self) -> None:
        await self._close_stream()
        if (
            self._keep_alive
            and self._our_done
            and self._their_done
            and not self._closed
            and not self._upgraded
            and not self.context.terminated.is_set()
        ):
            await self.can_read.set()
            await self.send(Updated(idle=True))
        else:
            self._closed = self._reading_done = True
            await self.can_read.set()
            await self.send(Closed())

    async def _close_stream(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.handle(StreamClosed(stream_id=STREAM_ID))


def _head_refusal(
    size: int, config: Config, version: str, headers: list[tuple[bytes, bytes]]
) -> Refusal | None:
    """What makes a whole request head unacceptable, as h11 judged it."""
    if size > config.h11_max_incomplete_size:
        return Refusal(431, None)
    if version not in ("1.1", "1.0"):
        return Refusal(400, "illegal request line")
    hosts = [v for n, v in headers if n == b"host"]
    if version == "1.1" and len(hosts) != 1:
        return Refusal(400, "Found multiple Host: headers" if hosts else "Missing Host: header")
    codings = [v.lower() for n, v in headers if n == b"transfer-encoding"]
    if codings and codings != [b"chunked"]:
        return Refusal(501, "unsupported Transfer-Encoding")
    return None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Every ``Connection`` header's options, lower-cased (a request's names are
    lower-case already; an application's response may not be)."""
    return {
        t.strip() for n, v in headers if n.lower() == b"connection" for t in v.lower().split(b",")
    }


def _asks_to_close(headers: list[tuple[bytes, bytes]]) -> bool:
    return b"close" in _connection_tokens(headers)


def _asks_upgrade(headers: list[tuple[bytes, bytes]]) -> bool:
    return _header(headers, b"upgrade") is not None and b"upgrade" in _connection_tokens(headers)


def _is_websocket(request: Request) -> bool:
    upgrade = (_header(request.headers, b"upgrade") or b"").strip().lower()
    return request.method == "GET" and upgrade == b"websocket" and _asks_upgrade(request.headers)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    length = _header(headers, b"content-length")
    return _header(headers, b"transfer-encoding") is not None or (
        length is not None and length.strip() not in (b"", b"0")
    )


def _expects_continue(headers: list[tuple[bytes, bytes]]) -> bool:
    expect = _header(headers, b"expect")
    return expect is not None and expect.lower() == b"100-continue"


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    value = _header([(n.lower(), v) for n, v in headers], b"content-length")
    return int(value) if value is not None and value.strip().isdigit() else None
