"""One-use stream tickets: how a browser authenticates a stream without a
long-lived token in the URL.

``EventSource`` and ``WebSocket`` cannot send an ``Authorization`` header, and
a URL ends up in proxy logs and browser history.  So the page asks for a
ticket with its token (``POST /api/stream-tickets``), and opens the stream with
``?ticket=``; the ticket works once, for one channel, within 30 seconds, on
any machine (it is kept, as a digest, in the log's database).  The route that
issues them is in :mod:`app.api`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence

from app.errors import ApiError
from app.runtime import Runtime
from app.security import bearer, check_read_access, unauthorized
from app.store import StoreUnavailable
from app.transports.request import single

TICKET_TTL_S = 30


def ticket_digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def authorize_stream(
    rt: Runtime,
    client: str,
    authorization: str | None,
    params: Mapping[str, Sequence[str]],
    channel: str,
) -> None:
    """A stream's credentials: a one-use ticket, else the read token (header or query)."""
    ticket = single(params, "ticket")
    if rt.settings.read_token is None or ticket is None or bearer(authorization) is not None:
        await rt.admission.authenticate(
            client, lambda: check_read_access(authorization, params, rt.settings)
        )
        return
    await rt.admission.check_auth_failures(client)
    try:
        redeemed = await rt.store.redeem_ticket(ticket_digest(ticket), channel, time.time())
    except StoreUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), {"Retry-After": "1"})
    if not redeemed:
        await rt.admission.note_auth_failure(client)
        raise unauthorized(
            "the stream ticket is unknown, already used, expired or for another channel; "
            "get a new one from POST /api/stream-tickets"
        )
