"""A browser's own EventSource against the server's overload answer (hardening, FAULTS 35).

Any non-200 answer makes EventSource give up for good (WHATWG HTML §9.2), so a
full server must answer 200 with a retry hint and a ``stream_error`` event; the
browser then comes back by itself once the overload has passed.  The event is
not named ``error``: that would fire the page's own ``onerror`` while the
stream is open, and a page that closes on error would never come back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect

from tests.support import ServerProcess

WATCH_EVENTSOURCE = """() => {
  window.__es = { overloaded: 0, established: 0, closed: false, errorsWhileOpen: 0, errors: 0 };
  const source = new EventSource('/sse/validation_updates');
  source.addEventListener('stream_error', (event) => {
    if (JSON.parse(event.data).error === 'overloaded') window.__es.overloaded += 1;
  });
  source.onerror = (event) => {
    window.__es.errors += 1;
    // the browser's own error comes with the connection lost (CONNECTING) or given up
    // (CLOSED); one while OPEN, or carrying data, is a server event named "error"
    if (source.readyState === EventSource.OPEN || event.data !== undefined) {
      window.__es.errorsWhileOpen += 1;
    }
    if (source.readyState === EventSource.CLOSED) window.__es.closed = true;
  };
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
    """Chromium's EventSource gets 200 + stream_error 'overloaded', keeps retrying, and
    connects once a slot is free: the reconnect loop is never broken for a passing
    problem, and the page's onerror fires only for the dropped connection itself."""
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
        assert page.evaluate("() => window.__es.errors") >= 1  # the overload's stream ended
        assert page.evaluate("() => window.__es.errorsWhileOpen") == 0
    finally:
        context.close()
