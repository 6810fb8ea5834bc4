"""One-use stream tickets: how a browser authenticates a stream without a
long-lived token in the URL.

``EventSource`` and ``WebSocket`` cannot send an ``Authorization`` header, and
a URL ends up in proxy logs and browser history.  So the page asks for a
ticket with its token (``POST /api/stream-tickets``), and opens the stream with
``?ticket=``; the ticket works once, for one channel, within 30 seconds, on
any machine (it is kept, as a digest, in the log's database).  A ticket minted
with an expiring credential (a JWT) keeps that expiry, so the stream it opens
closes when the credential expires.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from app.security.tokens import ReadGrant
from app.store.base import TicketStore

TICKET_TTL_S = 30


@dataclass(frozen=True, slots=True)
class Ticket:
    """A freshly issued ticket: the secret the page uses, and for how long."""

    secret: str
    channel: str
    lifetime_s: float


def ticket_digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def ticket_lifetime(grant: ReadGrant, now: float) -> float:
    """Seconds a new ticket lasts: 30, or less, so it never outlives its credential."""
    if grant.expires_at is None:
        return TICKET_TTL_S
    return max(0.0, min(TICKET_TTL_S, grant.expires_at - now))


async def issue_ticket(tickets: TicketStore, grant: ReadGrant, channel: str) -> Ticket:
    """Mint a ticket for ``channel`` that the store remembers (as a digest only)."""
    secret, now = secrets.token_urlsafe(24), time.time()
    lifetime = ticket_lifetime(grant, now)
    await tickets.issue_ticket(ticket_digest(secret), channel, now + lifetime, grant.expires_at)
    return Ticket(secret, channel, lifetime)


async def redeem_ticket(tickets: TicketStore, ticket: str, channel: str) -> ReadGrant | None:
    """Use a ticket once; what it grants, or ``None`` if it is unknown, used or expired."""
    redeemed = await tickets.redeem_ticket(ticket_digest(ticket), channel, time.time())
    return None if redeemed is None else ReadGrant(expires_at=redeemed.credential_expires_at)


BAD_TICKET = (
    "the stream ticket is unknown, already used, expired or for another channel; "
    "get a new one from POST /api/stream-tickets"
)
