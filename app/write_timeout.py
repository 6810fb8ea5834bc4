"""Write timeouts for every stream, from one sweeper rather than timers.

A client that stops reading fills its TCP window and then ``send`` waits
forever, so every write to a stream must be bounded.  ``asyncio.timeout``
around each write arms and cancels a timer per delivery: on the fan-out path
(100,000 writes/s) that is a measurable share of the loop, and a timer per
stream costs each idle connection half a kilobyte.  Here a write costs two
attribute stores, and one task looks at all writes in progress every
``SWEEP_S``: a stuck write is cut between ``limit`` and ``limit + SWEEP_S``.
"""

from __future__ import annotations

import asyncio

SWEEP_S = 0.5


class WriteTimeout:
    """One stream's guard: ``begin()``/``end()`` around each write.

    Catch :class:`asyncio.CancelledError` and ask :meth:`expired` to tell a write
    timeout from a real cancellation.  Made by :meth:`WriteWatch.guard` inside the
    task it guards; ``close()`` it when the stream ends.
    """

    __slots__ = ("_expired", "_loop", "_task", "_watch", "since")

    def __init__(self, watch: WriteWatch) -> None:
        self._watch = watch
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._expired = False
        self.since: float | None = None

    def begin(self) -> None:
        self.since = self._loop.time()

    def end(self) -> None:
        self.since = None

    def expired(self) -> bool:
        """True if the cancellation came from here; it is taken back then."""
        if self._expired and self._task is not None:
            self._task.uncancel()
            return True
        return False

    def close(self) -> None:
        self._watch.guards.discard(self)

    def expire(self) -> None:
        self._expired = True
        self.since = None
        if self._task is not None:
            self._task.cancel()


class WriteWatch:
    """Every open stream's write guard, and the sweep that cuts stuck writes."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.guards: set[WriteTimeout] = set()

    def guard(self) -> WriteTimeout:
        guard = WriteTimeout(self)
        self.guards.add(guard)
        return guard

    def sweep(self, now: float) -> None:
        stuck = [g for g in self.guards if g.since is not None and now - g.since >= self.limit]
        for guard in stuck:
            guard.expire()

    async def sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(SWEEP_S, self.limit))
            self.sweep(loop.time())
