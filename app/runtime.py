"""What one app owns while it serves: settings, store, hub, metrics, tasks.

Created when serving starts and closed when it stops, so that nothing lives
in module globals and every test gets a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from app.config import Retention, Settings
from app.events import Control
from app.hub import Hub
from app.limits import Admission
from app.metrics import Metrics
from app.store import Store, StoreUnavailable, open_store
from app.transports.asgi import jitter_ms
from app.transports.write_timeout import WriteWatch

log = logging.getLogger(__name__)
MAINTENANCE_INTERVAL_S = 60.0


@dataclass
class Runtime:
    settings: Settings
    store: Store
    hub: Hub
    metrics: Metrics
    admission: Admission
    writes: WriteWatch
    started_at: float = field(default_factory=time.time)
    node: str = field(default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}")
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

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
        writes = WriteWatch(settings.write_timeout_s)
        runtime = cls(settings, store, hub, metrics, Admission(settings), writes)
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

    async def run_admitted(self, client: str, transport: str, stream: Awaitable[str]) -> None:
        """Run a stream that took a slot with ``admission.acquire``: free the slot
        however it ends, and count why it ended."""
        try:
            reason = await stream
        finally:
            self.admission.release(client)
        self.metrics.disconnects.labels(transport, reason).inc()

    def begin_shutdown(self) -> None:
        """Ask every stream to say goodbye with a jittered reconnect hint."""
        self.hub.begin_shutdown(self.farewell)

    def farewell(self) -> Control:
        delay = jitter_ms(self.settings.retry_ms)
        return Control.build(
            "error",
            sse_retry=delay,
            error="shutting_down",
            detail="the server is restarting; reconnect with your last event id",
            reconnect_after_ms=delay,
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hub.stop()
        await self.store.close()

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
