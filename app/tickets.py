"""One-use stream tickets: how a browser authenticates a stream without a
long-lived token in the URL.

``EventSource`` and ``WebSocket`` cannot send an ``Authorization`` header, and
a URL ends up in proxy logs and browser history.  So the page asks for a
ticket with its token (``POST /api/stream-tickets``), and opens the stream with
``?ticket=``; the ticket works once, for one channel, within 30 seconds, on
any machine (it is kept, as a digest, in the log's database).  A ticket minted
with an expiring credential (a JWT) keeps that expiry, so the stream it opens
closes when the credential expires.  The route that issues them is in
:mod:`app.api`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence

from app.errors import ApiError
from app.runtime import Runtime
from app.security import ReadGrant, bearer, check_read_access, unauthorized
from app.store import StoreUnavailable
from app.transports.request import single

TICKET_TTL_S = 30


def ticket_digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def ticket_lifetime(grant: ReadGrant, now: float) -> float:
    """Seconds a new ticket lasts: 30, or less, so it never outlives its credential."""
    if grant.expires_at is None:
        return TICKET_TTL_S
    return max(0.0, min(TICKET_TTL_S, grant.expires_at - now))


async def authorize_stream(
    rt: Runtime,
    client: str,
    authorization: str | None,
    params: Mapping[str, Sequence[str]],
    channel: str,
) -> ReadGrant:
    """A stream's credentials: a one-use ticket, else the read token or a JWT (header or
    query).  Returns what they grant, so that the stream can end when they expire."""
    ticket = single(params, "ticket")
    if not rt.settings.reading_protected or ticket is None or bearer(authorization) is not None:
        grant = await rt.admission.authenticate(
            client, lambda: check_read_access(authorization, params, rt.settings)
        )
        grant.require(channel)
        return grant
    await rt.admission.check_auth_failures(client)
    try:
        redeemed = await rt.store.redeem_ticket(ticket_digest(ticket), channel, time.time())
    except StoreUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), {"Retry-After": "1"})
    if redeemed is None:
        await rt.admission.note_auth_failure(client)
        raise unauthorized(
            "the stream ticket is unknown, already used, expired or for another channel; "
            "get a new one from POST /api/stream-tickets"
        )
    return ReadGrant(expires_at=redeemed.credential_expires_at)
