"""``POST /api/events``: append one event, or a batch, durably."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import re
import time

import orjson
from quart import Blueprint, Response, request
from quart_schema import document_request, document_response

from app.errors import ApiError, Rejected
from app.events import Draft, Event, drafts_from_body
from app.http.common import (
    json_response,
    request_body,
    request_client,
    require_json_content_type,
    runtime,
)
from app.http.schemas import Error, PublishBody, Published
from app.runtime import Runtime
from app.store import Appended

publishing = Blueprint("publishing", __name__)
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")
INLINE_PARSE_BYTES = 64 * 1024


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
    require_json_content_type()
    key = _idempotency_key()
    drafts, batch = await _drafts(rt, await request_body())
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


async def _drafts(rt: Runtime, body: bytes) -> tuple[list[Draft], bool]:
    """The body's events, validated.  A large body is parsed on the runtime's parser
    thread: its size says little about its cost (8 MB of ``[{},{},...]`` took 450 ms to
    parse and build before the batch limit could refuse it), and meanwhile the event
    loop keeps serving everyone else."""
    limit = rt.settings.max_event_bytes
    if len(body) <= INLINE_PARSE_BYTES:
        return drafts_from_body(body, limit)
    return await asyncio.get_running_loop().run_in_executor(rt.parser, _parse, body, limit)


def _parse(body: bytes, limit: int) -> tuple[list[Draft], bool]:
    """:func:`drafts_from_body` for the parser thread.

    The cyclic garbage collector is paused meanwhile: parsing makes no cycles, and
    a full collection over millions of fresh containers holds every thread, the
    event loop's too (8 MB of ``[[],[],...]``: 2.1 s with it, 0.56 s without).  A
    refusal is raised without its traceback, whose frames hold the parsed body, so
    that the body is freed here and not on the event loop."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return drafts_from_body(body, limit)
    except Rejected as refusal:
        raise refusal.with_traceback(None) from None
    finally:
        if collecting:
            gc.enable()


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
