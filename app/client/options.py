"""Everything a feed was asked for, checked once, and the URLs built from it.

Channels are kept as a list and joined with commas in every URL
(``/ws/wf_a,wf_b``, ``/sse/wf_a,wf_b``, ``workflow_id=wf_a,wf_b``), so one
channel works on every server and several work wherever the server accepts
them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from app.client.events import ALL_EVENTS_CHANNEL, TransportName

#: A bearer token, or a function returning one (called before every connection,
#: so an expiring token can be renewed).
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]

LADDER: tuple[TransportName, ...] = ("ws", "sse", "poll")
DEFAULT_HEARTBEAT_S = 30.0  # the server's default LIVEFEED_HEARTBEAT_S
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_BACKOFF_BASE_S = 0.5
DEFAULT_BACKOFF_MAX_S = 15.0
DEFAULT_UPGRADE_INTERVAL_S = 60.0
DEFAULT_POLL_WAIT_S = 25.0
MAX_POLL_WAIT_S = 30.0
MAX_TAIL = 1000
_FORBIDDEN_IN_NAME = frozenset(",/?#& \t\r\n")


def name_list(names: str | Iterable[str], what: str = "channel") -> tuple[str, ...]:
    """One name, ``"a,b"``, or any iterable of names: de-duplicated, in order.
    The server judges the names; this only keeps the list syntax unambiguous."""
    given = names.split(",") if isinstance(names, str) else list(names)
    listed: list[str] = []
    for name in given:
        if not isinstance(name, str) or not name or _FORBIDDEN_IN_NAME & set(name):
            raise ValueError(f"{name!r} is not a {what} name")
        if name not in listed:
            listed.append(name)
    if not listed:
        raise ValueError(f"give at least one {what} name")
    return tuple(listed)


def transport_list(transport: str) -> tuple[TransportName, ...]:
    """``auto`` is the whole ladder; a single name pins the feed to that transport."""
    if transport == "auto":
        return LADDER
    for name in LADDER:
        if transport == name:
            return (name,)
    raise ValueError(f"transport={transport!r}: use auto, ws, sse or poll")


def http_base(url: str) -> str:
    """The server's base URL over HTTP (a ``ws://`` base is accepted too)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not a server URL: use http(s)://host[:port]")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: give the server's base URL, without a query")
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


async def bearer_headers(token: TokenSource | None) -> dict[str, str]:
    if token is None:
        return {}
    value = token() if callable(token) else token
    if inspect.isawaitable(value):
        value = await value
    return {"Authorization": f"Bearer {value}"} if value else {}


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """A feed's settings: see :func:`app.client.follow` for each one."""

    url: str
    channels: tuple[str, ...]
    types: tuple[str, ...] = ()
    tail: int = 0
    token: TokenSource | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    transports: tuple[TransportName, ...] = LADDER
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    upgrade_interval_s: float = DEFAULT_UPGRADE_INTERVAL_S
    poll_wait_s: float = DEFAULT_POLL_WAIT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", http_base(self.url))
        if not 0 <= self.tail <= MAX_TAIL:
            raise ValueError(f"tail={self.tail}: use 0..{MAX_TAIL}")
        if not 0 < self.poll_wait_s <= MAX_POLL_WAIT_S:
            raise ValueError(f"poll_wait_s={self.poll_wait_s}: use more than 0, at most 30")
        timings = ("heartbeat_s", "connect_timeout_s", "backoff_base_s", "upgrade_interval_s")
        for name in timings:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be at least backoff_base_s")

    @property
    def all_events(self) -> bool:
        return ALL_EVENTS_CHANNEL in self.channels

    def stream_url(self, transport: TransportName, cursor: int | None) -> str:
        """``/ws/<channels>`` (as ``ws(s)://``) or ``/sse/<channels>`` with the query."""
        path = "/ws/" if transport == "ws" else "/sse/"
        names = ",".join(quote(name, safe=":") for name in self.channels)
        params: dict[str, str] = {}
        if self.types:
            params["types"] = ",".join(self.types)
        if cursor is not None:
            params["last_event_id"] = str(cursor)
        elif self.tail:
            params["tail"] = str(self.tail)
        if transport == "ws":
            params["batch"] = "1"  # several events per frame: far cheaper for the server
        url = self.url + path + names + _query(params)
        if transport == "ws":  # http://... -> ws://..., https://... -> wss://...
            url = "ws" + url.removeprefix("http")
        return url

    def filter_params(self) -> dict[str, str]:
        """The channels and types as ``/api/events`` takes them."""
        params: dict[str, str] = {}
        if not self.all_events:
            params["workflow_id"] = ",".join(self.channels)
        if self.types:
            params["types"] = ",".join(self.types)
        return params

    async def request_headers(self) -> dict[str, str]:
        """The caller's headers plus the bearer token, for every request."""
        return {**self.headers, **await bearer_headers(self.token)}


def _query(params: Mapping[str, str]) -> str:
    if not params:
        return ""
    return "?" + "&".join(f"{key}={quote(value, safe=',')}" for key, value in params.items())
