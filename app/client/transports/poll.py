"""Long-poll: ``GET /api/events?after=N&wait=S``, the transport of last resort
(for proxies that break both WebSockets and streamed responses).

The first request does not wait: its answer plays the part of
``connection_established``.  Each page's ``next_after`` is the next request's
cursor, so a trimmed or foreign cursor moves on the way the server says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from app.client.errors import Down
from app.client.events import Message, TransportName, optional_int
from app.client.options import FeedOptions
from app.client.transports.base import refused, transport_failure

PAGE_LIMIT = 1000
#: A server (or proxy) that answers at once although asked to wait: poll no
#: faster than this.
MIN_EMPTY_POLL_S = 1.0


class PollConnection:
    transport: TransportName = "poll"
    retry_hint_s: float | None = None

    def __init__(
        self,
        options: FeedOptions,
        http: httpx.AsyncClient,
        after: int,
        first: list[Message],
        established: Message,
    ) -> None:
        self._options = options
        self._http = http
        self._after = after
        self._first = first
        self.established = established

    async def batches(self) -> AsyncGenerator[list[Message], None]:
        if self._first:
            yield self._first
        self._first = []
        while True:
            started = time.monotonic()
            messages, self._after, more = await _page(
                self._options, self._http, self._after, self._options.poll_wait_s
            )
            if messages:
                yield messages
            elif not more and time.monotonic() - started < MIN_EMPTY_POLL_S:
                await asyncio.sleep(MIN_EMPTY_POLL_S)

    async def aclose(self) -> None:
        """Nothing to release: each request is its own, on the feed's shared pool."""


async def _page(
    options: FeedOptions, http: httpx.AsyncClient, after: int, wait: float
) -> tuple[list[Message], int, bool]:
    """One page: its notices then its events, the next cursor, and ``has_more``."""
    params = {
        "after": str(after),
        "limit": str(PAGE_LIMIT),
        "wait": f"{wait:g}",
        **options.filter_params(),
    }
    headers = {**await options.request_headers(), "Accept": "application/json"}
    try:
        async with http.stream(
            "GET",
            options.url + "/api/events",
            params=params,
            headers=headers,
            timeout=wait + options.connect_timeout_s,
        ) as response:
            if response.status_code != 200:
                raise await refused("poll", response)
            body = await response.aread()
    except httpx.HTTPError as exc:
        raise transport_failure("poll", exc, "request") from exc
    page = _json_object(body)
    if page is None:
        raise Down("poll", "long-poll answered something that is not a page of events", status=200)
    notices = [n for n in page.get("notices") or [] if isinstance(n, dict)]
    events = [e for e in page.get("events") or [] if isinstance(e, dict)]
    next_after = optional_int(page.get("next_after"))
    return notices + events, after if next_after is None else next_after, bool(page.get("has_more"))


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


async def _latest_id(options: FeedOptions, http: httpx.AsyncClient) -> int:
    """The newest id in the log, where a cursor-less feed starts (less ``tail``)."""
    headers = {**await options.request_headers(), "Accept": "application/json"}
    try:
        response = await http.get(
            options.url + "/api/stats", headers=headers, timeout=options.connect_timeout_s
        )
    except httpx.HTTPError as exc:
        raise transport_failure("poll", exc, "request for /api/stats") from exc
    page = _json_object(response.content) if response.status_code == 200 else None
    latest = optional_int(page.get("latest_id")) if page is not None else None
    if latest is None:
        raise Down(
            "poll",
            f"long-poll: /api/stats answered HTTP {response.status_code} without latest_id",
            status=response.status_code,
        )
    return latest


async def open_poll(
    options: FeedOptions, http: httpx.AsyncClient, cursor: int | None
) -> PollConnection:
    """The first page, without waiting; ``/api/events`` has no ``tail=``, so a feed
    without a cursor starts ``tail`` ids before the newest (filtered or not)."""
    latest = None
    after = cursor
    if after is None:
        latest = await _latest_id(options, http)
        after = max(0, latest - options.tail)
    messages, next_after, _ = await _page(options, http, after, 0)
    established: Message = {
        "type": "connection_established",
        "transport": "poll",
        "latest_id": latest,
        "resumed_from": cursor,
    }
    return PollConnection(options, http, next_after, messages, established)
