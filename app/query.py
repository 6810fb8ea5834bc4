"""What a reader asked for: channel, filter, cursor and tail, parsed once for
every surface, so the cursor rules cannot drift between transports."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.errors import ApiError, bad_request
from app.events import ALL_EVENTS_CHANNEL, TYPE_RE, WORKFLOW_ID_RE, EventFilter, is_workflow_id

MAX_CURSOR = 2**63 - 1
MAX_TAIL = 1000
MAX_CHANNELS = 50
_CURSOR_RE = re.compile(r"[0-9]{1,19}")  # ASCII only: int() also takes " 42", "4_2", "١٢"
STREAM_PATHS = ("/ws/{channel}", "/sse/{channel}")

#: What a reader follows: channel names, de-duplicated, in the order given.
Channels = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    channels: Channels
    filter: EventFilter
    cursor: int | None
    tail: int
    batch: bool = False  # WebSocket: several events per frame, as a JSON array

    @property
    def channel(self) -> str:
        """The channels as one comma-joined name (logs, tickets, the hello frame)."""
        return ",".join(self.channels)


def channel_name(name: str, where: str) -> str:
    """A channel name, or 400 naming it (``validation_updates`` or a workflow id)."""
    if name != ALL_EVENTS_CHANNEL and not is_workflow_id(name):
        raise ApiError(
            400,
            "bad_channel",
            f"{where}: {name[:80]!r} is not a channel: use {ALL_EVENTS_CHANNEL!r} (every "
            f"event) or a workflow id matching {WORKFLOW_ID_RE.pattern}",
        )
    return name


def parse_channels(names: Sequence[str], where: str) -> Channels:
    """Up to ``MAX_CHANNELS`` names (repeats ignored); any bad name is 400."""
    unique = tuple(dict.fromkeys(channel_name(name, where) for name in names))
    if len(unique) > MAX_CHANNELS:
        raise ApiError(
            400,
            "too_many_channels",
            f"{where}: {len(unique)} channels; follow at most {MAX_CHANNELS} on one connection",
        )
    return unique


def channel_list(raw: str, where: str) -> Channels:
    """``wf_a,wf_b`` as channels; an empty name (``wf_a,,wf_b``) is 400."""
    return parse_channels(raw.split(","), where)


@functools.lru_cache(maxsize=1024)
def workflow_ids(channels: Channels) -> frozenset[str] | None:
    """The workflows a list of channels means (``None``: every event).

    Remembered for the channel lists seen last: streams on the same channels then
    share one set (even a set of one is 216 bytes) instead of one per stream.  The
    result is immutable, so sharing it changes nothing else."""
    return None if ALL_EVENTS_CHANNEL in channels else frozenset(channels)


def parse_cursor(raw: str, source: str) -> int:
    if not _CURSOR_RE.fullmatch(raw) or int(raw) > MAX_CURSOR:
        raise bad_request(
            "bad_cursor",
            f"{source} {raw[:40]!r} is not an event id: use 0..{MAX_CURSOR} in ASCII digits",
        )
    return int(raw)


def parse_int(raw: str, name: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", raw) or not low <= int(raw) <= high:
        raise bad_request(
            "bad_parameter", f"{name}={raw[:40]!r}: use a whole number in {low}..{high}"
        )
    return int(raw)


def parse_types(raw: str | None) -> frozenset[str] | None:
    if not raw:
        return None
    types = frozenset(part.strip() for part in raw.split(",") if part.strip())
    for name in types:
        if not TYPE_RE.fullmatch(name):
            raise bad_request("bad_parameter", f"types: {name[:70]!r} is not an event type")
    return types or None


def single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    """One value of a query parameter; repeating it is ambiguous, so refused."""
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise bad_request("bad_parameter", f"{name} is given {len(values)} times; give it once")
    return values[0]


def not_found_stream(why: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"{why}. Valid stream paths: {', '.join(STREAM_PATHS)} where {{channel}} is "
        f"{ALL_EVENTS_CHANNEL!r} (every event) or a workflow id matching "
        f"{WORKFLOW_ID_RE.pattern} other than '.' and '..', e.g. /ws/{ALL_EVENTS_CHANNEL}",
    )


def parse_stream_request(
    path: str, prefix: str, params: Mapping[str, Sequence[str]], last_event_id: str | None
) -> StreamRequest:
    """``/sse/<channels>`` or ``/ws/<channels>`` plus query; the header cursor wins.
    ``/ws`` alone (``prefix`` given without its slash) follows nothing yet."""
    if path == prefix.rstrip("/"):
        channels: Channels = ()
    else:
        segment = path[len(prefix) :]
        if not path.startswith(prefix) or not segment or "/" in segment:
            raise not_found_stream(f"no stream at {path[:100]!r}")
        channels = channel_list(segment, "channel")
    types = parse_types(single(params, "types"))
    if last_event_id is not None:
        cursor: int | None = parse_cursor(last_event_id, "Last-Event-ID")
    else:
        raw = single(params, "last_event_id")
        cursor = parse_cursor(raw, "last_event_id") if raw is not None else None
    raw_tail = single(params, "tail")
    tail = parse_int(raw_tail, "tail", 0, MAX_TAIL) if raw_tail is not None else 0
    batch = single(params, "batch")
    if batch not in (None, "0", "1"):
        raise bad_request("bad_parameter", f"batch={batch[:10]!r}: use 0 or 1")
    filter = EventFilter(workflow_ids=workflow_ids(channels), types=types)
    return StreamRequest(channels, filter, cursor, tail, batch == "1")


def stream_path_error(path: str) -> ApiError:
    """A plain HTTP request for a WebSocket path is told to upgrade; others get the paths."""
    try:
        parse_stream_request(path, "/ws/", {}, None)
    except ApiError as error:
        return error
    return ApiError(
        426,
        "upgrade_required",
        f"{path[:100]} is a WebSocket endpoint: connect with a WebSocket client, "
        "or read the same events over HTTP at /sse/{channel}",
        {"Upgrade": "websocket"},
    )
