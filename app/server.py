"""Run the app under Hypercorn from Python, with a graceful shutdown.

On SIGTERM/SIGINT every stream is first told to come back later (SSE
``retry:`` + ``error``, WebSocket frame + close 1012, with jittered delays so
a restart does not cause a reconnect storm); only then does Hypercorn stop
and wait for connections to finish, at most ``GRACEFUL_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config

from app.application import create_app
from app.config import Settings
from app.hypercorn_fixes import install as install_hypercorn_fixes
from app.runtime import RUNTIME_KEY, Runtime

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 10.0
KEEP_ALIVE_TIMEOUT_S = 5.0
BACKLOG = 2048
MAX_CLIENT_FRAME_BYTES = 1024 * 1024  # a publish; other messages: 64 KiB (streams/ws.py)


def shared_port_socket(settings: Settings) -> socket.socket:
    """A listening socket with SO_REUSEPORT: each worker binds the same port and
    the kernel spreads new connections over them."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((settings.host, settings.port))
    return sock


def hypercorn_config(settings: Settings, sock: socket.socket | None = None) -> Config:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"fd://{sock.fileno()}"] if sock else [f"{host}:{settings.port}"]
    config.backlog = BACKLOG  # the default 100 drops a dashboard fleet reconnecting at once
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_S
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.websocket_max_message_size = MAX_CLIENT_FRAME_BYTES  # bigger frames close with 1009
    config.read_timeout = None  # a read timeout would cut quiet streams
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handlers
    return config


async def _until_signalled(app_extensions: dict[str, object]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: telling stream clients to reconnect later")
    runtime = app_extensions.get(RUNTIME_KEY)
    if isinstance(runtime, Runtime):
        runtime.begin_shutdown()
        await asyncio.sleep(0.05)  # let the farewell frames reach the sockets


async def serve_forever(settings: Settings, sock: socket.socket | None = None) -> None:
    install_hypercorn_fixes()  # JSON bodies for Hypercorn's own errors; h2c idle timer
    app = create_app(settings)
    log.info(
        "Livefeed on http://%s:%d (store: %s, pid %d)",
        settings.host,
        settings.port,
        settings.database_url.split("@")[-1],
        os.getpid(),
    )
    await serve(
        app,
        hypercorn_config(settings, sock),
        shutdown_trigger=lambda: _until_signalled(app.extensions),
    )


def run(settings: Settings, *, worker: bool = False) -> None:
    """Serve in this process; a worker shares its port with its siblings."""
    sock = shared_port_socket(settings) if worker else None
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_forever(settings, sock))
    else:
        uvloop.run(serve_forever(settings, sock))
