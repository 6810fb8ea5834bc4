"""What ``GET /api/events`` was asked: cursor, page size, filter, wait, format.

Every parameter is checked, and an unknown or repeated one is ``400``: a
silently ignored typo in an audit query would return the wrong events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from app.errors import bad_request
from app.events import ALL_EVENTS_CHANNEL, EventFilter, utc_timestamp
from app.query import (
    MAX_TAIL,
    Channels,
    channel_list,
    parse_cursor,
    parse_int,
    parse_types,
    single,
    workflow_ids,
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_WAIT_S = 30.0
DEFAULT_FOLLOW_TAIL = 10  # as tail -f
KNOWN_PARAMS = frozenset(
    {"after", "limit", "workflow_id", "types", "since", "until", "wait", "format", "follow"}
    | {"tail"}
    | {"access_token", "ticket", "_"}  # credentials, and jQuery-style cache busters
)
FORMATS = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}


@dataclass(frozen=True, slots=True)
class ReplayQuery:
    after: int | None  # None: not given (a follow then starts with the last ``tail``)
    limit: int
    filter: EventFilter
    channels: Channels  # what the read credential must cover
    wait: float
    format: str
    follow: bool
    tail: int = 0

    @property
    def start(self) -> int:
        """Where pages and exports start: after the cursor, or from the beginning."""
        return self.after or 0


def _timestamp(raw: str, name: str) -> str:
    try:
        if not raw.isascii() or len(raw) > 40:
            raise ValueError
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise bad_request("bad_parameter", f"{name}={raw[:40]!r} is not an ISO 8601 timestamp")
    if moment.tzinfo is None:
        raise bad_request(
            "bad_parameter", f"{name}={raw[:40]!r} has no timezone; add 'Z' or an offset"
        )
    try:
        return utc_timestamp(moment)
    except OverflowError:
        raise bad_request("bad_parameter", f"{name}={raw[:40]!r} is outside years 1..9999 in UTC")


def _format(params: Mapping[str, Sequence[str]], accept: str) -> str:
    chosen = single(params, "format")
    if chosen is None:
        for name, mimetype in FORMATS.items():
            if name != "json" and mimetype in accept:
                return name
        return "json"
    if chosen not in FORMATS:
        raise bad_request("bad_parameter", f"format={chosen[:20]!r}: use json, ndjson or csv")
    return chosen


def parse_replay_query(params: Mapping[str, Sequence[str]], accept: str) -> ReplayQuery:
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise bad_request(
            "bad_parameter",
            f"unknown parameter {unknown[0][:40]!r}; "
            f"known: {', '.join(sorted(KNOWN_PARAMS - {'_'}))}",
        )
    raw_after, raw_limit, raw_wait = (single(params, n) for n in ("after", "limit", "wait"))
    raw_channels = single(params, "workflow_id")  # a channel list, as on streams
    channels = channel_list(raw_channels, "workflow_id") if raw_channels is not None else ()
    since, until = single(params, "since"), single(params, "until")
    if raw_wait is not None and not re.fullmatch(r"[0-9]{1,2}(\.[0-9]{1,3})?", raw_wait):
        raise bad_request("bad_parameter", f"wait={raw_wait[:20]!r}: use seconds in 0..30")
    wait = float(raw_wait) if raw_wait is not None else 0.0
    if wait > MAX_WAIT_S:
        raise bad_request("bad_parameter", f"wait={raw_wait}: use seconds in 0..30")
    follow = single(params, "follow")
    if follow not in (None, "0", "1"):
        raise bad_request("bad_parameter", f"follow={follow[:10]!r}: use 0 or 1")
    fmt = _format(params, accept)
    if follow == "1" and fmt != "ndjson":
        raise bad_request("bad_parameter", "follow=1 needs format=ndjson")
    raw_tail = single(params, "tail")
    if raw_tail is not None and follow != "1":
        raise bad_request("bad_parameter", "tail applies to follow=1; pages use after and limit")
    return ReplayQuery(
        after=parse_cursor(raw_after, "after") if raw_after is not None else None,
        limit=parse_int(raw_limit, "limit", 1, MAX_LIMIT)
        if raw_limit is not None
        else DEFAULT_LIMIT,
        filter=EventFilter(
            workflow_ids=workflow_ids(channels) if channels else None,
            types=parse_types(single(params, "types")),
            since=_timestamp(since, "since") if since is not None else None,
            until=_timestamp(until, "until") if until is not None else None,
        ),
        channels=channels or (ALL_EVENTS_CHANNEL,),
        wait=wait,
        format=fmt,
        follow=follow == "1",
        tail=DEFAULT_FOLLOW_TAIL if raw_tail is None else parse_int(raw_tail, "tail", 0, MAX_TAIL),
    )
