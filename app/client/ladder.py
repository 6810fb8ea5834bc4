"""Which transport to use next, and when: the same ladder as the browser
client (``app/static/livefeed-client.js``), without the I/O.

WebSocket first, then SSE, then long-poll.  A failure moves one rung down
only when the server is reachable and refuses or breaks *this* transport; a
stopped server, a restart or overload is waited out on the same rung, with
exponential backoff and jitter so that many clients do not return together.
Credentials and malformed requests fail every transport alike, so they end
the feed instead.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from app.client.errors import Down
from app.client.events import TransportName
from app.client.options import FeedOptions

#: Errors a server sends when it wants the client back later, not elsewhere.
SERVER_BUSY = frozenset(
    {"shutting_down", "overloaded", "unavailable", "rate_limited", "internal_error"}
)
#: Close codes that mean the same: service restart, try again later, internal error.
LATER_CLOSE_CODES = frozenset({1011, 1012, 1013})
#: A 403 that only the WebSocket handshake gets (a browser-origin check).
TRANSPORT_REFUSALS = frozenset({"origin_not_allowed"})
#: Permanent refusals: the same request fails on every transport.
FATAL_STATUSES = frozenset({400, 401})
SERVER_TROUBLE = frozenset({408, 429})
#: The hint used when the server asked to come back later without saying when.
DEFAULT_RETRY_S = 3.0
#: A connection that stayed live this long resets the backoff.
STABLE_S = 10.0
#: Failures without an HTTP answer, each with the server reachable just after,
#: before the transport is taken as blocked.  One is not enough: a server that
#: was frozen or restarting answers the probe made a moment later.
STRIKES_BEFORE_FALL = 2


class Verdict(enum.Enum):
    REFUSE = "refuse"  # give up: FeedRefused
    LATER = "later"  # the server asked to come back later
    RETRY = "retry"  # same transport after a backoff
    PROBE = "probe"  # is the server reachable? then FALL, else RETRY
    FALL = "fall"  # the next transport down, at once


def spread(seconds: float) -> float:
    """``seconds`` ± 25 %, so that clients told the same delay do not return together."""
    return seconds * random.uniform(0.75, 1.25)


def classify(down: Down, *, was_live: bool, server_error: str | None) -> Verdict:
    """What one failure means (``server_error``: the last ``stream_error`` code
    the connection received before it ended, if any)."""
    status = down.status
    if status in FATAL_STATUSES:
        return Verdict.REFUSE
    if status == 403:  # Livefeed's own "forbidden" holds everywhere; a proxy's 403 does not
        blocked = down.error is None or down.error in TRANSPORT_REFUSALS
        return Verdict.FALL if blocked else Verdict.REFUSE
    if (
        (status is not None and (status >= 500 or status in SERVER_TROUBLE))
        or down.close_code in LATER_CLOSE_CODES
        or (server_error or down.error) in SERVER_BUSY
        or down.retry_after is not None
    ):
        return Verdict.LATER
    if status is not None:
        return Verdict.FALL  # 404, 405, 426, a 200 that is not a stream: blocked on the way
    if down.network:
        return Verdict.RETRY  # nothing listens: a stopped server, not a blocked transport
    if was_live and not down.silent:
        return Verdict.RETRY
    return Verdict.PROBE


@dataclass
class Ladder:
    """The rung in use, the backoff attempt, and why better rungs were left."""

    options: FeedOptions
    rung: int = 0
    attempt: int = 0
    problems: dict[TransportName, str] = field(default_factory=dict)
    strikes: dict[TransportName, int] = field(default_factory=dict)

    @property
    def transport(self) -> TransportName:
        return self.options.transports[self.rung]

    @property
    def on_last_rung(self) -> bool:
        return self.rung == len(self.options.transports) - 1

    def better(self) -> tuple[TransportName, ...]:
        """The transports above the one in use, best first."""
        return self.options.transports[: self.rung]

    def backoff(self) -> float:
        """Exponential, capped, with full jitter on the upper half."""
        cap = min(
            self.options.backoff_max_s, self.options.backoff_base_s * 2 ** min(self.attempt, 30)
        )
        self.attempt += 1
        return random.uniform(cap / 2, cap)

    def later(self, down: Down, retry_hint_s: float | None) -> float:
        """The delay the server asked for (jittered), else a backoff."""
        if down.retry_after is not None:
            return spread(down.retry_after)
        if down.close_code == 1012 or retry_hint_s is not None:
            return spread(retry_hint_s or DEFAULT_RETRY_S)
        return self.backoff()

    def strike(self, transport: TransportName) -> bool:
        """Count a failure of ``transport`` with the server reachable; true once
        there were enough in a row to take the transport as blocked."""
        strikes = self.strikes.get(transport, 0) + 1
        self.strikes[transport] = strikes
        return strikes >= STRIKES_BEFORE_FALL

    def live(self, transport: TransportName, lasted_s: float) -> None:
        """A connection on ``transport`` ended after being live for ``lasted_s``."""
        if lasted_s >= STABLE_S:
            self.attempt = 0
            self.strikes.pop(transport, None)

    def fall(self, reason: str) -> bool:
        """Leave the current rung for the next; false when there is none."""
        self.problems[self.transport] = reason
        if self.on_last_rung:
            return False
        self.rung += 1
        return True

    def adopt(self, transport: TransportName) -> None:
        """A better transport works again."""
        self.rung = self.options.transports.index(transport)
        for name in self.options.transports[self.rung :]:
            self.problems.pop(name, None)
        self.strikes.pop(transport, None)
