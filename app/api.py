"""Publishing and the small JSON endpoints: one event, stats, handshake diagnosis."""

from __future__ import annotations

import hashlib
import re
import secrets
import time

import orjson
from quart import Blueprint, Response, current_app, request
from quart_schema import document_request, document_response

from app.errors import ApiError
from app.events import (
    ALL_EVENTS_CHANNEL,
    Draft,
    Event,
    drafts_from_body,
    parse_strict_json,
)
from app.runtime import Runtime
from app.schemas import Diagnosis, Envelope, Error, PublishBody, Published
from app.security import (
    ReadGrant,
    check_publish_access,
    check_read_access,
    client_address,
    origin_refusal,
)
from app.store import Appended, IdempotencyConflict, StoreUnavailable
from app.tickets import ticket_digest, ticket_lifetime
from app.transports.asgi import request_origin_parts
from app.transports.request import channel_filter, parse_cursor, parse_stream_request
from app.transports.router import RUNTIME_KEY

api = Blueprint("api", __name__)
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")


def runtime() -> Runtime:
    current = current_app.extensions.get(RUNTIME_KEY)
    if current is None:
        raise ApiError(503, "unavailable", "the server is starting; try again shortly")
    return current


def request_client(rt: Runtime) -> str:
    """The caller's address (the nearest untrusted hop behind LIVEFEED_TRUST_PROXY)."""
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), rt.settings)


async def authorize_read(rt: Runtime, params: dict[str, list[str]]) -> ReadGrant:
    """The read-credential check, with failed attempts rate-limited per client."""
    authorization = request.headers.get("Authorization")
    return await rt.admission.authenticate(
        request_client(rt), lambda: check_read_access(authorization, params, rt.settings)
    )


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = Response(body, status=status, content_type="application/json")
    response.headers.update(headers or {})
    return response


def store_unavailable(exc: StoreUnavailable) -> ApiError:
    return ApiError(503, "unavailable", str(exc), {"Retry-After": "1"})


def _check_json_content_type() -> None:
    mimetype = request.mimetype
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if mimetype != "application/json" or charset not in ("utf-8", "utf8"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send 'Content-Type: application/json' (UTF-8); "
            f"got {request.content_type or 'none'!r}",
        )


@api.post("/api/events")
@document_request(PublishBody)
@document_response(Published, 201)
@document_response(Error, 400)
@document_response(Error, 401)
@document_response(Error, 403)
@document_response(Error, 413)
@document_response(Error, 415)
@document_response(Error, 422)
@document_response(Error, 429)
@document_response(Error, 503)
async def publish() -> Response:
    """Append one event, or an array of up to 1000 in one transaction (all or none).

    The answer is sent only after the commit is durable.
    """
    rt = runtime()
    client = request_client(rt)
    await rt.admission.check_publish(client)
    authorization = request.headers.get("Authorization")
    await rt.admission.authenticate(
        client, lambda: check_publish_access(authorization, client, rt.settings)
    )
    _check_json_content_type()
    key = _idempotency_key()
    raw = await request.get_data(cache=False, as_text=False)
    drafts, batch = drafts_from_body(raw, rt.settings.max_event_bytes)
    started = time.perf_counter()
    try:
        if key is None:
            appended = Appended(events := await rt.store.append(drafts), _receipt(events))
        else:
            appended = await rt.store.append_once(key, _fingerprint(drafts, batch), drafts)
    except StoreUnavailable as exc:
        raise store_unavailable(exc)
    except IdempotencyConflict as exc:
        raise ApiError(422, "idempotency_key_reused", f"{exc}; use a new key for a new body")
    rt.metrics.publish_latency.observe(time.perf_counter() - started)
    rt.metrics.published.inc(len(appended.events))
    ids = [{"id": event_id, "ts": ts} for event_id, ts in appended.receipt]
    headers = {"Idempotent-Replayed": "true"} if appended.replayed else {}
    return json_response(orjson.dumps({"events": ids} if batch else ids[0]), 201, headers)


def _receipt(events: list[Event]) -> list[tuple[int, str]]:
    return [(event.id, event.ts) for event in events]


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise ApiError(
            400,
            "bad_idempotency_key",
            "Idempotency-Key must be 1..128 visible ASCII characters, e.g. a UUID",
        )
    return key


def _fingerprint(drafts: list[Draft], batch: bool) -> str:
    """Equal for the same events, whatever the body's whitespace or key order."""
    events = [[d.type, d.workflow_id, orjson.loads(d.data)] for d in drafts]
    canonical = orjson.dumps([batch, events], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


@api.get("/api/events/<event_id>")
@document_response(Envelope)
@document_response(Error, 404)
async def get_event(event_id: str) -> Response:
    """One stored event by id (ASCII digits only: the int converter takes any
    Unicode digit, so an Arabic-Indic "1" would have meant event 1)."""
    rt = runtime()
    grant = await authorize_read(rt, request.args.to_dict(flat=False))
    try:
        number = parse_cursor(event_id, "event id")
    except ApiError:
        number = None
    try:
        event = await rt.store.get(number) if number else None
    except StoreUnavailable as exc:
        raise store_unavailable(exc)
    if event is None:
        detail = f"no event with id {event_id[:40]!r} (never written, or trimmed)"
        raise ApiError(404, "not_found", detail)
    if not grant.allows(ALL_EVENTS_CHANNEL):  # an event is in both its channels
        grant.require(event.workflow_id or ALL_EVENTS_CHANNEL)
    return json_response(event.json)


@api.get("/api/stats")
async def stats() -> Response:
    """Figures for the dashboard: this process's connections and the log's size."""
    rt = runtime()
    try:
        bounds = await rt.store.bounds()
    except StoreUnavailable as exc:
        raise store_unavailable(exc)
    # ids have no gaps and trimming removes the oldest, so this is exact and needs
    # no count(*) (which scans the whole table on PostgreSQL)
    stored = max(0, bounds.latest_id - bounds.oldest_id + 1)
    return json_response(
        orjson.dumps(
            {
                "node": rt.node,
                "connections": rt.metrics.connection_counts(),
                "subscribers": rt.hub.subscriber_count,
                "latest_id": bounds.latest_id,
                "oldest_id": bounds.oldest_id if stored else None,
                "events_stored": stored,
                "events_published": int(rt.metrics.published._value.get()),
                "fell_behind": rt.hub.stats.fell_behind,
                "uptime_s": round(time.time() - rt.started_at, 3),
            }
        )
    )


@api.get("/api/diag/ws/<path:channel>")
@document_response(Diagnosis)
async def diagnose_websocket(channel: str) -> Response:
    """Why a WebSocket handshake from the calling page would be refused.

    Browsers only ever report close code 1006 for a refused handshake, so the
    dashboard asks here.  The page's origin comes from ``?origin=``, else the
    ``Origin`` header.  Readable from any origin: it reveals only the verdict.
    """
    rt = runtime()
    params = request.args.to_dict(flat=False)
    origin = request.args.get("origin") or request.headers.get("Origin")
    verdict: dict[str, object] = {"ok": True, "reason": None, "detail": None}
    try:
        stream = parse_stream_request("/ws/" + channel, "/ws/", params, None)
        scheme, host = request_origin_parts(request.scope, rt.settings)
        refusal = origin_refusal(origin, scheme, host, rt.settings)
        if refusal is not None:
            raise refusal
        grant = check_read_access(request.headers.get("Authorization"), params, rt.settings)
        grant.require(stream.channel)
    except ApiError as error:
        verdict = {"ok": False, "reason": error.code, "detail": error.detail}
    return json_response(orjson.dumps(verdict), headers={"Access-Control-Allow-Origin": "*"})


@api.post("/api/stream-tickets")
async def issue_ticket() -> Response:
    """A one-use ticket for one channel, valid 30 s (less when the JWT it is minted with
    expires sooner): body ``{"channel": "..."}``."""
    rt = runtime()
    grant = await authorize_read(rt, {})
    raw = await request.get_data(cache=False, as_text=False)
    body = parse_strict_json(raw) if raw.strip() else {}
    channel = body.get("channel", ALL_EVENTS_CHANNEL) if isinstance(body, dict) else None
    if not isinstance(channel, str):
        raise ApiError(400, "bad_request", 'send {"channel": "<channel name>"}')
    channel_filter(channel)  # 404 with the valid names if it is not a channel
    grant.require(channel)
    ticket, now = secrets.token_urlsafe(24), time.time()
    lifetime = ticket_lifetime(grant, now)
    try:
        await rt.store.issue_ticket(
            ticket_digest(ticket), channel, now + lifetime, grant.expires_at
        )
    except StoreUnavailable as exc:
        raise store_unavailable(exc)
    answer = {"ticket": ticket, "channel": channel, "expires_in": int(lifetime)}
    return json_response(orjson.dumps(answer), 201, {"Cache-Control": "no-store"})
