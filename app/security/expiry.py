"""Streams opened with an expiring credential end when it expires.

A JWT read credential (or a ticket minted with one) carries ``exp``; without
a deadline, a stream opened a minute before ``exp`` would read for days.  The
deadline is one more coroutine in the stream's ``race``: it sleeps on the
event loop's monotonic clock, so a wall-clock step after the stream opened
neither cuts it early nor keeps it open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from app.security.tokens import ReadGrant

T = TypeVar("T")

def deadline(grant: ReadGrant) -> float | None:
    """When the credential expires, on the loop's monotonic clock (``loop.time()``)."""
    if grant.expires_at is None:
        return None
    return asyncio.get_running_loop().time() + (grant.expires_at - time.time())


def until_expiry(grant: ReadGrant, outcome: T) -> tuple[Coroutine[Any, Any, T], ...]:
    """For ``race``: a coroutine that returns ``outcome`` when the credential expires,
    or none for a credential that does not expire (most streams pay nothing)."""
    at = deadline(grant)
    return () if at is None else (_sleep_until(at, outcome),)


async def _sleep_until(at: float, outcome: T) -> T:
    await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
    return outcome


async def next_before(items: AsyncIterator[T], at: float | None) -> T | None:
    """The next item, or ``None`` at the end; :class:`TimeoutError` at the deadline.
    For generator bodies, where no race can run: the timeout covers the wait,
    never a ``yield``.  (Asking the clock afterwards would not do: a loop may fire
    a timer a little before its time.)"""
    async with asyncio.timeout_at(at):
        try:
            return await anext(items)
        except StopAsyncIteration:
            return None
