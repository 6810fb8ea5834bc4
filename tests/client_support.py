"""Helpers for the Python client's tests: read a feed with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.client import Event, Feed, Publisher

TIMEOUT_S = 30.0


async def take(feed: Feed, count: int, timeout: float = TIMEOUT_S) -> list[Event]:
    """The next ``count`` events (fails after ``timeout``)."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            events.append(await anext(feed))
    return events


async def take_until(
    feed: Feed, done: Callable[[list[Event]], bool], timeout: float = TIMEOUT_S
) -> list[Event]:
    """Events until ``done(events)`` is true (fails after ``timeout``)."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while not done(events):
            events.append(await anext(feed))
    return events


async def publish_steadily(url: str, stop: asyncio.Event, every_s: float = 0.01) -> int:
    """Publish numbered events until ``stop`` is set, each with its own idempotency
    key so that retries across a restart write each one once; returns how many."""
    count = 0
    async with Publisher(url, retries=100) as publisher:
        while not stop.is_set():
            await publisher.publish(
                {"type": "tick", "workflow_id": "wf_steady", "data": {"n": count}},
                idempotency_key=f"tick-{count}",
            )
            count += 1
            await asyncio.sleep(every_s)
    return count
