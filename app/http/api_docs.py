"""``/docs``: the API's Swagger UI, served from this server alone.

quart-schema's own pages load Swagger UI and ReDoc from public CDNs with no
integrity check and no Content-Security-Policy, and show a blank page offline.
Here the page is a template with no inline script, its one script is ours
(``static/api-docs.js``), and Swagger UI's files come from the ``swagger-ui-py``
package (Swagger UI 5, which reads OpenAPI 3.1; ``swagger-ui-bundle`` still ships
4.15, which cannot).  The page gets the dashboard's strict CSP.

``/redocs`` redirects here: ReDoc injects its styles inline, so it cannot run under
that policy.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from quart import (
    Blueprint,
    Response,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from quart_schema import hide
from werkzeug.wrappers.response import Response as Redirect

from app.errors import ApiError
from app.http.common import PAGE_HEADERS

#: The files of Swagger UI the page uses; nothing else of the package is served.
SWAGGER_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css"})

api_docs = Blueprint("api_docs", __name__)


@cache
def swagger_ui_dir() -> Path:
    """Where ``swagger-ui-py`` keeps Swagger UI's files (found without importing the
    package, whose Python side is not used)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or spec.origin is None:
        raise ApiError(503, "unavailable", "the swagger-ui-py package is not installed")
    return Path(spec.origin).parent / "static"


@api_docs.get("/docs")
@hide
async def page() -> Response:
    """Swagger UI over ``/openapi.json``."""
    body = await render_template("api-docs.html", base_path=request.root_path)
    return Response(body, 200, headers=PAGE_HEADERS, content_type="text/html; charset=utf-8")


@api_docs.get("/docs/assets/<name>")
@hide
async def asset(name: str) -> Response:
    """One of Swagger UI's files."""
    if name not in SWAGGER_FILES:
        raise ApiError(404, "not_found", f"no file {name[:80]!r} here")
    return await send_from_directory(swagger_ui_dir(), name)


@api_docs.get("/redocs")
@hide
async def redocs() -> Redirect:
    """The API docs moved to ``/docs`` (ReDoc cannot run under the page's CSP)."""
    return redirect(url_for("api_docs.page"), 301)
