"""Who may connect and from where: hosts, origins, tokens, loopback.

CORS middleware does not protect WebSocket handshakes, so the origin check
is done here, by the server itself, before a socket is accepted.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jwt

from app.config import Settings, normalise_origin
from app.errors import ApiError

ANY_CHANNEL = "*"


def _split_host(value: str) -> tuple[str, str | None]:
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8080
        end = value.find("]")
        return value[: end + 1], value[end + 2 :] or None
    name, _, port = value.partition(":")
    return name, port or None


def host_allowed(host_header: str | None, settings: Settings) -> bool:
    """DNS rebinding defence: only the configured names may reach us; an entry
    without a port matches any port."""
    if not host_header:
        return False
    name, port = _split_host(host_header)
    for entry in settings.served_hosts:
        entry_name, entry_port = _split_host(entry)
        if entry_name == name and entry_port in (None, port):
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


def own_origin(scheme: str, host_header: str | None) -> str | None:
    web_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return normalise_origin(f"{web_scheme}://{host_header}") if host_header else None


def origin_refusal(
    origin: str | None, scheme: str, host_header: str | None, settings: Settings
) -> ApiError | None:
    """Why a browser page at ``origin`` may not open a stream here, or ``None``."""
    if origin is None:
        return None  # not a browser: curl, scripts; credentials decide
    normalised = normalise_origin(origin)
    if normalised is not None and (
        normalised == own_origin(scheme, host_header)
        or normalised in settings.allowed_origins
        or "*" in settings.allowed_origins
    ):
        return None
    allowed = ", ".join(settings.allowed_origins) or "(empty)"
    return ApiError(
        403,
        "origin_not_allowed",
        f"origin {origin[:200]} is not allowed: it is not this server's own origin and not in "
        f"LIVEFEED_ALLOWED_ORIGINS (now: {allowed}); add it there to allow it",
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


def cors_origin(origin: str | None, settings: Settings) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for a cross-origin page, or ``None``."""
    if origin is None or not settings.allowed_origins:
        return None
    if "*" in settings.allowed_origins:
        return "*"
    return origin if normalise_origin(origin) in settings.allowed_origins else None


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison, so response timing reveals nothing."""
    return (
        given is not None
        and expected is not None
        and hmac.compare_digest(given.encode(), expected.encode())
    )


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="livefeed"'})


@dataclass(frozen=True, slots=True)
class ReadGrant:
    """What a read credential allows: which channels, and until when.

    Streams keep it so that one opened with an expiring credential can be
    closed when the credential expires, instead of outliving it."""

    expires_at: float | None = None  # Unix time; None: the credential does not expire
    channels: frozenset[str] | None = None  # None: every channel

    def allows(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels

    def require(self, channel: str) -> None:
        """403 for a channel the credential does not cover (it is valid, so not 401)."""
        if not self.allows(channel):
            listed = ", ".join(sorted(self.channels or ())) or "(none)"
            raise ApiError(
                403,
                "forbidden",
                f"this token's channels claim does not include {channel[:80]!r} "
                f"(it allows: {listed[:300]}); get a token for that channel",
            )


OPEN = ReadGrant()


def check_read_access(
    authorization: str | None, params: Mapping[str, Sequence[str]], settings: Settings
) -> ReadGrant:
    """Streams and replay need a read credential when one is configured: the read
    token (or the publish token), or a JWT signed with LIVEFEED_TOKEN_SECRET."""
    if not settings.reading_protected:
        return OPEN
    token = bearer(authorization) or next(iter(params.get("access_token", ())), None)
    if token is None:
        raise unauthorized(
            "this server needs a read token: send 'Authorization: Bearer <token>' "
            "or access_token=<token>"
        )
    if any(same_secret(token, known) for known in (settings.read_token, settings.publish_token)):
        return OPEN
    if settings.token_secret is None:
        raise unauthorized("the read token is wrong")
    return jwt_grant(token, settings.token_secret)


def jwt_grant(token: str, secret: str) -> ReadGrant:
    """Validate an expiring read credential: HS256 only, ``exp`` required, no leeway."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], leeway=0, options={"require": ["exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("the token has expired (its exp has passed); get a new one")
    except jwt.InvalidSignatureError:
        raise unauthorized("the token's signature does not match LIVEFEED_TOKEN_SECRET")
    except jwt.MissingRequiredClaimError:
        raise unauthorized("the token has no exp claim; read tokens must expire")
    except jwt.DecodeError:
        raise unauthorized(
            "the read token is wrong: it is neither the read token nor a well-formed JWT"
        )
    except jwt.InvalidTokenError as exc:  # nbf in the future, aud, iat, a disallowed alg
        raise unauthorized(f"the token is not accepted: {exc}")
    # PyJWT compares int(exp) with the clock, so the stream deadline does too
    return ReadGrant(expires_at=float(int(claims["exp"])), channels=_channels(claims))


def _channels(claims: Mapping[str, object]) -> frozenset[str] | None:
    """The ``channels`` claim: absent or containing "*" means every channel."""
    if "channels" not in claims:
        return None
    listed = claims["channels"]
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        raise unauthorized('the token\'s channels claim must be a list of channel names, or ["*"]')
    return None if ANY_CHANNEL in listed else frozenset(listed)


def check_publish_access(
    authorization: str | None, client_address: str | None, settings: Settings
) -> None:
    token = bearer(authorization)
    if settings.publish_token is None:
        if not is_loopback(client_address):
            raise ApiError(
                403,
                "forbidden",
                "no LIVEFEED_PUBLISH_TOKEN is configured, so only loopback clients may publish; "
                "set one and send 'Authorization: Bearer <token>'",
            )
        return
    if token is None:
        raise unauthorized("publishing needs 'Authorization: Bearer <LIVEFEED_PUBLISH_TOKEN>'")
    if same_secret(token, settings.publish_token):
        return
    if settings.read_token is not None and same_secret(token, settings.read_token):
        raise ApiError(403, "forbidden", "the read token cannot publish; use the publish token")
    raise unauthorized("the publish token is wrong")
