"""Small plain-ASGI helpers shared by the stream endpoints.

``/sse`` and ``/ws`` are served as plain ASGI in front of the Quart app:
Quart's streaming response and ``websocket.send`` add a timeout wrapper, a
signal and a loop pass per write, which the fan-out path cannot afford.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from app.config import Settings
from app.errors import JSON_HEADERS, ApiError
from app.security import client_address, is_trusted_proxy

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str | None:
    """The last value of a (lower-case) request header, decoded as Latin-1."""
    value = None
    for key, raw in scope.get("headers", ()):
        if key == name:
            value = raw.decode("latin-1")
    return value


def query_params(scope: Scope) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    raw = scope.get("query_string", b"").decode("utf-8", "replace")
    for key, value in parse_qsl(raw, keep_blank_values=True):
        params.setdefault(key, []).append(value)
    return params


def scope_client(scope: Scope, settings: Settings) -> str:
    """The client's address for limits and the loopback rule (proxy-aware)."""
    peer = (scope.get("client") or (None,))[0]
    return client_address(peer, header(scope, b"x-forwarded-for"), settings)


def request_origin_parts(scope: Scope, settings: Settings) -> tuple[str, str | None]:
    """The scheme and host the browser used: behind a trusted proxy (TLS terminated
    there) those are X-Forwarded-Proto/-Host, otherwise the request's own."""
    scheme, host = scope.get("scheme", "http"), header(scope, b"host")
    peer = (scope.get("client") or (None,))[0]
    if peer is not None and is_trusted_proxy(peer, settings):
        scheme = header(scope, b"x-forwarded-proto") or scheme
        host = header(scope, b"x-forwarded-host") or host
    return scheme, host


def jitter_ms(base_ms: int) -> int:
    """Spread reconnects over [base, 2*base) so a restart does not cause a storm."""
    return base_ms + random.randrange(max(base_ms, 1))


def _encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def send_error(send: Send, error: ApiError) -> None:
    """Answer an HTTP request with the JSON error body."""
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [*JSON_HEADERS, *_encode_headers(error.headers.items())],
        }
    )
    await send({"type": "http.response.body", "body": error.body()})


async def refuse_websocket(scope: Scope, send: Send, error: ApiError) -> None:
    """Refuse a handshake with a real HTTP answer whose body says why (when the
    server supports it; otherwise a policy-violation close)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status,
                "headers": [*JSON_HEADERS, *_encode_headers(error.headers.items())],
            }
        )
        await send({"type": "websocket.http.response.body", "body": error.body()})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.detail[:120]})


async def race(main: Coroutine[Any, Any, Any], *watchers: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` in this task and each watcher beside it, until one finishes; stop
    the others and return what the first returned (or raise what it raised).

    ``main`` (a stream's pump) runs in the caller's task rather than a task of its
    own: an open stream holds one task less, and no ``asyncio.wait`` bookkeeping.
    A watcher that finishes first cancels this task; that cancellation is taken
    back here.  ``gather`` would leave the other side running when one ends.
    """
    current = asyncio.current_task()
    assert current is not None
    first: list[asyncio.Task[Any]] = []

    def finished(task: asyncio.Task[Any]) -> None:
        if not first and not task.cancelled():
            first.append(task)
            current.cancel()

    tasks = [asyncio.ensure_future(watcher) for watcher in watchers]
    for task in tasks:
        task.add_done_callback(finished)
    try:
        result = await main
    except asyncio.CancelledError:
        if not first or current.cancelling() > 1:
            raise  # cancelled from outside, not by a watcher
        current.uncancel()
        return first[0].result()
    finally:
        for task in tasks:
            task.remove_done_callback(finished)
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    if first:  # a watcher finished while ``main`` was returning
        current.uncancel()
    return result
