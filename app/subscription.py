"""One reader of the log: a cursor, a filter, a bounded live queue, catching up.

While it is behind, a subscription reads pages from the store ("catching
up"); once its cursor reaches what the hub has dispatched it switches to live
delivery.  The check and the switch happen with no ``await`` between them, so
no event can slip through the seam and none is delivered twice (live events
at or below the cursor are skipped).  When its queue overflows it drops the
queue and goes back to the log from the last id it handed out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from app.events import Control, Event, EventFilter, Frame
from app.store.base import LogReader, fitted_limit

PAGE_SIZE = 1000  # events per page of the log, at most
PAGE_BYTES = 256 * 1024  # and about this much of them (pages start small to learn sizes)
FIRST_PAGE = 16


class Dispatcher(Protocol):
    """What a subscription needs from the hub that feeds it."""

    store: LogReader
    queue_size: int
    dispatched_id: int
    ring_floor: int

    def recent_after(self, cursor: int, filter: EventFilter) -> list[Event]: ...

    def register_live(self, sub: Subscription) -> None: ...

    def unregister_live(self, sub: Subscription) -> None: ...

    def wake_soon(self, sub: Subscription) -> None: ...

    def note_fell_behind(self) -> None: ...


class Subscription:
    """One reader: cursor, filter, bounded live queue, and the catch-up logic."""

    __slots__ = (
        "_changes",
        "_closing",
        "_finished",
        "_hub",
        "_live",
        "_live_from",
        "_overflowed",
        "_page_limit",
        "_pending",
        "_picky",
        "_queue",
        "_queue_size",
        "_waiter",
        "_wake_queued",
        "cursor",
        "filter",
        "latest_id",
        "replaying",
        "several",
    )

    def __init__(
        self, hub: Dispatcher, filter: EventFilter, cursor: int, latest_id: int, first: list[Frame]
    ) -> None:
        self.cursor = cursor  # the last id handed out or scanned past
        self.latest_id = latest_id  # the store's newest id at the handshake
        self._hub = hub
        self._queue_size = hub.queue_size
        self._pending: list[Frame] = first
        self._changes: list[tuple[EventFilter, Callable[[int], Control]]] = []
        self._use_filter(filter)
        self._queue: list[Event] = []
        self._live = False
        self._live_from = 0
        self._page_limit = FIRST_PAGE  # events to read in the next page of the log
        self._overflowed = False
        self._wake_queued = False  # in the hub's list of subscribers to wake
        self._waiter: asyncio.Future[None] | None = None  # a future only while waiting:
        self._closing: Control | None = None  # an idle stream costs a few hundred bytes
        self._finished = False
        self.replaying = True  # whether the last batch came from the log, not live

    def _use_filter(self, filter: EventFilter) -> None:
        self.filter = filter
        ids = filter.workflow_ids
        # The hub offers a commit once, in id order, to a subscription that follows
        # several workflows; it filters it itself ("picky"), as one with other filters.
        self.several = ids is not None and len(ids) > 1
        self._picky = self.several or not (
            filter.types is None and filter.since is None and filter.until is None
        )

    # Called by the hub, or by the connection's other side; none of these ever awaits.

    def change(self, filter: EventFilter, announce: Callable[[int], Control]) -> None:
        """Follow ``filter`` from now on.  The change applies between two batches of
        the outgoing stream, at its position N, where the frame ``announce(N)`` is
        put: everything before it has ``id <= N``, everything after ``id > N``; what
        stays followed loses nothing and what is added starts after N."""
        self._changes.append((filter, announce))
        self._wake()

    def offer(self, events: list[Event]) -> bool:
        """Queue live events (in id order, of this subscription's workflow: the hub's
        index saw to that); ``False`` means the queue overflowed and we left."""
        if events[0].id <= self._live_from:
            events = [event for event in events if event.id > self._live_from]
        if self._picky:
            events = [event for event in events if self.filter.matches(event)]
        if not events:
            return True
        queue = self._queue
        if len(queue) + len(events) > self._queue_size:
            self._queue = []
            self._live = False
            self._overflowed = True
            self._wake()
            return False
        queue.extend(events)
        if self._waiter is not None and not self._wake_queued:
            self._wake_queued = True
            self._hub.wake_soon(self)
        return True

    def push(self, control: Control) -> None:
        self._pending.append(control)
        self._wake()

    def close(self, farewell: Control) -> None:
        self._closing = farewell
        self._wake()

    def wake_queued(self) -> None:
        self._wake_queued = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Called by the transport.

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[Frame]:
        """The next frames to write, in order; ends after the farewell frame."""
        while True:
            if self._finished:
                raise StopAsyncIteration
            if self._closing is not None:
                self._finished = True
                return [*self._take_pending(), self._closing]
            if self._changes:
                return self._apply_changes()
            if self._overflowed:
                self._overflowed = False
                self._hub.note_fell_behind()
            if not self._live:
                frames = self._take_pending()
                events = self._try_go_live()
                if events is None:
                    page = await self._hub.store.read(self.cursor, self._page_limit, self.filter)
                    self.cursor = page.scanned_to
                    events = page.events
                    self._page_limit = fitted_limit(
                        events, self._page_limit, PAGE_BYTES, PAGE_SIZE
                    )
                if frames or events:
                    self.replaying = True
                    return [*frames, *events]
                continue
            if self._queue or self._pending:
                frames = self._take_pending()
                if self._queue:
                    events, self._queue = self._queue, []
                    self.cursor = events[-1].id
                    frames.extend(events)
                self.replaying = False
                return frames
            # Nothing to hand out: every change above wakes the waiter, and none can
            # happen between those checks and this line (no await in between).
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _apply_changes(self) -> list[Frame]:
        """Switch filters at the stream's position N.  Catching up, N is the cursor.
        Live, the hub has offered this subscription every event up to its dispatched
        id, so what is queued goes out first and N is that id; the subscription
        stays live, indexed under its new workflows (no read of the log)."""
        frames = self._take_pending()
        live = self._live
        if live:
            frames.extend(self._queue)
            self._queue = []
            self.cursor = self._live_from = self._hub.dispatched_id
            self._hub.unregister_live(self)
        for filter, announce in self._changes:
            self._use_filter(filter)
            frames.append(announce(self.cursor))
        self._changes = []
        if live:
            self._hub.register_live(self)
        self.replaying = not live
        return frames

    def _take_pending(self) -> list[Frame]:
        frames, self._pending = self._pending, []
        return frames

    def _try_go_live(self) -> list[Event] | None:
        """Switch to live if the hub's memory covers our cursor; ``None`` if not."""
        hub = self._hub
        if self.cursor >= hub.dispatched_id:
            events: list[Event] = []
        elif self.cursor >= hub.ring_floor:
            events = hub.recent_after(self.cursor, self.filter)
            self.cursor = hub.dispatched_id
        else:
            return None
        self._live_from = self.cursor
        self._live = True
        hub.register_live(self)
        return events
