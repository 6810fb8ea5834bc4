"""``POST /api/events``: append one event, or a batch, durably."""

from __future__ import annotations

from quart import Blueprint, Response, request
from quart_schema import document_request, document_response

from app.events import idempotency_key
from app.http.common import (
    json_response,
    request_body,
    request_client,
    require_json_content_type,
    runtime,
)
from app.http.schemas import Error, PublishBody, Published

publishing = Blueprint("publishing", __name__)


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
    key = idempotency_key(request.headers.get("Idempotency-Key"))
    body, replayed = await rt.publish_body(await request_body(), key)
    return json_response(body, 201, {"Idempotent-Replayed": "true"} if replayed else None)
