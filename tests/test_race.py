"""The stream lifecycle's race (app/streams/race.py): the pump runs in the stream's
task, watchers beside it, and whichever finishes first decides.  Real streams go
through it in every stream test; here each outcome is pinned down on its own."""

from __future__ import annotations

import asyncio

import pytest

from app.streams.race import race

pytestmark = pytest.mark.asyncio


async def forever() -> str:
    await asyncio.Event().wait()
    return "never"


async def after(seconds: float, value: str) -> str:
    await asyncio.sleep(seconds)
    return value


async def test_the_main_coroutine_finishing_first_stops_the_watchers() -> None:
    watcher = asyncio.ensure_future(forever())
    assert await race(after(0, "pumped"), watcher) == "pumped"
    assert watcher.cancelled()


async def test_a_watcher_finishing_first_ends_main_and_gives_its_result() -> None:
    main_cancelled = asyncio.Event()

    async def main() -> str:
        try:
            return await forever()
        except asyncio.CancelledError:
            main_cancelled.set()
            raise

    assert await race(main(), forever(), after(0.01, "client left")) == "client left"
    assert main_cancelled.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation was taken back


async def test_a_future_watcher_needs_no_task() -> None:
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, done.set_result, "disconnected")
    assert await race(forever(), done) == "disconnected"


async def test_a_watcher_that_raises_raises_out_of_the_race() -> None:
    async def broken() -> str:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        await race(forever(), broken())


async def test_a_cancellation_from_outside_is_not_taken_for_a_watcher() -> None:
    watcher = asyncio.ensure_future(forever())
    racing = asyncio.create_task(race(forever(), watcher))
    await asyncio.sleep(0.01)
    racing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await racing
    assert watcher.cancelled()
