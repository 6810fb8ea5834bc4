"""Admission control: connection caps and rate limits, per process.

Caps protect file descriptors and memory (every stream holds a socket and a
subscription); rate limits protect the store and make guessing tokens slow.
Rate windows come from the ``limits`` library; the caps are plain counters.
The methods stay async so that a shared storage (Redis) can drop in.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from app.config import Settings
from app.errors import ApiError

T = TypeVar("T")


SWEEP_INTERVAL_S = 1.0


class SweptMemoryStorage(MemoryStorage):
    """``limits``' in-memory storage without a thread per hit.

    The stock storage starts a 10 ms ``threading.Timer`` on most hits to drop
    expired keys: a thread start per publish, about 2 ms of the event loop
    (measured); its asyncio storage is worse (a thread hop per key per expiry:
    fan-out fell from 94k to 64k deliveries/s).  Expired counters are already
    ignored on read, so the sweep only frees memory: here it runs inline, at
    most once per ``SWEEP_INTERVAL_S``.  Checked against limits 5.8; if the
    private names it uses go away, the stock behaviour stays.
    """

    def __init__(self) -> None:
        super().__init__()
        self._next_sweep = 0.0
        if hasattr(self, "_MemoryStorage__schedule_expiry") and hasattr(
            self, "_MemoryStorage__expire_events"
        ):
            self._MemoryStorage__schedule_expiry = self._sweep_now_and_then

    def _sweep_now_and_then(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL_S
            getattr(self, "_MemoryStorage__expire_events")()  # noqa: B009 (checked in __init__)


class Overloaded(ApiError):
    """Too many connections: come back later (SSE turns this into a 200 + retry)."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, "overloaded", detail, {"Retry-After": "5"})


class Admission:
    """Counts open streams and rate-limits what clients do."""

    def __init__(self, settings: Settings) -> None:
        self._max_total = settings.max_connections
        self._max_per_client = settings.max_connections_per_client
        self._open: Counter[str] = Counter()
        self._total = 0
        self._limiter = MovingWindowRateLimiter(SweptMemoryStorage())
        self._publish = parse(settings.publish_rate)
        self._connect = parse(settings.connect_rate)
        self._auth_failures = parse(settings.auth_failure_rate)

    @property
    def open_streams(self) -> int:
        return self._total

    async def acquire(self, client: str) -> None:
        """Take one stream slot for ``client``; pair every success with :meth:`release`."""
        await self._check(self._connect, "connect", client, "connections")
        if self._total >= self._max_total:
            raise Overloaded(
                f"this server holds its maximum of {self._max_total} streams "
                "(LIVEFEED_MAX_CONNECTIONS); reconnect in a few seconds"
            )
        if self._open[client] >= self._max_per_client:
            raise Overloaded(
                f"{client} already holds {self._max_per_client} streams "
                "(LIVEFEED_MAX_CONNECTIONS_PER_CLIENT); close some or reconnect later"
            )
        self._total += 1
        self._open[client] += 1

    def release(self, client: str) -> None:
        self._total -= 1
        self._open[client] -= 1
        if not self._open[client]:
            del self._open[client]

    async def check_publish(self, client: str) -> None:
        await self._check(self._publish, "publish", client, "publish requests")

    async def check_ticket(self, client: str) -> None:
        """Tickets are written to the store: as many a second as new streams, in a
        window of their own (a ticket and the stream it opens are not counted twice)."""
        await self._check(self._connect, "ticket", client, "stream tickets")

    async def check_auth_failures(self, client: str) -> None:
        """Refuse a client that has failed authentication too often, before checking again."""
        if not self._limiter.test(self._auth_failures, "auth", client):
            raise await self._too_many(
                self._auth_failures, "auth", client, "failed authentications"
            )

    async def note_auth_failure(self, client: str) -> None:
        self._limiter.hit(self._auth_failures, "auth", client)

    async def authenticate(self, client: str, check: Callable[[], T]) -> T:
        """Run a credential check and return what it grants; failures (401) count
        toward the client's auth-failure limit."""
        await self.check_auth_failures(client)
        try:
            return check()
        except ApiError as error:
            if error.status == 401:
                await self.note_auth_failure(client)
            raise

    async def _check(self, item: RateLimitItem, scope: str, client: str, what: str) -> None:
        if not self._limiter.hit(item, scope, client):
            raise await self._too_many(item, scope, client, what)

    async def _too_many(self, item: RateLimitItem, scope: str, client: str, what: str) -> ApiError:
        reset = (self._limiter.get_window_stats(item, scope, client)).reset_time
        wait = max(1, math.ceil(reset - time.time()))
        return ApiError(
            429,
            "rate_limited",
            f"too many {what} from {client} (limit {item}); retry in {wait} s",
            {"Retry-After": str(wait)},
        )
