"""Which browser pages may read: same-origin, or listed in LIVEFEED_ALLOWED_ORIGINS.

CORS middleware does not protect WebSocket handshakes, so the origin check
is done here, by the server itself, before a socket is accepted.
"""

from __future__ import annotations

from app.config import Settings, normalise_origin
from app.errors import ApiError


def own_origin(scheme: str, host_header: str | None) -> str | None:
    web_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return normalise_origin(f"{web_scheme}://{host_header}") if host_header else None


def origin_refusal(
    origin: str | None, scheme: str, host_header: str | None, settings: Settings
) -> ApiError | None:
    """Why a browser page at ``origin`` may not open a stream here, or ``None``."""
    if origin is None:
        return None  # not a browser: curl, scripts; credentials decide
    normalised = normalise_origin(origin)
    if normalised is not None and (
        normalised == own_origin(scheme, host_header)
        or normalised in settings.allowed_origins
        or "*" in settings.allowed_origins
    ):
        return None
    allowed = ", ".join(settings.allowed_origins) or "(empty)"
    return ApiError(
        403,
        "origin_not_allowed",
        f"origin {origin[:200]} is not allowed: it is not this server's own origin and not in "
        f"LIVEFEED_ALLOWED_ORIGINS (now: {allowed}); add it there to allow it",
    )


def cors_origin(origin: str | None, settings: Settings) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for a cross-origin page, or ``None``."""
    if origin is None or not settings.allowed_origins:
        return None
    if "*" in settings.allowed_origins:
        return "*"
    return origin if normalise_origin(origin) in settings.allowed_origins else None
