"""The credential checks every endpoint runs, in one object.

Failed attempts count toward the client's auth-failure limit wherever they
happen, so guessing a token is equally slow through every door.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.config import Settings
from app.errors import ApiError
from app.query import single
from app.security.admission import Admission
from app.security.tickets import BAD_TICKET, redeem_ticket
from app.security.tokens import (
    ReadGrant,
    bearer,
    check_figures_access,
    check_publish_access,
    check_read_access,
    unauthorized,
)
from app.store.base import TicketStore

Params = Mapping[str, Sequence[str]]


class Access:
    """Read and publish checks for one app: settings, limits and the ticket store."""

    def __init__(self, settings: Settings, admission: Admission, tickets: TicketStore) -> None:
        self.settings = settings
        self.admission = admission
        self._tickets = tickets

    async def read(self, client: str, authorization: str | None, params: Params) -> ReadGrant:
        """The read credential (token, JWT, or ``access_token``); 401s are counted."""
        return await self.admission.authenticate(
            client, lambda: check_read_access(authorization, params, self.settings)
        )

    async def diagnose(
        self, client: str, authorization: str | None, params: Params
    ) -> ReadGrant:
        """The read check of the handshake diagnosis, which any page may call: limited
        like every other door, and the publish token is no read access there (a page
        never holds it, so the verdict must not confirm a guess of it)."""
        return await self.admission.authenticate(
            client,
            lambda: check_read_access(
                authorization, params, self.settings, publish_token_reads=False
            ),
        )

    async def stream(
        self, client: str, authorization: str | None, params: Params, channels: Sequence[str]
    ) -> ReadGrant:
        """A stream's credentials: a one-use ticket (for exactly these channels), else
        the read credential.  Returns what they grant, so that the stream can end
        when they expire."""
        ticket = single(params, "ticket")
        if not self.settings.reading_protected or ticket is None or bearer(authorization):
            grant = await self.read(client, authorization, params)
        else:
            await self.admission.check_auth_failures(client)
            redeemed = await redeem_ticket(self._tickets, ticket, ",".join(channels))
            if redeemed is None:
                await self.admission.note_auth_failure(client)
                raise unauthorized(BAD_TICKET)
            grant = redeemed
        for channel in channels:
            grant.require(channel)
        return grant

    def may_publish(self, client: str, authorization: str | None) -> bool:
        """Whether a connection's credentials allow publishing (asked once, at a
        WebSocket handshake; each publish is still rate-limited)."""
        try:
            check_publish_access(authorization, client, self.settings)
        except ApiError:
            return False
        return True

    async def figures(
        self, client: str, authorization: str | None, params: Params, *, scrape: bool
    ) -> None:
        """``/api/stats``, or ``/metrics`` (``scrape``): the metrics token or a read
        credential (see :func:`check_figures_access`); 401s are counted."""
        await self.admission.authenticate(
            client,
            lambda: check_figures_access(authorization, params, self.settings, scrape=scrape),
        )

    async def publish(self, client: str, authorization: str | None) -> None:
        """The publish rate limit, then the publish credential (or loopback)."""
        await self.admission.check_publish(client)
        await self.admission.authenticate(
            client, lambda: check_publish_access(authorization, client, self.settings)
        )
