"""``EventSourceResponse``: stream events from a Quart view or as a plain ASGI app.

The numbered notes are in ``app.sse``'s docstring.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from typing import Any, ClassVar

import quart

from app.sse.event import DEFAULT_SEPARATOR, ServerSentEvent, check_sep, ensure_bytes

DEFAULT_PING_INTERVAL = 15
_log = logging.getLogger(__name__)

ASGIMessage = dict[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]


class SendTimeoutError(TimeoutError):
    """A write took longer than ``send_timeout``: the client stopped reading."""


def _check_ping(value: object) -> float:
    """sse-starlette's rule: seconds >= 0, where 0 means no pings."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"ping interval must be int or float, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"ping interval must be >= 0 (0 disables ping), got {value}")
    if not math.isfinite(value):
        raise ValueError(f"ping interval must be a finite number of seconds, got {value}")
    return value


def _check_send_timeout(value: object) -> float | None:
    """None waits forever; zero or negative would end every stream at its first write."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"send_timeout must be a number of seconds or None, got {value!r}")
    if not 0 < value < math.inf:
        raise ValueError(f"send_timeout must be > 0 seconds (or None to disable), got {value}")
    return float(value)


def _check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


async def _iterate_in_thread(items: Iterable[Any]) -> AsyncIterator[Any]:
    """A blocking iterator (``queue.get`` loop, database cursor) must not stall the event loop.

    Closing this also closes ``items`` (a generator's ``finally`` runs), at once or,
    if a worker thread is still inside ``next()``, as soon as that returns.
    """
    iterator = iter(items)
    finished = object()
    step: asyncio.Future[Any] | None = None
    try:
        while True:
            # Shielded, so that after a cancel ``step`` still tells when next() returns.
            step = asyncio.ensure_future(asyncio.to_thread(next, iterator, finished))
            item = await asyncio.shield(step)
            if item is finished:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:

            def close_after(done: asyncio.Future[Any]) -> None:
                if not done.cancelled():
                    done.exception()  # nobody reads the stream any more
                close()

            if step is None or step.done():
                close()
            else:
                step.add_done_callback(close_after)


@dataclass(frozen=True, slots=True)
class _End:
    """The content is exhausted (``error`` None) or failed."""

    error: BaseException | None = None


def _failure(task: asyncio.Task[Any] | None) -> BaseException | None:
    if task is None or not task.done() or task.cancelled():
        return None
    return task.exception()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _await(awaitable: Awaitable[None]) -> None:
    await awaitable


async def _settle(tasks: set[asyncio.Task[Any]]) -> None:
    """Wait until ``tasks`` are done, even if we are cancelled again meanwhile.

    anyio cancel scopes re-cancel the waiting task at every await; returning then
    would leave the content's cleanup running after the response has ended. The
    cancellation is re-raised once everything has finished.
    """
    interrupted = False
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError


def _log_cleanup_failure(error: BaseException) -> None:
    _log.error("SSE content raised while it was being closed", exc_info=error)


async def _close_content(iterator: AsyncIterator[Any]) -> None:
    """Run the content's ``finally``; its failure is logged, never raised over the real error."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:
        _log_cleanup_failure(exc)


class EventSourceResponse(quart.Response):
    """A ``text/event-stream`` response: return it from a Quart view or call it as an ASGI app.

    Items of ``content`` (async or sync iterable) are sent as they come, the next
    one asked for only once the previous one was written; a ping (``: ping``, or
    ``ping_message_factory()``) goes out after ``ping`` quiet seconds so proxies
    keep the connection (None: 15 s; 0: never); a write that takes longer than
    ``send_timeout`` ends the stream, since a stuck client must not pin a
    producer; ``content`` is closed when the client goes away. An error from
    ``content`` or ``data_sender_callable`` ends the stream and is raised. A HEAD
    request gets the headers only; ``content`` is never started.
    Differences from sse-starlette are the numbered notes of ``app.sse``.
    """

    DEFAULT_PING_INTERVAL: ClassVar[int] = DEFAULT_PING_INTERVAL
    DEFAULT_SEPARATOR: ClassVar[str] = DEFAULT_SEPARATOR

    def __init__(
        self,
        content: AsyncIterable[Any] | Iterable[Any],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        ping: float | None = None,
        sep: str | None = None,
        ping_message_factory: Callable[[], Any] | None = None,
        data_sender_callable: Callable[[], Awaitable[None]] | None = None,
        send_timeout: float | None = None,
    ) -> None:
        if isinstance(content, AsyncIterable):
            self._content: AsyncIterable[Any] = content
        elif isinstance(content, Iterable):
            self._content = _iterate_in_thread(content)
        else:  # note 1
            raise TypeError(f"content must be an iterable or async iterable, got {content!r}")
        _check_callable("ping_message_factory", ping_message_factory)
        _check_callable("data_sender_callable", data_sender_callable)
        self.sep = check_sep(sep)
        self.ping_interval = self.DEFAULT_PING_INTERVAL if ping is None else ping
        self.send_timeout = _check_send_timeout(send_timeout)
        self.ping_message_factory = ping_message_factory
        self.data_sender_callable = data_sender_callable
        super().__init__(
            self._quart_body(),
            status=status_code,
            headers=dict(headers or {}),
            content_type="text/event-stream; charset=utf-8",
        )
        self.headers.setdefault("Cache-Control", "no-cache")  # overridable for fan-out caches
        self.headers["X-Accel-Buffering"] = "no"  # nginx must not buffer the stream
        self.headers.pop("Connection", None)  # note 2
        self.timeout = None  # Quart's RESPONSE_TIMEOUT would cut a long-lived stream
        # Quart iterates a HEAD response's body too (Hypercorn drops it), so an endless
        # stream would never complete and would wedge a keep-alive connection.
        self._head = quart.has_request_context() and quart.request.method == "HEAD"

    @property
    def ping_interval(self) -> float:
        """Seconds of quiet before a ping; 0 sends none. Settable, as in sse-starlette."""
        return self._ping_interval

    @ping_interval.setter
    def ping_interval(self, value: float) -> None:
        self._ping_interval = _check_ping(value)

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as ASGI sends them (lower-case names), like Starlette's attribute."""
        return [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers.items()
        ]

    def enable_compression(self, force: bool = False) -> None:
        """Refused, as in sse-starlette: a compressor buffers, which would hold events back."""
        raise NotImplementedError("an event stream is sent uncompressed")

    def _ping_bytes(self) -> bytes:
        if self.ping_message_factory is None:
            return ServerSentEvent(comment="ping", sep=self.sep).encode()
        return ensure_bytes(self.ping_message_factory(), self.sep)

    async def _pump(self, queue: asyncio.Queue[bytes | _End]) -> None:
        """Drive ``content`` from this one task, so its context and cancel scopes stay put.

        Each item waits in ``queue`` until ``_frames`` has written it
        (``task_done``), so nothing is read ahead of the client.
        """
        iterator = aiter(self._content)
        error: BaseException | None = None
        try:
            async for item in iterator:
                queue.put_nowait(ensure_bytes(item, self.sep))
                await queue.join()
        except (Exception, asyncio.CancelledError) as exc:  # a stray CancelledError too
            if _being_cancelled():
                raise  # nobody reads the queue any more; _frames logs it
            error = exc
        finally:
            await _close_content(iterator)
        queue.put_nowait(_End(error))

    def _start_sender(self, queue: asyncio.Queue[bytes | _End]) -> asyncio.Task[None] | None:
        """Run ``data_sender_callable`` beside the stream; its failure ends the stream."""
        if self.data_sender_callable is None:
            return None
        sender = asyncio.create_task(_await(self.data_sender_callable()))

        def report(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                queue.put_nowait(_End(task.exception()))

        sender.add_done_callback(report)
        return sender

    async def _frames(self) -> AsyncGenerator[bytes, None]:
        """Encoded items, with a ping after each quiet ``ping`` interval (note 3).

        ``content`` runs in a pump task so that waiting for it can time out for a
        ping without cancelling (and so killing) the caller's generator.
        """
        queue: asyncio.Queue[bytes | _End] = asyncio.Queue()
        pump = asyncio.create_task(self._pump(queue))
        sender = self._start_sender(queue)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._ping_interval or None):
                        item = await queue.get()
                except TimeoutError:
                    yield self._ping_bytes()
                    continue
                if isinstance(item, _End):
                    # A sender that closed its channel and then failed: its error too.
                    error = item.error or _failure(sender)
                    if error is not None:
                        raise error
                    return
                yield item
                queue.task_done()
        finally:
            # The sender is cancelled first: a producer blocked on a channel must see
            # its cancellation, not the channel being closed under it by the pump.
            if sender is not None:
                sender.cancel()
            pump.cancel()
            await _settle({pump} if sender is None else {pump, sender})
            if not pump.cancelled() and pump.exception() is not None:
                _log_cleanup_failure(pump.exception())  # type: ignore[arg-type]

    async def _quart_body(self) -> AsyncIterator[bytes]:
        """Body for Quart, which owns ``send``: a stuck write is ended by cancelling its task."""
        if self._head:
            return
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
        producer and a finished producer stops listening. Raises what ended the
        stream: ``SendTimeoutError``, an error of ``content`` or of ``send``.
        """
        if scope.get("method") == "HEAD":  # headers only: content is never started
            await send(self._start_message())
            await send({"type": "http.response.body", "body": b""})
            return
        stream = asyncio.create_task(self._stream_asgi(send))
        listener = asyncio.create_task(self._wait_for_disconnect(receive))
        tasks = {stream, listener}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await _settle(tasks)
        for task in (stream, listener):  # retrieve every exception; raise the stream's first
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    @staticmethod
    async def _wait_for_disconnect(receive: ASGIReceive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        _log.debug("SSE client disconnected")

    async def _stream_asgi(self, send: ASGISend) -> None:
        # Only body writes are bounded, as in sse-starlette: the headers are the first
        # bytes on the connection and cannot find its buffers full.
        await send(self._start_message())
        frames = self._frames()
        try:
            async for chunk in frames:
                body = {"type": "http.response.body", "body": chunk, "more_body": True}
                await self._send_in_time(send, body)
        finally:
            await frames.aclose()
        await self._send_in_time(send, {"type": "http.response.body", "body": b""})

    def _start_message(self) -> ASGIMessage:
        headers = self.raw_headers
        return {"type": "http.response.start", "status": self.status_code, "headers": headers}

    async def _send_in_time(self, send: ASGISend, message: ASGIMessage) -> None:
        """Raise SendTimeoutError if the write took longer than ``send_timeout``."""
        try:
            async with asyncio.timeout(self.send_timeout) as deadline:
                await send(message)
        except TimeoutError:
            if not deadline.expired():
                raise  # send's own error, not our deadline
            _log.warning("SSE write took longer than %.3gs; ending the stream", self.send_timeout)
            raise SendTimeoutError(f"an SSE write took longer than {self.send_timeout}s") from None
