"""What every transport gives the feed: a connection that is already past its
``connection_established``, and then batches of decoded messages.

A transport knows its wire format and nothing else: the cursor, the
de-duplication and the choice of transport are the feed's, so that a switch
from one transport to another is only a new connection opened at the cursor.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

import httpx

from app.client.errors import Down, ErrorBody, retry_after
from app.client.events import TRANSPORT_LABELS, Message, TransportName

MAX_ERROR_BODY = 4096


class Connection(Protocol):
    """One open stream; ``batches()`` ends by raising :class:`Down`."""

    @property
    def transport(self) -> TransportName: ...

    @property
    def established(self) -> Message:
        """The ``connection_established`` message (long-poll makes its own)."""
        ...

    @property
    def retry_hint_s(self) -> float | None:
        """The server's reconnection hint (SSE ``retry:``), if it sent one."""
        ...

    def batches(self) -> AsyncGenerator[list[Message], None]: ...

    async def aclose(self) -> None:
        """Release the connection (its ``batches()`` is closed first)."""
        ...


async def refused(transport: TransportName, response: httpx.Response) -> Down:
    """The :class:`Down` for an HTTP answer that is not the stream asked for."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= MAX_ERROR_BODY:
            break
    parsed = ErrorBody.parse(body)
    label = TRANSPORT_LABELS[transport]
    detail = f"{label} answered HTTP {response.status_code}"
    if parsed.error:
        detail += f" {parsed.error}"
    if parsed.detail:
        detail += f": {parsed.detail}"
    return Down(
        transport,
        detail,
        status=response.status_code,
        error=parsed.error,
        retry_after=retry_after(response.headers),
    )


def transport_failure(transport: TransportName, exc: httpx.HTTPError, during: str) -> Down:
    """A request that failed below HTTP: unreachable, reset, timed out."""
    label = TRANSPORT_LABELS[transport]
    unreachable = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    what = exc.__class__.__name__ + (f": {exc}" if str(exc) else "")
    return Down(transport, f"{label} {during} failed ({what})", network=unreachable)


def expect_established(transport: TransportName, messages: list[Message]) -> Message:
    """The stream's first message must be ``connection_established``; a server
    that is shutting down or overloaded sends a ``stream_error`` instead."""
    first = messages[0] if messages else {}
    if first.get("type") == "connection_established":
        return first
    label = TRANSPORT_LABELS[transport]
    error = first.get("error")
    reconnect_ms = first.get("reconnect_after_ms")
    return_after = reconnect_ms / 1000 if isinstance(reconnect_ms, int | float) else None
    raise Down(
        transport,
        f"{label} sent {first.get('type')!r} before connection_established"
        + (f": {error} {first.get('detail') or ''}" if error else ""),
        error=error if isinstance(error, str) else None,
        retry_after=return_after,
    )
