"""Serving ``app.sse.EventSourceResponse`` both ways it is used, for the SSE helper tests.

``SERVERS`` builds an ASGI app around a response factory: a Quart view that
returns the response, or a plain ASGI app that calls it. ``served`` runs such
an app on a real Hypercorn server on a loopback port the kernel chose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from app.sse import EventSourceResponse
from tests.support import listening_socket

ResponseFactory = Callable[[], EventSourceResponse]


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with Hypercorn on a loopback port of its own; yield its base URL."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the socket from here
    config.graceful_timeout = 1
    shutdown = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=shutdown.wait))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        shutdown.set()
        await asyncio.wait_for(server, 5)


def quart_app(make_response: ResponseFactory) -> Quart:
    """A Quart app whose GET /sse view returns ``make_response()``."""
    app = Quart(__name__)

    @app.get("/sse")
    async def sse() -> EventSourceResponse:
        return make_response()

    return app


def asgi_app(make_response: ResponseFactory) -> Any:
    """A plain ASGI app (with lifespan) that calls ``make_response()`` for each request."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await make_response()(scope, receive, send)

    return app


SERVERS = [pytest.param(quart_app, id="quart"), pytest.param(asgi_app, id="asgi")]


def http_scope(method: str = "GET") -> dict[str, Any]:
    """A complete HTTP scope, for calling an app directly with a scripted send/receive."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/sse",
        "raw_path": b"/sse",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }


async def never_disconnects() -> dict[str, Any]:
    """An ASGI ``receive`` for a client that stays connected and sends nothing."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")
