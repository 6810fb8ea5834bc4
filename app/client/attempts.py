"""One rule for retrying a publish, whichever transport carried it.

A publish is repeated only when repeating cannot write it twice: it never
reached the server, the server refused it before committing anything (rate
limited), or it carries an idempotency key (the server answers a repeated
key with the first answer).  Each transport says which case a failure is
(:class:`Failed`); :func:`retrying` decides and waits.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from app.client.errors import PublishError
from app.client.events import EventDraft, Published, optional_int

RETRY_BASE_S = 0.25
RETRY_MAX_S = 5.0
#: The server's code for a publish refused before it was read: safe to repeat.
RATE_LIMITED = "rate_limited"

T = TypeVar("T")
Draft = EventDraft | Mapping[str, Any]


class Failed(Exception):
    """One attempt's failure, and whether repeating it may not write twice."""

    def __init__(self, error: PublishError, may_retry: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.may_retry = may_retry


def refused(status: int | None, error: str | None, keyed: bool) -> bool:
    """May a publish the server refused be repeated?  A ``429``/``rate_limited``
    was not read; with a key, a server-side failure (``5xx``/``unavailable``) too."""
    if status == 429 or error == RATE_LIMITED:
        return True
    server_side = (status is not None and status >= 500) or error == "unavailable"
    return keyed and server_side


async def retrying(attempt: Callable[[], Awaitable[T]], retries: int) -> T:
    """``attempt()`` until it succeeds, fails for good, or ``retries`` are spent."""
    done = 0
    while True:
        try:
            return await attempt()
        except Failed as failure:
            if not failure.may_retry or done >= retries:
                raise failure.error from failure.__cause__
            await asyncio.sleep(backoff(done, failure.error.retry_after))
            done += 1


def backoff(attempt: int, asked: float | None) -> float:
    """The server's ``Retry-After`` when it gave one, else jittered doubling."""
    if asked is not None:
        return asked
    cap = min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt)
    return random.uniform(cap / 2, cap)


def receipt(item: object) -> Published:
    """``{"id","ts"}`` of one committed event, as both transports answer it."""
    if isinstance(item, dict):
        ident = optional_int(item.get("id"))
        ts = item.get("ts")
        if ident is not None and isinstance(ts, str):
            return Published(ident, ts)
    raise PublishError(None, None, f"the server's answer has no id and ts: {item!r}"[:300])
