"""Fixes to Hypercorn's protocols, installed by ``app.server`` before serving.

- :mod:`~app.hypercorn_fixes.http1`: HTTP/1.1 parsed by llhttp instead of h11 (a
  third of a small request's server time), JSON bodies for the errors answered
  before the app runs, and no ``Upgrade: h2c`` (request smuggling behind a proxy).
- :mod:`~app.hypercorn_fixes.websocket`: no ``permessage-deflate`` (a compression
  bomb), a malformed extension offer refused with JSON, JSON handshake refusals that
  end the connection, and a close handshake that always finishes.
- :mod:`~app.hypercorn_fixes.frames`: a cap on the WebSocket frames one client makes
  the server parse per second (6-byte frames stalled the event loop).
- :mod:`~app.hypercorn_fixes.http2`: the same for HTTP/2 control frames (PING floods).
- :mod:`~app.hypercorn_fixes.connection`: each connection is its transport's
  protocol, with no task, stream reader or writer of its own while nothing happens
  (about 4 KiB of an idle stream), and a write that cannot drain for the send
  timeout aborts it (a stalled client kept its socket and buffers forever).
  :mod:`~app.hypercorn_fixes.serve` serves those connections.
- :mod:`~app.hypercorn_fixes.lean`: a request's receive queue and a connection's
  events, which make no deques until something waits (3.7 KiB of an idle stream).

How: Hypercorn builds each connection's protocol from the names ``H11Protocol`` and
``H2Protocol`` in ``hypercorn.protocol`` (every worker type: asyncio, uvloop, trio),
each HTTP/2 WebSocket stream from the name ``WSStream`` in ``hypercorn.protocol.h2``
(HTTP/1.1's come from :mod:`~app.hypercorn_fixes.http1`) and every WebSocket's wsproto
connection from the name ``Connection`` in ``hypercorn.protocol.ws_stream``.
``install`` rebinds those names to Livefeed's classes (the HTTP/1.1 protocol, and
subclasses overriding a few methods);
:func:`~app.hypercorn_fixes.serve.serve` then serves connections with them (instead
of ``hypercorn.asyncio.serve``).

Fail safe: checked against Hypercorn 0.18.0 (with h11 0.16.0, wsproto 1.3.2).
``install`` first checks that the names, signatures and call sites relied on are
still there (:mod:`~app.hypercorn_fixes.checks`); if any is not, it logs a warning
naming what stays unprotected and changes nothing, and the caller serves with
``hypercorn.asyncio.serve``.
"""

from __future__ import annotations

import importlib.metadata
import logging

import hypercorn.protocol
import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.protocol.ws_stream

from app.hypercorn_fixes.checks import CHECKED_HYPERCORN, mismatches
from app.hypercorn_fixes.frames import FrameLimitedConnection
from app.hypercorn_fixes.http1 import Http1Protocol
from app.hypercorn_fixes.http2 import LivefeedH2Protocol
from app.hypercorn_fixes.websocket import LivefeedWSStream

log = logging.getLogger(__name__)

#: (module, name, replacement): every name ``install`` rebinds.
REBOUND = (
    (hypercorn.protocol, "H11Protocol", Http1Protocol),
    (hypercorn.protocol, "H2Protocol", LivefeedH2Protocol),
    (hypercorn.protocol.h2, "WSStream", LivefeedWSStream),
    (hypercorn.protocol.ws_stream, "Connection", FrameLimitedConnection),
)


def install() -> bool:
    """Make Hypercorn build Livefeed's protocol classes; True if it now does.

    Idempotent.  If Hypercorn's internals differ from what was checked, this logs
    why and changes nothing, so Hypercorn keeps its own behaviour."""
    if all(getattr(module, name, None) is ours for module, name, ours in REBOUND):
        return True
    version = importlib.metadata.version("hypercorn")
    try:
        found = mismatches()
    except Exception as error:  # an inspection that fails is a mismatch too
        found = [f"inspection failed: {error!r}"]
    if found:
        log.warning(
            "Hypercorn %s is not the %s that app/hypercorn_fixes was checked against (%s): "
            "its own behaviour stays, unprotected: error answers without a JSON body, "
            "silent h2c connections, Upgrade: h2c behind a proxy, WebSocket compression "
            "(a compression bomb can take memory), unfinished WebSocket closes, floods of "
            "tiny WebSocket frames and of HTTP/2 control frames, stalled clients' sockets; "
            "each idle stream keeps a task, stream reader and writer, asyncio's queues "
            "and events (about 8 KiB)",
            version,
            CHECKED_HYPERCORN,
            "; ".join(found),
        )
        return False
    if version != CHECKED_HYPERCORN:
        log.info(
            "Hypercorn %s: app/hypercorn_fixes was checked against %s; "
            "the internals it needs match, so it is installed",
            version,
            CHECKED_HYPERCORN,
        )
    for module, name, ours in REBOUND:  # looked up each time a connection or stream starts
        setattr(module, name, ours)
    return True
