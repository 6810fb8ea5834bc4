"""Tests for app/sse.py (sse-starlette-compatible helpers) and tests/sse_parser.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request, stream_with_context

from app.sse import (
    DEFAULT_SEPARATOR,
    EventSourceResponse,
    JSONServerSentEvent,
    ServerSentEvent,
    ensure_bytes,
)

try:
    from tests.sse_parser import SSEMessage, SSEParser, iter_sse, parse_all
    from tests.support import listening_socket
except ImportError:  # tests/ imported as a rootdir-less folder
    from sse_parser import SSEMessage, SSEParser, iter_sse, parse_all  # type: ignore[no-redef]
    from support import listening_socket  # type: ignore[no-redef]


# --- encoding rules -------------------------------------------------------------------


def test_default_separator_is_crlf():
    """Events use CRLF line ends unless told otherwise, like sse-starlette."""
    assert DEFAULT_SEPARATOR == "\r\n"
    assert ServerSentEvent("x").encode() == b"data: x\r\n\r\n"


def test_multiline_data_splits_on_cr_lf_and_crlf():
    """CR, LF and CRLF each start a new data: line."""
    encoded = ServerSentEvent("a\rb\nc\r\nd").encode()
    assert encoded == b"data: a\r\ndata: b\r\ndata: c\r\ndata: d\r\n\r\n"


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"])
def test_unicode_line_separators_stay_in_one_data_line(char):
    """Characters str.splitlines() would split on (U+2028, U+0085, ...) are plain data."""
    encoded = ServerSentEvent(f"a{char}b").encode()
    assert encoded == f"data: a{char}b\r\n\r\n".encode()
    assert parse_all(encoded)[0].data == f"a{char}b"


def test_newlines_stripped_from_id_and_event():
    """A newline in id or event cannot inject extra fields."""
    encoded = ServerSentEvent("x", id="1\r\n2\r3\n", event="up\ndate\r").encode()
    assert encoded == b"id: 123\r\nevent: update\r\ndata: x\r\n\r\n"


def test_field_order_comment_id_event_data_retry():
    """Fields come out in sse-starlette's order: comments, id, event, data, retry."""
    encoded = ServerSentEvent("d", event="e", id=7, retry=3000, comment="c").encode()
    assert encoded == b": c\r\nid: 7\r\nevent: e\r\ndata: d\r\nretry: 3000\r\n\r\n"


def test_data_is_converted_with_str():
    """Non-string data is sent as str(data)."""
    assert ServerSentEvent(42).encode() == b"data: 42\r\n\r\n"
    assert ServerSentEvent("").encode() == b"data: \r\n\r\n"


def test_no_fields_is_a_bare_blank_line():
    """An empty event is just the separator."""
    assert ServerSentEvent().encode() == b"\r\n"


def test_retry_accepts_only_non_negative_int():
    """retry must be an int >= 0: TypeError for other types, ValueError for negatives."""
    assert ServerSentEvent(retry=0).encode() == b"retry: 0\r\n\r\n"
    for bad in ("3000", 1.5, True):
        with pytest.raises(TypeError):
            ServerSentEvent(retry=bad)
    with pytest.raises(ValueError):
        ServerSentEvent(retry=-1)


def test_retry_changed_after_init_is_checked_by_encode():
    """encode() refuses a retry that was made invalid after construction."""
    event = ServerSentEvent("x", retry=10)
    event.retry = "soon"
    with pytest.raises(TypeError):
        event.encode()


def test_invalid_id_event_and_sep_are_rejected():
    """Bad field types, NUL in id and unknown separators raise at construction."""
    with pytest.raises(ValueError):
        ServerSentEvent("x", id="a\0b")
    with pytest.raises(TypeError):
        ServerSentEvent("x", id=1.5)
    with pytest.raises(TypeError):
        ServerSentEvent("x", event=3)
    with pytest.raises(ValueError):
        ServerSentEvent("x", sep="\t")


def test_multiline_comment_becomes_several_comment_lines():
    """Each line of a comment is its own ':' line."""
    assert ServerSentEvent(comment="a\nb\r\nc").encode() == b": a\r\n: b\r\n: c\r\n\r\n"


@pytest.mark.parametrize("sep", ["\n", "\r", "\r\n"])
def test_custom_separator_and_parse_back(sep):
    """sep sets every line end, and each choice parses back the same."""
    event = ServerSentEvent("a\nb", event="e", id="1", comment="c", sep=sep)
    expected = sep.join([": c", "id: 1", "event: e", "data: a", "data: b", "", ""])
    assert event.encode() == expected.encode()
    assert parse_all(event.encode()) == [SSEMessage(event="e", data="a\nb", id="1", retry=None)]


@pytest.mark.parametrize(
    "data",
    [
        "",
        "plain",
        "two\nlines",
        "trailing\n",
        "\n",
        "\n\nblank",
        "  spaces ",
        ": colon",
        "data: nested",
        "é€😀",
        "tab\tsep\u2028ls\x85nel",
        "nul\0inside",
    ],
)
def test_lf_data_round_trips_through_parser(data):
    """Data with LF line ends parses back identical, with id, event and retry."""
    encoded = ServerSentEvent(data, event="e", id="9", retry=5).encode()
    assert parse_all(encoded) == [SSEMessage(event="e", data=data, id="9", retry=5)]


@pytest.mark.parametrize("data", ["a\rb", "a\r\nb", "a\r\n\rb\r"])
def test_cr_data_round_trips_normalised_to_lf(data):
    """CR and CRLF in data arrive as LF, the only line end EventSource reports."""
    parsed = parse_all(ServerSentEvent(data).encode())
    assert [m.data for m in parsed] == [data.replace("\r\n", "\n").replace("\r", "\n")]


def test_json_event_is_compact_single_line():
    """JSONServerSentEvent uses compact orjson, so newlines in strings stay escaped."""
    value = {"text": "line1\nline2\r\u2028", "n": [1, 2.5, None], "é": True}
    encoded = JSONServerSentEvent(value, event="j", id=3).encode()
    assert encoded.count(b"data:") == 1
    assert b'"n":[1,2.5,null]' in encoded
    (message,) = parse_all(encoded)
    assert orjson.loads(message.data) == value
    assert (message.event, message.id) == ("j", "3")
    assert JSONServerSentEvent(None, event="x").encode() == b"event: x\r\n\r\n"


def test_json_event_rejects_unserialisable_data():
    """Data orjson cannot encode raises TypeError at construction."""
    with pytest.raises(TypeError):
        JSONServerSentEvent({"when": object()})


def test_ensure_bytes_handles_every_item_kind():
    """bytes pass through, events encode, dicts and other values become events."""
    raw = b"event: raw\n\n"
    assert ensure_bytes(raw, "\n") == raw
    assert ensure_bytes(memoryview(b"abc"), "\n") == b"abc"
    assert ensure_bytes(ServerSentEvent("x", sep="\r"), "\n") == b"data: x\r\r"
    item = {"data": "d", "event": "e"}
    assert ensure_bytes(item, "\n") == b"event: e\ndata: d\n\n"
    assert item == {"data": "d", "event": "e"}  # not mutated
    assert ensure_bytes("s", "\n") == b"data: s\n\n"
    assert ensure_bytes(5, "\r\n") == b"data: 5\r\n\r\n"


# --- parser rules --------------------------------------------------------------------


def test_parser_drops_leading_bom_once():
    """A leading BOM is dropped even when split; a later BOM makes an unknown field."""
    parser = SSEParser()
    stream = b"\xef\xbb\xbfdata: a\n\n\xef\xbb\xbfdata: b\n\ndata: c\n\n"
    messages = [m for byte in stream for m in parser.feed(bytes([byte]))]
    assert [m.data for m in messages] == ["a", "c"]


def test_parser_accepts_cr_only_line_ends():
    """CR alone ends lines and a CR CR pair dispatches."""
    assert [m.data for m in parse_all(b"data: a\rdata: b\r\rdata: c\r\r")] == ["a\nb", "c"]


def test_parser_chunk_split_between_cr_and_lf():
    """An LF starting a chunk right after a CR-ended chunk is one line end, not two."""
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r\n") == []
    assert [m.data for m in parser.feed(b"\r\n")] == ["a\nb"]


def test_parser_every_split_point_gives_same_result():
    """Splitting a stream at any byte gives the events of the whole stream."""
    stream = (
        ServerSentEvent("é\r\nx", id="1", event="t").encode()
        + ServerSentEvent("😀", sep="\r", retry=7).encode()
        + ServerSentEvent("z", comment="c", sep="\n").encode()
    )
    whole = parse_all(stream)
    assert [m.data for m in whole] == ["é\nx", "😀", "z"]
    for cut in range(len(stream) + 1):
        parser = SSEParser()
        assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == whole


def test_parser_multibyte_char_split_across_chunks():
    """A UTF-8 character split across chunks decodes to the one character."""
    parser = SSEParser()
    encoded = "data: €😀\n\n".encode()
    messages = [m for byte in encoded for m in parser.feed(bytes([byte]))]
    assert [m.data for m in messages] == ["€😀"]


def test_parser_ignores_id_with_nul_and_keeps_last_id():
    """An id containing NUL is ignored; the last event id persists across events."""
    messages = parse_all(b"id: 1\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\nid\ndata: d\n\n")
    assert [(m.data, m.id) for m in messages] == [("a", "1"), ("b", "1"), ("c", "1"), ("d", "")]


def test_parser_retry_needs_ascii_digits_only():
    """retry values with any non-ASCII-digit are ignored."""
    parser = SSEParser()
    bad = "retry: 12a\nretry: -1\nretry: 1.5\nretry: \u0661\u0662\nretry:\nretry:  5\n"
    messages = parser.feed(f"{bad}data: x\n\n".encode())
    assert messages[0].retry is None and parser.reconnection_time is None
    messages = parser.feed(b"retry:250\ndata: y\n\n")
    assert messages[0].retry == 250 and parser.reconnection_time == 250


def test_parser_empty_data_is_not_dispatched_and_resets_event_type():
    """A block without data dispatches nothing and forgets its event type."""
    messages = parse_all(b"event: ghost\nid: 4\n\ndata: real\n\n")
    assert messages == [SSEMessage(event="message", data="real", id="4", retry=None)]


def test_parser_field_value_rules():
    """Only one leading space is removed; a bare field name has an empty value."""
    messages = parse_all(b"data:x\n\ndata:  y\n\ndata\n\nunknown: z\ndata: w\n\n")
    assert [m.data for m in messages] == ["x", " y", "", "w"]


def test_parser_collects_comments_and_discards_unterminated_event():
    """Comments are recorded, and an event without its blank line at EOF is dropped."""
    parser = SSEParser()
    assert parser.feed(b": ping\n:raw\ndata: a\n\ndata: cut off") != []
    assert parser.close() == []
    assert parser.comments == [" ping", "raw"]
    assert [m.data for m in parse_all(b"data: a\n\ndata: cut off\n")] == ["a"]


# --- EventSourceResponse -------------------------------------------------------------


@contextlib.asynccontextmanager
async def _served(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with Hypercorn on a loopback port of its own; yield its base URL."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the socket from here
    config.graceful_timeout = 1
    shutdown = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=shutdown.wait))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        shutdown.set()
        await asyncio.wait_for(server, 5)


def _quart_app(make_response) -> Quart:
    app = Quart(__name__)

    @app.get("/sse")
    async def sse():
        return make_response()

    return app


def _asgi_app(make_response):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await make_response()(scope, receive, send)

    return app


SERVERS = [pytest.param(_quart_app, id="quart"), pytest.param(_asgi_app, id="asgi")]


@pytest.mark.asyncio
@pytest.mark.parametrize("build", SERVERS)
async def test_response_streams_all_item_kinds_with_sse_headers(build):
    """Events of every item kind arrive in order with the SSE headers, then the stream ends."""

    async def content():
        yield ServerSentEvent("hello", event="greeting", id=1, retry=3000)
        yield {"data": "from dict", "event": "d"}
        yield "plain"
        yield b"event: raw\r\ndata: bytes\r\n\r\n"
        yield JSONServerSentEvent({"a": [1, 2]}, id="2")

    app = build(lambda: EventSourceResponse(content(), ping=None))
    async with (
        _served(app) as base,
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", f"{base}/sse") as response,
    ):
        messages = [m async for m in iter_sse(response.aiter_raw())]
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert messages == [
        SSEMessage(event="greeting", data="hello", id="1", retry=3000),
        SSEMessage(event="d", data="from dict", id="1", retry=None),
        SSEMessage(event="message", data="plain", id="1", retry=None),
        SSEMessage(event="raw", data="bytes", id="1", retry=None),
        SSEMessage(event="message", data='{"a":[1,2]}', id="2", retry=None),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("build", SERVERS)
async def test_response_pings_when_idle_and_closes_content_on_disconnect(build):
    """Idle streams get ': ping' comments; a client disconnect runs the generator's finally."""
    closed = asyncio.Event()

    async def content():
        try:
            yield ServerSentEvent("first")
            await asyncio.Event().wait()  # nothing more to say
            yield ServerSentEvent("never")
        finally:
            closed.set()

    app = build(lambda: EventSourceResponse(content(), ping=0.2))
    parser = SSEParser()
    async with _served(app) as base, httpx.AsyncClient(timeout=5) as client:
        async with client.stream("GET", f"{base}/sse") as response:
            async with asyncio.timeout(3):
                async for chunk in response.aiter_raw():
                    parser.feed(chunk)
                    if parser.comments.count(" ping") >= 2:
                        break
        # leaving the block with the body unread drops the connection
        await asyncio.wait_for(closed.wait(), 3)
    assert parser.comments[:2] == [" ping", " ping"]
    assert parser.last_event_id == ""
    assert closed.is_set()


@pytest.mark.asyncio
@pytest.mark.parametrize("build", SERVERS)
async def test_response_custom_ping_message_and_separator(build):
    """ping_message_factory replaces the comment ping, and sep applies to dict items."""

    async def content():
        yield {"data": "x"}
        await asyncio.Event().wait()
        yield {"data": "never"}

    def make():
        return EventSourceResponse(
            content(), ping=0.1, sep="\n", ping_message_factory=lambda: ServerSentEvent(event="ka")
        )

    received = b""
    async with (
        _served(build(make)) as base,
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", f"{base}/sse") as response,
    ):
        async with asyncio.timeout(3):
            async for chunk in response.aiter_raw():
                received += chunk
                if received.count(b"event: ka\r\n\r\n") >= 1:
                    break
    assert received.startswith(b"data: x\n\n")
    assert b"event: ka\r\n\r\n" in received


@pytest.mark.asyncio
async def test_quart_view_content_can_use_request_context():
    """A stream_with_context generator still sees the request while it streams."""
    app = Quart(__name__)

    @app.get("/sse")
    async def sse():
        @stream_with_context
        async def content():
            yield ServerSentEvent(request.args["name"], event="hello")
            await asyncio.sleep(0.05)
            yield ServerSentEvent(request.path)

        return EventSourceResponse(content())

    async with (
        _served(app) as base,
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", f"{base}/sse?name=ada") as response,
    ):
        messages = [m async for m in iter_sse(response.aiter_raw())]
    assert [(m.event, m.data) for m in messages] == [("hello", "ada"), ("message", "/sse")]


@pytest.mark.asyncio
async def test_ping_none_sends_no_pings():
    """ping=None switches keep-alive comments off."""
    chunks: list[bytes] = []

    async def content():
        await asyncio.sleep(0.3)
        yield "late"

    async def send(message):
        chunks.append(message.get("body", b""))

    async def receive():
        await asyncio.Event().wait()

    await EventSourceResponse(content(), ping=None)(_scope(), receive, send)
    assert b"".join(chunks) == b"data: late\r\n\r\n"


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/sse",
        "raw_path": b"/sse",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }


@pytest.mark.asyncio
@pytest.mark.parametrize("build", SERVERS)
async def test_send_timeout_ends_stream_when_a_write_blocks(build):
    """A write stuck longer than send_timeout ends the stream and closes the content."""
    closed = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def content():
        try:
            while True:
                yield ServerSentEvent("tick")
        finally:
            closed.set()

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # a client that never reads

    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if requests:
            return requests.pop()
        await asyncio.Event().wait()

    app = build(lambda: EventSourceResponse(content(), ping=None, send_timeout=0.1))
    await asyncio.wait_for(app(_scope(), receive, send), 3)
    assert closed.is_set()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert [m["type"] for m in sent[1:]] == ["http.response.body"]


@pytest.mark.asyncio
async def test_asgi_call_propagates_cancellation_and_closes_content():
    """Cancelling the ASGI call raises CancelledError and runs the content's finally."""
    closed = asyncio.Event()

    async def content():
        try:
            yield "a"
            await asyncio.Event().wait()
        finally:
            closed.set()

    sent: list[dict[str, Any]] = []

    first_event_sent = asyncio.Event()

    async def send(message):
        sent.append(message)
        if len(sent) == 2:
            first_event_sent.set()

    async def receive():
        await asyncio.Event().wait()

    call = asyncio.create_task(EventSourceResponse(content())(_scope(), receive, send))
    await asyncio.wait_for(first_event_sent.wait(), 3)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert closed.is_set()
    assert sent[1]["body"] == b"data: a\r\n\r\n"


@pytest.mark.asyncio
async def test_asgi_call_reraises_content_error():
    """An exception from the content surfaces from the ASGI call instead of vanishing."""

    async def content():
        yield "ok"
        raise RuntimeError("boom")

    async def send(message):
        return None

    async def receive():
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="boom"):
        await EventSourceResponse(content())(_scope(), receive, send)


@pytest.mark.asyncio
async def test_response_object_settings():
    """Headers, disabled Quart timeout and argument validation of EventSourceResponse."""

    async def content():
        yield "x"

    response = EventSourceResponse(
        content(), headers={"Cache-Control": "public, max-age=1", "Connection": "keep-alive"}
    )
    assert response.timeout is None
    assert response.headers["Cache-Control"] == "public, max-age=1"
    assert "Connection" not in response.headers
    assert response.headers["X-Accel-Buffering"] == "no"
    for kwargs, error in [
        ({"ping": 0}, ValueError),
        ({"ping": "15"}, TypeError),
        ({"send_timeout": -1}, ValueError),
        ({"sep": "\t"}, ValueError),
        ({"ping_message_factory": "ping"}, TypeError),
    ]:
        with pytest.raises(error):
            EventSourceResponse(content(), **kwargs)
    with pytest.raises(TypeError):
        EventSourceResponse(["not", "async"])
