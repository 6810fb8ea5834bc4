"""Prometheus metrics, in a registry owned by one app (no process globals)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.events import Event, Frame

LAG_SAMPLE_S = 1.0
FLUSH_INTERVAL_S = 1.0
TRANSPORTS = ("websocket", "sse", "poll")


class Metrics:
    """Everything /metrics exposes for this process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "livefeed_connections",
            "Open stream connections",
            ["transport"],
            registry=self.registry,
            multiprocess_mode="livesum",  # summed over live workers
        )
        self.published = Counter(
            "livefeed_events_published",
            "Events appended through this process",
            registry=self.registry,
        )
        self.delivered = Counter(
            "livefeed_events_delivered",
            "Events written to clients",
            ["transport"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "livefeed_disconnects",
            "Stream connections ended, by reason",
            ["transport", "reason"],
            registry=self.registry,
        )
        self.replayed = Counter(
            "livefeed_events_replayed",
            "Events written to clients from the log while catching up (part of delivered)",
            ["transport"],
            registry=self.registry,
        )
        self.fell_behind = Counter(
            "livefeed_fell_behind",
            "Times a live subscriber's queue overflowed and it went back to reading the log",
            registry=self.registry,
        )
        self.delivery_lag = Histogram(
            "livefeed_delivery_lag_seconds",
            "Commit to live delivery (sampled: at most once a second per connection)",
            ["transport"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.publish_latency = Histogram(
            "livefeed_publish_latency_seconds",
            "Time from request to durable commit",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self._unflushed = {transport: Unflushed() for transport in TRANSPORTS}
        for transport in TRANSPORTS:
            self.connections.labels(transport)
            self.delivered.labels(transport)
            self.replayed.labels(transport)

    def meter(self, transport: str) -> DeliveryMeter:
        return DeliveryMeter(self, transport, self._unflushed[transport])

    def flush(self) -> None:
        """Move the deliveries counted in plain integers into the Prometheus counters."""
        for transport, unflushed in self._unflushed.items():
            if unflushed.delivered:
                self.delivered.labels(transport).inc(unflushed.delivered)
                unflushed.delivered = 0
            if unflushed.replayed:
                self.replayed.labels(transport).inc(unflushed.replayed)
                unflushed.replayed = 0

    async def flush_forever(self) -> None:
        """Other workers' /metrics read our counters from shared files: keep them fresh."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def exposition(self) -> bytes:
        """Prometheus text: this process's registry, or every worker's under a supervisor."""
        self.flush()
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        return generate_latest(combined)

    def published_total(self) -> int:
        return int(self.published._value.get())

    def connection_counts(self) -> dict[str, int]:
        return {t: int(self.connections.labels(t)._value.get()) for t in TRANSPORTS}


@dataclass(slots=True)
class Unflushed:
    """Deliveries counted since the last flush (a Prometheus ``inc`` takes a lock)."""

    delivered: int = 0
    replayed: int = 0


class DeliveryMeter:
    """Counts one connection's deliveries.

    It runs once per write on the fan-out path, so it does little: it adds to
    plain integers that :meth:`Metrics.flush` moves into the counters (at every
    scrape and every ``FLUSH_INTERVAL_S``), and observes commit-to-delivery lag
    at most once per ``LAG_SAMPLE_S`` per connection."""

    __slots__ = ("_lag", "_next_lag_sample", "_unflushed")

    def __init__(self, metrics: Metrics, transport: str, unflushed: Unflushed) -> None:
        self._unflushed = unflushed
        self._lag = metrics.delivery_lag.labels(transport)
        self._next_lag_sample = 0.0

    def record(self, frames: Sequence[Frame], replayed: bool) -> None:
        count = sum(frame.id is not None for frame in frames)
        if not count:
            return
        self._unflushed.delivered += count
        if replayed:
            self._unflushed.replayed += count
            return
        now = time.time()
        if now >= self._next_lag_sample:
            self._next_lag_sample = now + LAG_SAMPLE_S
            last = next(frame for frame in reversed(frames) if isinstance(frame, Event))
            self._lag.observe(max(0.0, now - datetime.fromisoformat(last.ts).timestamp()))
