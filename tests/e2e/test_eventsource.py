"""A browser's own EventSource against the server's overload answer (hardening, FAULTS 35).

Any non-200 answer makes EventSource give up for good (WHATWG HTML §9.2), so a
full server must answer 200 with a retry hint and an error event; the browser
then comes back by itself once the overload has passed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect

from tests.support import ServerProcess

WATCH_EVENTSOURCE = """() => {
  window.__es = { overloaded: 0, established: 0, closed: false };
  const source = new EventSource('/sse/validation_updates');
  source.addEventListener('error', (event) => {
    if (event.data && JSON.parse(event.data).error === 'overloaded') window.__es.overloaded += 1;
    if (source.readyState === EventSource.CLOSED) window.__es.closed = true;
  });
  source.addEventListener('connection_established', () => { window.__es.established += 1; });
}"""


def hold_websocket(server: ServerProcess, release: threading.Event) -> threading.Thread:
    """Occupy the server's only stream slot until ``release`` is set."""
    held = threading.Event()

    async def hold() -> None:
        async with connect(server.ws_url + "/ws/validation_updates") as ws:
            await ws.recv()
            held.set()
            await asyncio.to_thread(release.wait)

    thread = threading.Thread(target=lambda: asyncio.run(hold()))
    thread.start()
    assert held.wait(10)
    return thread


def test_eventsource_survives_overload_and_reconnects_when_it_passes(
    start_server: Callable[..., ServerProcess], browser: Any
):
    """Chromium's EventSource gets 200 + error 'overloaded', keeps retrying, and connects
    once a slot is free: the reconnect loop is never broken for a passing problem."""
    server = start_server(LIVEFEED_MAX_CONNECTIONS="1")
    release = threading.Event()
    holder = hold_websocket(server, release)
    context = browser.new_context()  # /docs cannot load its CDN script here; that is fine
    try:
        page = context.new_page()
        page.goto(server.url + "/docs")  # same origin, and a page without connect-src limits
        page.evaluate(WATCH_EVENTSOURCE)
        page.wait_for_function("() => window.__es.overloaded >= 1", timeout=10_000)
        assert page.evaluate("() => window.__es.established") == 0
    finally:
        release.set()
        holder.join(10)
    try:
        page.wait_for_function("() => window.__es.established >= 1", timeout=20_000)
        assert page.evaluate("() => window.__es.closed") is False
    finally:
        context.close()
