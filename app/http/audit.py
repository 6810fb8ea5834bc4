"""The audit page, ``/audit/``: browse a stretch of the log and check it in the
browser against a signed checkpoint, so an auditor need not trust the server.

The page is a template and ``static/audit.js`` (an ES module); everything it
verifies it fetches from the endpoints of :mod:`app.http.log` and
``/api/events``, and it checks signatures and hashes with WebCrypto.  Served
with the dashboard's strict Content-Security-Policy: no inline script.
"""

from __future__ import annotations

from quart import Blueprint, Response, render_template, request

from app.http.common import PAGE_HEADERS
from app.http.log import verifiable_log

audit_page = Blueprint("audit", __name__)

#: The verifiable log's endpoints and the page that audits through them.
AUDIT = (verifiable_log, audit_page)


@audit_page.get("/audit/")
async def page() -> Response:
    """The audit view (``?from=&to=`` ids, or ``?since=&until=`` times, preselect a range)."""
    body = await render_template("audit.html", base_path=request.root_path)
    return Response(body, 200, headers=PAGE_HEADERS, content_type="text/html; charset=utf-8")
