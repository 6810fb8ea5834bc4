"""Server-Sent Events: ``GET /sse/<channels>``, read with httpx and httpx-sse.

Every message's ``data:`` is the JSON of the envelope or control message; the
``event:`` name repeats its type, so only the data is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import orjson
from httpx_sse import EventSource, ServerSentEvent

from app.client.errors import Down
from app.client.events import Message, TransportName
from app.client.options import FeedOptions
from app.client.transports.base import expect_established, refused, transport_failure


def _message(sse: ServerSentEvent) -> list[Message]:
    try:
        parsed = orjson.loads(sse.data)
    except orjson.JSONDecodeError:
        return []
    return [parsed] if isinstance(parsed, dict) else []


class SseConnection:
    transport: TransportName = "sse"

    def __init__(
        self,
        response: httpx.Response,
        events: AsyncIterator[ServerSentEvent],
        established: Message,
        retry_ms: int | None,
    ) -> None:
        self._response = response
        self._events = events
        self.established = established
        self._retry_ms = retry_ms

    @property
    def retry_hint_s(self) -> float | None:
        return None if self._retry_ms is None else self._retry_ms / 1000

    async def batches(self) -> AsyncGenerator[list[Message], None]:
        try:
            async for sse in self._events:
                if sse.retry is not None:
                    self._retry_ms = sse.retry
                yield _message(sse)
        except httpx.HTTPError as exc:
            raise transport_failure("sse", exc, "stream") from exc
        raise Down("sse", "SSE stream ended")

    async def aclose(self) -> None:
        await self._response.aclose()


async def open_sse(
    options: FeedOptions, http: httpx.AsyncClient, cursor: int | None
) -> SseConnection:
    """Request the stream; return once ``connection_established`` is read."""
    headers = {
        **await options.request_headers(),
        "Accept": "text/event-stream",
        "Cache-Control": "no-store",
    }
    request = http.build_request(
        "GET",
        options.stream_url("sse", cursor),
        headers=headers,
        timeout=httpx.Timeout(options.connect_timeout_s, read=None),  # the feed watches reads
    )
    response: httpx.Response | None = None
    try:
        async with asyncio.timeout(options.connect_timeout_s):
            response = await http.send(request, stream=True)
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200:
                raise await refused("sse", response)
            if not content_type.startswith("text/event-stream"):
                raise Down(
                    "sse",
                    f"SSE answered {content_type or 'no content type'}, not an event stream",
                    status=response.status_code,
                )
            events = EventSource(response).aiter_sse()
            retry_ms = None
            async for sse in events:
                retry_ms = sse.retry if sse.retry is not None else retry_ms
                if sse.data:
                    try:
                        established = expect_established("sse", _message(sse))
                    except Down as down:  # overload or shutdown: "retry:" says when
                        if down.retry_after is None and retry_ms is not None:
                            down.retry_after = retry_ms / 1000
                        raise
                    return SseConnection(response, events, established, retry_ms)
            raise Down("sse", "SSE stream ended before connection_established")
    except BaseException as exc:
        if response is not None:
            await response.aclose()
        if isinstance(exc, httpx.HTTPError):
            raise transport_failure("sse", exc, "request") from exc
        if isinstance(exc, TimeoutError):
            raise Down(
                "sse", f"SSE sent no connection_established in {options.connect_timeout_s:g} s"
            ) from exc
        raise
