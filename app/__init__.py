"""Livefeed: one append-only event log served over WebSocket, SSE and long-poll."""

from __future__ import annotations

import logging
import os

from quart import Quart, Response, request
from quart_cors import cors
from quart_schema import Info, QuartSchema
from werkzeug.exceptions import HTTPException

from app.config import MAX_BODY_BYTES, Settings, from_env
from app.errors import HTTP_CODES, ApiError, error_body
from app.runtime import Runtime
from app.transports.request import parse_stream_request
from app.transports.router import RUNTIME_KEY, StreamRouter

__version__ = "0.1.0"
log = logging.getLogger(__name__)


def _error_response(error: ApiError) -> Response:
    response = Response(error.body(), status=error.status, content_type="application/json")
    response.headers.update(error.headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def _stream_path_error(path: str) -> ApiError:
    """A plain HTTP request for a WebSocket path is told to upgrade; others get the paths."""
    try:
        parse_stream_request(path, "/ws/", {}, None)
    except ApiError as error:
        return error
    return ApiError(
        426,
        "upgrade_required",
        f"{path[:100]} is a WebSocket endpoint: connect with a WebSocket client, "
        "or read the same events over HTTP at /sse/{channel}",
        {"Upgrade": "websocket"},
    )


def _register_error_handlers(app: Quart) -> None:
    """Every error is JSON ``{"error", "detail"}``, including the framework's own."""

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return _error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 404 and request.path.startswith(("/ws/", "/sse/")):
            return _error_response(_stream_path_error(request.path))
        detail = error.description or HTTP_CODES.get(status, "error")
        api_error = ApiError(status, HTTP_CODES.get(status, "error"), detail)
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            api_error.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return _error_response(api_error)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return Response(
            error_body("internal_error", "the server failed; this is a bug, and it is logged"),
            status=500,
            content_type="application/json",
        )


API_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]


def _add_security_headers(app: Quart) -> None:
    @app.after_request
    async def secure(response: Response) -> Response:
        for name, value in API_SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype != "text/html":  # HTML pages set their own policy
            response.headers.setdefault("Content-Security-Policy", API_CSP)
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


def create_app(settings: Settings | None = None) -> Quart:
    """A fresh app with its own store, hub and metrics, created when serving starts."""
    from app.api import api
    from app.dashboard import register_dashboard
    from app.ops import ops
    from app.transports.poll import poll

    settings = settings or from_env(os.environ)
    app = Quart(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        BODY_TIMEOUT=30,
        SEND_FILE_MAX_AGE_DEFAULT=0,  # revalidate static files, so a deploy reaches browsers
        JSON_SORT_KEYS=False,
    )
    QuartSchema(
        app,
        info=Info(title="Livefeed", version=__version__),
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path="/redocs",
    )
    _register_error_handlers(app)
    _add_security_headers(app)
    _add_cors(app, settings)
    app.register_blueprint(api)
    app.register_blueprint(poll)
    app.register_blueprint(ops)
    register_dashboard(app)

    @app.before_serving
    async def start_runtime() -> None:
        app.extensions[RUNTIME_KEY] = await Runtime.start(settings)

    @app.after_serving
    async def stop_runtime() -> None:
        runtime: Runtime | None = app.extensions.pop(RUNTIME_KEY, None)
        if runtime is not None:
            await runtime.stop()

    app.asgi_app = StreamRouter(app, app.asgi_app, settings)  # type: ignore[assignment, arg-type]
    return app
