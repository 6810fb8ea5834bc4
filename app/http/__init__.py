"""Everything but the two stream paths: the Quart app's endpoints and their policy.

Every error is JSON ``{"error", "detail"}`` (the framework's own too), every
answer carries the security headers, and pages on other allowed origins get
CORS from the same list that guards WebSocket handshakes.
"""

from __future__ import annotations

import logging

from quart import Quart, Response, request
from quart_cors import cors
from werkzeug.exceptions import HTTPException

from app.config import Settings
from app.errors import (
    API_CSP,
    API_SECURITY_HEADERS,
    BUG_DETAIL,
    HTTP_CODES,
    ApiError,
    IdempotencyConflict,
    Rejected,
    StoreUnavailable,
    as_api_error,
    error_body,
)
from app.http.api_docs import api_docs
from app.http.audit import AUDIT
from app.http.dashboard import dashboard
from app.http.diag import diagnosis
from app.http.ops import operations
from app.http.publish import publishing
from app.http.replay import replaying
from app.http.stats import statistics
from app.http.tickets import ticketing
from app.query import stream_path_error

log = logging.getLogger(__name__)

CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
BLUEPRINTS = (
    publishing,
    replaying,
    statistics,
    diagnosis,
    ticketing,
    operations,
    dashboard,
    api_docs,
    *AUDIT,
)


def register_http(app: Quart, settings: Settings) -> None:
    """Mount every HTTP endpoint on ``app`` with its error handling and headers."""
    _register_error_handlers(app)
    _add_security_headers(app)
    _add_cors(app, settings)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)


def _error_response(error: ApiError) -> Response:
    response = Response(error.body(), status=error.status, content_type="application/json")
    response.headers.update(error.headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def _register_error_handlers(app: Quart) -> None:
    """Every error is JSON ``{"error", "detail"}``, including the framework's own."""

    async def domain_error(error: Exception) -> Response:
        api_error = as_api_error(error)
        if api_error is None:
            return await unexpected(error)
        return _error_response(api_error)

    for kind in (ApiError, Rejected, StoreUnavailable, IdempotencyConflict):
        app.register_error_handler(kind, domain_error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 404 and (request.path == "/ws" or request.path.startswith(("/ws/", "/sse/"))):
            return _error_response(stream_path_error(request.path))
        detail = error.description or HTTP_CODES.get(status, "error")
        api_error = ApiError(status, HTTP_CODES.get(status, "error"), detail)
        valid_methods = getattr(error, "valid_methods", None)
        if status == 405 and valid_methods:
            api_error.headers["Allow"] = ", ".join(sorted(valid_methods))
        return _error_response(api_error)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return Response(
            error_body("internal_error", BUG_DETAIL),
            status=500,
            content_type="application/json",
        )


def _add_security_headers(app: Quart) -> None:
    @app.after_request
    async def secure(response: Response) -> Response:
        for name, value in API_SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype != "text/html":  # HTML pages set their own policy
            response.headers.setdefault("Content-Security-Policy", API_CSP)
        if response.mimetype == "application/json":
            # answers to a credential, or about a log that moves on: no cache may keep them
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _add_cors(app: Quart, settings: Settings) -> None:
    """HTTP CORS for dashboards on other allowed origins (same list as WebSockets)."""
    if not settings.allowed_origins:
        return
    origins = "*" if "*" in settings.allowed_origins else list(settings.allowed_origins)
    cors(
        app,
        allow_origin=origins,
        allow_headers=CORS_HEADERS,
        allow_methods=["GET", "POST"],
        expose_headers=["Idempotent-Replayed", "Retry-After"],
        max_age=600,
    )
