"""``create_app(settings)``: a fresh app with its own store, hub and metrics.

``/sse`` and ``/ws`` are plain ASGI in front of the Quart app (the stream
router); Quart serves everything else.  The runtime is created when serving
starts and closed when it stops, so nothing lives in module globals.
"""

from __future__ import annotations

import os

from quart import Quart
from quart_schema import Info, QuartSchema

from app import __version__
from app.config import BODY_TIMEOUT_S, MAX_BODY_BYTES, Settings, from_env
from app.http import register_http
from app.http.stream_docs import StreamDocs
from app.runtime import RUNTIME_KEY, Runtime
from app.streams.router import StreamRouter


def create_app(settings: Settings | None = None) -> Quart:
    """A fresh app; its runtime starts with serving and stops after it."""
    settings = settings or from_env(os.environ)
    app = Quart("app")
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        BODY_TIMEOUT=BODY_TIMEOUT_S,
        SEND_FILE_MAX_AGE_DEFAULT=0,  # revalidate static files, so a deploy reaches browsers
        JSON_SORT_KEYS=False,
    )
    QuartSchema(
        app,
        info=Info(title="Livefeed", version=__version__),
        openapi_path="/openapi.json",
        swagger_ui_path=None,  # app.http.api_docs serves /docs from local files
        redoc_ui_path=None,
        openapi_provider_class=StreamDocs,  # adds /sse and /ws, which Quart never routes
    )
    register_http(app, settings)

    @app.before_serving
    async def start_runtime() -> None:
        app.extensions[RUNTIME_KEY] = await Runtime.start(settings)

    @app.after_serving
    async def stop_runtime() -> None:
        runtime: Runtime | None = app.extensions.pop(RUNTIME_KEY, None)
        if runtime is not None:
            await runtime.stop()

    def current_runtime() -> Runtime | None:
        runtime: Runtime | None = app.extensions.get(RUNTIME_KEY)
        return runtime

    # Quart types its ASGI callable with its own scope TypedDicts; the router speaks
    # plain ASGI mappings, which is what Hypercorn hands it.
    router = StreamRouter(app.asgi_app, settings, current_runtime)  # type: ignore[arg-type]
    app.asgi_app = router  # type: ignore[method-assign, assignment]
    return app
