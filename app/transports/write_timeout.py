"""One write timeout per stream, not one timer per write.

A client that stops reading fills its TCP window and then ``send`` waits
forever, so every write to a stream must be bounded.  ``asyncio.timeout``
around each write arms and cancels a timer per delivery: on the fan-out path
(100,000 writes/s) that is a measurable share of the loop.  Here each stream
keeps one timer that fires about once per ``limit`` seconds and looks at the
write in progress, if any; a write costs two attribute stores.
"""

from __future__ import annotations

import asyncio


class WriteTimeout:
    """Cancels the stream's task when one write has waited ``limit`` seconds.

    Use ``begin()``/``end()`` around each write, and catch
    :class:`asyncio.CancelledError` with :meth:`expired` to tell a write timeout
    from a real cancellation.  Must be created inside the task it guards.
    """

    __slots__ = ("_expired", "_handle", "_limit", "_loop", "_since", "_task")

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._since: float | None = None
        self._expired = False
        self._handle = self._loop.call_later(limit, self._check)

    def begin(self) -> None:
        self._since = self._loop.time()

    def end(self) -> None:
        self._since = None

    def expired(self) -> bool:
        """True if the cancellation came from here; the task is un-cancelled then."""
        if self._expired and self._task is not None:
            self._task.uncancel()
            return True
        return False

    def close(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        since = self._since
        if since is not None and now - since >= self._limit:
            self._expired = True
            if self._task is not None:
                self._task.cancel()
            return
        due = (since if since is not None else now) + self._limit
        self._handle = self._loop.call_at(due, self._check)
