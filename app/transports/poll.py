"""``GET /api/events``: paged replay, long-poll (``wait=``) and the audit export.

The long-poll is the transport of last resort (proxies that break both
WebSockets and streaming); the export streams NDJSON or CSV page by page in
constant memory, and ``format=ndjson&follow=1`` is ``tail -f`` over HTTP.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_response

from app.api import authorize_read, json_response, request_client, runtime, store_unavailable
from app.errors import ApiError, bad_request
from app.events import ALL_EVENTS_CHANNEL, WORKFLOW_ID_RE, Control, Event, utc_timestamp
from app.hub import resume_point
from app.runtime import Runtime
from app.schemas import Error, EventPage, EventQuery
from app.security import ReadGrant
from app.store import EventFilter, StoreUnavailable
from app.transports.expiry import TOKEN_EXPIRED_FRAME, deadline, next_before
from app.transports.request import parse_cursor, parse_int, parse_types, single

poll = Blueprint("poll", __name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_WAIT_S = 30.0
EXPORT_PAGE = 1000
KNOWN_PARAMS = frozenset(
    {"after", "limit", "workflow_id", "types", "since", "until", "wait", "format", "follow"}
    | {"access_token", "ticket", "_"}  # credentials, and jQuery-style cache busters
)
FORMATS = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}
CSV_COLUMNS = ("id", "type", "workflow_id", "ts", "data")


@dataclass(frozen=True, slots=True)
class ReplayQuery:
    after: int
    limit: int
    filter: EventFilter
    wait: float
    format: str
    follow: bool


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
    workflow_id = single(params, "workflow_id")
    if workflow_id == ALL_EVENTS_CHANNEL:  # the all-events channel's name, as on streams
        workflow_id = None
    if workflow_id is not None and not WORKFLOW_ID_RE.fullmatch(workflow_id):
        raise bad_request("bad_parameter", f"workflow_id={workflow_id[:40]!r} is not a workflow id")
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
    return ReplayQuery(
        after=parse_cursor(raw_after, "after") if raw_after is not None else 0,
        limit=parse_int(raw_limit, "limit", 1, MAX_LIMIT)
        if raw_limit is not None
        else DEFAULT_LIMIT,
        filter=EventFilter(
            workflow_id=workflow_id,
            types=parse_types(single(params, "types")),
            since=_timestamp(since, "since") if since is not None else None,
            until=_timestamp(until, "until") if until is not None else None,
        ),
        wait=wait,
        format=fmt,
        follow=follow == "1",
    )


def _page_body(
    events: list[Event], next_after: int, has_more: bool, notices: list[Control]
) -> bytes:
    parts = [
        b'{"events":[',
        b",".join(event.json for event in events),
        b'],"next_after":',
        str(next_after).encode(),
        b',"has_more":',
        b"true" if has_more else b"false",
        b',"notices":[',
        b",".join(notice.json for notice in notices),
        b"]}",
    ]
    return b"".join(parts)


async def _long_poll(
    rt: Runtime, query: ReplayQuery, after: int, client: str
) -> tuple[list[Event], list[Control]]:
    """Wait up to ``query.wait`` seconds for the first matching events after ``after``."""
    connections = rt.metrics.connections.labels("poll")
    await rt.admission.acquire(client)
    connections.inc()
    try:
        async with rt.hub.subscribe(query.filter, after) as sub:
            async with asyncio.timeout(query.wait):
                async for frames in sub:
                    events = [f for f in frames if isinstance(f, Event)]
                    notices = [
                        f for f in frames if isinstance(f, Control) and f.type != "heartbeat"
                    ]
                    if events or notices:
                        return events, notices
    except TimeoutError:
        pass
    finally:
        connections.dec()
        rt.admission.release(client)
    return [], []


async def _page(rt: Runtime, query: ReplayQuery, client: str) -> Response:
    bounds = await rt.store.bounds()
    after, notice = resume_point(query.after, bounds)  # never spins on a trimmed cursor
    notices = [notice] if notice is not None else []
    page = await rt.store.read(after, query.limit + 1, query.filter)
    events = page.events
    waited = not events and query.wait > 0 and not notices
    if waited:
        events, notices = await _long_poll(rt, query, page.scanned_to, client)
    has_more = len(events) > query.limit
    events = events[: query.limit]
    rt.metrics.meter("poll").record(events, replayed=not waited)
    next_after = events[-1].id if events else after
    return json_response(_page_body(events, next_after, has_more, notices))


async def _export(rt: Runtime, query: ReplayQuery) -> AsyncIterator[bytes]:
    """Every matching event up to the head at the start, page by page."""
    head = (await rt.store.bounds()).latest_id
    if query.format == "csv":
        yield (",".join(CSV_COLUMNS) + "\r\n").encode()
    after = query.after
    while after < head:
        page = await rt.store.read(after, EXPORT_PAGE, query.filter)
        events = [event for event in page.events if event.id <= head]
        if events:
            yield _csv_rows(events) if query.format == "csv" else _ndjson(events)
        after = min(page.scanned_to, head)  # a short page scanned to the head: done


def _ndjson(events: list[Event]) -> bytes:
    return b"".join(event.json + b"\n" for event in events)


def _csv_rows(events: list[Event]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows((e.id, e.type, e.workflow_id or "", e.ts, e.data) for e in events)
    return buffer.getvalue().encode()


async def _follow(
    rt: Runtime, query: ReplayQuery, client: str, grant: ReadGrant
) -> AsyncIterator[bytes]:
    """NDJSON that stays open: replay after the cursor, then live events, until the
    credential expires (then one ``token_expired`` error line).

    The stream slot is taken inside the body, so that it is released even if
    the client leaves before the first byte; an overload is one error line."""
    try:
        await rt.admission.acquire(client)
    except ApiError as error:
        yield orjson.dumps({"type": "error", "error": error.code, "detail": error.detail}) + b"\n"
        return
    connections = rt.metrics.connections.labels("poll")
    connections.inc()
    meter = rt.metrics.meter("poll")
    try:
        at = deadline(grant)
        async with rt.hub.subscribe(query.filter, query.after) as sub:
            try:
                while (frames := await next_before(sub, at)) is not None:
                    events = [frame for frame in frames if isinstance(frame, Event)]
                    meter.record(events, sub.replaying)
                    # a bare newline keeps idle proxies from closing the stream; jq skips it
                    yield _ndjson(events) if events else b"\n"
            except TimeoutError:
                yield TOKEN_EXPIRED_FRAME.json + b"\n"
    finally:
        connections.dec()
        rt.admission.release(client)


@poll.get("/api/events")
@document_querystring(EventQuery)
@document_response(EventPage)
@document_response(Error, 400)
async def replay() -> Response:
    """Replay after a cursor as JSON pages, long-poll with ``wait=``, or export."""
    rt = runtime()
    params = request.args.to_dict(flat=False)
    grant = await authorize_read(rt, params)
    query = parse_replay_query(params, request.headers.get("Accept", ""))
    grant.require(query.filter.workflow_id or ALL_EVENTS_CHANNEL)
    try:
        if query.format == "json":
            return await _page(rt, query, request_client(rt))
        body = _follow(rt, query, request_client(rt), grant) if query.follow else _export(rt, query)
    except StoreUnavailable as exc:
        raise store_unavailable(exc)
    response = Response(body, content_type=FORMATS[query.format] + "; charset=utf-8")
    response.timeout = None  # Quart would cut a long export or a follow at 60 s
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response
