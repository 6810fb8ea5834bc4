"""Two fixes to Hypercorn's HTTP/1.1 protocol, installed by ``app.server`` before serving.

Why this module exists:

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

How: ``hypercorn.protocol.ProtocolWrapper`` builds the HTTP/1.1 protocol of every
connection from the name ``H11Protocol`` in the ``hypercorn.protocol`` namespace,
for every worker type (asyncio, uvloop, trio).  ``install`` rebinds that one name
to ``LivefeedH11Protocol``, a subclass overriding two private methods; nothing
else of Hypercorn changes.

Fail safe: checked against Hypercorn 0.18.0 (with h11 0.16.0).  ``install`` first
checks that the names, signatures and call sites it relies on are still there;
if any is not, it logs a warning and leaves Hypercorn's own behaviour in place.
At run time, a JSON answer that cannot be built falls back to Hypercorn's own.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import logging
import re
import sys

import h11
import hypercorn.protocol
from hypercorn.config import Config
from hypercorn.events import Updated
from hypercorn.protocol.h11 import H2ProtocolAssumedError, H11Protocol

from app.errors import HTTP_CODES, JSON_HEADERS, error_body

log = logging.getLogger(__name__)

CHECKED_HYPERCORN = "0.18.0"

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
    """Hypercorn's HTTP/1.1 protocol with JSON error bodies and an idle timer for h2c."""

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
        """Re-arm the idle timer when the HTTP/2 preface hands over to ``H2Protocol``."""
        try:
            await super()._check_protocol(event)
        except H2ProtocolAssumedError:
            await self.send(Updated(idle=True))
            raise


def _params(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def _mismatches() -> list[str]:
    """What no longer looks like the Hypercorn this module was checked against."""
    found: list[str] = []
    current = getattr(hypercorn.protocol, "H11Protocol", None)
    if current is not H11Protocol:
        found.append("hypercorn.protocol.H11Protocol is not hypercorn.protocol.h11's")
    wrapper = getattr(hypercorn.protocol, "ProtocolWrapper", None)
    init_code = getattr(getattr(wrapper, "__init__", None), "__code__", None)
    handle_code = getattr(getattr(wrapper, "handle", None), "__code__", None)
    if init_code is None or "H11Protocol" not in init_code.co_names:
        found.append("ProtocolWrapper.__init__ no longer looks up H11Protocol")
    if handle_code is None or "H2ProtocolAssumedError" not in handle_code.co_names:
        found.append("ProtocolWrapper.handle no longer catches H2ProtocolAssumedError")
    expected = {
        "_send_error_response": ["self", "status_code"],
        "_check_protocol": ["self", "event"],
        "_send_h11_event": ["self", "event"],
        "_handle_events": ["self"],
    }
    for name, params in expected.items():
        method = getattr(H11Protocol, name, None)
        if not inspect.iscoroutinefunction(method) or _params(method) != params:
            found.append(f"H11Protocol.{name} is not a coroutine of {params}")
    handle_events = getattr(H11Protocol, "_handle_events", None)
    calls = getattr(getattr(handle_events, "__code__", None), "co_names", ())
    for name in ("_send_error_response", "_check_protocol", "RemoteProtocolError"):
        if name not in calls:
            found.append(f"H11Protocol._handle_events no longer uses {name}")
    if not isinstance(getattr(Config, "h11_max_incomplete_size", None), int):
        found.append("Config.h11_max_incomplete_size is gone")
    fields = (
        [f.name for f in dataclasses.fields(Updated)] if dataclasses.is_dataclass(Updated) else []
    )
    if fields != ["idle"]:
        found.append("hypercorn.events.Updated is not Updated(idle)")
    return found


def install() -> bool:
    """Make Hypercorn build ``LivefeedH11Protocol``; True if it now does.

    Idempotent.  If Hypercorn's internals differ from what was checked, this logs
    why and changes nothing, so Hypercorn keeps its own (empty-bodied) errors."""
    if getattr(hypercorn.protocol, "H11Protocol", None) is LivefeedH11Protocol:
        return True
    version = importlib.metadata.version("hypercorn")
    try:
        mismatches = _mismatches()
    except Exception as error:  # an inspection that fails is a mismatch too
        mismatches = [f"inspection failed: {error!r}"]
    if mismatches:
        log.warning(
            "Hypercorn %s is not the %s that app/hypercorn_fixes.py was checked against "
            "(%s): its own error answers (no JSON body) and h2c idle handling stay",
            version,
            CHECKED_HYPERCORN,
            "; ".join(mismatches),
        )
        return False
    if version != CHECKED_HYPERCORN:
        log.info(
            "Hypercorn %s: app/hypercorn_fixes.py was checked against %s; "
            "the internals it needs match, so it is installed",
            version,
            CHECKED_HYPERCORN,
        )
    # Hypercorn looks the class up on this module each time a connection starts.
    setattr(hypercorn.protocol, "H11Protocol", LivefeedH11Protocol)  # noqa: B010
    return True
