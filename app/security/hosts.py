"""Where a request comes from: the ``Host`` it names, the client's address, loopback.

``Host`` is checked before anything else, so that DNS rebinding cannot make
a foreign page look like a loopback publisher or a same-origin reader.
"""

from __future__ import annotations

import ipaddress
import re

from app.config import Settings
from app.errors import ApiError
from app.scope import Scope, header

#: ``uri-host [":" port]`` (RFC 9110 §7.2): an IP literal in brackets, or a name of
#: unreserved characters; the port is digits only.  Anything else (``127.0.0.1:1@evil.com``,
#: a space, a path) is not a Host, so it cannot match an allowed name by its prefix.
_HOST_RE = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9._~-]+)(?::(?P<port>[0-9]{0,5}))?")


def _split_host(value: str) -> tuple[str, str | None] | None:
    match = _HOST_RE.fullmatch(value.strip().lower())
    return None if match is None else (match["name"], match["port"] or None)


def host_allowed(host_header: str | None, settings: Settings) -> bool:
    """DNS rebinding defence: only the configured names may reach us; an entry
    without a port matches any port.  A malformed ``Host`` matches nothing."""
    parsed = _split_host(host_header) if host_header else None
    if parsed is None:
        return False
    name, port = parsed
    for entry in settings.served_hosts:
        allowed = _split_host(entry)
        if allowed is not None and allowed[0] == name and allowed[1] in (None, port):
            return True
    return False


def check_host(host_header: str | None, settings: Settings) -> None:
    if not host_allowed(host_header, settings):
        raise ApiError(
            421,
            "host_not_allowed",
            f"Host {host_header!r} is not served here; add it to LIVEFEED_ALLOWED_HOSTS "
            f"(now: {', '.join(settings.served_hosts)})",
        )


def _within(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in networks)


def is_trusted_proxy(peer: str, settings: Settings) -> bool:
    return _within(peer, settings.trust_proxy)


def client_address(peer: str | None, forwarded_for: str | None, settings: Settings) -> str:
    """The client's address: the peer, or behind a trusted proxy the nearest
    untrusted hop of ``X-Forwarded-For`` (so not every client looks like loopback)."""
    if peer is None:
        return "unknown"
    if not forwarded_for or not _within(peer, settings.trust_proxy):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, settings.trust_proxy):
            return hop
    return hops[0] if hops else peer


def is_loopback(address: str | None) -> bool:
    if address == "127.0.0.1" or address == "::1":  # every local publish asks this
        return True
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def scope_client(scope: Scope, settings: Settings) -> str:
    """The client's address for limits and the loopback rule (proxy-aware)."""
    peer = (scope.get("client") or (None,))[0]
    return client_address(peer, header(scope, b"x-forwarded-for"), settings)


def request_origin_parts(scope: Scope, settings: Settings) -> tuple[str, str | None]:
    """The scheme and host the browser used: behind a trusted proxy (TLS terminated
    there) those are X-Forwarded-Proto/-Host, otherwise the request's own."""
    scheme, host = scope.get("scheme", "http"), header(scope, b"host")
    peer = (scope.get("client") or (None,))[0]
    if peer is not None and is_trusted_proxy(peer, settings):
        scheme = header(scope, b"x-forwarded-proto") or scheme
        host = header(scope, b"x-forwarded-host") or host
    return scheme, host
