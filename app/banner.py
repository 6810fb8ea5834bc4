"""The line a person reads when the server starts: where to look, what is running.

A quick start serves demo events, so the line says so and how to stop them;
it names the dashboard's URL, which is what a newcomer opens first.
"""

from __future__ import annotations

import os

from app.config import Settings

ANY_ADDRESS = ("0.0.0.0", "::", "")


def base_url(settings: Settings, port: int | None = None) -> str:
    """The URL a browser on this machine uses: loopback when listening everywhere."""
    host = "127.0.0.1" if settings.host in ANY_ADDRESS else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"{settings.scheme}://{host}:{settings.port if port is None else port}"


def _store(settings: Settings) -> str:
    """The database URL without credentials."""
    return settings.database_url.split("@")[-1]


def start_line(settings: Settings, *, worker: bool = False, port: int | None = None) -> str:
    """One line: URL, dashboard, store, and the demo events with how to turn them off.

    ``port`` is the port actually bound when it differs from the setting (port 0);
    a worker of ``--workers N`` says less, since the supervisor said the rest.
    """
    url = base_url(settings, port)
    if worker:
        return f"worker pid {os.getpid()} serving {url} (store: {_store(settings)})"
    workers = f" with {settings.workers} workers" if settings.workers > 1 else ""
    line = (
        f"Livefeed on {url}{workers}: dashboard at {url}/dashboard/ "
        f"(store: {_store(settings)}, pid {os.getpid()})"
    )
    if settings.demo_rate > 0:
        line += (
            f"; demo events are flowing at {settings.demo_rate:g}/s, "
            "turn them off with --demo-rate 0 (LIVEFEED_DEMO_RATE=0)"
        )
    return line
