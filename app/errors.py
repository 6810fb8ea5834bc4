"""The one mapping from failures to what clients see.

Every error of every endpoint is ``{"error": code, "detail": sentence}`` with
the right status, including the ones the framework raises itself; WebSocket
close codes live here too so that no transport invents its own.
"""

from __future__ import annotations

from enum import IntEnum

import orjson

#: Machine-readable codes for the statuses the framework produces itself.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    422: "unprocessable",
    426: "upgrade_required",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}

JSON_HEADERS = (
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)


class CloseCode(IntEnum):
    """WebSocket close codes (RFC 6455 §7.4 and the IANA registry) that Livefeed uses."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


class ApiError(Exception):
    """A request that cannot be served, with the status and the words to say why."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.code, self.detail)


def error_body(code: str, detail: str) -> bytes:
    """The JSON bytes of an error answer."""
    return orjson.dumps({"error": code, "detail": detail})


def bad_request(code: str, detail: str) -> ApiError:
    return ApiError(400, code, detail)
