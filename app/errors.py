"""The one mapping from failures to what clients see.

The domain raises plain exceptions that know nothing of HTTP
(:class:`Rejected`, :class:`StoreUnavailable`, :class:`IdempotencyConflict`);
:func:`as_api_error` turns each into the status, code and sentence a client
reads, in this one place.  Every error of every endpoint is
``{"error": code, "detail": sentence}``, including the ones the framework
raises itself.  WebSocket close codes and the reasons a stream ends live here
too, so that no transport invents its own.
"""

from __future__ import annotations

from dataclasses import dataclass
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

#: What a client is told of a bug (the log has the rest).
BUG_DETAIL = "the server failed; this is a bug, and it is logged"

#: Headers on every API answer (the dashboard's HTML pages set their own policy).
API_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"

#: A JSON answer written as plain ASGI, with the headers Quart's answers get.
JSON_HEADERS = (
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    *((name.lower().encode(), value.encode()) for name, value in API_SECURITY_HEADERS.items()),
    (b"content-security-policy", API_CSP.encode()),
)

#: Seconds a client is told to wait before retrying after a store failure.
STORE_RETRY_AFTER = "1"


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


# Domain failures: raised below the HTTP layer, mapped by as_api_error().


class Rejected(ValueError):
    """Input that breaks a rule of the contract (bad JSON, a bad event, a batch too
    big); ``too_large`` says the rule was a size limit."""

    def __init__(self, code: str, detail: str, *, too_large: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.too_large = too_large


class StoreUnavailable(Exception):
    """The database cannot serve the request now (locked, full, read-only, down)."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key was used again with a different body."""


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


def as_api_error(exc: Exception) -> ApiError | None:
    """What a client is told about ``exc``; ``None`` for an exception that is a bug."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Rejected):
        return ApiError(413 if exc.too_large else 400, exc.code, exc.detail)
    if isinstance(exc, StoreUnavailable):
        return ApiError(503, "unavailable", str(exc), {"Retry-After": STORE_RETRY_AFTER})
    if isinstance(exc, IdempotencyConflict):
        return ApiError(422, "idempotency_key_reused", f"{exc}; use a new key for a new body")
    return None


def error_body(code: str, detail: str) -> bytes:
    """The JSON bytes of an error answer."""
    return orjson.dumps({"error": code, "detail": detail})


def bad_request(code: str, detail: str) -> ApiError:
    return ApiError(400, code, detail)


@dataclass(frozen=True, slots=True)
class EndReason:
    """Why a stream ended: decided once per stream, then counted, logged and told.

    ``name`` labels the disconnect metric (WebSocket streams use ``ws_label``
    when set: their labels were named after close codes before the lifecycle
    was shared, and dashboards depend on them).  ``error``, when set, is the
    code of the error frame the client gets before the end; ``close`` and
    ``reason`` are what a WebSocket closes with.
    """

    name: str
    close: CloseCode
    reason: str
    error: str | None = None
    detail: str = ""
    ws_label: str | None = None

    def label(self, transport: str) -> str:
        return self.ws_label if transport == "websocket" and self.ws_label else self.name


CLIENT_CLOSED = EndReason("client_closed", CloseCode.NORMAL, "the client closed the connection")
SHUTDOWN = EndReason(
    "shutdown", CloseCode.SERVICE_RESTART, "the server is restarting", ws_label="service_restart"
)
WRITE_TIMEOUT = EndReason(
    "write_timeout",
    CloseCode.TRY_AGAIN_LATER,
    "write timeout: the client is not reading",
    ws_label="try_again_later",
)
TOKEN_EXPIRED = EndReason(
    "token_expired",
    CloseCode.POLICY_VIOLATION,
    "token_expired",
    error="token_expired",
    detail="the token this stream was opened with has expired; get a new token (or a new "
    "ticket with it) and reconnect with your last event id",
)
INTERNAL_ERROR = EndReason(
    "internal_error",
    CloseCode.INTERNAL_ERROR,
    "internal error; reconnect",
    error="internal_error",
    detail="the server failed while streaming; reconnect with your last event id",
)


def store_failed(exc: StoreUnavailable, *, opened: bool = True) -> EndReason:
    """A stream whose store failed: told why, asked to come back.  (A WebSocket
    whose store failed after it opened counts as the close code it gets.)"""
    return EndReason(
        "store_unavailable",
        CloseCode.TRY_AGAIN_LATER,
        "the store is unavailable",
        error="unavailable",
        detail=str(exc),
        ws_label="try_again_later" if opened else None,
    )


def closed_by_policy(reason: str) -> EndReason:
    """A WebSocket client that abused the connection (floods, garbage)."""
    return EndReason("policy_violation", CloseCode.POLICY_VIOLATION, reason)


BINARY_FRAME = EndReason(
    "unsupported_data", CloseCode.UNSUPPORTED_DATA, "binary frames are not supported"
)
