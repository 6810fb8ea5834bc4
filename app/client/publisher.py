"""Publishing: ``POST /api/events`` through one pooled HTTP client.

Retries are made only when they cannot write an event twice: when the
request never reached the server (connection refused), when the server
refused it before reading it (``429``), or when the publish carries an
idempotency key (then any failure is retried, and the server answers a
repeat with the first answer).

Publishing over WebSocket (one connection carrying publishes and answers in
order) is the next transport; it will be ``Publisher(url, transport="ws")``
with the same methods.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

import httpx
import orjson

from app.client.closing import AsyncClosing
from app.client.errors import ErrorBody, PublishError, retry_after
from app.client.events import EventDraft, Published, optional_int
from app.client.options import TokenSource, bearer_headers, http_base

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3
RETRY_BASE_S = 0.25
RETRY_MAX_S = 5.0
Draft = EventDraft | Mapping[str, Any]


class Publisher(AsyncClosing):
    """Publishes events to one server over a pool of keep-alive connections.

    ``async with Publisher(url, token=...) as publisher: await publisher.publish(...)``
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource | None = None,
        headers: Mapping[str, str] | None = None,
        transport: Literal["http"] = "http",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        if transport != "http":
            raise ValueError(f"transport={transport!r}: only 'http' is available yet")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.url = http_base(url)
        self.transport = transport
        self._token = token
        self._retries = retries
        self._http = httpx.AsyncClient(
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=timeout_s,
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
        24 h) writes nothing new and returns the first answer."""
        single = isinstance(events, Mapping)
        if not single and not events:
            raise ValueError("publish at least one event")
        body = orjson.dumps(events if single else list(events))
        headers = await bearer_headers(self._token)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        answer = await self._post(body, headers, idempotency_key is not None)
        if single:
            return _receipt(answer)
        items = answer.get("events")
        return [_receipt(item) for item in items] if isinstance(items, list) else []

    async def _post(self, body: bytes, headers: dict[str, str], keyed: bool) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                response = await self._http.post(
                    self.url + "/api/events", content=body, headers=headers
                )
            except httpx.HTTPError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                failure = PublishError(None, None, f"publish failed: {exc!r}")
                if (never_sent or keyed) and attempt < self._retries:
                    await asyncio.sleep(_backoff(attempt, None))
                    attempt += 1
                    continue
                raise failure from exc
            if response.status_code == 201:
                parsed = orjson.loads(response.content)
                return parsed if isinstance(parsed, dict) else {}
            error = ErrorBody.parse(response.content)
            wait = retry_after(response.headers)
            failure = PublishError(response.status_code, error.error, error.detail, wait)
            passing = response.status_code == 429 or (keyed and response.status_code >= 500)
            if not passing or attempt >= self._retries:
                raise failure
            await asyncio.sleep(_backoff(attempt, wait))
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()


def _backoff(attempt: int, asked: float | None) -> float:
    if asked is not None:
        return asked
    cap = min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt)
    return random.uniform(cap / 2, cap)


def _receipt(item: object) -> Published:
    if isinstance(item, dict):
        ident = optional_int(item.get("id"))
        ts = item.get("ts")
        if ident is not None and isinstance(ts, str):
            return Published(ident, ts)
    raise PublishError(201, None, f"the server's answer has no id and ts: {item!r}"[:300])


@overload
async def publish(
    url: str,
    events: Draft,
    *,
    token: TokenSource | None = None,
    idempotency_key: str | None = None,
) -> Published: ...


@overload
async def publish(
    url: str,
    events: Sequence[Draft],
    *,
    token: TokenSource | None = None,
    idempotency_key: str | None = None,
) -> list[Published]: ...


async def publish(
    url: str,
    events: Draft | Sequence[Draft],
    *,
    token: TokenSource | None = None,
    idempotency_key: str | None = None,
) -> Published | list[Published]:
    """Publish once, with a connection of its own: for a one-off publish.
    Anything that publishes repeatedly should keep a :class:`Publisher`."""
    async with Publisher(url, token=token) as publisher:
        return await publisher.publish(events, idempotency_key=idempotency_key)
