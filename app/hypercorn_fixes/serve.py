"""Serve an ASGI app with Hypercorn's protocols on :class:`Connection` protocols.

What ``hypercorn.asyncio.serve`` does for one worker (the lifespan, the listening
sockets, a graceful shutdown), except that each connection is a protocol object
rather than a task over a stream reader and writer (see
:mod:`~app.hypercorn_fixes.connection`), and that the app is called directly, not
through Hypercorn's ``ASGIWrapper`` frame, which every open request kept.
Livefeed sets neither ``max_requests`` nor QUIC binds, and neither is served here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from app.hypercorn_fixes.connection import Connection, LivefeedConfig, OpenConnections
from app.hypercorn_fixes.lean import LeanWorkerContext


class DirectASGI:
    """The app as Hypercorn's tasks call it.  The call returns the app's own awaitable:
    an ``async def`` here would be one more suspended frame under every request."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    def __call__(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> Awaitable[None]:
        return self.app(scope, receive, send)


async def serve(
    app: ASGIFramework,
    config: LivefeedConfig,
    shutdown_trigger: Callable[[], Awaitable[None]],
) -> None:
    """Serve until ``shutdown_trigger`` returns, then stop accepting, let open
    connections finish for ``config.graceful_timeout`` and reset what is left."""
    loop = asyncio.get_running_loop()
    wrapped: Any = DirectASGI(app)  # Hypercorn's AppWrapper, whose __call__ is async
    state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, loop, state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()
    if lifespan_task.done() and (error := lifespan_task.exception()) is not None:
        raise error

    context = LeanWorkerContext(None)
    open_connections = OpenConnections()

    def connection() -> Connection:
        return Connection(wrapped, config, context, state, open_connections)

    sockets = config.create_sockets()
    servers = []
    if sockets.secure_sockets:
        ssl = config.create_ssl_context()
        for sock in sockets.secure_sockets:
            servers.append(
                await loop.create_server(
                    connection,
                    sock=sock,
                    backlog=config.backlog,
                    ssl=ssl,
                    ssl_handshake_timeout=config.ssl_handshake_timeout,
                )
            )
    for sock in sockets.insecure_sockets:
        servers.append(await loop.create_server(connection, sock=sock, backlog=config.backlog))
    try:
        await shutdown_trigger()
    finally:
        await context.terminated.set()  # no connection starts another request
        open_connections.close_idle()
        for server in servers:
            server.close()
        try:
            async with asyncio.timeout(config.graceful_timeout):
                await open_connections.all_closed()
        except TimeoutError:
            open_connections.abort()
        for server in servers:
            await server.wait_closed()
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lifespan_task
