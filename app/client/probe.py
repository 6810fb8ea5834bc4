"""After a transport failed without an HTTP answer: is the server there at all?

A failed WebSocket is asked about at ``/api/diag/ws/<channels>`` (the same
checks as the handshake, answered as JSON); SSE and long-poll with one plain
replay request.  Unreachable means "wait and retry the same transport";
reachable means something between the client and the server blocks this
transport, so the feed moves down the ladder.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson

from app.client.errors import ErrorBody
from app.client.events import TRANSPORT_LABELS, TransportName
from app.client.options import FeedOptions

AUTH_ERRORS = frozenset({"unauthorized", "forbidden", "token_expired"})


@dataclass(frozen=True, slots=True)
class Probe:
    reachable: bool
    text: str
    refused: tuple[int, str | None] | None = None  # (status, error): the credentials
    trouble: bool = False  # reachable but failing (5xx, 429): not the transport's fault


async def probe(
    options: FeedOptions, http: httpx.AsyncClient, transport: TransportName, failure: str
) -> Probe:
    headers = await options.request_headers()
    if transport == "ws":
        url = options.url + "/api/diag/ws/" + ",".join(options.channels)
        params = {"types": ",".join(options.types)} if options.types else {}
        origin = next((v for k, v in options.headers.items() if k.lower() == "origin"), None)
        if origin:
            params["origin"] = origin
    else:
        url = options.url + "/api/events"
        params = {"after": "0", "limit": "1", **options.filter_params()}
    try:
        response = await http.get(
            url, params=params, headers=headers, timeout=options.connect_timeout_s
        )
    except httpx.HTTPError:
        return Probe(False, f"{failure}; the server is unreachable")
    status = response.status_code
    if status in (401, 403):
        body = ErrorBody.parse(response.content)
        return Probe(True, f"{failure}; {body.detail}", refused=(status, body.error))
    if status >= 500 or status == 429:
        return Probe(True, f"{failure}; the server answers HTTP {status}", trouble=True)
    label = TRANSPORT_LABELS[transport]
    if transport == "ws" and status == 200:
        try:
            verdict = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            verdict = None
        if isinstance(verdict, dict) and verdict.get("ok") is False:
            reason = str(verdict.get("reason"))
            detail = f"WebSocket refused: {verdict.get('detail') or reason} ({reason})"
            refused = (403, reason) if reason in AUTH_ERRORS else None
            return Probe(True, detail, refused=refused)
    return Probe(True, f"{failure}, although the server answers plain requests: {label} is blocked")
