"""Server-Sent Events helpers with sse-starlette's API, for Quart views and plain ASGI.

Code written against sse-starlette (``ServerSentEvent``, ``JSONServerSentEvent``,
``ensure_bytes``, ``EventSourceResponse``) ports over unchanged, but runs on
Quart + Hypercorn without Starlette or anyio. Wire format: WHATWG HTML
"Server-sent events".
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
import quart

__all__ = [
    "DEFAULT_SEPARATOR",
    "EventSourceResponse",
    "JSONServerSentEvent",
    "ServerSentEvent",
    "ensure_bytes",
]

DEFAULT_SEPARATOR = "\r\n"
_SEPARATORS = ("\r\n", "\r", "\n")
# Only CR, LF and CRLF end a line in an event stream; str.splitlines() would also
# split on U+2028, U+0085, VT, FF, ... and corrupt data that contains them.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_log = logging.getLogger(__name__)

ASGIMessage = dict[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]


def _check_retry(retry: object) -> None:
    """Browsers only honour an all-digits retry, so anything else is a caller bug."""
    if retry is None:
        return
    if isinstance(retry, bool) or not isinstance(retry, int):
        raise TypeError(f"retry must be an int (milliseconds), got {type(retry).__name__}")
    if retry < 0:
        raise ValueError(f"retry must be >= 0 milliseconds, got {retry}")


def _check_sep(sep: object) -> str:
    """Any other separator would not end lines for a spec-compliant parser."""
    if sep is None:
        return DEFAULT_SEPARATOR
    if sep not in _SEPARATORS:
        raise ValueError(f"sep must be one of '\\r\\n', '\\r', '\\n', got {sep!r}")
    return sep  # type: ignore[return-value]


def _check_interval(name: str, value: object) -> float | None:
    """None switches the feature off; zero or negative would spin or never wait."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None")
    if not value > 0:
        raise ValueError(f"{name} must be > 0 seconds (or None to disable), got {value}")
    return float(value)


class ServerSentEvent:
    """One event, encoded with sse-starlette's rules so ported code emits the same bytes."""

    def __init__(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | int | None = None,  # sse-starlette's keyword
        retry: int | None = None,
        comment: str | None = None,
        sep: str | None = None,
    ) -> None:
        if event is not None and not isinstance(event, str):
            raise TypeError(f"event must be a str, got {type(event).__name__}")
        if id is not None:
            if isinstance(id, bool) or not isinstance(id, str | int):
                raise TypeError(f"id must be a str or int, got {type(id).__name__}")
            if "\0" in str(id):
                # Browsers silently ignore such an id, which would break resumption.
                raise ValueError("id must not contain NUL")
        _check_retry(retry)
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry
        self.comment = comment
        self._sep = _check_sep(sep)

    @property
    def sep(self) -> str:
        """Line separator used by encode()."""
        return self._sep

    def encode(self) -> bytes:
        """Comment lines, id, event, data lines, retry, then the blank line that dispatches."""
        _check_retry(self.retry)  # attributes may have been changed after __init__
        lines: list[str] = []
        if self.comment is not None:
            lines.extend(f": {part}" for part in _LINE_BREAK.split(str(self.comment)))
        if self.id is not None:
            lines.append("id: " + _LINE_BREAK.sub("", str(self.id)))
        if self.event is not None:
            lines.append("event: " + _LINE_BREAK.sub("", str(self.event)))
        if self.data is not None:
            lines.extend(f"data: {part}" for part in _LINE_BREAK.split(str(self.data)))
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        lines.append("")
        return (self._sep.join(lines) + self._sep).encode("utf-8")


class JSONServerSentEvent(ServerSentEvent):
    """Data as compact JSON: JSON escapes CR/LF, so it is always a single ``data:`` line."""

    def __init__(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | int | None = None,  # sse-starlette's keyword
        retry: int | None = None,
        comment: str | None = None,
        sep: str | None = None,
    ) -> None:
        # None means "no data line", as in sse-starlette (not the JSON literal null).
        encoded = None if data is None else orjson.dumps(data).decode("utf-8")
        super().__init__(encoded, event=event, id=id, retry=retry, comment=comment, sep=sep)


def ensure_bytes(data: bytes | dict | ServerSentEvent | Any, sep: str) -> bytes:
    """Turn one stream item into wire bytes; bytes pass through as already-framed events."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, ServerSentEvent):
        return data.encode()
    if isinstance(data, Mapping):
        # Unlike sse-starlette, the caller's dict is not mutated.
        return ServerSentEvent(**{**data, "sep": sep}).encode()
    return ServerSentEvent(str(data), sep=sep).encode()


class EventSourceResponse(quart.Response):
    """A ``text/event-stream`` response: return it from a Quart view or call it as an ASGI app.

    Items of ``content`` are sent as they come; a ``: ping`` comment goes out after
    ``ping`` quiet seconds so proxies keep the connection; a write that takes longer
    than ``send_timeout`` ends the stream (a stuck client must not pin a producer);
    ``content`` is closed when the client goes away. Unlike sse-starlette,
    ``ping=None`` turns pings off (its default, 15 s, is spelled out here).
    """

    def __init__(
        self,
        content: AsyncIterable[Any],
        *,
        ping: float | None = 15,
        sep: str | None = None,
        headers: dict[str, str] | None = None,
        send_timeout: float | None = None,
        ping_message_factory: Callable[[], ServerSentEvent] | None = None,
    ) -> None:
        if not isinstance(content, AsyncIterable):
            raise TypeError("content must be an async iterable")
        if ping_message_factory is not None and not callable(ping_message_factory):
            raise TypeError("ping_message_factory must be callable")
        self.sep = _check_sep(sep)
        self.ping_interval = _check_interval("ping", ping)
        self.send_timeout = _check_interval("send_timeout", send_timeout)
        self.ping_message_factory = ping_message_factory
        self._content = content
        super().__init__(
            self._quart_body(),
            status=200,
            headers=dict(headers or {}),
            content_type="text/event-stream; charset=utf-8",
        )
        self.headers.setdefault("Cache-Control", "no-cache")  # overridable for fan-out caches
        self.headers["X-Accel-Buffering"] = "no"  # nginx must not buffer the stream
        self.headers.pop("Connection", None)  # hop-by-hop; forbidden in HTTP/2
        self.timeout = None  # Quart's RESPONSE_TIMEOUT would cut a long-lived stream

    def _ping_bytes(self) -> bytes:
        if self.ping_message_factory is None:
            return ServerSentEvent(comment="ping", sep=self.sep).encode()
        return ensure_bytes(self.ping_message_factory(), self.sep)

    async def _pump(self, queue: asyncio.Queue[tuple[bytes | None, Exception | None]]) -> None:
        """Drive ``content`` in one task, advancing only once the previous item was sent."""
        iterator = aiter(self._content)
        try:
            async for item in iterator:
                await queue.put((ensure_bytes(item, self.sep), None))
                await queue.join()
            await queue.put((None, None))
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put((None, exc))
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _frames(self) -> AsyncIterator[bytes]:
        """Encoded items, with a ping after each quiet ``ping`` interval.

        ``content`` runs in a pump task so that waiting for it can time out for a
        ping without cancelling (and so killing) the caller's generator.
        """
        queue: asyncio.Queue[tuple[bytes | None, Exception | None]] = asyncio.Queue(maxsize=1)
        pump = asyncio.create_task(self._pump(queue))
        try:
            while True:
                try:
                    async with asyncio.timeout(self.ping_interval):
                        chunk, error = await queue.get()
                except TimeoutError:
                    yield self._ping_bytes()
                    continue
                if error is not None:
                    raise error
                if chunk is None:
                    return
                yield chunk
                queue.task_done()
        finally:
            pump.cancel()
            await asyncio.wait({pump})  # let content's finally run; our own cancel propagates
            if not pump.cancelled() and pump.exception() is not None:
                _log.warning("SSE content failed while closing", exc_info=pump.exception())

    async def _quart_body(self) -> AsyncIterator[bytes]:
        """Body for Quart, which owns ``send``: a stuck write is ended by cancelling its task."""
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        frames = self._frames()
        try:
            async for chunk in frames:
                timer = None
                if self.send_timeout is not None and task is not None:
                    timer = loop.call_later(self.send_timeout, self._abort_stuck_send, task)
                try:
                    yield chunk  # Quart sends it before asking for the next one
                finally:
                    if timer is not None:
                        timer.cancel()
        finally:
            await frames.aclose()

    def _abort_stuck_send(self, task: asyncio.Task[Any]) -> None:
        _log.warning("SSE write took longer than %.3gs; ending the stream", self.send_timeout)
        task.cancel()

    async def __call__(
        self, scope: Mapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        """Serve as a plain ASGI app: the stream races a disconnect listener.

        Whichever finishes first cancels the other, so a gone client stops the
        producer and a finished producer stops listening.
        """
        stream = asyncio.create_task(self._stream_asgi(send))
        listener = asyncio.create_task(self._wait_for_disconnect(receive))
        tasks = {stream, listener}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        for task in (stream, listener):  # retrieve every exception; raise the stream's first
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    @staticmethod
    async def _wait_for_disconnect(receive: ASGIReceive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        _log.debug("SSE client disconnected")

    async def _stream_asgi(self, send: ASGISend) -> None:
        raw_headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers.items()
        ]
        start = {"type": "http.response.start", "status": self.status_code, "headers": raw_headers}
        if not await self._send_in_time(send, start):
            return
        frames = self._frames()
        try:
            async for chunk in frames:
                body = {"type": "http.response.body", "body": chunk, "more_body": True}
                if not await self._send_in_time(send, body):
                    return  # the server closes the connection when the app returns early
        finally:
            await frames.aclose()
        await self._send_in_time(send, {"type": "http.response.body", "body": b""})

    async def _send_in_time(self, send: ASGISend, message: ASGIMessage) -> bool:
        """False if the write took longer than ``send_timeout`` (then it was abandoned)."""
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            _log.warning("SSE write took longer than %.3gs; ending the stream", self.send_timeout)
            return False
        return True
