"""Run the app under Hypercorn from Python, with a graceful shutdown.

On SIGTERM/SIGINT every stream is first told to come back later (SSE
``retry:`` + ``error``, WebSocket frame + close 1012, with jittered delays so
a restart does not cause a reconnect storm); only then does Hypercorn stop
and wait for connections to finish, at most ``GRACEFUL_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket

from hypercorn.asyncio import serve as hypercorn_serve

from app.application import create_app
from app.banner import start_line
from app.config import Settings
from app.hypercorn_fixes import install as install_hypercorn_fixes
from app.hypercorn_fixes.connection import LivefeedConfig
from app.hypercorn_fixes.serve import serve
from app.runtime import RUNTIME_KEY, Runtime

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 10.0
SEND_TIMEOUT_MARGIN_S = 2.0
KEEP_ALIVE_TIMEOUT_S = 5.0
BACKLOG = 2048
MAX_CLIENT_FRAME_BYTES = 1024 * 1024  # a publish; other messages: 64 KiB (streams/ws.py)
LISTEN_FD_ENV = "LIVEFEED_LISTEN_FD"  # the listening socket a worker inherits
WAKE_DIR_ENV = "LIVEFEED_WAKE_DIR"  # where a worker nudges its siblings (Settings.wake_dir)


def listening_socket(
    settings: Settings, port: int | None = None, *, balanced: bool = False
) -> socket.socket:
    """Bind and listen, here rather than in Hypercorn, so the port is known before
    serving: with port 0 the kernel picks a free one and nobody can take it between
    choosing and binding.  ``balanced`` sockets (one per worker, on ``port``) share
    the port with SO_REUSEPORT, and the kernel spreads new connections over them."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if balanced:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((settings.host, settings.port if port is None else port))
    sock.listen(BACKLOG)
    return sock


def bound_url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def announce(sock: socket.socket, scheme: str = "http") -> None:
    """One line on stdout (logs go to stderr) saying where we listen: how a caller
    that asked for ``--port 0`` learns the port (and, with TLS, to speak https)."""
    print(f"listening on {bound_url(sock, scheme)}", flush=True)


def hypercorn_config(
    settings: Settings, sock: socket.socket | None = None
) -> LivefeedConfig:
    """Hypercorn's settings; with ``sock`` it serves that socket, which it owns from
    here on (detached, so it is closed once, by Hypercorn)."""
    config = LivefeedConfig()
    # past our own write timeout (which says goodbye first), Hypercorn's last writes
    config.send_timeout_s = settings.write_timeout_s + SEND_TIMEOUT_MARGIN_S
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"fd://{sock.detach()}"] if sock else [f"{host}:{settings.port}"]
    config.backlog = BACKLOG  # the default 100 drops a dashboard fleet reconnecting at once
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_S
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.websocket_max_message_size = MAX_CLIENT_FRAME_BYTES  # bigger frames close with 1009
    config.read_timeout = None  # a read timeout would cut quiet streams
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handlers
    if settings.tls is not None:
        # One port serves HTTPS and WSS; ALPN offers h2 first, so browsers multiplex
        # every SSE stream of a page over one connection (HTTP/1.1 allows 6 per host).
        config.certfile = settings.tls.cert
        config.keyfile = settings.tls.key
        config.alpn_protocols = ["h2", "http/1.1"]
        # A silent connection goes after keep-alive whether or not it finished TLS
        # (Hypercorn's default waits 60 s for a handshake that never comes).
        config.ssl_handshake_timeout = KEEP_ALIVE_TIMEOUT_S
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
    """Serve ``sock`` (a worker's, inherited), or a socket bound and announced here."""
    fixed = install_hypercorn_fixes()  # JSON errors, no h2c upgrade, no compression, …
    app = create_app(settings)
    worker = sock is not None
    if sock is None:
        sock = listening_socket(settings)
        announce(sock, settings.scheme)
    log.info("%s", start_line(settings, worker=worker, port=sock.getsockname()[1]))
    # The app's ASGI callable itself (the stream router in front of Quart), not the
    # Quart object, whose __call__ would be one more frame kept by every open stream.
    config = hypercorn_config(settings, sock)
    until_signalled = lambda: _until_signalled(app.extensions)  # noqa: E731
    if fixed:
        await serve(app.asgi_app, config, until_signalled)
    else:  # Hypercorn's own connections, with none of the fixes
        await hypercorn_serve(app.asgi_app, config, shutdown_trigger=until_signalled, mode="asgi")


def run(settings: Settings, *, worker: bool = False) -> None:
    """Serve in this process; a worker serves the socket its supervisor bound, and
    nudges its siblings through the supervisor's directory."""
    sock = None
    if worker:
        sock = socket.socket(fileno=int(os.environ[LISTEN_FD_ENV]))
        settings = dataclasses.replace(settings, wake_dir=os.environ.get(WAKE_DIR_ENV))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_forever(settings, sock))
    else:
        uvloop.run(serve_forever(settings, sock))
