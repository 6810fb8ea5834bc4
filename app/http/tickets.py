"""``POST /api/stream-tickets``: a one-use ticket for one stream (see
:mod:`app.security.tickets` for why browsers need them)."""

from __future__ import annotations

import orjson
from quart import Blueprint, Response

from app.errors import ApiError
from app.events import ALL_EVENTS_CHANNEL, parse_strict_json
from app.http.common import (
    authorize_read,
    json_response,
    request_body,
    request_client,
    require_json_content_type,
    runtime,
)
from app.query import channel_list
from app.security.tickets import issue_ticket

ticketing = Blueprint("ticketing", __name__)


@ticketing.post("/api/stream-tickets")
async def issue() -> Response:
    """A one-use ticket for one stream's channels, valid 30 s (less when the JWT it is
    minted with expires sooner): body ``{"channel": "wf_a"}`` or ``"wf_a,wf_b"``, as
    ``application/json``.  Rate-limited like new streams (LIVEFEED_CONNECT_RATE): each
    ticket is a write to the store."""
    rt = runtime()
    await rt.admission.check_ticket(request_client(rt))
    grant = await authorize_read(rt, {})
    require_json_content_type()
    raw = await request_body()
    body = parse_strict_json(raw) if raw.strip() else {}
    channel = body.get("channel", ALL_EVENTS_CHANNEL) if isinstance(body, dict) else None
    if not isinstance(channel, str):
        raise ApiError(400, "bad_request", 'send {"channel": "<channel name>"}')
    channels = channel_list(channel, "channel")
    for name in channels:
        grant.require(name)
    channel = ",".join(channels)
    ticket = await issue_ticket(rt.store, grant, channel)
    answer = {"ticket": ticket.secret, "channel": channel, "expires_in": int(ticket.lifetime_s)}
    return json_response(orjson.dumps(answer), 201, {"Cache-Control": "no-store"})
