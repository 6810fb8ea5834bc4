"""``POST /api/events`` as plain ASGI, for the publishes that need nothing of Quart.

A single-event publish spent most of its server time in the framework's
request path (request and response objects, context, hooks, header
structures): about 570 µs of server CPU per event with 8 publishers on one
core, 1,700 a second.  Written here, as ``/sse`` and ``/ws`` are, the same
publish costs about 390 µs (2,400 a second).

Only requests whose whole answer is decided here take this path: a declared
JSON body of known length within the limit, no ``Origin`` (a browser on
another origin needs Quart's CORS answer) and no ``Expect``.  Every other
request, and every other method on the path, goes to Quart's route as before,
which answers it (415, 413, CORS, chunked bodies).  Both run the same publish
(:meth:`Runtime.publish_body`) and give the same headers and error bodies.
"""

from __future__ import annotations

import asyncio
import logging

from werkzeug.exceptions import RequestTimeout

from app.config import BODY_TIMEOUT_S, MAX_BODY_BYTES
from app.errors import BUG_DETAIL, HTTP_CODES, ApiError, as_api_error
from app.events import idempotency_key
from app.runtime import Runtime
from app.scope import Receive, Scope, Send, declares_json, header
from app.security.hosts import scope_client
from app.streams.connection import send_error, send_json

log = logging.getLogger(__name__)

PUBLISH_PATH = "/api/events"
BODY_TIMED_OUT = ApiError(408, HTTP_CODES[408], RequestTimeout.description or "request timeout")
INTERNAL_ERROR = ApiError(500, "internal_error", BUG_DETAIL)
REPLAYED = ((b"idempotent-replayed", b"true"),)


def takes_fast_path(scope: Scope) -> bool:
    """Whether this request's answer is decided by :func:`serve_publish` alone."""
    if scope["method"] != "POST" or scope["path"] != PUBLISH_PATH:
        return False
    length = header(scope, b"content-length")
    if length is None or not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return False
    if header(scope, b"origin") is not None or header(scope, b"expect") is not None:
        return False
    return declares_json(header(scope, b"content-type"))


async def serve_publish(scope: Scope, receive: Receive, send: Send, rt: Runtime) -> None:
    """Check, read, append durably, then answer ``201`` (or the JSON error)."""
    try:
        await rt.access.publish(scope_client(scope, rt.settings), header(scope, b"authorization"))
        key = idempotency_key(header(scope, b"idempotency-key"))
        body = await _read_body(receive)
        if body is None:
            return  # the client left before sending it all: nothing was written
        answer, replayed = await rt.publish_body(body, key)
    except Exception as exc:
        error = as_api_error(exc)
        if error is None:
            log.exception("unhandled error on POST %s", PUBLISH_PATH)
            error = INTERNAL_ERROR
        await send_error(send, error)
        return
    await send_json(send, 201, answer, REPLAYED if replayed else ())


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body (its length was checked against the limit), ``None`` if the
    client disconnected first; 408 if it takes longer than Quart would wait."""
    chunks = []
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise BODY_TIMED_OUT from None
