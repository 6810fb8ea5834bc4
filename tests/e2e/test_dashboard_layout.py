"""New events never move what the reader is looking at, in real Chromium.

Chromium measures layout shifts itself (the Layout Instability API, which
Lighthouse's cumulative layout shift adds up); the page records every shift
from its first paint, while events stream in at phone and desktop sizes.
A reader who points at the feed or scrolls down keeps their rows where they
are, and a button brings the new ones.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.test_dashboard import LIVE_WS, events, wait_event, wait_status
from tests.support import ms

if TYPE_CHECKING:  # the browser fixture checks that Playwright is there
    from playwright.sync_api import BrowserContext, Page

# Rows are placed frame by frame: a starved renderer (a loaded machine) misses frames.
pytestmark = pytest.mark.serial

RECORD_SHIFTS = """
  window.__shifts = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (!e.hadRecentInput) window.__shifts.push(e.value);
  }).observe({ type: 'layout-shift', buffered: true });
"""


def stream(server: Any, batches: int, every_s: float) -> list[int]:
    """Publish ``batches`` small batches, ``every_s`` apart; the ids."""
    ids: list[int] = []
    for n in range(batches):
        ids += server.publish(events(1 + n % 3, prefix=f"wf_s{n}_"))
        time.sleep(every_s)
    return ids


def row_top(page: Page, event_id: int) -> float:
    box = page.locator(f'#feed [data-event-id="{event_id}"]').bounding_box()
    assert box is not None, f"row {event_id} is not on screen"
    return box["y"]


def assert_still(page: Page, event_id: int, was: float) -> None:
    """The row is where it was, to the pixel (scroll offsets are whole pixels, rows are not)."""
    assert abs(row_top(page, event_id) - was) < 1, f"row {event_id} moved from {was}"


@pytest.mark.parametrize("size", [(412, 823), (1280, 900)], ids=["phone", "desktop"])
def test_streaming_events_shift_nothing(
    server: Any, context: BrowserContext, size: tuple[int, int]
) -> None:
    """Events at ~10/s for 4 s from the first paint on: no layout shift at all, newest on top."""
    server.publish(events(30))
    context.add_init_script(RECORD_SHIFTS)
    page = context.new_page()
    page.set_viewport_size({"width": size[0], "height": size[1]})
    published: list[int] = []
    publisher = threading.Thread(target=lambda: published.extend(stream(server, 25, 0.15)))
    publisher.start()
    page.goto(server.url + "/dashboard/")
    publisher.join()
    wait_event(page, published[-1])
    page.wait_for_function(
        "id => document.querySelector('#feed li').dataset.eventId === String(id)"
        " && document.querySelector('#feed-scroll').scrollTop === 0",
        arg=published[-1],
        timeout=ms(5),
    )
    shifts = page.evaluate("window.__shifts")
    assert sum(shifts) < 0.001, f"layout shifts while streaming: {shifts}"


def test_a_reader_pointing_at_the_feed_keeps_their_rows_still(
    server: Any, context: BrowserContext
) -> None:
    """Pointer on the feed: rows stay put, a button counts new events; pointer gone: it follows."""
    page = context.new_page()
    page.goto(server.url + "/dashboard/")
    wait_status(page, LIVE_WS)
    first = server.publish(events(20))
    wait_event(page, first[-1])
    page.hover(f'#feed [data-event-id="{first[-3]}"]')
    before = row_top(page, first[-3])
    more = server.publish(events(4))
    page.wait_for_selector("#feed-jump >> text=↑ 4 new events", timeout=ms(5))
    assert_still(page, first[-3], before)
    page.mouse.move(5, 5)  # off the feed: it glides to the newest
    page.wait_for_selector("#feed-jump", state="hidden", timeout=ms(5))
    page.wait_for_function(
        "() => document.querySelector('#feed-scroll').scrollTop === 0", timeout=ms(5)
    )
    assert row_top(page, more[-1]) < before


def test_a_reader_scrolled_down_stays_there_until_asking_for_new_events(
    server: Any, context: BrowserContext
) -> None:
    """Scrolled into older events: new ones do not move them; the button brings the newest."""
    context.add_init_script(RECORD_SHIFTS)
    page = context.new_page()
    page.goto(server.url + "/dashboard/")
    wait_status(page, LIVE_WS)
    first = server.publish(events(60))
    wait_event(page, first[-1])
    page.eval_on_selector("#feed-scroll", "box => { box.scrollTop = 600; }")
    page.wait_for_timeout(100)
    reading = first[-20]
    before = row_top(page, reading)
    more = server.publish(events(3))
    page.wait_for_selector("#feed-jump >> text=↑ 3 new events", timeout=ms(5))
    assert_still(page, reading, before)
    page.click("#feed-jump")
    page.wait_for_function(
        "() => document.querySelector('#feed-scroll').scrollTop === 0", timeout=ms(5)
    )
    assert row_top(page, more[-1]) < before
    assert page.is_hidden("#feed-jump")
    assert sum(page.evaluate("window.__shifts")) < 0.001
