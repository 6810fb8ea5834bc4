"""Credentials: bearer tokens compared in constant time, expiring JWT read grants,
and the publish rule (a token, or loopback when none is configured)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jwt

from app.config import Settings
from app.errors import ApiError
from app.security.hosts import is_loopback

ANY_CHANNEL = "*"
#: 9999-12-31T23:59:59Z: a later ``exp`` never expires in practice, and one beyond a
#: float (``10**400``) cannot even be compared with a deadline.
MAX_EXP = 253_402_300_799

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
    authorization: str | None,
    params: Mapping[str, Sequence[str]],
    settings: Settings,
    *,
    publish_token_reads: bool = True,
) -> ReadGrant:
    """Streams and replay need a read credential when one is configured: the read
    token (or, unless ``publish_token_reads`` is false, the publish token), or a JWT
    signed with LIVEFEED_TOKEN_SECRET."""
    if not settings.reading_protected:
        return OPEN
    token = bearer(authorization) or next(iter(params.get("access_token", ())), None)
    if token is None:
        raise unauthorized(
            "this server needs a read token: send 'Authorization: Bearer <token>' "
            "or access_token=<token>"
        )
    readers = (settings.read_token, settings.publish_token if publish_token_reads else None)
    if any(same_secret(token, known) for known in readers):
        return OPEN
    if settings.token_secret is None:
        raise unauthorized("the read token is wrong")
    return jwt_grant(token, settings.token_secret)


def check_figures_access(
    authorization: str | None,
    params: Mapping[str, Sequence[str]],
    settings: Settings,
    *,
    scrape: bool,
) -> None:
    """``/api/stats`` and (``scrape``) ``/metrics``: the metrics token, or a read
    credential when reading needs one.  Both are open while reading is, except
    ``/metrics`` once LIVEFEED_METRICS_TOKEN is set."""
    if same_secret(bearer(authorization), settings.metrics_token):
        return
    if settings.reading_protected:
        check_read_access(authorization, params, settings)
    elif scrape and settings.metrics_token is not None:
        raise unauthorized("/metrics needs 'Authorization: Bearer <LIVEFEED_METRICS_TOKEN>'")


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
    exp = int(claims["exp"])
    if exp > MAX_EXP:
        raise unauthorized("the token's exp is after the year 9999; read tokens must expire")
    return ReadGrant(expires_at=float(exp), channels=_channels(claims))


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
