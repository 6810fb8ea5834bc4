"""The hub on its own: a real SQLite log in tmp_path, no server, no sockets.

Each test drives ``app.hub`` through its public API (``Hub``, ``subscribe``,
the subscription's async iteration) and takes milliseconds, so the seam,
overflow, filter, wake-slice and heartbeat rules are pinned down without the
noise of a whole server.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from app.events import EVERYTHING, Control, Draft, Event, EventFilter, Frame
from app.hub import WAKE_SLICE, Hub, Subscription
from app.store.sqlite import SqliteStore
from app.subscription import FIRST_PAGE, PAGE_BYTES, PAGE_SIZE

pytestmark = pytest.mark.asyncio

MakeHub = Callable[..., Awaitable[Hub]]


def drafts(count: int, type: str = "t", workflow_id: str | None = None) -> list[Draft]:
    return [Draft(type, workflow_id, f'{{"n":{n}}}') for n in range(count)]


def ids(frames: list[Frame]) -> list[int]:
    return [frame.id for frame in frames if isinstance(frame, Event)]


async def next_frames(sub: Subscription, timeout: float = 2.0) -> list[Frame]:
    async with asyncio.timeout(timeout):
        return await anext(sub)


async def read_until(
    sub: Subscription, last_id: int, after: int = 0
) -> tuple[list[int], list[bool]]:
    """Event ids after ``after`` until ``last_id`` (none if ``after`` is already
    there), and for each batch whether it came from the log."""
    seen: list[int] = []
    replaying: list[bool] = []
    while (seen[-1] if seen else after) < last_id:
        seen += ids(await next_frames(sub))
        replaying.append(sub.replaying)
    return seen, replaying


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'hub.db'}")
    await store.open()
    yield store
    await store.close()


@pytest_asyncio.fixture
async def make_hub(store: SqliteStore) -> AsyncIterator[MakeHub]:
    """Start a hub on the test's store (what the log holds by then is its past)."""
    started: list[Hub] = []

    async def make(queue_size: int = 1000, heartbeat_s: float = 3600, **kwargs: Any) -> Hub:
        hub = Hub(store, queue_size=queue_size, heartbeat_s=heartbeat_s, **kwargs)
        await hub.start()
        started.append(hub)
        return hub

    yield make
    for hub in started:
        await hub.stop()


async def test_events_landing_while_catching_up_are_handed_over_once_with_no_gap(
    store: SqliteStore, make_hub: MakeHub
) -> None:
    """Paging through the log while commits land beside each page: every id once, in order."""
    # 2,500 old events are read from the log (the hub starts after them), the last live
    await store.append(drafts(2500))
    hub = await make_hub()
    async with hub.subscribe(EVERYTHING, cursor=0) as sub:
        seen: list[int] = []
        replaying: list[bool] = []
        for _ in range(8):  # each read races a commit of 7 more
            frames, _ = await asyncio.gather(next_frames(sub), store.append(drafts(7)))
            seen += ids(frames)
            replaying.append(sub.replaying)
        last = (await store.bounds()).latest_id
        # On a busy machine the eight reads may already have reached the last id.
        more, flags = await read_until(sub, last, after=seen[-1])
    assert seen + more == list(range(1, last + 1))
    batches = replaying + flags
    assert batches[0] is True and batches[-1] is False  # both sides of the seam were crossed


def let_the_commit_through(blocker: sqlite3.Connection) -> None:
    """Release the write lock and wait, blocking the event loop on purpose, until the
    writer thread has committed and queued its completion in the loop."""
    blocker.execute("ROLLBACK")
    deadline = time.monotonic() + 2
    while blocker.execute("SELECT last_id FROM log_head").fetchone()[0] < 1:
        assert time.monotonic() < deadline, "the commit never went through"
        time.sleep(0.001)
    time.sleep(0.01)  # from the commit to the thread's completion callback


async def test_a_commit_completing_as_a_reader_switches_to_live_reaches_it(
    store: SqliteStore, make_hub: MakeHub
) -> None:
    """A commit completing in the very loop pass a reader switches to live reaches it."""
    # No await between the check and the switch: the commit's completion is queued in
    # the loop before the reader's step (the SQLite write lock holds it back till then).
    hub = await make_hub()
    async with hub.subscribe(EVERYTHING, cursor=0) as sub:
        blocker = sqlite3.connect(store.path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            appending = asyncio.create_task(store.append(drafts(1)))
            await asyncio.sleep(0.05)  # the commit now waits for the lock in the writer thread
            let_the_commit_through(blocker)
        finally:
            blocker.close()
        reading = asyncio.create_task(next_frames(sub))  # switches after that completion
        assert ids(await reading) == [1]
        await appending


async def test_a_subscriber_whose_queue_overflows_reads_the_log_and_loses_nothing(
    store: SqliteStore, make_hub: MakeHub
) -> None:
    """An overflowed subscriber reads what it missed from the log, then is live again."""
    # Batches of 3 for a queue of 5 while nobody reads: the second one overflows it.
    fell_behind: list[int] = []
    hub = await make_hub(queue_size=5, on_fell_behind=lambda: fell_behind.append(1))
    async with hub.subscribe(EVERYTHING, cursor=0) as sub:
        reader = asyncio.create_task(next_frames(sub))
        await asyncio.sleep(0.01)  # live and waiting
        assert ids(await _publish_then(reader, store, drafts(3))) == [1, 2, 3]
        assert sub.replaying is False
        for _ in range(4):  # nobody reads now
            await store.append(drafts(3))
        assert hub.stats.fell_behind == 0  # counted when the subscriber notices
        missed = await next_frames(sub)
        assert ids(missed) == list(range(4, 16)) and sub.replaying is True
        assert hub.stats.fell_behind == 1 and fell_behind == [1]
        reader = asyncio.create_task(next_frames(sub))
        await asyncio.sleep(0.01)
        assert ids(await _publish_then(reader, store, drafts(2))) == [16, 17]
        assert sub.replaying is False  # live again


async def _publish_then(
    reader: asyncio.Task[list[Frame]], store: SqliteStore, batch: list[Draft]
) -> list[Frame]:
    await store.append(batch)
    return await reader


async def test_filters_select_by_workflow_and_type_live_and_from_the_log(
    store: SqliteStore, make_hub: MakeHub
) -> None:
    """Workflow, type and both filters choose the same events from the log and live."""
    mixed = [
        Draft("a", "wf_1", "{}"),
        Draft("b", "wf_1", "{}"),
        Draft("a", "wf_2", "{}"),
        Draft("a", None, "{}"),
        Draft("b", "wf_2", "{}"),
        Draft("c", "wf_1", "{}"),
    ]
    filters = {
        "workflow": (EventFilter(workflow_ids=frozenset({"wf_1"})), [1, 2, 6]),
        "types": (EventFilter(types=frozenset({"a", "c"})), [1, 3, 4, 6]),
        "both": (EventFilter(workflow_ids=frozenset({"wf_2"}), types=frozenset({"b"})), [5]),
    }
    await store.append(mixed)  # the past: read from the log
    hub = await make_hub()
    async with contextlib.AsyncExitStack() as stack:
        readers = {}
        for name, (wanted, expected) in filters.items():
            sub = await stack.enter_async_context(hub.subscribe(wanted, cursor=0))
            assert ids(await next_frames(sub)) == expected and sub.replaying is True, name
            readers[name] = asyncio.create_task(read_until(sub, 7 + expected[-1]))
        await asyncio.sleep(0.01)  # all live and waiting
        await store.append([Draft("z", "wf_3", "{}")])  # id 7: nobody's
        await store.append(mixed)  # live: ids 8..13
        for name, (_, expected) in filters.items():
            assert await readers[name] == ([7 + n for n in expected], [False]), name


async def test_waking_subscribers_goes_in_slices_of_wake_slice_per_loop_pass(
    make_hub: MakeHub,
) -> None:
    """3 x WAKE_SLICE + 1 waiting subscribers resume WAKE_SLICE per loop pass, in a row."""
    hub = await make_hub()
    loop = asyncio.get_running_loop()
    passes = 0
    ticking = True

    def tick() -> None:  # one call per loop pass
        nonlocal passes
        passes += 1
        if ticking:
            loop.call_soon(tick)

    count = 3 * WAKE_SLICE + 1
    resumed_in: list[int] = []

    async def subscriber(ready: asyncio.Event) -> None:
        async with hub.subscribe(EVERYTHING, cursor=None) as sub:
            reading = anext(sub)
            ready.set()
            frames = await reading
            resumed_in.append(passes)
            assert ids(frames) == [1]

    readies = [asyncio.Event() for _ in range(count)]
    tasks = [asyncio.create_task(subscriber(ready)) for ready in readies]
    await asyncio.gather(*(ready.wait() for ready in readies))
    await asyncio.sleep(0.01)  # every one of them waiting, live
    tick()
    await hub.store.append(drafts(1))
    async with asyncio.timeout(2):
        await asyncio.gather(*tasks)
    ticking = False
    per_pass = [resumed_in.count(p) for p in sorted(set(resumed_in))]
    assert per_pass == [WAKE_SLICE] * 3 + [1]
    assert sorted(set(resumed_in)) == list(range(resumed_in[0], resumed_in[0] + 4))
    assert len(per_pass) == math.ceil(count / WAKE_SLICE)


async def test_idle_subscribers_get_heartbeats_and_a_farewell_ends_them(
    make_hub: MakeHub,
) -> None:
    """An idle subscriber gets heartbeats; the farewell comes last and ends its iteration."""
    hub = await make_hub(heartbeat_s=0.05)
    async with hub.subscribe(EVERYTHING, cursor=None) as sub:
        assert hub.subscriber_count == 1
        beat = await next_frames(sub)
        assert beat and all(isinstance(f, Control) and f.type == "heartbeat" for f in beat)
        farewell = Control.build("error", error="shutting_down")
        hub.begin_shutdown(lambda: farewell)
        assert hub.closing
        last = await next_frames(sub)
        assert last[-1] is farewell
        with pytest.raises(StopAsyncIteration):
            await next_frames(sub)
    assert hub.subscriber_count == 0


async def _until_dispatched(hub: Hub, head: int) -> None:
    async with asyncio.timeout(2):
        while hub.dispatched_id < head:
            await asyncio.sleep(0.005)


async def test_other_processes_events_are_not_read_with_nobody_to_hand_them_to(
    store: SqliteStore, make_hub: MakeHub
) -> None:
    """With no subscriber, another process's commits are passed over (not read); a
    subscriber that comes later reads them from the log, then gets the next ones live."""
    other = SqliteStore(f"sqlite:///{store.path}")  # a second worker on the same file
    await other.open()
    try:
        hub = await make_hub()
        await other.append(drafts(5))
        await _until_dispatched(hub, 5)
        assert hub.stats.dispatched == 0  # noticed, not read
        async with hub.subscribe(EVERYTHING, cursor=2) as sub:
            assert ids(await next_frames(sub)) == [3, 4, 5] and sub.replaying is True
            reader = asyncio.create_task(next_frames(sub))
            await asyncio.sleep(0.01)  # live and waiting
            await other.append(drafts(2))
            assert ids(await reader) == [6, 7] and sub.replaying is False
        assert hub.stats.dispatched == 2  # read once somebody was there to take them
    finally:
        await other.close()


async def test_catching_up_reads_pages_of_about_page_bytes_however_big_the_events(
    store: SqliteStore, make_hub: MakeHub
) -> None:
    """A reader catching up holds one page in memory (and writes it in one piece): with
    16 KB events a page is about PAGE_BYTES, not 1000 events (16 MB); with small
    events pages grow to PAGE_SIZE."""
    big = Draft("t", None, '{"pad":"' + "x" * 16_000 + '"}')
    await store.append([big] * 100)
    await store.append(drafts(3000))
    hub = await make_hub()
    async with hub.subscribe(EVERYTHING, cursor=0) as sub:
        sizes: list[int] = []
        while not sizes or (sizes[-1] > 0 and sum(sizes) < 3100):
            batch = ids(await next_frames(sub))
            sizes.append(len(batch))
    assert sum(sizes) == 3100
    assert sizes[0] == FIRST_PAGE
    big_pages = sizes[1:6]  # still among the big events
    assert all(size * 16_000 <= PAGE_BYTES * 1.1 for size in big_pages), big_pages
    assert max(sizes) == PAGE_SIZE  # small events: full pages again
