"""A stream's tasks race: the first to finish ends the stream and stops the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any


class _FirstToFinish:
    """The watchers' done callback: the first watcher to finish cancels the racing
    task.  A slotted object rather than a closure (with its cells), since every open
    stream keeps one."""

    __slots__ = ("current", "first")

    def __init__(self, current: asyncio.Task[Any]) -> None:
        self.current = current
        self.first: asyncio.Future[Any] | None = None

    def __call__(self, task: asyncio.Future[Any]) -> None:
        if self.first is None and not task.cancelled():
            self.first = task
            self.current.cancel()


async def race(main: Coroutine[Any, Any, Any], *watchers: Awaitable[Any]) -> Any:
    """Run ``main`` in this task and each watcher beside it, until one finishes; stop
    the others and return what the first returned (or raise what it raised).
    A watcher is a coroutine (run as a task) or a future (only watched).

    ``main`` (a stream's pump) runs in the caller's task rather than a task of its
    own: an open stream holds one task less, and no ``asyncio.wait`` bookkeeping.
    A watcher that finishes first cancels this task; that cancellation is taken
    back here.  ``gather`` would leave the other side running when one ends.
    """
    current = asyncio.current_task()
    if current is None:
        raise RuntimeError("race() must run inside a task")
    finished = _FirstToFinish(current)
    tasks = tuple(asyncio.ensure_future(watcher) for watcher in watchers)
    for task in tasks:
        task.add_done_callback(finished)
    try:
        result = await main
    except asyncio.CancelledError:
        if finished.first is None or current.cancelling() > 1:
            raise  # cancelled from outside, not by a watcher
        current.uncancel()
        return finished.first.result()
    finally:
        for task in tasks:
            task.remove_done_callback(finished)
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    if finished.first is not None:  # a watcher finished while ``main`` was returning
        current.uncancel()
    return result
