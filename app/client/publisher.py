"""Publishing: ``POST /api/events`` through one pooled HTTP client, or
``publish`` messages over one WebSocket (:mod:`app.client.ws_publish`).

Retries follow one rule on both transports (:mod:`app.client.attempts`):
only when they cannot write an event twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

import httpx
import orjson

from app.client.attempts import Draft, Failed, receipt, refused, retrying
from app.client.closing import AsyncClosing
from app.client.errors import ErrorBody, PublishError, retry_after
from app.client.events import Published
from app.client.options import TokenSource, bearer_headers, http_base
from app.client.ws_publish import WsSender

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3
PublishTransport = Literal["http", "ws"]


class HttpSender:
    """``POST /api/events`` over a pool of keep-alive connections: one attempt."""

    def __init__(
        self, url: str, token: TokenSource | None, headers: Mapping[str, str], timeout_s: float
    ) -> None:
        self._url = url + "/api/events"
        self._token = token
        self._http = httpx.AsyncClient(
            headers={"Content-Type": "application/json", **headers}, timeout=timeout_s
        )

    async def send(self, events: list[Draft], single: bool, key: str | None) -> list[Published]:
        headers = await bearer_headers(self._token)
        if key is not None:
            headers["Idempotency-Key"] = key
        body = orjson.dumps(events[0] if single else events)
        try:
            response = await self._http.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise Failed(
                PublishError(None, None, f"publish failed: {exc!r}"), never_sent or key is not None
            ) from exc
        if response.status_code != 201:
            error = ErrorBody.parse(response.content)
            status = response.status_code
            failure = PublishError(status, error.error, error.detail, retry_after(response.headers))
            raise Failed(failure, refused(status, None, key is not None))
        answer: Any = orjson.loads(response.content)
        if single:
            return [receipt(answer)]
        items = answer.get("events") if isinstance(answer, dict) else None
        return [receipt(item) for item in items] if isinstance(items, list) else []

    async def aclose(self) -> None:
        await self._http.aclose()


class Publisher(AsyncClosing):
    """Publishes events to one server: over a pool of keep-alive HTTP connections
    (``transport="http"``), or over one WebSocket carrying many publishes at
    once (``transport="ws"``), with the same receipts, errors and retries.

    ``async with Publisher(url, token=...) as publisher: await publisher.publish(...)``
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource | None = None,
        headers: Mapping[str, str] | None = None,
        transport: PublishTransport = "http",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        if transport not in ("http", "ws"):
            raise ValueError(f"transport={transport!r}: use 'http' or 'ws'")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.url = http_base(url)
        self.transport = transport
        self._retries = retries
        self._sender: HttpSender | WsSender = (
            HttpSender(self.url, token, headers or {}, timeout_s)
            if transport == "http"
            else WsSender(self.url, token, headers or {}, timeout_s)
        )

    @overload
    async def publish(self, events: Draft, *, idempotency_key: str | None = None) -> Published: ...

    @overload
    async def publish(
        self, events: Sequence[Draft], *, idempotency_key: str | None = None
    ) -> list[Published]: ...

    async def publish(
        self, events: Draft | Sequence[Draft], *, idempotency_key: str | None = None
    ) -> Published | list[Published]:
        """Publish one event, or a list of up to 1000 in one transaction (all
        or none); returns once they are durably committed.  With
        ``idempotency_key``, a retry (by this method or by the caller, within
        24 h) writes nothing new and returns the first answer.  Over WebSocket,
        concurrent calls share the socket and are answered as they commit."""
        single = isinstance(events, Mapping)
        listed: list[Draft] = [events] if isinstance(events, Mapping) else list(events)
        if not listed:
            raise ValueError("publish at least one event")
        receipts = await retrying(
            lambda: self._sender.send(listed, single, idempotency_key), self._retries
        )
        if single:
            if len(receipts) != 1:
                raise PublishError(None, None, f"expected one receipt, got {len(receipts)}")
            return receipts[0]
        return receipts

    async def aclose(self) -> None:
        await self._sender.aclose()


@overload
async def publish(
    url: str,
    events: Draft,
    *,
    token: TokenSource | None = None,
    idempotency_key: str | None = None,
    transport: PublishTransport = "http",
) -> Published: ...


@overload
async def publish(
    url: str,
    events: Sequence[Draft],
    *,
    token: TokenSource | None = None,
    idempotency_key: str | None = None,
    transport: PublishTransport = "http",
) -> list[Published]: ...


async def publish(
    url: str,
    events: Draft | Sequence[Draft],
    *,
    token: TokenSource | None = None,
    idempotency_key: str | None = None,
    transport: PublishTransport = "http",
) -> Published | list[Published]:
    """Publish once, with a connection of its own: for a one-off publish.
    Anything that publishes repeatedly should keep a :class:`Publisher`."""
    async with Publisher(url, token=token, transport=transport) as publisher:
        return await publisher.publish(events, idempotency_key=idempotency_key)
