"""The dashboard page: ``GET /`` redirects to ``/dashboard/``, which serves the
Live Activity Feed.

The page is a template plus static files: ``static/livefeed-client.js`` and the
ES modules it imports (the reusable client library), and ``static/dashboard*.js``
and ``dashboard.css``, the UI that uses it. It carries no inline script or style,
so it is served with a Content-Security-Policy that allows only same-origin
resources (``PAGE_HEADERS``): event data
that slipped through as HTML could not run anything even if the UI rendered
it (it renders text only). ``connect-src 'self'`` covers same-origin ``ws:``
and ``wss:`` in current browsers.
"""

from __future__ import annotations

from quart import Blueprint, Response, redirect, render_template, request, url_for
from werkzeug.wrappers.response import Response as Redirect

from app.http.common import PAGE_HEADERS

dashboard = Blueprint("dashboard", __name__)


@dashboard.get("/")
async def root() -> Redirect:
    """Send visitors of the bare address to the dashboard."""
    return redirect(url_for("dashboard.page"), 302)


@dashboard.get("/dashboard/")
async def page() -> Response:
    """The Live Activity Feed (all events; ``?channel=<workflow id>`` narrows it)."""
    body = await render_template("dashboard.html", base_path=request.root_path)
    return Response(body, 200, headers=PAGE_HEADERS, content_type="text/html; charset=utf-8")

