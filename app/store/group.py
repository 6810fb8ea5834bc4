"""Group commit and its planning, shared by every engine.

Publishes that arrive while a transaction is being written wait, and are
then committed together in the next one: N concurrent publishers cost one
durable commit instead of N.  The engine supplies only ``commit(requests)``,
and inside it :func:`plan_group` decides, the same way on every engine,
which requests write (and which ids they get) and which replay an earlier
answer under their idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import orjson

from app.errors import IdempotencyConflict, StoreUnavailable
from app.events import Draft, Event
from app.store.base import Appended

MAX_GROUP_EVENTS = 5000
FAILURE_MEMORY_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(slots=True)
class AppendRequest:
    """One publish waiting for the next group commit."""

    drafts: Sequence[Draft]
    key: str | None = None
    fingerprint: str | None = None
    future: asyncio.Future[Appended] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


#: An engine's commit: one outcome (or the exception for that request) per request.
Commit = Callable[[list[AppendRequest]], Awaitable[list[Appended | Exception]]]
#: Told the events a commit wrote, in id order, before any publisher hears back.
Committed = Callable[[list[Event]], None]


#: A key remembered within its window: (fingerprint of the body, receipt as JSON).
EarlierKeys = dict[str, tuple[str, str]]
#: A key to remember: (key, fingerprint, receipt as JSON, created_at).
KeyRow = tuple[str, str, str, float]


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """What one group commit writes, and what each request is answered."""

    outcomes: list[Appended | Exception]  # one per request, in order
    events: list[Event]  # to insert, in id order
    keys: list[KeyRow]  # to remember


def plan_group(
    requests: Sequence[AppendRequest], last_id: int, ts: str, earlier: EarlierKeys, now: float
) -> GroupPlan:
    """Number the group's new events after ``last_id``, all stamped ``ts``.  A request
    whose key was used within its window (``earlier``, read under the write lock, or
    earlier in this same group) writes nothing: it gets the first receipt, or
    :class:`IdempotencyConflict` if its body differed."""
    known = dict(earlier)
    outcomes: list[Appended | Exception] = []
    written: list[Event] = []
    keys: list[KeyRow] = []
    for request in requests:
        if request.key and request.key in known:
            fingerprint, receipt = known[request.key]
            if fingerprint != request.fingerprint:
                message = f"Idempotency-Key {request.key!r} was used with another body"
                outcomes.append(IdempotencyConflict(message))
            else:
                pairs = [(pair[0], pair[1]) for pair in orjson.loads(receipt)]
                outcomes.append(Appended([], pairs, replayed=True))
            continue
        events = [
            Event.build(last_id + n, d.type, d.workflow_id, ts, d.data)
            for n, d in enumerate(request.drafts, start=1)
        ]
        last_id += len(events)
        pairs = [(event.id, event.ts) for event in events]
        if request.key:
            encoded = orjson.dumps(pairs).decode()
            known[request.key] = (request.fingerprint or "", encoded)
            keys.append((request.key, request.fingerprint or "", encoded, now))
        outcomes.append(Appended(events, pairs))
        written.extend(events)
    return GroupPlan(outcomes, written, keys)


class GroupCommitter:
    """Queues append requests and commits them in groups, one group at a time."""

    def __init__(self, commit: Commit, on_committed: Committed) -> None:
        self._commit = commit
        self._on_committed = on_committed
        self._pending: list[AppendRequest] = []
        self._added = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: tuple[float, str] | None = None
        self._in_flight: list[AppendRequest] = []
        self._closed = False

    @property
    def recent_failure(self) -> str | None:
        """Why the last commit failed, if it did within ``FAILURE_MEMORY_S`` and none
        succeeded since: readiness reports it, and forgets it so a quiet node recovers."""
        if self._failure is None or time.monotonic() - self._failure[0] > FAILURE_MEMORY_S:
            return None
        return self._failure[1]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="livefeed-group-commit")

    async def stop(self) -> None:
        """Commit what is already queued (a publisher waits for its answer), then stop;
        whatever is still unanswered after ``STOP_TIMEOUT_S`` learns the store closed."""
        self._closed = True
        if self._task is not None:
            self._added.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        for request in [*self._in_flight, *self._pending]:
            if not request.future.done():
                request.future.set_exception(StoreUnavailable("the store has closed"))

    async def submit(self, request: AppendRequest) -> Appended:
        if self._closed:
            raise StoreUnavailable("the store is closing; retry on another node or shortly")
        self._pending.append(request)
        self._added.set()
        return await request.future

    async def _run(self) -> None:
        while not (self._closed and not self._pending):
            await self._added.wait()
            self._added.clear()
            while self._pending:
                group: list[AppendRequest] = []
                size = 0
                while self._pending and (
                    not group or size + len(self._pending[0].drafts) <= MAX_GROUP_EVENTS
                ):
                    request = self._pending.pop(0)
                    group.append(request)
                    size += len(request.drafts)
                self._in_flight = group
                await self._commit_group(group)
                self._in_flight = []

    async def _commit_group(self, group: list[AppendRequest]) -> None:
        try:
            outcomes = await self._commit(group)
        except Exception as exc:  # every waiter learns; the loop itself never dies
            self._failure = (time.monotonic(), str(exc))
            for request in group:
                if not request.future.done():
                    request.future.set_exception(StoreUnavailable(str(exc)))
            return
        self._failure = None
        written = [
            event
            for outcome in outcomes
            if isinstance(outcome, Appended)
            for event in outcome.events
        ]
        if written:  # delivery starts before the 201s go out; plan_group numbered the
            self._on_committed(written)  # requests in order, so these are in id order
        for request, outcome in zip(group, outcomes, strict=True):
            if request.future.done():
                continue
            if isinstance(outcome, Exception):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)
