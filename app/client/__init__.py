"""A Python client for Livefeed: follow channels, publish events.

```python
from app.client import follow

async for event in follow("http://127.0.0.1:8080", "wf_abc123", last_event_id=saved):
    print(event.id, event.type, event.data)
```

:func:`follow` prefers WebSocket and falls back to SSE, then long-poll, when
a transport is blocked on the way (with the reason logged on the
``app.client`` logger); it resumes from the last id it handed over after
every drop or restart, and never hands over an event twice.
:class:`Publisher` publishes over HTTP with a connection pool, or over one
WebSocket with many publishes in flight (``transport="ws"``).  The client
imports no server module, only speaks the public contract (docs/api.md).
"""

from app.client.errors import FeedRefused, LivefeedError, PublishError
from app.client.events import (
    ALL_EVENTS_CHANNEL,
    Control,
    Event,
    EventDraft,
    Published,
    ReplayTruncated,
    TransportName,
)
from app.client.feed import Feed, follow
from app.client.options import TokenSource
from app.client.publisher import Publisher, publish

__all__ = [
    "ALL_EVENTS_CHANNEL",
    "Control",
    "Event",
    "EventDraft",
    "Feed",
    "FeedRefused",
    "LivefeedError",
    "PublishError",
    "Published",
    "Publisher",
    "ReplayTruncated",
    "TokenSource",
    "TransportName",
    "follow",
    "publish",
]
