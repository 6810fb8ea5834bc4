"""``GET /api/diag/ws/{channel}``: why a WebSocket handshake would be refused.

Browsers only ever report close code 1006 for a refused handshake, so the
dashboard asks here and shows the reason instead of a bare "Disconnected".
"""

from __future__ import annotations

import orjson
from quart import Blueprint, Response, request
from quart_schema import document_response

from app.errors import ApiError
from app.http.common import json_response, request_client, runtime
from app.http.schemas import Diagnosis
from app.query import parse_stream_request
from app.security.hosts import request_origin_parts
from app.security.origins import origin_refusal

diagnosis = Blueprint("diagnosis", __name__)


@diagnosis.get("/api/diag/ws/<path:channel>")
@document_response(Diagnosis)
async def diagnose_websocket(channel: str) -> Response:
    """Why a WebSocket handshake from the calling page would be refused.

    The page's origin comes from ``?origin=``, else the ``Origin`` header.  The
    credential check counts failures toward the same limit as every other door (else
    this would be a fast token oracle), and the answer gets the same CORS as the rest
    of the API: other sites' pages cannot read the verdict.
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
        authorization = request.headers.get("Authorization")
        grant = await rt.access.diagnose(request_client(rt), authorization, params)
        grant.require(stream.channel)
    except ApiError as error:
        verdict = {"ok": False, "reason": error.code, "detail": error.detail}
    return json_response(orjson.dumps(verdict))
