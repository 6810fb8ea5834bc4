"""The event envelope: strict validation on the way in, one encoding on the way out.

An event is encoded exactly once, when it is read from the store, into the
bytes every transport sends: the compact JSON envelope (long-poll, NDJSON),
the SSE frame that carries the same JSON on its one ``data:`` line, and the
WebSocket text frame that carries it whole.  Subscribers share those bytes;
nobody re-encodes per client.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, StringConstraints, TypeAdapter, ValidationError

from app.errors import EndReason, Rejected
from app.sse.event import ServerSentEvent

ALL_EVENTS_CHANNEL = "validation_updates"
TYPE_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TYPE_RE = re.compile(TYPE_PATTERN[1:-1])
WORKFLOW_ID_RE = re.compile(WORKFLOW_ID_PATTERN[1:-1])
#: Workflow ids are path segments (``/sse/{id}``), and these two are not: browsers and
#: URL libraries resolve them away before sending, so no page could stream them.  (A
#: log written before they were refused may still hold them: WORKFLOW_ID_RE is the
#: form a stored id has.)
DOT_SEGMENTS = frozenset({".", ".."})
MAX_BATCH = 1000
MAX_DATA_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
SSE_SEPARATOR = "\n"
#: The control message that tells a client why its stream or request failed.  Not
#: ``error``: that is EventSource's own event, and ``event: error`` would fire a
#: page's ``onerror`` while the stream is open (pages that close on error then
#: never reconnect).  No SSE event is ever named ``error``, ``message`` or ``open``.
ERROR_CONTROL = "stream_error"


def websocket_text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked WebSocket text frame (RFC 6455 §5.2), as a server
    sends it.  With no extension negotiated (Livefeed never negotiates one), a
    server frame is the same bytes for every client, so it is built once."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


def is_workflow_id(value: str) -> bool:
    """A workflow id a publisher may use and a reader may name."""
    return WORKFLOW_ID_RE.fullmatch(value) is not None and value not in DOT_SEGMENTS


class EventIn(BaseModel):
    """One event as a publisher sends it; ``id`` and ``ts`` belong to the store."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Annotated[str, StringConstraints(pattern=TYPE_PATTERN)]
    workflow_id: Annotated[str, StringConstraints(pattern=WORKFLOW_ID_PATTERN)] | None = None
    data: dict[str, Any] | None = None


_BATCH = TypeAdapter(list[EventIn])


# Draft and Event are built once per event published and never changed after, but
# are not ``frozen``: a frozen dataclass sets each field through
# ``object.__setattr__``, 1.45 µs for Event's nine against 0.22 µs (measured), a
# twentieth of a batched publish's whole cost per event.
@dataclass(slots=True)
class Draft:
    """A validated event waiting for the store to give it an id and a timestamp."""

    type: str
    workflow_id: str | None
    data: str  # compact JSON object


@dataclass(slots=True, eq=False)
class Event:
    """A stored event and its shared encodings."""

    id: int
    type: str
    workflow_id: str | None
    ts: str
    data: str
    json: bytes
    text: str
    sse: bytes
    ws: bytes  # the WebSocket text frame

    @classmethod
    def build(cls, id: int, type: str, workflow_id: str | None, ts: str, data: str) -> Event:
        # type, workflow_id and ts are restricted to characters that need no JSON
        # escaping, and data is already compact JSON, so plain formatting is exact.
        wf = "null" if workflow_id is None else f'"{workflow_id}"'
        text = f'{{"id":{id},"type":"{type}","workflow_id":{wf},"ts":"{ts}","data":{data}}}'
        # What ServerSentEvent(text, id=id, event=type, sep="\n").encode() gives (a test
        # holds them equal), without its per-field line splitting: the id is an int,
        # the type cannot hold CR/LF, and compact JSON escapes every line break.
        frame = f"id: {id}\nevent: {type}\ndata: {text}\n\n".encode()
        envelope = text.encode()
        ws = websocket_text_frame(envelope)
        return cls(id, type, workflow_id, ts, data, envelope, text, frame, ws)

    def envelope(self) -> dict[str, Any]:
        envelope: dict[str, Any] = orjson.loads(self.json)
        return envelope


@dataclass(frozen=True, slots=True, eq=False)
class Control:
    """A control message (heartbeat, replay_truncated, error...): never stored, no id."""

    type: str
    json: bytes
    text: str
    sse: bytes
    ws: bytes  # the WebSocket text frame
    id: None = None

    @classmethod
    def build(cls, type: str, *, sse_retry: int | None = None, **fields: Any) -> Control:
        """``sse_retry`` also sets the EventSource reconnection delay (a ``retry:`` line)."""
        text = orjson.dumps({"type": type, **fields}).decode()
        frame = ServerSentEvent(text, event=type, retry=sse_retry, sep=SSE_SEPARATOR).encode()
        envelope = text.encode()
        return cls(type, envelope, text, frame, websocket_text_frame(envelope))


Frame = Event | Control


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a reader wants.  ``None`` fields match everything."""

    workflow_ids: frozenset[str] | None = None  # None: every event; empty: none
    types: frozenset[str] | None = None
    since: str | None = None  # inclusive, a utc_timestamp() string
    until: str | None = None  # exclusive

    def matches(self, event: Event) -> bool:
        return (
            (self.workflow_ids is None or event.workflow_id in self.workflow_ids)
            and (self.types is None or event.type in self.types)
            and (self.since is None or event.ts >= self.since)
            and (self.until is None or event.ts < self.until)
        )


EVERYTHING = EventFilter()


def error_frame(error: str, detail: str, **fields: Any) -> Control:
    """The control message that says why something failed (on every transport)."""
    return Control.build(ERROR_CONTROL, error=error, detail=detail, **fields)


def end_notice(reason: EndReason) -> Control | None:
    """The error frame that tells a client why its stream ends, if it is told."""
    return None if reason.error is None else error_frame(reason.error, reason.detail)


def jitter_ms(base_ms: int) -> int:
    """Spread reconnects over [base, 2*base) so a restart does not cause a storm."""
    return base_ms + random.randrange(max(base_ms, 1))


def farewell(retry_ms: int) -> Control:
    """The shutdown frame, each with its own jittered reconnect hint, so that
    thousands of clients do not come back at the same moment."""
    delay = jitter_ms(retry_ms)
    return Control.build(
        ERROR_CONTROL,
        sse_retry=delay,
        error="shutting_down",
        detail="the server is restarting; reconnect with your last event id",
        reconnect_after_ms=delay,
    )


def utc_timestamp(moment: datetime | None = None) -> str:
    """``2026-11-25T18:00:00.123456Z``: fixed width (the year too: strftime's ``%Y``
    does not pad years before 1000), so text order is time order.  Raises
    OverflowError for a moment whose UTC form falls outside years 1..9999."""
    utc = (moment or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large for a 64-bit float")
    return value


def _int64(text: str) -> int:
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"integer {text[:40]}... does not fit in 64 bits")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate!r}")
    return result


def parse_strict_json(raw: bytes) -> Any:
    """Parse JSON as the contract defines it: no NaN/Infinity, no duplicate keys,
    64-bit integers, valid UTF-8.  Python's parser accepts all of those quietly."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("bad_json", f"the body is not valid UTF-8 (byte {exc.start})")
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_int64,
        )
    except json.JSONDecodeError as exc:
        raise Rejected("bad_json", f"the body is not valid JSON: {exc.msg} at char {exc.pos}")
    except RecursionError:
        raise Rejected("bad_json", f"the body is nested deeper than {MAX_DATA_DEPTH} levels")
    except ValueError as exc:
        raise Rejected("bad_json", f"the body is not valid JSON: {exc}")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DATA_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = list(first["loc"])
    where = f"events[{loc.pop(0)}]" if loc and isinstance(loc[0], int) else ""
    where = ".".join(str(part) for part in ([where] if where else []) + loc) or "body"
    message = first["msg"]
    if first["type"] == "string_pattern_mismatch":
        message = "does not match " + str(first.get("ctx", {}).get("pattern", ""))
    return f"{where}: {message}"


IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")


def idempotency_key(raw: str | None) -> str | None:
    """A publisher's idempotency key, checked: 1..128 visible ASCII characters."""
    if raw is not None and not IDEMPOTENCY_KEY_RE.fullmatch(raw):
        raise Rejected(
            "bad_idempotency_key",
            "Idempotency-Key must be 1..128 visible ASCII characters, e.g. a UUID",
        )
    return raw


def fingerprint(drafts: Sequence[Draft], batch: bool) -> str:
    """Equal for the same events, whatever the body's whitespace or key order: what an
    idempotency key remembers of the publish it was first used with."""
    events = [[d.type, d.workflow_id, orjson.loads(d.data)] for d in drafts]
    canonical = orjson.dumps([batch, events], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def drafts_from_body(raw: bytes, max_event_bytes: int) -> tuple[list[Draft], bool]:
    """Validate a publish body (one event or an array); returns drafts and whether
    it was an array.  Any bad item rejects the whole request."""
    parsed = parse_strict_json(raw)
    return drafts_from_value(parsed, max_event_bytes), isinstance(parsed, list)


def drafts_from_value(parsed: Any, max_event_bytes: int) -> list[Draft]:
    """Validate parsed JSON (one event object or an array of 1..1000) into drafts."""
    batch = isinstance(parsed, list)
    if batch and not parsed:
        raise Rejected("invalid_event", "an empty array publishes nothing; send 1..1000 events")
    if batch and len(parsed) > MAX_BATCH:
        raise Rejected(
            "batch_too_large",
            f"a batch holds at most {MAX_BATCH} events, got {len(parsed)}",
            too_large=True,
        )
    if not isinstance(parsed, dict | list):
        raise Rejected("invalid_event", "the body must be an event object or an array of them")
    try:
        items: Sequence[EventIn] = (
            _BATCH.validate_python(parsed) if batch else [EventIn.model_validate(parsed)]
        )
    except ValidationError as exc:
        raise Rejected("invalid_event", _describe(exc))
    return [_draft(item, index, batch, max_event_bytes) for index, item in enumerate(items)]


def _draft(item: EventIn, index: int, batch: bool, max_event_bytes: int) -> Draft:
    """Runs for every event published: the checks that pass cost next to nothing,
    and only a failing one builds its message."""
    workflow_id = item.workflow_id
    if workflow_id == ALL_EVENTS_CHANNEL:
        raise Rejected(
            "invalid_event",
            f"{_where(index, batch)}workflow_id: {ALL_EVENTS_CHANNEL!r} is reserved for the "
            "all-events channel",
        )
    if workflow_id in DOT_SEGMENTS:
        raise Rejected(
            "invalid_event",
            f"{_where(index, batch)}workflow_id: {workflow_id!r} is not a workflow id "
            "(URLs resolve it away, so no browser could stream it)",
        )
    data = item.data or {}
    try:
        encoded = orjson.dumps(data)
    except TypeError as exc:  # lone surrogates survive Python's parser, not UTF-8
        if _depth(data) > MAX_DATA_DEPTH:  # orjson's own limit is deeper than ours
            raise _too_deep(index, batch)
        raise Rejected("invalid_event", f"{_where(index, batch)}data: {exc}")
    # Each level of nesting takes a bracket: data with few brackets (almost all of it)
    # cannot be too deep, and is not walked.
    if encoded.count(b"{") + encoded.count(b"[") > MAX_DATA_DEPTH and _depth(data) > MAX_DATA_DEPTH:
        raise _too_deep(index, batch)
    if len(encoded) > max_event_bytes:
        raise Rejected(
            "event_too_large",
            f"{_where(index, batch)}data is {len(encoded)} bytes as compact JSON; "
            f"the limit is {max_event_bytes}",
            too_large=True,
        )
    return Draft(item.type, workflow_id, encoded.decode())


def _where(index: int, batch: bool) -> str:
    return f"events[{index}]." if batch else ""


def _too_deep(index: int, batch: bool) -> Rejected:
    return Rejected(
        "invalid_event", f"{_where(index, batch)}data is nested deeper than {MAX_DATA_DEPTH}"
    )
