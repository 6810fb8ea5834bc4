"""app/hypercorn_fixes in process: it installs only onto the Hypercorn it was checked
against, falls back to Hypercorn's own answer, and never echoes the client's bytes.  The
behaviour on real sockets is in tests/test_hostile.py, tests/test_ws_protocol.py and
tests/test_h2c.py."""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import hypercorn.protocol
import hypercorn.protocol.events
import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.protocol.ws_stream
import hypercorn.typing
import orjson
import pytest
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.events import Body, Response
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.protocol.ws_stream import Handshake, WSStream
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping

from app.hypercorn_fixes import http1, install
from app.hypercorn_fixes.extensions import offer_problem
from app.hypercorn_fixes.frames import FrameLimitedConnection
from app.hypercorn_fixes.http1 import Http1Protocol, describe
from app.hypercorn_fixes.http2 import LivefeedH2Protocol
from app.hypercorn_fixes.websocket import LivefeedWSStream


@pytest.fixture(autouse=True)
def hypercorn_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from Hypercorn's own classes and leaves them as they were."""
    monkeypatch.setattr(hypercorn.protocol, "H11Protocol", H11Protocol)
    monkeypatch.setattr(hypercorn.protocol, "H2Protocol", H2Protocol)
    monkeypatch.setattr(hypercorn.protocol.h11, "WSStream", WSStream)
    monkeypatch.setattr(hypercorn.protocol.h2, "WSStream", WSStream)
    monkeypatch.setattr(hypercorn.protocol.ws_stream, "Connection", Connection)


def test_install_rebinds_every_name_and_is_idempotent() -> None:
    """Both protocols, the WebSocket stream of both HTTP versions and its wsproto
    connection, once."""
    assert install() and install()
    assert hypercorn.protocol.H11Protocol is Http1Protocol
    assert hypercorn.protocol.H2Protocol is LivefeedH2Protocol
    assert hypercorn.protocol.h2.WSStream is LivefeedWSStream
    assert hypercorn.protocol.ws_stream.Connection is FrameLimitedConnection


@dataclasses.dataclass(frozen=True)
class _OtherRequest:
    """A stand-in for a future Hypercorn whose request event has other fields."""

    stream_id: int
    target: bytes


class _TaskGroupAskedMore(hypercorn.typing.TaskGroup):
    """A stand-in for a future Hypercorn whose protocols ask more of a task group."""

    def spawn_later(self, delay: float) -> None:
        """What a connection's tasks do not do."""


def _accept_without_extensions(self: Handshake, *args: object) -> None:
    """A stand-in for a future handshake that negotiates without ``self.extensions``."""


@pytest.mark.parametrize(
    "change",
    [
        "h2 method removed",
        "stream built differently",
        "request event changed",
        "name rebound",
        "websocket method removed",
        "handshake negotiates elsewhere",
        "h2 stream rebound",
        "task group asked more",
        "protocol built differently",
        "idle signalled elsewhere",
        "date header option renamed",
    ],
)
def test_install_leaves_a_changed_hypercorn_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    """Any assumption that no longer holds: nothing is installed, and the log says so."""
    if change == "h2 method removed":
        monkeypatch.delattr(H2Protocol, "_flush")
    elif change == "stream built differently":
        monkeypatch.setattr(HTTPStream, "__init__", _built_with_a_transport)
    elif change == "request event changed":
        monkeypatch.setattr(hypercorn.protocol.events, "Request", _OtherRequest)
    elif change == "name rebound":
        monkeypatch.setattr(hypercorn.protocol, "H11Protocol", type("Other", (H11Protocol,), {}))
    elif change == "websocket method removed":
        monkeypatch.delattr(WSStream, "_accept")
    elif change == "handshake negotiates elsewhere":
        monkeypatch.setattr(Handshake, "accept", _accept_without_extensions)
    elif change == "task group asked more":
        monkeypatch.setattr(hypercorn.typing, "TaskGroup", _TaskGroupAskedMore)
    elif change == "protocol built differently":
        monkeypatch.setattr(hypercorn.protocol.ProtocolWrapper, "__init__", _built_with_a_transport)
    elif change == "date header option renamed":
        monkeypatch.delattr(Config, "include_date_header")
    elif change == "idle signalled elsewhere":
        monkeypatch.setattr(H2Protocol, "_handle_events", _handles_without_saying_idle)
    else:
        monkeypatch.setattr(hypercorn.protocol.h2, "WSStream", type("Other", (WSStream,), {}))
    before = (hypercorn.protocol.H11Protocol, hypercorn.protocol.h2.WSStream)
    assert not install()
    assert (hypercorn.protocol.H11Protocol, hypercorn.protocol.h2.WSStream) == before
    assert "stays, unprotected" in caplog.text and "compression" in caplog.text


def _built_with_a_transport(self: object, app: object, transport: object) -> None:
    """A protocol constructor that takes something else than Hypercorn 0.18.0's."""


async def _handles_without_saying_idle(self: object, events: object) -> None:
    """An HTTP/2 protocol that no longer tells the connection when it is idle."""


def protocol(sent: list[Event]) -> Http1Protocol:
    async def send(event: Event) -> None:
        sent.append(event)

    unused: Any = None  # no request reaches an app or a task group in these tests
    return Http1Protocol(
        app=unused,
        config=Config(),
        context=WorkerContext(None),
        task_group=unused,
        connection_state=unused,
        ssl=False,
        client=None,
        server=None,
        send=send,
    )


def written(sent: list[Event]) -> bytes:
    return b"".join(e.data for e in sent if isinstance(e, RawData))


@pytest.mark.asyncio
async def test_malformed_request_gets_json_naming_the_reason_not_the_bytes() -> None:
    sent: list[Event] = []
    await protocol(sent).handle(RawData(b"GET / HTTP/1.1\r\nHost: x\r\n<script>\x00\r\n\r\n"))
    head, _, body = written(sent).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head
    error = orjson.loads(body)
    assert error["error"] == "bad_request" and "illegal header line" in error["detail"]
    assert "script" not in error["detail"]
    assert isinstance(sent[-1], Closed)


@pytest.mark.asyncio
async def test_a_body_that_cannot_be_built_falls_back_to_hypercorns_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> tuple[str, str]:
        raise RuntimeError("simulated")

    monkeypatch.setattr(http1, "describe", broken)
    sent: list[Event] = []
    await protocol(sent).handle(RawData(b"\xff\xfe GET /\r\n\r\n"))
    assert written(sent).startswith(b"HTTP/1.1 400 ")
    assert b"content-length: 0\r\n" in written(sent) and written(sent).endswith(b"\r\n\r\n")


def test_details_say_what_was_wrong_and_the_limit() -> None:
    config = Config()
    code, detail = describe(431, config, None)
    assert code == "headers_too_large" and f"{config.h11_max_incomplete_size} bytes" in detail
    code, detail = describe(400, config, "illegal request line")
    assert code == "bad_request" and "(illegal request line)" in detail
    assert describe(501, config, None)[0] == "not_implemented"


@pytest.mark.parametrize(
    "offer",
    [
        b"permessage-deflate; client_max_window_bits=<script>",
        b"permessage-deflate; <script>=1",
        b"<script>",
        b'x; a="<b>"',
        b"permessage-deflate; server_max_window_bits=7",
        b'permessage-deflate; server_max_window_bits="1\\6"',
    ],
)
def test_a_refused_offer_is_explained_without_the_clients_bytes(offer: bytes) -> None:
    """The sentence names the rule that was broken, never what the client sent."""
    problem = offer_problem([b"permessage-deflate", offer])
    assert problem is not None and "<" not in problem and "7" not in problem


def test_offers_browsers_and_libraries_send_are_not_refused() -> None:
    """Chromium, Firefox, Python websockets, Node ws, and quoted or repeated offers."""
    assert offer_problem([]) is None
    assert offer_problem([b"permessage-deflate; client_max_window_bits"]) is None
    assert offer_problem([b"permessage-deflate"]) is None
    assert offer_problem([b"permessage-deflate; client_max_window_bits=15"]) is None
    assert offer_problem([b'permessage-deflate; server_max_window_bits="1\\0"']) is None
    repeated = b"permessage-deflate, permessage-deflate;server_no_context_takeover"
    assert offer_problem([repeated]) is None
    assert offer_problem([b"x-webkit-deflate-frame", b", foo ;bar=baz"]) is None


def test_a_websockets_pending_events_are_a_list_that_keeps_their_order() -> None:
    """The frame-limited connection keeps wsproto's pending events in a list (an
    empty deque is 760 bytes per WebSocket); they still come out in order."""
    connection = FrameLimitedConnection(ConnectionType.SERVER)
    assert type(connection._events) is not deque
    first, second = Ping(b"1"), Ping(b"2")
    connection._events.append(first)
    connection._events.append(second)
    connection.receive_data(None)  # the connection drops: wsproto queues its close
    events = list(connection.events())
    assert events[:2] == [first, second]
    assert [type(event) for event in events[2:]] == [CloseConnection]
    assert not connection._events


@pytest.mark.asyncio
async def test_a_responses_head_goes_out_with_its_first_body_bytes() -> None:
    """One write for head and body (ASGI lets the head wait for the first body event);
    nothing is written at ``http.response.start`` alone."""
    sent: list[Event] = []
    proto = protocol(sent)  # answering an HTTP/1.1 GET
    head = [(b"content-type", b"text/event-stream")]
    await proto.stream_send(Response(stream_id=1, headers=head, status_code=200))
    assert written(sent) == b""
    await proto.stream_send(Body(stream_id=1, data=b"retry: 1000\n\n"))
    (write,) = [e for e in sent if isinstance(e, RawData)]
    assert write.data.startswith(b"HTTP/1.1 200 ")
    assert write.data.split(b"\r\n\r\n", 1)[1] == b"d\r\nretry: 1000\n\n\r\n"  # chunked
    await proto.stream_send(Body(stream_id=1, data=b"data: 1\n\n"))
    assert len([e for e in sent if isinstance(e, RawData)]) == 2  # later bytes go at once
