"""What one app owns while it serves: settings, store, hub, metrics, admission, tasks.

Created when serving starts and closed when it stops, so that nothing lives
in module globals and every test gets a fresh one.  Endpoints get from it
what they need through a few verbs (:meth:`Runtime.admitted`, the hub, the
access checks) rather than reaching through it into the parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

import orjson

from app.config import Retention, Settings
from app.errors import EndReason, Rejected, StoreUnavailable
from app.events import Control, Draft, drafts_from_body, farewell, fingerprint
from app.hub import Hub
from app.metrics import DeliveryMeter, Metrics
from app.security.access import Access
from app.security.admission import Admission
from app.store import Appended, Store, open_store
from app.write_timeout import WriteWatch

log = logging.getLogger(__name__)
T = TypeVar("T")
MAINTENANCE_INTERVAL_S = 60.0
INLINE_PARSE_BYTES = 64 * 1024
#: Where the serving app keeps its runtime (``app.extensions[RUNTIME_KEY]``).
RUNTIME_KEY = "livefeed"


class Admitted:
    """One stream's slot, taken by :meth:`Runtime.admit` (caps and connect rate) and
    freed when its ``async with`` exits, with the open-connections gauge and, once
    :attr:`ended` is set, why it ended counted."""

    __slots__ = ("_client", "_runtime", "_transport", "ended")

    def __init__(self, runtime: Runtime, client: str, transport: str) -> None:
        self._runtime, self._client, self._transport = runtime, client, transport
        self.ended: EndReason | None = None

    async def acquire(self) -> None:
        await self._runtime.admission.acquire(self._client)
        self._runtime.metrics.connections.labels(self._transport).inc()

    async def __aenter__(self) -> Admitted:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        metrics = self._runtime.metrics
        metrics.connections.labels(self._transport).dec()
        self._runtime.admission.release(self._client)
        if self.ended is not None:
            label = self.ended.label(self._transport)
            metrics.disconnects.labels(self._transport, label).inc()


@dataclass
class Runtime:
    settings: Settings
    store: Store
    hub: Hub
    metrics: Metrics
    admission: Admission
    access: Access
    writes: WriteWatch
    started_at: float = field(default_factory=time.time)
    node: str = field(default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}")
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: One thread for parsing large publish bodies: off the event loop, and one at a
    #: time, so that neither the loop nor memory waits on several at once.
    parser: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="livefeed-parse")
    )

    @classmethod
    async def start(cls, settings: Settings, store: Store | None = None) -> Runtime:
        store = store or open_store(settings)
        await store.open()
        metrics = Metrics()
        hub = Hub(
            store,
            queue_size=settings.queue_size,
            heartbeat_s=settings.heartbeat_s,
            on_fell_behind=metrics.fell_behind.inc,
        )
        await hub.start()
        admission = Admission(settings)
        access = Access(settings, admission, store)
        writes = WriteWatch(settings.write_timeout_s)
        runtime = cls(settings, store, hub, metrics, admission, access, writes)
        runtime.tasks.append(asyncio.create_task(runtime._maintain_forever(settings.retention)))
        runtime.tasks.append(asyncio.create_task(metrics.flush_forever()))
        runtime.tasks.append(asyncio.create_task(writes.sweep_forever()))
        if settings.demo_rate > 0:
            from app.demo import publish_demo_events

            runtime.tasks.append(
                asyncio.create_task(
                    publish_demo_events(store, settings.demo_rate, metrics.published.inc)
                )
            )
        return runtime

    async def admit(self, client: str, transport: str) -> Admitted:
        """Take a stream slot for ``client`` (or raise why not); ``async with`` it to
        free it however the stream ends."""
        slot = Admitted(self, client, transport)
        await slot.acquire()
        return slot

    async def publish(self, drafts: list[Draft], batch: bool, key: str | None) -> Appended:
        """Append durably (once per idempotency key within its window), and count it;
        the same for a POST and a WebSocket ``publish``."""
        started = time.perf_counter()
        if key is None:
            events = await self.store.append(drafts)
            appended = Appended(events, [(event.id, event.ts) for event in events])
        else:
            appended = await self.store.append_once(key, fingerprint(drafts, batch), drafts)
        self.metrics.publish_latency.observe(time.perf_counter() - started)
        self.metrics.published.inc(len(appended.events))
        return appended

    async def publish_body(self, body: bytes, key: str | None) -> tuple[bytes, bool]:
        """A ``POST /api/events`` body appended: the JSON of its 201 answer, and whether
        the idempotency key replayed an earlier publish.  Raises what the client is
        told (:class:`Rejected`, :class:`StoreUnavailable`, ...)."""
        limit = self.settings.max_event_bytes
        drafts, batch = await self.parse(lambda raw: drafts_from_body(raw, limit), body)
        appended = await self.publish(drafts, batch, key)
        ids = [{"id": event_id, "ts": ts} for event_id, ts in appended.receipt]
        return orjson.dumps({"events": ids} if batch else ids[0]), appended.replayed

    async def parse(self, parse: Callable[[bytes], T], body: bytes) -> T:
        """``parse(body)``: inline when small; else on the parser thread, since a body's
        size says little about its cost (8 MB of ``[{},{},...]`` took 450 ms to parse
        before the batch limit could refuse it), and the loop keeps serving everyone."""
        if len(body) <= INLINE_PARSE_BYTES:
            return parse(body)
        return await asyncio.get_running_loop().run_in_executor(
            self.parser, _parse_quietly, parse, body
        )

    def meter(self, transport: str) -> DeliveryMeter:
        return self.metrics.meter(transport)

    def begin_shutdown(self) -> None:
        """Ask every stream to say goodbye with a jittered reconnect hint."""
        self.hub.begin_shutdown(self.farewell)

    def farewell(self) -> Control:
        return farewell(self.settings.retry_ms)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hub.stop()
        await self.store.close()
        self.parser.shutdown(wait=False, cancel_futures=True)

    async def _maintain_forever(self, retention: Retention | None) -> None:
        """About once a minute: apply retention, forget expired keys and tickets."""
        while True:
            try:
                if retention is not None:
                    await self.store.trim(retention)
                await self.store.purge_expired(time.time())
            except StoreUnavailable as exc:
                log.warning("store maintenance failed: %s", exc)
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)


def _parse_quietly(parse: Callable[[bytes], T], body: bytes) -> T:
    """``parse(body)`` on the parser thread.

    The cyclic garbage collector is paused meanwhile: parsing makes no cycles, and
    a full collection over millions of fresh containers holds every thread, the
    event loop's too (8 MB of ``[[],[],...]``: 2.1 s with it, 0.56 s without).  A
    refusal is raised without its traceback, whose frames hold the parsed body, so
    that the body is freed here and not on the event loop."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return parse(body)
    except Rejected as refusal:
        raise refusal.with_traceback(None) from None
    finally:
        if collecting:
            gc.enable()
