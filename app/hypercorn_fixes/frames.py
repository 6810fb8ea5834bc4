"""A cap on how many WebSocket frames one client may make the server parse per second.

Why: a frame costs the client 6 bytes and the server a parse in Python.  One client
sending empty continuation frames (a message that never ends) or pings, and reading
nothing, kept the event loop busy enough that ``/healthz`` took 2.4 s and 3.6 s
meanwhile.  Livefeed's own limit of messages per second never saw them: Hypercorn
answers pings itself, and an unfinished message never reaches the application.
Complete messages do, and are limited there: a publisher pipelining thousands of
small ``publish`` messages a second is not cut here.

How: Hypercorn builds each WebSocket's wsproto ``Connection`` in
``Handshake.accept`` from the name ``Connection`` in ``hypercorn.protocol.ws_stream``;
:func:`app.hypercorn_fixes.install` rebinds it to :class:`FrameLimitedConnection`.
Past the cap, the next event is the client's "close" with 1008: Hypercorn answers it
with a close frame giving the reason and ends the connection, and nothing more of
what the client sent is parsed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from functools import cached_property
from typing import Any

from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event, Message
from wsproto.frame_protocol import CloseReason

from app.hypercorn_fixes.rate import PerSecondCap

#: Frames the application never sees (pings, pongs, closes, and the fragments of a
#: message before its last) parsed per second and connection.  Complete messages are
#: not counted here: they reach the application, which limits them itself (50 a
#: second, or the publish rate for a connection that publishes), and Hypercorn stops
#: reading while the application is behind.  The pieces of a big frame, as they
#: arrive, are not counted either: a fast publisher of 1 MiB messages is not a flood.
MAX_FRAMES_PER_S = 1000
TOO_MANY_FRAMES = "too many frames per second"


class _EventList(list[Event]):
    """The wsproto connection's pending events: it only appends, pops from the left
    and tests for emptiness, which a list does too; an empty deque takes 760 bytes
    for a WebSocket's whole life, an empty list 56."""

    __slots__ = ()

    def popleft(self) -> Event:
        return self.pop(0)


class FrameLimitedConnection(Connection):
    """wsproto's connection that ends one whose client sends frames past the cap
    (and keeps its pending events in a list)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self._events, deque) and not self._events:
            self._events = _EventList()  # type: ignore[assignment]

    @cached_property
    def _frames(self) -> PerSecondCap:
        return PerSecondCap(MAX_FRAMES_PER_S)

    def events(self) -> Generator[Event, None, None]:
        for event in super().events():
            unseen = not isinstance(event, Message) or (
                event.frame_finished and not event.message_finished
            )
            if unseen and self._frames.add():
                # As if the client had closed: Hypercorn then sends the matching close
                # frame (with this reason) and ends the stream.
                self._state = ConnectionState.REMOTE_CLOSING
                yield CloseConnection(CloseReason.POLICY_VIOLATION, TOO_MANY_FRAMES)
                return
            yield event

