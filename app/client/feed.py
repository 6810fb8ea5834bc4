"""``follow()``: the feed a caller iterates, and what it can see of it.

```python
async with follow("http://127.0.0.1:8080", ["wf_a", "wf_b"], last_event_id=saved) as feed:
    async for event in feed:
        handle(event)
        save(feed.cursor)
```
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Literal

from app.client.closing import AsyncClosing
from app.client.events import ALL_EVENTS_CHANNEL, Control, Event, ReplayTruncated, TransportName
from app.client.follower import Follower, State
from app.client.options import (
    DEFAULT_BACKOFF_BASE_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_POLL_WAIT_S,
    DEFAULT_UPGRADE_INTERVAL_S,
    FeedOptions,
    TokenSource,
    name_list,
    transport_list,
)

MAX_CURSOR = 2**63 - 1


class Feed(AsyncClosing):
    """An async iterator of :class:`Event`, resuming by itself after every drop.

    Close it (``async with``, or ``await feed.aclose()``) to end it at once;
    a feed left behind by a ``break`` is closed when it is garbage-collected.
    """

    def __init__(self, follower: Follower) -> None:
        self._follower = follower
        self._events: AsyncGenerator[Event, None] | None = None
        self._closed = False

    @property
    def cursor(self) -> int | None:
        """The id to resume from (``last_event_id=``): the last event handed
        over, or, before any, the newest id when the feed first connected.
        Persist it after handling each event."""
        return self._follower.cursor

    @property
    def transport(self) -> TransportName | None:
        """The transport in use: ``"ws"``, ``"sse"`` or ``"poll"`` (None before the first)."""
        return self._follower.transport

    @property
    def state(self) -> State:
        return self._follower.state

    @property
    def problems(self) -> dict[TransportName, str]:
        """Why each transport better than the one in use was left."""
        ladder = self._follower.ladder
        return {name: ladder.problems[name] for name in ladder.better() if name in ladder.problems}

    @property
    def truncated(self) -> ReplayTruncated | None:
        """The last ``replay_truncated`` notice: events the server no longer had."""
        return self._follower.truncated

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        if self._events is None:
            self._events = self._follower.run()
        return await anext(self._events)

    async def aclose(self) -> None:
        """Close every connection; iterating afterwards ends at once."""
        self._closed = True
        if self._events is not None:
            await self._events.aclose()
        await self._follower.close()


def follow(
    url: str,
    channels: str | Iterable[str] = ALL_EVENTS_CHANNEL,
    *,
    last_event_id: int | None = None,
    types: str | Iterable[str] | None = None,
    tail: int = 0,
    token: TokenSource | None = None,
    headers: Mapping[str, str] | None = None,
    transport: Literal["auto", "ws", "sse", "poll"] = "auto",
    on_control: Callable[[Control], object] | None = None,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
    upgrade_interval_s: float = DEFAULT_UPGRADE_INTERVAL_S,
    poll_wait_s: float = DEFAULT_POLL_WAIT_S,
) -> Feed:
    """Follow ``channels`` on the server at ``url`` (``http(s)://host:port``).

    - ``channels``: ``"validation_updates"`` (every event), a workflow id, or
      several (a list, or ``"wf_a,wf_b"``) on servers that take several.
    - ``last_event_id``: resume after this id (a saved :attr:`Feed.cursor`);
      None means live events only, after the ``tail`` newest ones.
    - ``types``: only these event types; ``tail``: with no cursor, start with
      the last N matching events (0..1000).
    - ``token``: the read token, or a function returning one (sync or async,
      called before each connection, so an expiring token can be renewed);
      ``headers``: more headers for every request.
    - ``transport``: ``"auto"`` tries WebSocket, then SSE, then long-poll,
      and tries better ones again every ``upgrade_interval_s``; one name
      pins the feed to that transport.
    - ``on_control``: called with each control message
      (``connection_established``, ``heartbeat``, ``replay_truncated``,
      ``stream_error``...), for diagnostics.
    - ``heartbeat_s``: the server's ``LIVEFEED_HEARTBEAT_S``; a stream with
      no frame for twice that long is taken as dead and reconnected.

    Raises :class:`~app.client.errors.FeedRefused` (while iterating) when
    the server refuses the feed for good: credentials, a malformed channel
    or cursor, or every transport blocked.
    """
    if last_event_id is not None and not 0 <= last_event_id <= MAX_CURSOR:
        raise ValueError(f"last_event_id={last_event_id}: use 0..{MAX_CURSOR}")
    type_names = name_list(types, "event type") if types else ()
    options = FeedOptions(
        url=url,
        channels=name_list(channels),
        types=type_names,
        tail=tail,
        token=token,
        headers=dict(headers or {}),
        transports=transport_list(transport),
        heartbeat_s=heartbeat_s,
        connect_timeout_s=connect_timeout_s,
        backoff_base_s=backoff_base_s,
        backoff_max_s=backoff_max_s,
        upgrade_interval_s=upgrade_interval_s,
        poll_wait_s=poll_wait_s,
    )
    return Feed(Follower(options, last_event_id, on_control))
