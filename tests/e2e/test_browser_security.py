"""Hostile data and hostile pages against the real server, in real headless Chromium.

* Event data that looks like a link (``javascript:`` URLs, markdown and HTML
  anchors) is shown on the dashboard as inert text (FAULTS 22).
* A page served from another origin cannot open ``/ws/...`` or read
  ``/sse/...`` unless that origin is listed in ``LIVEFEED_ALLOWED_ORIGINS``
  (FAULTS 26). The foreign page comes from a small HTTP server of the test's
  own on another loopback port, so its origin is really another one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support import ServerProcess, eventually, ms

if TYPE_CHECKING:  # the browser fixture checks that Playwright is there
    from playwright.sync_api import BrowserContext, ConsoleMessage, Dialog, Page

CHANNEL = "validation_updates"


# --------------------------------------------------------------------------- helpers


class BrowserWatch:
    """Everything a page does that would betray running script: dialogs and console errors."""

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)


class ForeignSite:
    """A static HTTP server on another loopback port: a page of another origin."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        served = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = served.get(self.path.split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ForeignSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def probe_page(livefeed_port: int) -> str:
    """A page that opens Livefeed's WebSocket and fetches its SSE stream, recording
    what its script is allowed to see."""
    ws_url = f"ws://127.0.0.1:{livefeed_port}/ws/{CHANNEL}"
    sse_url = f"http://127.0.0.1:{livefeed_port}/sse/{CHANNEL}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>another site</title></head>
<body><p>another site</p>
<script>
window.probe = {{ ws: {{ opened: false, messages: [], closes: [], errors: 0 }},
                 sse: {{ status: null, text: '', error: null, done: false }} }};
const ws = new WebSocket({ws_url!r});
ws.onopen = () => {{ probe.ws.opened = true; }};
ws.onmessage = (e) => {{ probe.ws.messages.push(String(e.data)); }};
ws.onerror = () => {{ probe.ws.errors += 1; }};
ws.onclose = (e) => {{ probe.ws.closes.push({{ code: e.code, clean: e.wasClean }}); }};
(async () => {{
  try {{
    const response = await fetch({sse_url!r});
    probe.sse.status = response.status;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {{
      const {{ value, done }} = await reader.read();
      if (done) break;
      probe.sse.text += decoder.decode(value, {{ stream: true }});
    }}
  }} catch (error) {{
    probe.sse.error = error.name + ': ' + error.message;
  }} finally {{
    probe.sse.done = true;
  }}
}})();
</script></body></html>"""


def metric(url: str, name: str, labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{{{labels}}} is not in /metrics"
    return float(found.group(1))


@pytest.fixture
def foreign_site() -> Iterator[ForeignSite]:
    with ForeignSite() as site:
        yield site


def open_probe(
    context: BrowserContext, site: ForeignSite, server: ServerProcess
) -> tuple[Page, BrowserWatch]:
    site.pages["/probe.html"] = probe_page(server.port)
    page = context.new_page()
    watch = BrowserWatch(page)
    page.goto(site.origin + "/probe.html")
    assert page.evaluate("location.origin") == site.origin != server.url
    return page, watch


# --------------------------------------------------------------------------- FAULTS 22

# The dashboard previews the first three fields of `data`; all of them are hostile.
LINK_LIKE = {
    "anchor": '<a href="javascript:window.__xss=6">click me</a>',
    "url": "javascript:alert(1)",
    "markdown": "[click me](javascript:window.__xss=5)",
    "href": "JaVaScRiPt:alert(document.domain)",
    "spaced": " javascript:window.__xss=3",
    "encoded": "java&#115;cript:window.__xss=4",
    "svg": "<svg onload=window.__xss=7>",
    "iframe": "<iframe src=javascript:window.__xss=8></iframe>",
    "data_url": "data:text/html,<script>window.__xss=9</script>",
    "homepage": "https://example.com/docs?a=1&b=2",
}


def test_link_like_event_data_is_inert_text(server: ServerProcess, context: BrowserContext) -> None:
    """`javascript:` URLs and anchors in data create no element, run nothing, open no dialog."""
    page = context.new_page()
    watch = BrowserWatch(page)
    page.goto(server.url + "/dashboard/")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.startsWith('Live')",
        timeout=ms(15),
    )
    anchors_before = page.locator("a").count()
    [event_id] = server.publish(
        {"type": "validation_rejected", "workflow_id": "wf_links", "data": LINK_LIKE}
    )
    row = page.locator(f'#feed [data-event-id="{event_id}"]')
    row.wait_for(state="attached", timeout=ms(5))
    # The preview shows the first three fields; the detail shows all of them.
    preview = row.locator(".preview").text_content() or ""
    assert "url: javascript:alert(1)" in preview and 'anchor: <a href="javascript:' in preview
    row.locator("summary").click()
    row.locator("pre.json").filter(has_text="homepage").wait_for(timeout=ms(5))
    detail = row.locator("pre.json").text_content() or ""
    for value in LINK_LIKE.values():
        assert value.replace('"', '\\"') in detail, value
    # Clicking the text of a link-like value goes nowhere.
    row.locator(".preview").click()
    page.wait_for_timeout(500)
    assert page.url == server.url + "/dashboard/"
    assert page.evaluate("window.__xss") is None
    assert watch.dialogs == []
    assert watch.console_errors == []
    # No element of any kind came from the data; no link anywhere points at script.
    assert row.locator("a, svg, iframe, script, img, object, embed").count() == 0
    assert page.locator("a").count() == anchors_before
    hrefs = page.eval_on_selector_all("[href], [src]", "els => els.map(e => e.href || e.src)")
    assert not [h for h in hrefs if not re.match(r"(https?:|data:,$)", h)], hrefs


# --------------------------------------------------------------------------- FAULTS 26


def test_page_of_another_origin_gets_no_websocket_and_cannot_read_sse(
    server: ServerProcess, context: BrowserContext, foreign_site: ForeignSite
) -> None:
    """CSWSH in Chromium: the handshake fails (1006, never open), no event reaches the
    page, the server logs the refusal, and CORS keeps the SSE body from the page."""
    page, watch = open_probe(context, foreign_site, server)
    page.wait_for_function("() => probe.ws.closes.length === 1", timeout=ms(10))
    page.wait_for_function("() => probe.sse.done", timeout=ms(10))
    server.publish({"type": "validation_created", "workflow_id": "wf_cswsh", "data": {"n": 1}})
    page.wait_for_timeout(1000)
    probe = page.evaluate("probe")
    assert probe["ws"]["opened"] is False
    assert probe["ws"]["messages"] == []
    assert probe["ws"]["closes"] == [{"code": 1006, "clean": False}]
    assert probe["sse"]["status"] is None and probe["sse"]["text"] == ""
    assert (probe["sse"]["error"] or "").startswith("TypeError"), probe["sse"]
    eventually(
        lambda: f"websocket refused channel={CHANNEL}" in server.log(), 5, "the refusal log line"
    )
    refusal = next(line for line in server.log().splitlines() if "websocket refused" in line)
    assert foreign_site.origin in refusal and "origin_not_allowed" in refusal, refusal
    assert "websocket opened" not in server.log()
    assert metric(server.url, "livefeed_events_delivered_total", 'transport="websocket"') == 0
    # Chromium's own console says why: the server's 403, and CORS for the stream.
    errors = watch.console_errors
    assert any("Unexpected response code: 403" in e for e in errors), errors
    assert any("blocked by CORS policy" in e for e in errors), errors


def test_page_of_an_allowed_origin_connects_and_reads_both_streams(
    start_server: Callable[..., ServerProcess],
    context: BrowserContext,
    foreign_site: ForeignSite,
) -> None:
    """The same page, its origin listed in LIVEFEED_ALLOWED_ORIGINS: both streams deliver."""
    server = start_server(LIVEFEED_ALLOWED_ORIGINS=foreign_site.origin)
    page, watch = open_probe(context, foreign_site, server)
    page.wait_for_function("() => probe.ws.messages.length >= 1", timeout=ms(10))
    page.wait_for_function(
        "() => probe.sse.text.includes('connection_established')", timeout=ms(10)
    )
    [event_id] = server.publish(
        {"type": "validation_created", "workflow_id": "wf_allowed", "data": {"n": 2}}
    )
    page.wait_for_function(
        "id => probe.ws.messages.some(m => JSON.parse(m).id === id)", arg=event_id, timeout=ms(5)
    )
    page.wait_for_function(
        "id => probe.sse.text.includes(`\\nid: ${id}\\n`)", arg=event_id, timeout=ms(5)
    )
    probe = page.evaluate("probe")
    assert probe["ws"]["opened"] is True and probe["ws"]["closes"] == []
    assert probe["sse"]["status"] == 200 and probe["sse"]["error"] is None
    assert "websocket refused" not in server.log()
    assert watch.dialogs == [] and watch.console_errors == []
    assert metric(server.url, "livefeed_events_delivered_total", 'transport="websocket"') >= 1
