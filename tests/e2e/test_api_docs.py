"""/docs in Chromium: Swagger UI renders from this server's files alone, under the CSP."""

from __future__ import annotations

from typing import Any

from tests.support import ServerProcess


def test_api_docs_render_offline_under_the_strict_csp(server: ServerProcess, context: Any):
    """With every other host unreachable, /docs lists the API's operations; no request
    leaves the origin, and the CSP blocks nothing (a violation is a console error)."""
    leaving: list[str] = []
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(server.url)
            else (leaving.append(route.request.url), route.abort())
        ),
    )
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=15_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/events" in paths and "/api/stream-tickets" in paths
    assert leaving == []
    assert not [line for line in console if line.startswith("error")], console
