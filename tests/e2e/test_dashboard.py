"""The dashboard in real headless Chromium against a real server.

Each test starts its own server (``server`` / ``start_server`` from
``tests/conftest.py``), opens ``/dashboard/`` in a fresh browser context and
checks what a person would see: the status badge, the feed, the counters.
The browser is Debian's ``/usr/bin/chromium`` driven by Playwright; in CI
(``CI=true``) a missing browser is a failure, elsewhere the tests skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support import ROOT, SLOW, eventually, ms

if TYPE_CHECKING:  # the browser fixture checks that Playwright is there
    from playwright.sync_api import BrowserContext, Page, WebSocketRoute

ARTIFACTS = Path(__file__).parent / "artifacts"
LIVE_WS = "Live · WebSocket"
LIVE_SSE = "Live · SSE (fallback)"
LIVE_POLL = "Live · polling"
KNOWN_TYPES = [
    "validation_created",
    "validation_approved",
    "validation_rejected",
    "validation_enhanced",
    "recommendation_created",
    "recommendation_approved",
    "recommendation_rejected",
    "recommendation_applied",
    "workflow_started",
    "workflow_completed",
    "workflow_failed",
]


# --------------------------------------------------------------------------- fixtures


# --------------------------------------------------------------------------- helpers


def open_dashboard(context: BrowserContext, url: str, expect: str | None = LIVE_WS) -> Page:
    page = context.new_page()
    page.goto(url + "/dashboard/")
    if expect:
        wait_status(page, expect)
    return page


def wait_status(page: Page, text: str, timeout_s: float = 15) -> None:
    page.wait_for_function(
        "t => document.querySelector('#status').textContent === t", arg=text, timeout=ms(timeout_s)
    )


def wait_event(page: Page, event_id: int, timeout_s: float = 5) -> None:
    page.wait_for_selector(
        f'#feed [data-event-id="{event_id}"]', state="attached", timeout=ms(timeout_s)
    )


def wait_total(page: Page, total: int, timeout_s: float = 20) -> None:
    page.wait_for_function(
        "n => Number(document.querySelector('#total-count').textContent) >= n",
        arg=total,
        timeout=ms(timeout_s),
    )


def feed_ids(page: Page) -> list[int]:
    return page.eval_on_selector_all(
        "#feed [data-event-id]", "rows => rows.map(r => Number(r.dataset.eventId))"
    )


def total(page: Page) -> int:
    return int(page.text_content("#total-count") or "0")


def counts(page: Page) -> dict[str, int]:
    return page.eval_on_selector_all(
        "#counters [data-type]",
        "items => Object.fromEntries(items.map(i => [i.dataset.type, Number(i.dataset.count)]))",
    )


def events(n: int, *, types: list[str] | None = None, prefix: str = "wf_") -> list[dict[str, Any]]:
    kinds = types or KNOWN_TYPES
    return [
        {
            "type": kinds[i % len(kinds)],
            "workflow_id": f"{prefix}{i % 5}",
            "data": {"file": f"docs/page-{i}.md", "n": i},
        }
        for i in range(n)
    ]


def connections(url: str) -> dict[str, int]:
    return httpx.get(url + "/api/stats", timeout=5).json()["connections"]


def block_websocket(page: Page) -> None:
    """Every WebSocket the page opens is closed at once, before any frame."""
    page.route_web_socket("**/ws/**", lambda ws: ws.close(code=4000, reason="blocked by the test"))


def assert_exactly_once_in_order(page: Page, expected: list[int]) -> None:
    shown = feed_ids(page)
    assert shown == sorted(shown, reverse=True), "feed is not newest first"
    assert len(shown) == len(set(shown)), "an event is shown twice"
    missing = sorted(set(expected) - set(shown))
    assert not missing, f"events never shown: {missing[:20]}"


class HostRewritingProxy:
    """A reverse proxy that sets ``Host`` to the upstream's, as nginx does by
    default (``proxy_set_header Host $proxy_host``). The browser's ``Origin``
    is the proxy's, so the server refuses the WebSocket handshake by origin
    while plain HTTP (SSE, long-poll) still works. With ``flush_every_s`` it
    also buffers responses, like ``proxy_buffering on``."""

    def __init__(self, upstream_port: int, flush_every_s: float | None = None) -> None:
        self.upstream_port = upstream_port
        self.flush_every_s = flush_every_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HostRewritingProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._handle(reader, writer)
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[:-2]
            upgrade = any(line.lower().startswith("upgrade:") for line in lines)
            out = [lines[0]]
            for line in lines[1:]:
                name = line.split(":", 1)[0].strip().lower()
                if name == "host" or (name == "connection" and not upgrade):
                    continue
                out.append(line)
            out.insert(1, f"Host: 127.0.0.1:{self.upstream_port}")
            if not upgrade:
                out.append("Connection: close")
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
            upstream_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            await asyncio.gather(
                self._pipe(reader, upstream_writer, None),
                self._pipe(upstream_reader, writer, self.flush_every_s),
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flush_every_s: float | None
    ) -> None:
        pending = bytearray()
        last_flush = time.monotonic()
        try:
            while True:
                if flush_every_s is None:
                    data = await reader.read(65536)
                else:
                    wait = max(0.01, flush_every_s - (time.monotonic() - last_flush))
                    try:
                        data = await asyncio.wait_for(reader.read(65536), wait)
                    except TimeoutError:
                        data = None
                if data == b"":
                    break
                if data:
                    pending += data
                if flush_every_s is None or time.monotonic() - last_flush >= flush_every_s:
                    if pending:
                        writer.write(bytes(pending))
                        pending.clear()
                        await writer.drain()
                    last_flush = time.monotonic()
            if pending:
                writer.write(bytes(pending))
                await writer.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()


# --------------------------------------------------------------------------- tests


def test_root_redirects_and_page_is_served_with_a_strict_csp(server: Any) -> None:
    """`/` redirects to `/dashboard/`, which sends CSP, nosniff and no-referrer."""
    root = httpx.get(server.url + "/", timeout=5)
    assert root.status_code == 302
    assert root.headers["location"].endswith("/dashboard/")
    page = httpx.get(server.url + "/dashboard/", timeout=5)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in page.text and " style=" not in page.text


def test_goes_live_over_websocket_and_shows_an_event_within_2s(
    server: Any, context: BrowserContext
) -> None:
    """The page shows `Live · WebSocket`, then a published event within 2 s."""
    page = context.new_page()
    started = time.monotonic()
    page.goto(server.url + "/")
    wait_status(page, LIVE_WS)
    load_to_live = time.monotonic() - started
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load-to-live.txt").write_text(f"{load_to_live * 1000:.0f} ms\n")
    [event_id] = server.publish({"type": "validation_created", "workflow_id": "wf_1", "data": {}})
    published = time.monotonic()
    wait_event(page, event_id, timeout_s=2)
    assert time.monotonic() - published < 2 * SLOW
    assert load_to_live < 10 * SLOW


def test_blocked_websocket_falls_back_to_sse_with_a_reason(
    server: Any, context: BrowserContext
) -> None:
    """WebSocket closed before `connection_established`: SSE, the reason shown, events flow."""
    page = context.new_page()
    block_websocket(page)
    page.goto(server.url + "/dashboard/")
    wait_status(page, LIVE_SSE)
    page.click("#status")
    reason = page.text_content("#status-reason") or ""
    assert "WebSocket" in reason and page.is_visible("#status-reason")
    assert page.get_attribute("#status", "title") == reason
    [event_id] = server.publish({"type": "validation_approved", "workflow_id": "wf_2"})
    wait_event(page, event_id, timeout_s=3)


def test_client_returns_to_websocket_when_it_recovers(server: Any, context: BrowserContext) -> None:
    """The library retries the better transport while on a fallback, without losing events."""
    page = context.new_page()
    blocked = [True]

    def maybe_block(ws: WebSocketRoute) -> None:
        if blocked[0]:
            ws.close(code=4000, reason="blocked by the test")
        else:
            ws.connect_to_server()

    page.route_web_socket("**/ws/**", maybe_block)
    # A second client beside the dashboard's own: the library used by another page.
    page.goto(server.url + "/dashboard/")
    page.evaluate(
        """async () => {
          const { LivefeedClient } = await import('/static/livefeed-client.js');
          const options = { upgradeIntervalMs: 1000, share: false, storage: null };
          const client = new LivefeedClient(options);
          window.seen = [];
          window.transports = [];
          client.addEventListener('event', (e) => seen.push(e.detail.id));
          client.addEventListener('status', (e) => {
            if (e.detail.state === 'live') transports.push(e.detail.transport);
          });
          client.start();
        }"""
    )
    page.wait_for_function("() => transports.includes('sse')", timeout=ms(10))
    first = server.publish(events(3))
    page.wait_for_function("n => seen.length >= n", arg=3, timeout=ms(5))
    blocked[0] = False
    page.wait_for_function("() => transports.at(-1) === 'websocket'", timeout=ms(15))
    second = server.publish(events(3))
    page.wait_for_function("n => seen.length >= n", arg=6, timeout=ms(5))
    page.wait_for_timeout(300)
    assert page.evaluate("seen") == first + second


def test_websocket_refused_by_origin_names_the_origin_and_uses_sse(
    start_server: Callable[..., Any], context: BrowserContext
) -> None:
    """Behind a Host-rewriting proxy the server refuses the origin; the page says so."""
    server = start_server(LIVEFEED_ALLOWED_ORIGINS="http://other.example")
    with HostRewritingProxy(server.port) as proxy:
        page = open_dashboard(context, proxy.url, expect=LIVE_SSE)
        reason = page.text_content("#status-reason") or ""
        assert "origin" in reason and proxy.url in reason, reason
        [event_id] = server.publish({"type": "workflow_started", "workflow_id": "wf_3"})
        wait_event(page, event_id, timeout_s=3)
        page.close()


def test_websocket_and_sse_blocked_falls_back_to_polling(
    server: Any, context: BrowserContext
) -> None:
    """With both streams blocked the page long-polls and events still arrive."""
    page = context.new_page()
    block_websocket(page)
    page.route("**/sse/**", lambda route: route.abort())
    page.goto(server.url + "/dashboard/")
    wait_status(page, LIVE_POLL)
    assert "SSE" in (page.text_content("#status-reason") or "")
    ids = server.publish(events(3))
    for event_id in ids:
        wait_event(page, event_id, timeout_s=3)
    assert_exactly_once_in_order(page, ids)


def test_buffering_proxy_is_detected_and_polling_used(
    start_server: Callable[..., Any], context: BrowserContext
) -> None:
    """SSE heartbeats that arrive in bursts mean a buffering proxy: the page moves to polling."""
    server = start_server(LIVEFEED_HEARTBEAT_S="1", LIVEFEED_ALLOWED_ORIGINS="http://other.example")
    with HostRewritingProxy(server.port, flush_every_s=3) as proxy:
        page = open_dashboard(context, proxy.url, expect=LIVE_POLL)
        log = page.text_content("#connection-log") or ""
        assert "buffer" in log, log
        [event_id] = server.publish({"type": "workflow_completed", "workflow_id": "wf_4"})
        wait_event(page, event_id, timeout_s=8)
        page.close()


def test_silent_websocket_is_detected_by_the_heartbeat_watchdog(
    start_server: Callable[..., Any], context: BrowserContext
) -> None:
    """A WebSocket that stops delivering (even pongs) is declared dead, then SSE is used."""
    server = start_server(LIVEFEED_HEARTBEAT_S="1")
    page = context.new_page()

    def go_silent(ws: WebSocketRoute) -> None:
        upstream = ws.connect_to_server()
        seen = [0]

        def from_server(message: str | bytes) -> None:
            seen[0] += 1
            if seen[0] <= 4:  # connection_established and three heartbeats
                ws.send(message)

        upstream.on_message(from_server)
        ws.on_message(upstream.send)

    page.route_web_socket("**/ws/**", go_silent)
    page.goto(server.url + "/dashboard/")
    wait_status(page, LIVE_SSE, timeout_s=30)
    assert "silent" in (page.text_content("#connection-log") or "")
    [event_id] = server.publish({"type": "validation_created", "workflow_id": "wf_5"})
    wait_event(page, event_id, timeout_s=3)


def test_server_restart_shows_every_event_exactly_once_in_order(
    server: Any, context: BrowserContext
) -> None:
    """Stop the server, publish after it restarts: the page resumes without gap or duplicate."""
    page = open_dashboard(context, server.url)
    before = server.publish(events(5))
    wait_event(page, before[-1])
    server.stop()
    page.wait_for_function(
        "() => !document.querySelector('#status').textContent.startsWith('Live')",
        timeout=ms(10),
    )
    time.sleep(1)
    server.start()
    during = server.publish(events(20, prefix="wf_restart_"))
    wait_event(page, during[-1], timeout_s=30)
    wait_status(page, LIVE_WS, timeout_s=30)
    after = server.publish(events(5))
    wait_event(page, after[-1])
    assert_exactly_once_in_order(page, before + during + after)
    assert total(page) == len(before + during + after)


@pytest.mark.sqlite_only
def test_database_reset_is_explained_and_the_feed_continues(
    server: Any, context: BrowserContext
) -> None:
    """A cursor ahead of a fresh database gets a notice; new events (ids from 1) still show."""
    page = open_dashboard(context, server.url)
    old = server.publish(events(30))
    wait_event(page, old[-1])
    server.stop()
    database = Path(server.database_url.removeprefix("sqlite:///"))
    for path in (
        database,
        database.with_name(database.name + "-wal"),
        database.with_name(database.name + "-shm"),
    ):
        path.unlink(missing_ok=True)
    server.start()
    page.wait_for_selector("#notices >> text=its log was reset", timeout=ms(30))
    new = server.publish(events(3))
    wait_total(page, 33, timeout_s=10)
    assert feed_ids(page)[:3] == new[::-1]
    assert total(page) == 33


def test_offline_then_online_replays_the_missed_events(
    server: Any, context: BrowserContext
) -> None:
    """While the browser is offline events are published; back online they are replayed once."""
    page = open_dashboard(context, server.url)
    context.set_offline(True)
    wait_status(page, "Disconnected")
    missed = server.publish(events(7))
    context.set_offline(False)
    wait_event(page, missed[-1], timeout_s=15)
    assert_exactly_once_in_order(page, missed)
    assert total(page) == 7
    page.wait_for_selector("#notices >> text=7 missed events replayed", timeout=ms(5))


def test_events_trimmed_while_away_are_announced(server: Any, context: BrowserContext) -> None:
    """Retention trimmed part of the gap: a notice says so and the kept events still arrive."""
    page = open_dashboard(context, server.url)
    first = server.publish(events(3))
    wait_event(page, first[-1])
    context.set_offline(True)
    wait_status(page, "Disconnected")
    later = server.publish(events(50))
    trim = ["trim", "--database-url", server.database_url, "--retention", "10"]
    subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *trim],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context.set_offline(False)
    page.wait_for_selector("#notices >> text=could not be replayed", timeout=ms(15))
    wait_event(page, later[-1])
    assert feed_ids(page) == later[-10:][::-1] + first[::-1]


def test_event_data_is_shown_as_text_and_runs_nothing(server: Any, context: BrowserContext) -> None:
    """`<img onerror>` and `<script>` in event data are displayed literally."""
    page = open_dashboard(context, server.url)
    payload = {
        "html": "<img src=x onerror=window.__xss=1>",
        "script": "<script>window.__xss=2</script>",
        "file": "<b>bold</b>.md",
    }
    [event_id] = server.publish(
        {"type": "validation_rejected", "workflow_id": "wf_xss", "data": payload}
    )
    wait_event(page, event_id)
    row = page.locator(f'#feed [data-event-id="{event_id}"]')
    row.locator("summary").click()
    page.wait_for_function(
        "id => document.querySelector(`[data-event-id='${id}'] pre`).textContent !== ''",
        arg=event_id,
    )
    detail = row.locator("pre").text_content() or ""
    assert payload["html"] in detail and payload["script"] in detail
    assert "<b>bold</b>.md" in (row.locator(".preview").text_content() or "")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#feed img, #feed script, #feed b").count() == 0


def test_burst_of_2000_events_keeps_the_page_responsive_and_counts_exact(
    server: Any, context: BrowserContext
) -> None:
    """2,000 events at once: pause reacts, the DOM stays capped, the counters are exact."""
    page = open_dashboard(context, server.url)
    types = ["validation_created", "validation_approved", "recommendation_created", "odd.type"]
    batch = events(1000, types=types)
    publisher = threading.Thread(target=lambda: [server.publish(batch) for _ in range(2)])
    publisher.start()
    try:
        page.wait_for_function(
            "() => Number(document.querySelector('#total-count').textContent) > 0",
            timeout=ms(10),
        )
        clicked = time.monotonic()
        page.click("#pause", timeout=ms(2))
        page.wait_for_selector('#pause[aria-pressed="true"]', timeout=ms(2))
        reaction = time.monotonic() - clicked
    finally:
        publisher.join()
    page.click("#pause")
    page.wait_for_selector('#pause[aria-pressed="false"]', timeout=ms(2))
    wait_total(page, 2000, timeout_s=30)
    assert reaction < 2 * SLOW
    assert total(page) == 2000
    assert page.locator("#feed > li").count() == 500
    assert counts(page) | {t: 500 for t in types} == counts(page)
    latest = max(e["id"] for e in server.events())
    assert feed_ids(page) == list(range(latest, latest - 500, -1))
    assert page.locator("#feed-note").text_content() == "Showing the newest 500 events."


def test_filters_search_and_pause_resume(server: Any, context: BrowserContext) -> None:
    """Workflow, type and text filters narrow the feed; pause holds and counts, resume replays."""
    page = open_dashboard(context, server.url)
    ids = server.publish(
        [
            {"type": "validation_created", "workflow_id": "wf_alpha", "data": {"file": "a.md"}},
            {"type": "validation_approved", "workflow_id": "wf_alpha", "data": {"file": "b.md"}},
            {"type": "validation_created", "workflow_id": "wf_beta", "data": {"note": "zebra"}},
            {"type": "workflow_failed", "workflow_id": "wf_beta", "data": {"file": "c.md"}},
        ]
    )
    wait_event(page, ids[-1])
    page.fill("#filter-workflow", "wf_alpha")
    page.wait_for_function("() => document.querySelectorAll('#feed > li').length === 2")
    assert feed_ids(page) == [ids[1], ids[0]]
    page.select_option("#filter-type", "validation_created")
    page.wait_for_function("() => document.querySelectorAll('#feed > li').length === 1")
    assert feed_ids(page) == [ids[0]]
    page.fill("#filter-workflow", "")
    page.select_option("#filter-type", "")
    page.fill("#search", "zebra")
    page.wait_for_function("() => document.querySelectorAll('#feed > li').length === 1")
    assert feed_ids(page) == [ids[2]]
    page.fill("#search", "")
    page.wait_for_function("() => document.querySelectorAll('#feed > li').length === 4")

    page.focus("#pause")
    page.keyboard.press("Enter")
    assert page.get_attribute("#pause", "aria-pressed") == "true"
    held = server.publish(events(3))
    page.wait_for_selector("#pause >> text=Resume (3 new)", timeout=ms(5))
    assert feed_ids(page) == ids[::-1]
    assert total(page) == 7
    page.keyboard.press("Enter")
    page.wait_for_selector("#notices >> text=3 missed events replayed", timeout=ms(5))
    assert feed_ids(page) == (ids + held)[::-1]


def test_screenshot_with_demo_traffic(server: Any, context: BrowserContext) -> None:
    """Realistic traffic is saved as screenshots at desktop and phone width."""
    page = open_dashboard(context, server.url)
    demo = []
    for n in range(12):
        wf = f"wf_{n:04x}c9"
        demo += [
            {"type": "workflow_started", "workflow_id": wf, "data": {"repo": "docs", "by": "ci"}},
            {"type": "validation_created", "workflow_id": wf, "data": {"file": f"guide/{n}.md"}},
            {"type": "validation_enhanced", "workflow_id": wf, "data": {"file": f"guide/{n}.md"}},
            {
                "type": ["validation_approved", "validation_rejected"][n % 4 == 3],
                "workflow_id": wf,
                "data": {"file": f"guide/{n}.md", "score": 0.5 + n / 30},
            },
            {"type": "recommendation_created", "workflow_id": wf, "data": {"rule": "headings"}},
            {
                "type": ["recommendation_applied", "recommendation_rejected"][n % 5 == 4],
                "workflow_id": wf,
                "data": {"rule": "headings"},
            },
            {
                "type": ["workflow_completed", "workflow_failed"][n % 6 == 5],
                "workflow_id": wf,
                "data": {"duration_s": 3 + n},
            },
        ]
    ids = server.publish(demo)
    wait_event(page, ids[-1])
    page.wait_for_timeout(700)  # let the chart's throttled redraw run
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(100)
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"))
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the page scrolls sideways at phone width"
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_three_tabs_share_one_connection_and_hand_over(
    server: Any, context: BrowserContext
) -> None:
    """Three tabs hold one server connection between them; closing the leader loses nothing."""
    pages = [open_dashboard(context, server.url) for _ in range(3)]
    eventually(
        lambda: sum(connections(server.url).values()) == 1, what="one connection for three tabs"
    )
    first = server.publish(events(5))
    for page in pages:
        wait_event(page, first[-1])
    roles = [page.get_attribute("#status", "data-role") for page in pages]
    assert sorted(roles) == ["follower", "follower", "leader"]
    leader = pages[roles.index("leader")]
    followers = [page for page in pages if page is not leader]
    leader.close()
    second = server.publish(events(5))
    third = server.publish(events(5))
    for page in followers:
        wait_event(page, third[-1], timeout_s=10)
        assert_exactly_once_in_order(page, first + second + third)
        assert total(page) == 15
        wait_status(page, LIVE_WS)
    eventually(
        lambda: connections(server.url) == {"websocket": 1, "sse": 0, "poll": 0},
        what="one connection after the hand-over",
    )


def test_reload_in_the_middle_of_a_burst_has_no_gap_or_duplicate(
    server: Any, context: BrowserContext
) -> None:
    """The page reloads while events stream in; afterwards it shows each exactly once."""
    page = open_dashboard(context, server.url)
    published: list[int] = []

    def publish_slowly() -> None:
        for i in range(30):
            published.extend(server.publish(events(10, prefix=f"wf_r{i}_")))
            time.sleep(0.03)

    publisher = threading.Thread(target=publish_slowly)
    publisher.start()
    try:
        eventually(lambda: len(published) >= 100, what="the burst to start")
        page.reload()
    finally:
        publisher.join()
    wait_status(page, LIVE_WS)
    wait_event(page, published[-1], timeout_s=10)
    shown = feed_ids(page)
    assert shown == sorted(published, reverse=True), (
        f"gap or duplicate after reload: {len(shown)} rows, {len(set(shown))} distinct"
    )


def test_read_token_is_asked_for_once_and_used_on_every_transport(
    start_server: Callable[..., Any], context: BrowserContext
) -> None:
    """With LIVEFEED_READ_TOKEN set the page asks for it, connects with it, and keeps it."""
    server = start_server(LIVEFEED_READ_TOKEN="reader-secret-1")
    page = open_dashboard(context, server.url, expect=None)
    page.wait_for_selector("#token-dialog[open]", timeout=ms(10))
    assert page.text_content("#status") == "Disconnected"
    page.fill("#token-input", "wrong-token")
    page.press("#token-input", "Enter")
    page.wait_for_selector("#token-dialog[open] #token-error:not([hidden])", timeout=ms(10))
    page.fill("#token-input", "reader-secret-1")
    page.click("#token-submit")
    wait_status(page, LIVE_WS)
    [event_id] = server.publish({"type": "validation_created", "workflow_id": "wf_t"})
    wait_event(page, event_id)
    assert page.evaluate("sessionStorage.getItem('livefeed:read-token')") == "reader-secret-1"
    page.reload()
    wait_status(page, LIVE_WS)
    assert not page.is_visible("#token-dialog")
    block_websocket(page)
    page.route("**/sse/**", lambda route: route.abort())
    page.reload()
    wait_status(page, LIVE_POLL)
    [event_id] = server.publish({"type": "validation_approved", "workflow_id": "wf_t"})
    wait_event(page, event_id, timeout_s=5)
