"""Prometheus metrics, in a registry owned by one app (no process globals)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
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
        for transport in TRANSPORTS:
            self.connections.labels(transport)
            self.delivered.labels(transport)
            self.replayed.labels(transport)

    def meter(self, transport: str) -> DeliveryMeter:
        return DeliveryMeter(self, transport)

    def exposition(self) -> bytes:
        """Prometheus text: this process's registry, or every worker's under a supervisor."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return generate_latest(combined)

    def connection_counts(self) -> dict[str, int]:
        return {t: int(self.connections.labels(t)._value.get()) for t in TRANSPORTS}


class DeliveryMeter:
    """Counts one connection's deliveries with pre-bound label children.

    It runs once per write on the fan-out path, so it does little: commit-to-
    delivery lag is observed at most once per ``LAG_SAMPLE_S`` per connection."""

    __slots__ = ("_delivered", "_lag", "_next_lag_sample", "_replayed")

    def __init__(self, metrics: Metrics, transport: str) -> None:
        self._delivered = metrics.delivered.labels(transport)
        self._replayed = metrics.replayed.labels(transport)
        self._lag = metrics.delivery_lag.labels(transport)
        self._next_lag_sample = 0.0

    def record(self, frames: Sequence[Frame], replayed: bool) -> None:
        count = sum(1 for frame in frames if frame.id is not None)
        if not count:
            return
        self._delivered.inc(count)
        if replayed:
            self._replayed.inc(count)
            return
        now = time.time()
        if now >= self._next_lag_sample:
            self._next_lag_sample = now + LAG_SAMPLE_S
            last = next(frame for frame in reversed(frames) if isinstance(frame, Event))
            self._lag.observe(max(0.0, now - datetime.fromisoformat(last.ts).timestamp()))
