"""Hypercorn's HTTP/1.1 protocol, as Livefeed serves it.

Why each change:

1. Errors Hypercorn answers itself, before the application sees a request (``431``
   for a request head over ``h11_max_incomplete_size``, ``400`` for malformed
   HTTP/1.1, ``501`` for an unknown ``Transfer-Encoding``), go out with an empty
   body (``H11Protocol._send_error_response``).  Livefeed promises that every
   error is JSON ``{"error", "detail"}``, so they are answered as JSON here.
2. An h2c prior-knowledge connection (``PRI * HTTP/2.0`` on a cleartext socket)
   that opens no stream was never idle-closed.  h11 parses the preface as a
   request, so ``H11Protocol._handle_events`` stops the idle timer
   (``Updated(idle=False)``) before ``_check_protocol`` hands the connection to
   ``H2Protocol``; that one re-arms the timer only when a stream closes.  (The
   order comes from Hypercorn's fix for its issue #51, commit da9262d, so that a
   slow response on an ``Upgrade: h2c`` stream is not cut.)  Here the timer is
   re-armed at the hand-over; a request in the same packet stops it again at once.
3. ``Upgrade: h2c`` is never honoured: the request is answered as plain HTTP/1.1.
   Behind a proxy that forwards ``Upgrade``, Hypercorn's ``101`` turned the proxy's
   connection into a blind tunnel, and every request after it reached Livefeed
   unchecked by the proxy, with the client's own ``X-Forwarded-For`` (which a
   trusted proxy's requests are believed about).  HTTP/2 stays available by
   prior knowledge and over TLS (ALPN); RFC 9113 deprecated the upgrade anyway.

At run time, a JSON answer that cannot be built falls back to Hypercorn's own.
"""

from __future__ import annotations

import logging
import re
import sys

import h11
from hypercorn.config import Config
from hypercorn.events import Updated
from hypercorn.protocol.h11 import H2ProtocolAssumedError, H11Protocol

from app.errors import HTTP_CODES, JSON_HEADERS, error_body

log = logging.getLogger(__name__)

#: Where h11's message stops being a reason and starts quoting the client's bytes.
_QUOTE_START = re.compile(r":?\s+(?:b['\"]|bytearray\(|\()")
_PLAIN_REASON = re.compile(r"[A-Za-z][A-Za-z0-9 :,.-]{2,79}")


def _reason(error: BaseException | None) -> str | None:
    """h11's reason for a refusal, without the bytes it quotes (they are the client's)."""
    if not isinstance(error, h11.RemoteProtocolError):
        return None
    reason = _QUOTE_START.split(str(error), maxsplit=1)[0].strip().rstrip(":")
    return reason if _PLAIN_REASON.fullmatch(reason) else None


def describe(status: int, config: Config, error: BaseException | None) -> tuple[str, str]:
    """The error code and the sentence for a status Hypercorn answers by itself."""
    if status == 431:
        limit = config.h11_max_incomplete_size
        return HTTP_CODES[431], (
            f"the request line and headers together are larger than this server's limit "
            f"of {limit} bytes ({limit / 1024:g} KiB); send fewer or smaller headers"
        )
    if status == 501:
        return HTTP_CODES[501], (
            "the request uses a Transfer-Encoding this server does not support; "
            "send a Content-Length, or Transfer-Encoding: chunked alone"
        )
    reason = _reason(error)
    what = f" ({reason})" if reason else ""
    return HTTP_CODES.get(status, "bad_request"), (
        f"the request is not valid HTTP/1.1{what}: check the request line, the header "
        "lines and the message framing (Content-Length or Transfer-Encoding)"
    )


class LivefeedH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol with JSON error bodies, an idle timer for h2c prior
    knowledge, and no ``Upgrade: h2c``."""

    async def _send_error_response(self, status_code: int) -> None:
        """Like Hypercorn's answer (``Connection: close``), with a JSON body; Hypercorn
        calls this from the ``except`` that caught h11's error, so it is current here."""
        try:
            body = error_body(*describe(status_code, self.config, sys.exception()))
            response = h11.Response(
                status_code=status_code,
                headers=[
                    *JSON_HEADERS,
                    (b"content-length", b"%d" % len(body)),
                    (b"connection", b"close"),
                    *self.config.response_headers("h11"),
                ],
            )
        except Exception:
            log.exception("could not build a JSON body for Hypercorn's %d", status_code)
            await super()._send_error_response(status_code)
            return
        await self._send_h11_event(response)
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    async def _check_protocol(self, event: h11.Request) -> None:
        """Hypercorn's choice of protocol, blind to ``Upgrade: h2c``; re-arm the idle timer
        when the HTTP/2 preface hands over to ``H2Protocol``."""
        try:
            await super()._check_protocol(without_h2c_upgrade(event))
        except H2ProtocolAssumedError:
            await self.send(Updated(idle=True))
            raise


def without_h2c_upgrade(request: h11.Request) -> h11.Request:
    """The request as ``_check_protocol`` must see it: without an ``Upgrade: h2c`` header
    (the only thing it reads ``Upgrade`` for).  The application still sees it all."""
    kept = [(n, v) for n, v in request.headers if not (n == b"upgrade" and _is_h2c(v))]
    if len(kept) == len(request.headers):
        return request
    return h11.Request(
        method=request.method,
        target=request.target,
        headers=kept,
        http_version=request.http_version,
    )


def _is_h2c(value: bytes) -> bool:
    return value.strip().lower() == b"h2c"
