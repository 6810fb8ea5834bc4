"""app.sse beside sse-starlette: identical bytes, and the upstream tests that cannot port.

The encoders are compared side by side on generated input (sse-starlette is
installed with the ``bench`` extra). The ``test_*`` below the encoders check
what an upstream test checks when that test cannot run against us verbatim
(``tests/test_sse_starlette_suite.py`` lists them, with the reason); each
docstring names the upstream test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import warnings
from itertools import pairwise
from typing import Any

import anyio
import pytest
import sse_starlette.event as upstream
from hypothesis import given, settings
from hypothesis import strategies as st

from app.sse import (
    EventSourceResponse,
    JSONServerSentEvent,
    SendTimeoutError,
    ServerSentEvent,
    ensure_bytes,
)
from tests.sse_servers import http_scope, never_disconnects

# A failing property makes Hypothesis import libcst, whose import warns; with warnings as
# errors that hides the failure behind an INTERNALERROR (as in test_properties.py).
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401

# --- the encoders side by side ------------------------------------------------------

# Lone surrogates cannot be UTF-8 encoded by either side; NUL in an id we refuse (note 1).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
EDGES = st.sampled_from(["", "\r", "\n", "\r\n", "\n\r", "\u2028", "\x85", ": x", "data: y"])
FIELD = st.none() | TEXT | EDGES
ID = st.none() | TEXT.filter(lambda text: "\0" not in text)
SEP = st.none() | st.sampled_from(["\r\n", "\r", "\n"])
RETRY = st.none() | st.integers(min_value=0, max_value=2**70)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON_KEYS = TEXT | st.integers() | FINITE | st.booleans() | st.none()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | FINITE | TEXT,
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(JSON_KEYS, inner, max_size=4),
    max_leaves=16,
)
EXAMPLES = settings(max_examples=300, deadline=None, database=None)


@EXAMPLES
@given(data=FIELD | st.integers(), event=FIELD, id=ID, retry=RETRY, comment=FIELD, sep=SEP)
def test_event_bytes_match_sse_starlette(data, event, id, retry, comment, sep):
    """ServerSentEvent encodes any fields to the bytes sse-starlette's encodes them to."""
    fields = {"event": event, "id": id, "retry": retry, "comment": comment, "sep": sep}
    assert ServerSentEvent(data, **fields).encode() == upstream.ServerSentEvent(
        data, **fields
    ).encode()


@EXAMPLES
@given(value=JSON, event=FIELD, sep=SEP)
def test_json_event_bytes_match_sse_starlette(value, event, sep):
    """JSONServerSentEvent encodes any JSON-able value as sse-starlette does: int keys,
    integers beyond 64 bits, floats, non-ASCII, tuples."""
    ours = JSONServerSentEvent(value, event=event, sep=sep).encode()
    assert ours == upstream.JSONServerSentEvent(value, event=event, sep=sep).encode()


@pytest.mark.parametrize(
    "value",
    [
        {1: "int key", 2.5: "float key", False: "bool key", None: "null key"},
        [2**64, -(2**63) - 1, 10**40],
        [1e16, 1e-7, -0.0, 1.5e300, 5e-324],
        {"text": "é€😀\u2028\x85\t", "nested": [{"a": []}, {}]},
    ],
)
def test_json_event_examples_match_sse_starlette(value):
    """The cases orjson encoded differently (or refused) give sse-starlette's bytes."""
    assert JSONServerSentEvent(value).encode() == upstream.JSONServerSentEvent(value).encode()


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_json_event_refuses_nan_and_infinity_like_sse_starlette(number):
    """NaN and Infinity are not JSON: both raise ValueError instead of writing null."""
    for encoder in (JSONServerSentEvent, upstream.JSONServerSentEvent):
        with pytest.raises(ValueError):
            encoder({"deep": [1, {"x": number}]})


@EXAMPLES
@given(
    item=st.one_of(
        TEXT,
        st.integers(),
        st.binary(max_size=20),
        st.fixed_dictionaries({}, optional={"data": FIELD, "event": FIELD, "id": ID,
                                            "retry": RETRY, "comment": FIELD, "sep": SEP}),
    ),
    sep=st.sampled_from(["\r\n", "\r", "\n"]),
)
def test_ensure_bytes_matches_sse_starlette(item, sep):
    """Stream items (str, int, bytes, dict) turn into the same bytes on both sides."""
    assert ensure_bytes(item, sep) == upstream.ensure_bytes(item, sep)
    if isinstance(item, bytes):
        assert ensure_bytes(memoryview(item), sep) == upstream.ensure_bytes(memoryview(item), sep)


# --- what the upstream tests that cannot port check ---------------------------------


def _errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("app.sse") and r.levelno >= 40]


@pytest.mark.asyncio
@pytest.mark.parametrize("interruption", ["disconnect", "cancel", "send_error", "timeout"])
@pytest.mark.parametrize("cleanup_fails", [False, True])
async def test_interrupted_send_closes_suspended_content(interruption, cleanup_fails, caplog):
    """A send cut short closes the content before the call returns, never asks it for more,
    and logs (once) a cleanup that fails instead of raising it.

    Upstream's test_send_whenInterrupted_thenClosesSuspendedGenerator, less its
    background task (Starlette's) and its uvicorn-shutdown case.
    """
    writing = asyncio.Event()
    closed: list[str] = []
    send_error = OSError("connection closed")
    cleanup_error = RuntimeError("cleanup failed")
    outer = anyio.CancelScope()  # anyio re-cancels at every await: cleanup must still finish

    async def content():
        try:
            yield {"data": "first"}
            raise AssertionError("asked for another item after an interrupted send")
        finally:
            await asyncio.sleep(0)  # releasing a resource may take I/O
            closed.append("closed")
            if cleanup_fails:
                raise cleanup_error

    async def send(message):
        if message["type"] == "http.response.body":
            writing.set()
            if interruption == "send_error":
                raise send_error
            await asyncio.Event().wait()

    async def receive():
        await writing.wait()
        if interruption == "disconnect":
            return {"type": "http.disconnect"}
        if interruption == "cancel":
            outer.cancel()
        await asyncio.Event().wait()

    timeout = 0.05 if interruption == "timeout" else None
    response = EventSourceResponse(content(), ping=0, send_timeout=timeout)
    expected = {"send_error": OSError, "timeout": SendTimeoutError}.get(interruption)
    async with asyncio.timeout(3):
        with outer:
            if expected is None:
                await response(http_scope(), receive, send)
            else:
                with pytest.raises(expected) as raised:
                    await response(http_scope(), receive, send)
    assert closed == ["closed"]
    assert outer.cancelled_caught == (interruption == "cancel")
    if interruption == "send_error":
        assert raised.value is send_error
    errors = _errors_logged(caplog)
    assert len(errors) == int(cleanup_fails)
    if cleanup_fails:
        assert errors[0].exc_info[1] is cleanup_error


class _Unprintable:
    def __str__(self) -> str:
        raise ValueError("cannot stringify event")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad_item, error, message",
    [
        ({"bogus_field": 1}, TypeError, "bogus_field"),
        ({"retry": "invalid"}, TypeError, "retry argument must be int"),
        (_Unprintable(), ValueError, "cannot stringify event"),
    ],
    ids=["unknown_field", "retry", "string"],
)
@pytest.mark.parametrize("cleanup_fails", [False, True])
async def test_encoding_failure_closes_suspended_content(
    bad_item, error, message, cleanup_fails, caplog
):
    """An item that cannot be encoded ends the stream with its error after the items
    before it, closes the content, and logs (once) a cleanup that fails.

    Upstream's test_stream_whenEncodingFails_thenClosesSuspendedGenerator, less its
    background task (Starlette's).
    """
    closed: list[str] = []
    sent: list[dict[str, Any]] = []
    cleanup_error = RuntimeError("cleanup failed")

    async def content():
        try:
            yield {"data": "first event"}
            yield bad_item
            raise AssertionError("asked for another item after an encoding failure")
        finally:
            await asyncio.sleep(0)
            closed.append("closed")
            if cleanup_fails:
                raise cleanup_error

    async def send(message):
        sent.append(message)

    response = EventSourceResponse(content(), ping=0)
    async with asyncio.timeout(3):
        with pytest.raises(error, match=message):
            await response(http_scope(), never_disconnects, send)
    assert closed == ["closed"]
    assert [m for m in sent if m["type"] == "http.response.body"] == [
        {"type": "http.response.body", "body": b"data: first event\r\n\r\n", "more_body": True}
    ]
    errors = _errors_logged(caplog)
    assert len(errors) == int(cleanup_fails)
    if cleanup_fails:
        assert errors[0].exc_info[1] is cleanup_error


def test_custom_headers_merge_with_sse_headers():
    """Caller headers are kept, except the ones an event stream needs; no Connection header.

    Upstream's test_headers_whenCustomHeadersProvided_thenMergesCorrectly, but
    Connection is never sent (note 2: hop-by-hop, forbidden in HTTP/2).
    """
    custom = {
        "cache-control": "no-cache",
        "x-accel-buffering": "yes",
        "connection": "close",
        "x-custom-header": "custom-value",
    }
    response = EventSourceResponse(range(1, 5), headers=custom, ping=0.2)
    pairs = [(name.decode(), value.decode()) for name, value in response.raw_headers]
    headers = dict(pairs)
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["x-custom-header"] == "custom-value"
    assert "connection" not in headers
    assert [v for n, v in pairs if n == "content-type"] == ["text/event-stream; charset=utf-8"]


def test_ping_interval_property():
    """ping_interval defaults to 15 s, can be changed, and is checked when set.

    Upstream's five test_pingInterval_* tests, with real content in place of
    EventSourceResponse(0), which we refuse (note 1).
    """
    response = EventSourceResponse([])
    assert response.ping_interval == response.DEFAULT_PING_INTERVAL == 15
    response.ping_interval = 25
    assert response.ping_interval == 25
    with pytest.raises(TypeError, match="ping interval must be int"):
        response.ping_interval = "ten"
    with pytest.raises(ValueError, match="ping interval must be >= 0"):
        response.ping_interval = -42
    response.ping_interval = 0
    assert response.ping_interval == 0


@pytest.mark.asyncio
async def test_pings_and_events_never_overlap_in_send():
    """With a slow client, pings and events still reach send one at a time.

    Upstream's test_ping_whenConcurrentWithEvents_thenRespectsLocking expects the
    opposite (a ping sent while an event's send is running); we never do (note 3).
    """
    writing = 0
    overlaps = 0
    bodies: list[bytes] = []

    async def content():
        for n in range(2):
            await asyncio.sleep(0.05)
            yield n

    async def send(message):
        nonlocal writing, overlaps
        writing += 1
        overlaps += writing > 1
        await asyncio.sleep(0.1)  # a slow client
        bodies.append(message.get("body", b""))
        writing -= 1

    response = EventSourceResponse(content(), ping=0.03)
    async with asyncio.timeout(3):
        await response(http_scope(), never_disconnects, send)
    assert overlaps == 0
    assert [b for b in bodies if b.startswith(b"data")] == [b"data: 0\r\n\r\n", b"data: 1\r\n\r\n"]
    assert b": ping\r\n\r\n" in bodies


@pytest.mark.asyncio
async def test_one_ping_per_quiet_interval():
    """A quiet stream gets one ping message per ping interval, built by the factory.

    Upstream's test_ping_whenTimerTicks_thenSendsOneMessagePerTick, through the
    ASGI call instead of the private ping loop.
    """
    interval = 0.05
    pings: list[tuple[float, bytes]] = []
    enough = asyncio.Event()

    async def quiet():
        await asyncio.Event().wait()
        yield "never"

    async def send(message):
        if message["type"] == "http.response.body":
            pings.append((time.monotonic(), message["body"]))
            if len(pings) == 3:
                enough.set()

    async def receive():
        await enough.wait()
        return {"type": "http.disconnect"}

    response = EventSourceResponse(
        quiet(), ping=interval, ping_message_factory=lambda: ServerSentEvent(comment="ping")
    )
    start = time.monotonic()
    async with asyncio.timeout(3):
        await response(http_scope(), receive, send)
    assert [body for _, body in pings] == [b": ping\r\n\r\n"] * 3
    times = [start] + [when for when, _ in pings]
    assert all(later - earlier >= interval * 0.9 for earlier, later in pairwise(times))
