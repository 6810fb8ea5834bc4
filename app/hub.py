"""Per-process fan-out: one tailer reads the log once and shares the bytes.

A :class:`~app.subscription.Subscription` is a cursor into the log; the hub
hands live events to the subscriptions whose cursor has caught up, indexed by
workflow, and the seam between catching up and live is the subscription's.

The hub never awaits a subscriber.  Each live subscriber has a bounded queue;
when it overflows the queue is dropped and the subscriber goes back to
reading the log from the last id it handed out, so a slow client loses
nothing and slows no one else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from app.errors import StoreUnavailable
from app.events import EVERYTHING, Control, Event, EventFilter, Frame, utc_timestamp
from app.store.base import Bounds, LogReader
from app.subscription import PAGE_SIZE, Subscription

__all__ = ["PAGE_SIZE", "WAKE_SLICE", "Hub", "Subscription", "resume_point"]

log = logging.getLogger(__name__)

RING_SIZE = 4096
STORE_RETRY_S = 0.5
WAKE_SLICE = 16  # subscribers woken per loop pass (measured: 4-64 all far better than all)


@dataclass(slots=True)
class HubStats:
    """Counters the hub keeps for /metrics and /api/stats."""

    fell_behind: int = 0
    dispatched: int = 0


def resume_point(cursor: int, bounds: Bounds) -> tuple[int, Control | None]:
    """Where reading after ``cursor`` really starts, and the notice that says why not
    at the cursor: one from another database ("ahead": re-sync to the newest id) or
    older than the oldest event kept ("trimmed": those are gone, even from memory)."""
    if cursor > bounds.latest_id:
        notice = Control.build(
            "replay_truncated", reason="ahead", requested_after=cursor, latest_id=bounds.latest_id
        )
        return bounds.latest_id, notice
    if cursor < bounds.oldest_id - 1:
        notice = Control.build(
            "replay_truncated",
            reason="trimmed",
            requested_after=cursor,
            oldest_available=bounds.oldest_id,
        )
        return bounds.oldest_id - 1, notice
    return cursor, None


def _by_workflow(events: list[Event]) -> dict[str, list[Event]]:
    """The events of each workflow, in id order."""
    grouped: dict[str, list[Event]] = {}
    for event in events:
        if event.workflow_id is not None:
            grouped.setdefault(event.workflow_id, []).append(event)
    return grouped


class Subscribing:
    """The context manager of :meth:`Hub.subscribe`: a plain object rather than a
    generator, whose suspended frame every open stream would keep."""

    __slots__ = ("_cursor", "_filter", "_hub", "_sub", "_tail")

    def __init__(self, hub: Hub, filter: EventFilter, cursor: int | None, tail: int) -> None:
        self._hub, self._filter, self._cursor, self._tail = hub, filter, cursor, tail
        self._sub: Subscription | None = None

    async def __aenter__(self) -> Subscription:
        self._sub = await self._hub.open_subscription(self._filter, self._cursor, self._tail)
        return self._sub

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sub is not None:
            self._hub.close_subscription(self._sub)


class Hub:
    """Tails the log once per process and fans each event out to subscribers."""

    def __init__(
        self,
        store: LogReader,
        *,
        queue_size: int,
        heartbeat_s: float,
        on_fell_behind: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self._on_fell_behind = on_fell_behind
        self.queue_size = queue_size
        self.heartbeat_s = heartbeat_s
        self.dispatched_id = 0
        self.ring_floor = 0  # the ring holds every event in (ring_floor, dispatched_id]
        self.stats = HubStats()
        self.closing = False
        self._ring: deque[Event] = deque()
        self._subscriptions: set[Subscription] = set()
        self._everything: set[Subscription] = set()
        self._by_workflow: dict[str, set[Subscription]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._to_wake: deque[Subscription] = deque()
        self._waking = False

    async def start(self) -> None:
        latest = (await self.store.bounds()).latest_id
        self.dispatched_id = self.ring_floor = latest
        self.store.on_commit(self._committed)
        self._tasks = [
            asyncio.create_task(self._tail(), name="livefeed-hub-tail"),
            asyncio.create_task(self._beat(), name="livefeed-hub-heartbeat"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def begin_shutdown(self, farewell: Callable[[], Control]) -> None:
        """Tell every subscriber to say goodbye; each gets its own (jittered) frame."""
        self.closing = True
        for sub in self._subscriptions:
            sub.close(farewell())

    def note_fell_behind(self) -> None:
        self.stats.fell_behind += 1
        if self._on_fell_behind is not None:
            self._on_fell_behind()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def subscribe(
        self, filter: EventFilter, cursor: int | None, tail: int = 0
    ) -> Subscribing:
        """``async with hub.subscribe(...) as sub``: a subscription after ``cursor``
        (``None``: live only, or the last ``tail``), released on exit."""
        return Subscribing(self, filter, cursor, tail)

    async def open_subscription(
        self, filter: EventFilter, cursor: int | None, tail: int = 0
    ) -> Subscription:
        bounds = await self.store.bounds()
        first: list[Frame] = []
        if cursor is None:
            start = bounds.latest_id
            if tail:
                page = await self.store.read_tail(tail, filter)
                first.extend(page.events)
                start = page.scanned_to
        else:
            start, notice = resume_point(cursor, bounds)
            if notice is not None:
                first.append(notice)
        sub = Subscription(self, filter, start, bounds.latest_id, first)
        self._subscriptions.add(sub)
        return sub

    def close_subscription(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)
        self.unregister_live(sub)

    def register_live(self, sub: Subscription) -> None:
        """Index a live subscription under each workflow it follows (or every event)."""
        workflow_ids = sub.filter.workflow_ids
        if workflow_ids is None:
            self._everything.add(sub)
            return
        for workflow_id in workflow_ids:
            self._by_workflow.setdefault(workflow_id, set()).add(sub)

    def unregister_live(self, sub: Subscription) -> None:
        """Take a subscription out of the index (under the filter it was indexed with)."""
        workflow_ids = sub.filter.workflow_ids
        if workflow_ids is None:
            self._everything.discard(sub)
            return
        for workflow_id in workflow_ids:
            subs = self._by_workflow.get(workflow_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_workflow[workflow_id]

    def recent_after(self, cursor: int, filter: EventFilter) -> list[Event]:
        newer: list[Event] = []
        for event in reversed(self._ring):
            if event.id <= cursor:
                break
            if filter.matches(event):
                newer.append(event)
        newer.reverse()
        return newer

    def wake_soon(self, sub: Subscription) -> None:
        self._to_wake.append(sub)

    def _wake_slice(self) -> None:
        """Wake ``WAKE_SLICE`` subscribers now and the rest in the next loop passes.

        Waking all of them at once puts every subscriber's write in one pass of
        the event loop; a publish in flight then waits a whole round of writes
        for each of its steps (parse, handler, commit, answer).  In slices, the
        loop polls sockets and runs other work between them, so publishes keep
        moving while the fan-out proceeds; the writes are the same."""
        pending = self._to_wake
        for _ in range(min(WAKE_SLICE, len(pending))):
            pending.popleft().wake_queued()
        self._waking = bool(pending)
        if self._waking:
            asyncio.get_running_loop().call_soon(self._wake_slice)

    def _committed(self, events: list[Event]) -> None:
        """This process's own commit: deliver it now, with no read of the log, when it
        follows on from what was dispatched (otherwise another process wrote in
        between, and the tailer reads the whole stretch in order)."""
        if events[0].id == self.dispatched_id + 1:
            self._dispatch(events, events[-1].id)

    def _dispatch(self, events: list[Event], scanned_to: int) -> None:
        """Hand events to the ring and the live subscribers, once each: a page that
        overlaps what a commit already delivered only adds what is new."""
        if events and events[0].id <= self.dispatched_id:
            events = [event for event in events if event.id > self.dispatched_id]
        if not events:
            self.dispatched_id = max(self.dispatched_id, scanned_to)
            return
        for event in events:
            self._ring.append(event)
        while len(self._ring) > RING_SIZE:
            self.ring_floor = self._ring.popleft().id
        overflowed = [sub for sub in self._everything if not sub.offer(events)]
        if self._by_workflow:
            several: set[Subscription] = set()
            for workflow_id, of_workflow in _by_workflow(events).items():
                for sub in self._by_workflow.get(workflow_id, ()):
                    if sub.several:  # offered the whole commit once, below
                        several.add(sub)
                    elif not sub.offer(of_workflow):
                        overflowed.append(sub)
            overflowed.extend(sub for sub in several if not sub.offer(events))
        for sub in overflowed:
            self.unregister_live(sub)
        self.dispatched_id = max(self.dispatched_id, scanned_to)
        self.stats.dispatched += len(events)
        if self._to_wake and not self._waking:
            self._wake_slice()

    def _pass_over(self, head: int) -> None:
        """Another process's events, with nobody here to hand them to: not read.

        A node that only takes publishes would otherwise read back every event
        the other nodes write (on PostgreSQL, about a tenth of a publish's cost
        per node).  The ring is emptied with them, so a subscriber that comes
        later reads what it missed from the log, as one older than the ring does."""
        self._ring.clear()
        self.ring_floor = self.dispatched_id = head

    async def _tail(self) -> None:
        while True:
            try:
                head = await self.store.wait_for_head(self.dispatched_id)
                if head <= self.dispatched_id:  # our own commit, dispatched already
                    continue
                if not self._subscriptions:
                    self._pass_over(head)
                    continue
                page = await self.store.read(self.dispatched_id, PAGE_SIZE, EVERYTHING)
            except StoreUnavailable as exc:
                log.warning("the hub cannot read the log (%s); retrying", exc)
                await asyncio.sleep(STORE_RETRY_S)
                continue
            self._dispatch(page.events, page.scanned_to)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            beat = Control.build("heartbeat", ts=utc_timestamp())
            for sub in self._subscriptions:
                sub.push(beat)
