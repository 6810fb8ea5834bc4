"""The audit page in real headless Chromium against a real server: what it shows
as verified was checked in the browser, and what a server (or anything between)
altered is caught, with WebCrypto's SHA-256 and Ed25519."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.support import ServerProcess, ms

if TYPE_CHECKING:  # the browser fixture checks that Playwright is there
    from playwright.sync_api import BrowserContext, Page, Route


def publish_events(server: ServerProcess, count: int) -> None:
    server.publish(
        [
            {
                "type": "step.done",
                "workflow_id": f"wf_{n % 2}",
                "data": {"n": n, "note": "<b>x</b>"},
            }
            for n in range(count)
        ]
    )


def open_audit(context: BrowserContext, url: str, query: str = "from=1") -> Page:
    page = context.new_page()
    page.goto(f"{url}/audit/?{query}")
    return page


def verdict(page: Page, state: str) -> str:
    """Wait for the verdict to reach ``state``; returns its text."""
    locator = page.locator(f'#verdict[data-state="{state}"]')
    locator.wait_for(timeout=ms(15))
    return locator.inner_text()


def row_states(page: Page) -> dict[int, str]:
    rows = page.locator("#rows tr")
    return {
        int(rows.nth(n).get_attribute("data-id") or 0): rows.nth(n).get_attribute("data-verified")
        or ""
        for n in range(rows.count())
    }


def test_the_page_verifies_what_it_shows_against_a_pinned_key(
    server: ServerProcess, context: Any
) -> None:
    """With the key pinned, every event on screen is verified against the checkpoint."""
    publish_events(server, 30)
    key = httpx.get(f"{server.url}/api/log/key", timeout=10).text.strip()
    page = open_audit(context, server.url, "from=5&to=24")
    page.fill("#pinned-key", key)
    page.click("#pin-key")
    page.click("#range button[type=submit]")
    text = verdict(page, "verified")
    assert "Verified against checkpoint 30" in text and "pinned" in text
    assert row_states(page) == {n: "yes" for n in range(5, 25)}
    assert page.locator("#rows b").count() == 0  # event data is text, never markup


def test_an_unpinned_key_is_said_to_prove_little(server: ServerProcess, context: Any) -> None:
    """Without a pinned key the page verifies with the server's, and says so."""
    publish_events(server, 5)
    page = open_audit(context, server.url)
    assert "not pinned" in verdict(page, "unpinned")
    assert set(row_states(page).values()) == {"yes"}


def test_an_event_altered_on_the_way_is_caught(server: ServerProcess, context: Any) -> None:
    """A page of events altered in transit (route interception): that row is not
    verified and the verdict names its id."""
    publish_events(server, 12)

    def alter(route: Route) -> None:
        body = route.fetch().text()
        route.fulfill(body=body.replace('"n":7,', '"n":70,'), content_type="application/json")

    context.route(re.compile(r".*/api/events\?.*"), alter)
    page = open_audit(context, server.url, "from=1&to=12")
    text = verdict(page, "failed")
    assert "1 of 12 events on screen are NOT what checkpoint 12" in text and "ids 8." in text
    states = row_states(page)
    assert states[8] == "no" and all(states[n] == "yes" for n in states if n != 8)


def test_a_forged_checkpoint_verifies_nothing(server: ServerProcess, context: Any) -> None:
    """A checkpoint whose root was changed after signing fails its signature check."""
    publish_events(server, 4)

    def rewrite(route: Route) -> None:
        body = route.fetch().text()
        route.fulfill(body=body.replace("\n4\n", "\n3\n"), content_type="text/plain")

    context.route(re.compile(r".*/api/log/checkpoint$"), rewrite)
    page = open_audit(context, server.url)
    assert "The checkpoint did not verify" in verdict(page, "failed")


def test_a_rewritten_history_is_caught_against_the_checkpoint_seen_before(
    server: ServerProcess, context: Any, tmp_path: Path
) -> None:
    """The same server, key and port, serving another history: the new checkpoint
    fails the consistency proof against the one this browser remembered."""
    publish_events(server, 6)
    page = open_audit(context, server.url)
    verdict(page, "unpinned")
    key = signing_key_of(server)
    server.stop()
    server.env["LIVEFEED_SIGNING_KEY"] = key
    server.env["LIVEFEED_DATABASE_URL"] = f"sqlite:///{tmp_path / 'rewritten.db'}"
    server.start()
    server.publish([{"type": "forged", "data": {"n": n}} for n in range(8)])
    page.reload()
    assert "REWROTE history" in verdict(page, "failed")
    assert "NOT consistent with checkpoint 6" in page.locator("#consistency").inner_text()


def signing_key_of(server: ServerProcess) -> str:
    """The signer key the server generated and kept in its SQLite file."""
    path = server.database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (key,) = conn.execute("SELECT signer_key FROM log_signer").fetchone()
    return str(key)


def test_the_page_has_the_strict_csp_and_no_inline_script(server: ServerProcess) -> None:
    """Served like the dashboard: same-origin scripts only, no inline script or style."""
    answer = httpx.get(f"{server.url}/audit/", timeout=10)
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in answer.text and "style=" not in answer.text
