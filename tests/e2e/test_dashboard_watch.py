"""Watching several workflows at once, in real Chromium against a real server.

The page keeps the watched workflows in its address (``?channel=wf_a,wf_b``)
and follows them on its one WebSocket: adding and removing a workflow sends
``subscribe`` / ``unsubscribe`` on that socket instead of reconnecting.  The
counters and the chart follow the selection, and an added workflow brings its
earlier events from the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.e2e.test_dashboard import (
    LIVE_WS,
    connections,
    counts,
    feed_ids,
    total,
    wait_event,
    wait_status,
)
from tests.support import eventually, ms

if TYPE_CHECKING:  # the browser fixture checks that Playwright is there
    from playwright.sync_api import BrowserContext, Page


def watch_page(context: BrowserContext, url: str) -> tuple[Page, list[str]]:
    """The dashboard at ``url``, with the address of every WebSocket it opens."""
    page = context.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(url)
    wait_status(page, LIVE_WS)
    return page, sockets


def watched(page: Page) -> list[str]:
    return page.eval_on_selector_all(
        "#watching [data-channel]", "chips => chips.map(li => li.dataset.channel)"
    )


def add(page: Page, workflow: str) -> None:
    page.fill("#watch-input", workflow)
    page.press("#watch-input", "Enter")


def wait_following(page: Page, channels: str) -> None:
    """Until the connection log says the same socket follows ``channels`` (`a, b`)."""
    page.wait_for_selector(
        f"#connection-log >> text=Following {channels} from #", state="attached", timeout=ms(5)
    )


def shown_workflows(page: Page) -> set[str]:
    return set(page.eval_on_selector_all("#feed .wf", "spans => spans.map(s => s.textContent)"))


def test_add_and_remove_workflows_on_one_websocket_kept_in_the_address(
    server: Any, context: BrowserContext
) -> None:
    """Add wf_b, remove wf_a: one WebSocket, both shown; the address and a reload keep it."""
    early = server.publish(
        [
            {"type": "workflow_started", "workflow_id": "wf_a"},
            {"type": "workflow_started", "workflow_id": "wf_b"},
            {"type": "workflow_started", "workflow_id": "wf_c"},
        ]
    )
    page, sockets = watch_page(context, server.url + "/dashboard/?channel=wf_a")
    wait_event(page, early[0])
    assert watched(page) == ["wf_a"] and shown_workflows(page) == {"wf_a"}

    add(page, "wf_b")
    wait_following(page, "wf_a, wf_b")
    assert page.url.endswith("/dashboard/?channel=wf_a,wf_b")
    wait_event(page, early[1])  # wf_b's earlier event, read from the log
    both = server.publish(
        [
            {"type": "validation_created", "workflow_id": "wf_a"},
            {"type": "validation_created", "workflow_id": "wf_b"},
            {"type": "validation_created", "workflow_id": "wf_c"},
        ]
    )
    wait_event(page, both[1])
    assert feed_ids(page) == [both[1], both[0], early[1], early[0]]
    assert total(page) == 4
    assert counts(page)["workflow_started"] == 2 and counts(page)["validation_created"] == 2

    page.click('#watching [data-channel="wf_a"] button')
    wait_following(page, "wf_b")
    assert page.url.endswith("/dashboard/?channel=wf_b")
    assert watched(page) == ["wf_b"] and shown_workflows(page) == {"wf_b"}
    assert total(page) == 2, "wf_a's counts left with it"
    [late] = server.publish({"type": "workflow_completed", "workflow_id": "wf_b"})
    wait_event(page, late)
    assert len(sockets) == 1, f"the page reconnected: {sockets}"
    assert sockets[0].split("?")[0].endswith("/ws/wf_a")

    page.reload()
    wait_status(page, LIVE_WS)
    assert watched(page) == ["wf_b"]
    assert feed_ids(page) == [late, both[1], early[1]]
    assert sockets[-1].split("?")[0].endswith("/ws/wf_b")


def test_removing_the_last_workflow_watches_every_event_again(
    server: Any, context: BrowserContext
) -> None:
    """With no workflow left the page follows every event, and brings in what it had not shown."""
    page, sockets = watch_page(context, server.url + "/dashboard/?channel=wf_a")
    ids = server.publish(
        [
            {"type": "workflow_started", "workflow_id": "wf_a"},
            {"type": "workflow_started", "workflow_id": "wf_z"},
            {"type": "workflow_started", "workflow_id": None},
        ]
    )
    wait_event(page, ids[0])
    page.click('#watching [data-channel="wf_a"] button')
    wait_following(page, "validation_updates")
    assert page.url.endswith("/dashboard/")
    assert page.text_content("#watching") == "All workflows"
    for event_id in ids:
        wait_event(page, event_id)
    assert total(page) == 3
    [later] = server.publish({"type": "workflow_failed", "workflow_id": "wf_y"})
    wait_event(page, later)
    assert len(sockets) == 1


def test_a_malformed_workflow_id_is_refused_in_the_page(
    server: Any, context: BrowserContext
) -> None:
    """A name the server would refuse is explained, and the selection is unchanged."""
    page, sockets = watch_page(context, server.url + "/dashboard/?channel=wf_a")
    add(page, "not a workflow")
    page.wait_for_selector("#notices >> text=is not a workflow id", timeout=ms(5))
    assert watched(page) == ["wf_a"]
    assert page.url.endswith("/dashboard/?channel=wf_a")
    assert len(sockets) == 1


def test_sse_follows_a_new_selection_by_reconnecting_from_its_cursor(
    server: Any, context: BrowserContext
) -> None:
    """Over SSE a change reconnects with the new list from the same cursor, losing nothing."""
    page = context.new_page()
    page.goto(server.url + "/dashboard/?channel=wf_a&transports=sse")
    wait_status(page, "Live · SSE (fallback)")
    first = server.publish({"type": "workflow_started", "workflow_id": "wf_a"})
    wait_event(page, first[0])
    add(page, "wf_b")
    opened = '#connection-log li:has-text("/sse/wf_a,wf_b")'
    page.wait_for_selector(opened, state="attached", timeout=ms(5))
    wait_status(page, "Live · SSE (fallback)")
    second = server.publish(
        [
            {"type": "workflow_started", "workflow_id": "wf_b"},
            {"type": "workflow_started", "workflow_id": "wf_a"},
        ]
    )
    wait_event(page, second[1])
    assert feed_ids(page) == [second[1], second[0], first[0]]


def test_tabs_share_a_connection_per_selection(server: Any, context: BrowserContext) -> None:
    """Two tabs on wf_a share one connection; one adds wf_b: two; the other follows: one again."""
    first, _ = watch_page(context, server.url + "/dashboard/?channel=wf_a")
    second, _ = watch_page(context, server.url + "/dashboard/?channel=wf_a")
    eventually(lambda: sum(connections(server.url).values()) == 1, what="one connection")
    leader, follower = sorted(
        (first, second), key=lambda p: p.get_attribute("#status", "data-role") != "leader"
    )
    add(follower, "wf_b")
    eventually(lambda: sum(connections(server.url).values()) == 2, what="a connection per list")
    wait_status(follower, LIVE_WS)
    add(leader, "wf_b")
    eventually(lambda: sum(connections(server.url).values()) == 1, what="the lists agree again")
    ids = server.publish(
        [
            {"type": "workflow_started", "workflow_id": "wf_a"},
            {"type": "workflow_started", "workflow_id": "wf_b"},
        ]
    )
    for page in (leader, follower):
        wait_event(page, ids[1])
        assert feed_ids(page)[:2] == ids[::-1]
        assert watched(page) == ["wf_a", "wf_b"]
