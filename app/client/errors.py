"""The client's exceptions: what a caller may catch, and the internal ``Down``.

A caller sees :class:`FeedRefused` (following cannot work as asked: fix the
token, the channel or the cursor) and :class:`PublishError`; passing
problems (a restart, a dropped connection, overload) never reach it, since
the feed resumes by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from app.client.events import TransportName


class LivefeedError(Exception):
    """Base of every error this client raises."""


class FeedRefused(LivefeedError):
    """The server (or every transport) refuses this feed for a reason that
    reconnecting will not fix: credentials, a malformed channel or cursor."""

    def __init__(self, status: int | None, error: str | None, detail: str) -> None:
        super().__init__(detail)  # it names the transport, the status and the server's words
        self.status = status
        self.error = error
        self.detail = detail


class PublishError(LivefeedError):
    """A publish that was refused, or whose outcome stayed unknown after the
    retries allowed (only safe ones are made: see :class:`Publisher`)."""

    def __init__(
        self, status: int | None, error: str | None, detail: str, retry_after: float | None = None
    ) -> None:
        super().__init__(detail if status is None else f"HTTP {status} {error or ''}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """An HTTP error answer: Livefeed's ``{"error","detail"}``, or whatever a
    proxy in the way said (``error`` is then ``None``)."""

    error: str | None
    detail: str

    @classmethod
    def parse(cls, body: bytes) -> ErrorBody:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            return cls(parsed["error"], str(parsed.get("detail") or ""))
        return cls(None, body[:200].decode("utf-8", "replace").strip())


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (the delta form; Livefeed sends no dates).
    ``headers`` is case-insensitive (httpx's and websockets' both are)."""
    value = headers.get("retry-after")
    return float(value) if value and value.isdigit() else None


class Down(Exception):
    """One connection attempt failed or a connection ended: the facts the
    ladder decides from (:mod:`app.client.ladder`)."""

    def __init__(
        self,
        transport: TransportName,
        detail: str,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
        network: bool = False,
        silent: bool = False,
        close_code: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.transport = transport
        self.detail = detail
        self.status = status
        self.error = error
        self.retry_after = retry_after
        self.network = network  # the server could not be reached at all
        self.silent = silent  # nothing arrived for too long
        self.close_code = close_code
