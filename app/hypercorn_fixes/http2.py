"""Hypercorn's HTTP/2 protocol, with a cap on the control frames a client may send.

Why: HTTP/2 is served by prior knowledge on the cleartext port, and a PING costs
the client 17 bytes and the server a parse and an answer in Python.  One client
sending PINGs as fast as it could kept ``/healthz`` waiting 1.1-1.8 s.  The same
holds for SETTINGS, RST_STREAM (the "rapid reset" of CVE-2023-44487) and PRIORITY
frames: a client needs a handful of them, a flood thousands (the family of
CVE-2019-9512, -9514 and -9515).  Past ``MAX_CONTROL_FRAMES_PER_S`` the server
answers ``GOAWAY`` with ``ENHANCE_YOUR_CALM`` and closes the connection, as nginx
does.  The count is taken on the frames of each read, before any is acted on.
"""

from __future__ import annotations

from functools import cached_property

import h2.events
from h2.errors import ErrorCodes
from hypercorn.events import Closed
from hypercorn.protocol.h2 import H2Protocol

from app.hypercorn_fixes.rate import PerSecondCap

MAX_CONTROL_FRAMES_PER_S = 500
CONTROL_EVENTS = (
    h2.events.PingReceived,
    h2.events.RemoteSettingsChanged,
    h2.events.StreamReset,
    h2.events.PriorityUpdated,
)
TOO_MANY_CONTROL_FRAMES = b"too many control frames per second"


class LivefeedH2Protocol(H2Protocol):
    """Hypercorn's HTTP/2 protocol that ends a connection flooding control frames."""

    @cached_property
    def _control_frames(self) -> PerSecondCap:
        return PerSecondCap(MAX_CONTROL_FRAMES_PER_S)

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        control = sum(isinstance(event, CONTROL_EVENTS) for event in events)
        if control and self._control_frames.add(control):
            self.connection.close_connection(
                ErrorCodes.ENHANCE_YOUR_CALM, additional_data=TOO_MANY_CONTROL_FRAMES
            )
            await self._flush()
            await self.send(Closed())
            return
        await super()._handle_events(events)
