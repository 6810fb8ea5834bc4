"""``POST /api/events``: append one event, or a batch, durably."""

from __future__ import annotations

import hashlib
import re
import time

import orjson
from quart import Blueprint, Response, request
from quart_schema import document_request, document_response

from app.errors import ApiError
from app.events import Draft, Event, drafts_from_body
from app.http.common import json_response, request_body, request_client, runtime
from app.http.schemas import Error, PublishBody, Published
from app.store import Appended

publishing = Blueprint("publishing", __name__)
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")


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


@publishing.post("/api/events")
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
    await rt.access.publish(request_client(rt), request.headers.get("Authorization"))
    _check_json_content_type()
    key = _idempotency_key()
    drafts, batch = drafts_from_body(await request_body(), rt.settings.max_event_bytes)
    started = time.perf_counter()
    if key is None:
        appended = Appended(events := await rt.store.append(drafts), _receipt(events))
    else:
        appended = await rt.store.append_once(key, _fingerprint(drafts, batch), drafts)
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
