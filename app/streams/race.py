"""A stream's tasks race: the first to finish ends the stream and stops the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any


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
    first: list[asyncio.Future[Any]] = []

    def finished(task: asyncio.Future[Any]) -> None:
        if not first and not task.cancelled():
            first.append(task)
            current.cancel()

    tasks = [asyncio.ensure_future(watcher) for watcher in watchers]
    for task in tasks:
        task.add_done_callback(finished)
    try:
        result = await main
    except asyncio.CancelledError:
        if not first or current.cancelling() > 1:
            raise  # cancelled from outside, not by a watcher
        current.uncancel()
        return first[0].result()
    finally:
        for task in tasks:
            task.remove_done_callback(finished)
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    if first:  # a watcher finished while ``main`` was returning
        current.uncancel()
    return result
