"""Each connection is its transport's protocol: no task, reader or writer of its own.

Hypercorn's asyncio server gives every connection a task (``asyncio.start_server``'s
callback) suspended in ``TCPServer.run`` and its reading loop, an asyncio task group,
a ``StreamReader``, a ``StreamWriter`` and their protocol: about 4 KiB that an open
stream keeps for its whole life while nothing happens, a quarter of what an idle SSE
connection cost (tracemalloc).  Here the connection is the protocol of the transport:
bytes that arrive go to Hypercorn's HTTP protocol through a task that exists only
while there is something to hand over, writes go straight to the transport, and a
write to a paused transport, like the close, waits at most the send timeout.
Requests still run as tasks, so the application's lifecycle is unchanged.

A write that has to wait (the peer reads slower than we write) and the graceful close
are bounded by ``LivefeedConfig.send_timeout_s``: past it the transport is aborted (a
TCP reset frees both buffers at once).  Hypercorn's own close waits for the last bytes
to drain, and a peer that never reads never lets them: seen, a stalled SSE client's
socket still established 30 s after its stream was cut, 2.8 MB queued in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import termios
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast
from wsgiref.handlers import format_date_time

from hypercorn.asyncio.task_group import _handle
from hypercorn.asyncio.tcp_server import MAX_RECV
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.typing import (
    AppWrapper,
    ASGIReceiveEvent,
    ASGISendEvent,
    ConnectionState,
    LifespanState,
    Scope,
)
from hypercorn.utils import parse_socket_addr

from app.hypercorn_fixes.lean import LeanQueue, wait_in, wake_all
from app.scope import DISCONNECT_NOTICE

log = logging.getLogger("hypercorn.error")

DRAIN_POLL_S = 0.1
FIRST_DRAIN_POLL_S = 0.001
#: Reading pauses while this much received data waits to be handled (as a
#: ``StreamReader``'s does, at twice its 64 KiB limit).
READ_BACKLOG_BYTES = 2 * MAX_RECV
_START = RawData(b"")  # first in every connection's inbox: initiate the protocol
_CLOSED = Closed()


class LivefeedConfig(Config):
    """Hypercorn's config plus the bound on a write that cannot drain, and a ``Date``
    header formatted once a second rather than for every response (its resolution)."""

    send_timeout_s: float | None = None
    include_date_header = False  # Hypercorn's own: added below instead
    _date: tuple[int, bytes] = (0, b"")

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, format_date_time(now).encode("ascii"))
        return [(b"date", self._date[1]), *super().response_headers(protocol)]


class OpenConnections:
    """Every connection not yet closed, so that shutdown can wait for them."""

    __slots__ = ("_empty", "_open")

    def __init__(self) -> None:
        self._open: set[Connection] = set()
        self._empty: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._open)

    def add(self, connection: Connection) -> None:
        self._open.add(connection)

    def discard(self, connection: Connection) -> None:
        self._open.discard(connection)
        if not self._open and self._empty is not None and not self._empty.done():
            self._empty.set_result(None)

    async def all_closed(self) -> None:
        while self._open:
            self._empty = asyncio.get_running_loop().create_future()
            await self._empty

    def close_idle(self) -> None:
        """Close every connection waiting between requests (shutdown has begun)."""
        for connection in list(self._open):
            connection.close_if_idle()

    def abort(self) -> None:
        """Reset what is still open (shutdown waited long enough)."""
        for connection in list(self._open):
            connection.transport.abort()


class ConnectionTasks:
    """What Hypercorn's task group does for a connection (run each request and
    HTTP/2's sender) without a task waiting on them: each request gets
    a :class:`~app.hypercorn_fixes.lean.LeanQueue` and an HTTP request the
    disconnect notice it offers (:data:`~app.scope.DISCONNECT_NOTICE`)."""

    __slots__ = ("_done", "_loop", "_tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done: asyncio.Future[None] | None = None

    def create_task(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def spawn(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self.create_task(func(*args))

    async def spawn_app(
        self,
        app: AppWrapper,
        config: Config,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        queue = LeanQueue(config.max_app_queue_size)
        if scope["type"] == "http":
            extensions = scope.setdefault("extensions", {})
            extensions[DISCONNECT_NOTICE] = {"notify": queue.notify_disconnect}
        self.spawn(_handle, app, config, scope, queue.get, send, self._sync_spawn, self._call_soon)
        return queue.put

    async def finished(self) -> None:
        """Wait until every task has ended (as leaving Hypercorn's task group does)."""
        while self._tasks:
            self._done = self._loop.create_future()
            await self._done

    async def __aenter__(self) -> ConnectionTasks:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.finished()

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a connection's task failed", exc_info=error)
        if not self._tasks and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _sync_spawn(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run blocking ``func`` in the default executor (ASGI ``sync_spawn``)."""
        return self._loop.run_in_executor(None, func, *args)

    def _call_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        """From that executor's thread, run a coroutine on the loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(func(*args), self._loop).result()


class Connection(asyncio.Protocol):
    """One client connection, served by Hypercorn's HTTP/1.1, HTTP/2 and WebSocket
    protocols, with writes that cannot wait forever."""

    __slots__ = (
        "_app",
        "_backlog",
        "_closed",
        "_config",
        "_context",
        "_drain_waiters",
        "_ended",
        "_idle_timer",
        "_inbox",
        "_lost",
        "_open",
        "_paused",
        "_reading_paused",
        "_shutting",
        "_state",
        "_tasks",
        "_worker",
        "protocol",
        "transport",
    )

    def __init__(
        self,
        app: AppWrapper,
        config: LivefeedConfig,
        context: WorkerContext,
        state: LifespanState,
        open_connections: OpenConnections,
    ) -> None:
        self._app = app
        self._config = config
        self._context = context
        self._state = state
        self._open = open_connections
        self._tasks = ConnectionTasks(asyncio.get_running_loop())
        self._idle_timer: asyncio.TimerHandle | None = None
        self._inbox: list[Event] = [_START]
        self._backlog = 0
        self._worker: asyncio.Task[None] | None = None
        self._paused = self._reading_paused = self._lost = self._ended = False
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._shutting: asyncio.Task[None] | None = None

    # ---- the transport's callbacks -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._open.add(self)
        try:
            sock = transport.get_extra_info("socket")
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
        except OSError:  # the peer left already
            self.transport.abort()
            return
        ssl_object = transport.get_extra_info("ssl_object")
        self.protocol = ProtocolWrapper(
            self._app,
            self._config,
            self._context,
            self._tasks,
            ConnectionState(self._state),
            ssl_object is not None,
            client,
            server,
            self.protocol_send,
            "http/1.1" if ssl_object is None else ssl_object.selected_alpn_protocol(),
        )
        self._wake()

    def data_received(self, data: bytes) -> None:
        # In pieces no bigger than Hypercorn's reads: h11 refuses a head that is still
        # incomplete past its limit, so a 70 KB head handed over whole would pass.
        if len(data) <= MAX_RECV:
            self._put(RawData(data))
        else:
            for start in range(0, len(data), MAX_RECV):
                self._put(RawData(data[start : start + MAX_RECV]))
        self._backlog += len(data)
        if self._backlog > READ_BACKLOG_BYTES and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._put(_CLOSED)
        return True  # the transport stays open until the protocol has closed it

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake_writers()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if not hasattr(self, "protocol"):  # it never started
            self._open.discard(self)
            return
        self._put(_CLOSED)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writers()

    # ---- handing what arrives to the protocol, in order, one at a time -----------

    def _put(self, event: Event) -> None:
        if self._ended:
            return  # nothing comes after the end
        self._ended = event is _CLOSED
        self._inbox.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._worker is None and hasattr(self, "protocol"):
            self._worker = asyncio.get_running_loop().create_task(self._handle_inbox())

    async def _handle_inbox(self) -> None:
        try:
            while self._inbox:
                event = self._inbox.pop(0)
                if event is _START:
                    await self.protocol.initiate()
                    self._start_idle_timer()
                    continue
                if isinstance(event, RawData):
                    self._read(len(event.data))
                await self.protocol.handle(event)
                if event is _CLOSED:
                    self._stop_idle_timer()  # the keep-alive timer has nothing to wait for
                    await self._tasks.finished()  # every request has ended
                    await self._close()
                    self._open.discard(self)
                    return
        except Exception:
            log.exception("a connection failed")
            self._ended = True
            self.transport.abort()
            self._open.discard(self)
        finally:
            self._worker = None

    def _read(self, size: int) -> None:
        self._backlog -= size
        if self._reading_paused and self._backlog <= READ_BACKLOG_BYTES // 2:
            self._reading_paused = False
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.transport.resume_reading()

    # ---- what the protocol sends -------------------------------------------------

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            await self._write(event.data)
        elif isinstance(event, Closed):
            await self._close()
        elif isinstance(event, Updated):
            if event.idle:
                self._start_idle_timer()
            else:
                self._stop_idle_timer()

    async def _write(self, data: bytes) -> None:
        if self._lost or self.transport.is_closing():
            await self.protocol.handle(_CLOSED)
            return
        self.transport.write(data)
        if not self._paused:
            return
        try:
            async with asyncio.timeout(self._config.send_timeout_s):
                await self._drain()
        except TimeoutError:
            self._reset()
            await self.protocol.handle(_CLOSED)
        except ConnectionError:
            await self.protocol.handle(_CLOSED)

    async def _drain(self) -> None:
        """Wait while the transport is paused (its buffer above the high-water mark)."""
        while self._paused and not self._lost:
            if self._drain_waiters is None:
                self._drain_waiters = []
            await wait_in(self._drain_waiters)  # resume_writing wakes every writer
        if self._lost:
            raise ConnectionResetError("connection lost")

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        wake_all(waiters)

    async def _close(self) -> None:
        """Close gracefully if the peer takes the last bytes in time, else reset.

        A graceful close hands what is unsent to the kernel, which keeps the socket
        (and megabytes of send buffer) until a peer that never reads gives up, for
        minutes.  So wait while the peer takes what is queued; one that takes
        nothing for the send timeout gets a reset instead."""
        if self._closed is None:
            loop = asyncio.get_running_loop()
            self._closed = loop.create_future()
            if self._lost:
                self._closed.set_result(None)
            else:
                # A task of its own: the caller is often a request's task, which its app
                # cancels once it hears the request is over (Quart does), and a close
                # given up while it waits for the peer left the connection open for good.
                self._shutting = loop.create_task(self._shut())
        await asyncio.shield(self._closed)
        self._stop_idle_timer()

    async def _shut(self) -> None:
        timeout = self._config.send_timeout_s
        if timeout is not None and not await self._drained(timeout):
            self._reset()
            return
        with contextlib.suppress(NotImplementedError, OSError, RuntimeError):
            if self.transport.can_write_eof():
                self.transport.write_eof()
        self.transport.close()

    async def _drained(self, patience_s: float) -> bool:
        """Whether the peer took every queued byte (transport and kernel), never going
        ``patience_s`` without taking some: a slow peer is waited for, a stalled one
        is not."""
        loop = asyncio.get_running_loop()
        deadline, left, pause = loop.time() + patience_s, self._queued(), FIRST_DRAIN_POLL_S
        while left and not self._lost:
            # The last bytes are usually acknowledged within a millisecond: look again
            # soon, then less often, rather than keep every closing socket 0.1 s longer.
            await asyncio.sleep(pause)
            pause = min(2 * pause, DRAIN_POLL_S)
            now, before, left = loop.time(), left, self._queued()
            if left < before:
                deadline = now + patience_s
            elif now >= deadline:
                return False
        return True

    def _reset(self) -> None:
        """Abort with a TCP reset: the kernel drops what it still holds for the peer
        (a plain abort drops only the transport's buffer, and the kernel keeps
        offering the rest to a peer that takes nothing, for minutes)."""
        sock = self.transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):  # linger 0: close() resets
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _queued(self) -> int:
        return self.transport.get_write_buffer_size() + _unsent(self.transport)

    # ---- the keep-alive timer ---------------------------------------------------------

    def _start_idle_timer(self) -> None:
        """Between requests the connection waits at most the keep-alive timeout, and
        not at all once shutdown has begun.  A timer, not a task: Hypercorn's
        ``AsyncioSingleTask`` made, cancelled and awaited a task around every request."""
        self._stop_idle_timer()
        if self._context.terminated.is_set():
            self._put(_CLOSED)
            return
        self._idle_timer = asyncio.get_running_loop().call_later(
            self._config.keep_alive_timeout, self._idle_expired
        )

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def close_if_idle(self) -> None:
        """Shutdown's call: a connection between requests is closed now."""
        if self._idle_timer is not None:
            self._idle_expired()

    def _idle_expired(self) -> None:
        """Closed as if the peer had left."""
        self._idle_timer = None
        self._put(_CLOSED)


def _unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes the kernel still holds for the peer (Linux ``SIOCOUTQ``; 0 elsewhere)."""
    sock = transport.get_extra_info("socket")
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, AttributeError, ValueError):
        return 0
    unsent: int = struct.unpack("i", queued)[0]
    return unsent
