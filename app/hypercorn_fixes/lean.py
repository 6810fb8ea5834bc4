"""A connection's receive queue and events, without asyncio's up-front deques.

Hypercorn gives every request an ``asyncio.Queue`` (the app's ``receive``) and
every HTTP/1.1 connection an ``asyncio.Event`` (``can_read``).  Each creates
its ``collections.deque`` objects when it is built, and an empty deque takes
760 bytes: four for the queue, one for the event.  An open stream keeps both
for its whole life while they hold nothing, so they were 3.7 KiB of the
22 KiB an idle SSE connection cost (measured with ``tracemalloc``).

The replacements keep the same contract (a bounded queue whose ``put`` waits
while it is full; an event that wakes every waiter) and make their lists
only when something has to wait.  Only what Hypercorn calls is here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.typing import ASGIReceiveEvent


def _wake_first(waiters: list[asyncio.Future[None]] | None) -> None:
    """Wake the longest waiter still waiting (a cancelled one is skipped)."""
    while waiters:
        waiter = waiters.pop(0)
        if not waiter.done():
            waiter.set_result(None)
            return


def wake_all(waiters: list[asyncio.Future[None]] | None) -> None:
    """Wake every waiter still waiting."""
    for waiter in waiters or ():
        if not waiter.done():
            waiter.set_result(None)


async def wait_in(waiters: list[asyncio.Future[None]]) -> None:
    """Wait to be woken; if cancelled after being woken, pass the turn on."""
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    except asyncio.CancelledError:
        if waiter in waiters:
            waiters.remove(waiter)
        elif waiter.done() and not waiter.cancelled():
            _wake_first(waiters)  # the wake-up it got belongs to the next one
        raise


class LeanQueue:
    """A bounded FIFO with one ``put`` and ``get`` per ASGI message (``maxsize`` 0:
    unbounded), whose waiter lists are made only when something has to wait.

    It also tells of the client's disconnect without anyone waiting on ``get``
    (:meth:`notify_disconnect`, the :data:`~app.scope.DISCONNECT_NOTICE` extension)."""

    __slots__ = ("_getters", "_items", "_maxsize", "_notice", "_putters")

    def __init__(self, maxsize: int = 0) -> None:
        self._maxsize = maxsize
        self._items: list[ASGIReceiveEvent] = []
        self._getters: list[asyncio.Future[None]] | None = None
        self._putters: list[asyncio.Future[None]] | None = None
        self._notice: tuple[asyncio.Future[Any], Any] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def notify_disconnect(self, future: asyncio.Future[Any], value: Any) -> None:
        """Set ``future``'s result to ``value`` once ``http.disconnect`` is put (now,
        if it already was); the message stays queued for ``get``.

        Asking means the application reads nothing more: body chunks queued or put
        from now on are dropped, so that a client sending an endless body (to an
        SSE ``GET``) cannot fill the queue, stop the connection's reading and hide
        its own disconnect."""
        self._notice = (future, value)
        self._items = [item for item in self._items if item.get("type") == "http.disconnect"]
        if self._items:
            self._tell_disconnect()
        putters, self._putters = self._putters, None
        for putter in putters or ():  # each looks again: its body chunk is dropped now
            if not putter.done():
                putter.set_result(None)

    def _tell_disconnect(self) -> None:
        if self._notice is not None:
            future, value = self._notice
            if not future.done():
                future.set_result(value)

    async def put(self, item: ASGIReceiveEvent) -> None:
        disconnect = item.get("type") == "http.disconnect"
        while True:
            if disconnect:
                self._tell_disconnect()
            elif self._notice is not None:
                return  # nobody will read it (see notify_disconnect)
            if not 0 < self._maxsize <= len(self._items):
                break
            if self._putters is None:
                self._putters = []
            await wait_in(self._putters)
        self._items.append(item)
        _wake_first(self._getters)

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            if self._getters is None:
                self._getters = []
            await wait_in(self._getters)
        item = self._items.pop(0)
        _wake_first(self._putters)
        if self._items:  # a getter woken for an item another took: let it look again
            _wake_first(self._getters)
        return item


class LeanEvent:
    """Hypercorn's event interface (``set``, ``clear`` and ``wait`` are coroutines)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    async def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        wake_all(waiters)

    async def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        if self._waiters is None:
            self._waiters = []
        await wait_in(self._waiters)  # ``set`` wakes every one of them


class LeanWorkerContext(WorkerContext):
    """Hypercorn's worker context, whose protocols make :class:`LeanEvent` events."""

    event_class = LeanEvent
