"""Prometheus metrics, in a registry owned by one app (no process globals)."""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

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
        self.publish_latency = Histogram(
            "livefeed_publish_latency_seconds",
            "Time from request to durable commit",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        for transport in TRANSPORTS:
            self.connections.labels(transport)
            self.delivered.labels(transport)

    def exposition(self) -> bytes:
        """Prometheus text: this process's registry, or every worker's under a supervisor."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return generate_latest(combined)

    def connection_counts(self) -> dict[str, int]:
        return {t: int(self.connections.labels(t)._value.get()) for t in TRANSPORTS}
