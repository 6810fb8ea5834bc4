"""``GET /api/events``: paged replay, long-poll (``wait=``), and the route to the
audit export (:mod:`app.http.export`); ``GET /api/events/{id}``: one event.

The long-poll is the transport of last resort (proxies that break both
WebSockets and streaming).
"""

from __future__ import annotations

import asyncio

from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_response

from app.errors import ApiError
from app.events import ALL_EVENTS_CHANNEL, Control, Event
from app.http.common import authorize_read, json_response, request_client, runtime
from app.http.export import export_response
from app.http.replay_query import ReplayQuery, parse_replay_query
from app.http.schemas import Envelope, Error, EventPage, EventQuery
from app.hub import resume_point
from app.query import parse_cursor
from app.runtime import Runtime

replaying = Blueprint("replaying", __name__)
NOT_READABLE = "never written, trimmed, or outside your credential's channels"

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
    async with await rt.admit(client, "poll"), rt.hub.subscribe(query.filter, after) as sub:
        try:
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
    return [], []


async def _page(rt: Runtime, query: ReplayQuery, client: str) -> Response:
    bounds = await rt.store.bounds()
    after, notice = resume_point(query.start, bounds)  # never spins on a trimmed cursor
    notices = [notice] if notice is not None else []
    page = await rt.store.read(after, query.limit + 1, query.filter)
    events = page.events
    waited = not events and query.wait > 0 and not notices
    if waited:
        events, notices = await _long_poll(rt, query, page.scanned_to, client)
    has_more = len(events) > query.limit
    events = events[: query.limit]
    rt.meter("poll").record(events, replayed=not waited)
    next_after = events[-1].id if events else after
    return json_response(_page_body(events, next_after, has_more, notices))


@replaying.get("/api/events")
@document_querystring(EventQuery)
@document_response(EventPage)
@document_response(Error, 400)
async def replay() -> Response:
    """Replay after a cursor as JSON pages, long-poll with ``wait=``, or export."""
    rt = runtime()
    params = request.args.to_dict(flat=False)
    grant = await authorize_read(rt, params)
    query = parse_replay_query(params, request.headers.get("Accept", ""))
    for channel in query.channels:
        grant.require(channel)
    if query.format == "json":
        return await _page(rt, query, request_client(rt))
    return await export_response(rt, query, request_client(rt), grant)


@replaying.get("/api/events/<event_id>")
@document_response(Envelope)
@document_response(Error, 400)
@document_response(Error, 404)
async def get_event(event_id: str) -> Response:
    """One stored event by id (ASCII digits only: the int converter takes any
    Unicode digit, so an Arabic-Indic "1" would have meant event 1).

    An event outside the credential's channels is ``404``, like one that does not
    exist: a ``403`` would tell a token scoped to some channels which workflow
    another channel's event belongs to, id by id."""
    rt = runtime()
    grant = await authorize_read(rt, request.args.to_dict(flat=False))
    number = parse_cursor(event_id, "event id")
    event = await rt.store.get(number) if number else None
    if event is None or not (
        grant.allows(ALL_EVENTS_CHANNEL)  # an event is in both its channels
        or (event.workflow_id is not None and grant.allows(event.workflow_id))
    ):
        raise ApiError(404, "not_found", f"no event with id {number} ({NOT_READABLE})")
    return json_response(event.json)
