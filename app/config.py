"""Settings from the environment (``LIVEFEED_*``) and ``run.py`` flags.

Everything is validated once, at start-up, so that a mistake stops the
process with a message naming the setting and the fix instead of turning
into a ``500`` on some later request.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from limits import parse as parse_rate

DEFAULT_DATABASE_URL = "sqlite:///./data/livefeed.db"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MAX_BODY_BYTES = 8 * 1024 * 1024
BODY_TIMEOUT_S = 30  # a request body not all received by then is answered 408
MIN_TOKEN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash


class ConfigError(ValueError):
    """A setting is wrong; the message names it and says how to fix it."""


@dataclass(frozen=True, slots=True)
class Source:
    """The settings as given: ``LIVEFEED_*`` values, and which of them came from a
    command-line flag, so that a mistake is named the way the person typed it."""

    env: Mapping[str, str]
    flags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.env.get(name)

    def given(self, name: str, raw: str) -> str:
        """``--demo-rate -1`` for a flag, ``LIVEFEED_DEMO_RATE='-1'`` for a variable."""
        flag = self.flags.get(name)
        return f"{flag} {shlex.quote(raw)}" if flag else f"{name}={raw!r}"

    def name(self, name: str) -> str:
        """The flag that set ``name``, else the variable itself."""
        return self.flags.get(name, name)


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of the log to keep: by age, by count, or both."""

    max_age_s: float | None = None
    max_events: int | None = None

    @classmethod
    def parse(cls, text: str, given: str | None = None) -> Retention:
        """Parse ``30d``, ``12h``, ``90m``, ``45s`` (age) or ``1000000`` (events);
        ``given`` is how a mistake names the value (the variable by default)."""
        match = re.fullmatch(r"([0-9]{1,12})([smhd]?)", text.strip())
        if not match or int(match.group(1)) == 0:
            raise ConfigError(
                f"{given or f'LIVEFEED_RETENTION={text!r}'} is not valid: use an age such as "
                "'30d', '12h', '90m', '45s', or a number of events such as '1000000'"
            )
        number, unit = int(match.group(1)), match.group(2)
        if not unit:
            return cls(max_events=number)
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return cls(max_age_s=float(number * seconds))


@dataclass(frozen=True, slots=True)
class Tls:
    """The certificate chain and private key files (PEM) the server presents."""

    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be told; immutable once built."""

    database_url: str = DEFAULT_DATABASE_URL
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    trust_proxy: tuple[str, ...] = ()
    publish_token: str | None = None
    read_token: str | None = None
    token_secret: str | None = None  # HS256 key for expiring read credentials (JWTs)
    metrics_token: str | None = None  # what Prometheus sends for /metrics and /api/stats
    heartbeat_s: float = 30.0
    queue_size: int = 1000
    max_event_bytes: int = 64 * 1024
    retention: Retention | None = None
    retry_ms: int = 3000
    write_timeout_s: float = 30.0
    poll_interval_s: float = 0.05
    # Where the workers of one supervisor nudge each other after appending
    # (app/store/nudge.py); set for its workers by app/server.py, never by from_env.
    wake_dir: str | None = None
    sqlite_max_bytes: int | None = None
    max_connections: int = 10_000
    max_connections_per_client: int = 1_000
    publish_rate: str = "5000/second"
    connect_rate: str = "1000/second"
    auth_failure_rate: str = "30/minute"
    demo_rate: float = 0.0
    log_format: str = "text"
    tls: Tls | None = None  # HTTPS, WSS and HTTP/2 (ALPN) on the one port, without a proxy
    # The verifiable log's key (a C2SP signer key) and origin; checked when the store
    # opens (app/store/signing.py), which keeps a generated key when none is given.
    signing_key: str | None = dataclasses.field(default=None, repr=False)
    log_origin: str | None = None

    @property
    def served_hosts(self) -> tuple[str, ...]:
        """The ``Host`` values answered: the configured list, or the safe default."""
        if self.allowed_hosts:
            return self.allowed_hosts
        return tuple(dict.fromkeys((self.host.lower(), "localhost", "127.0.0.1", "[::1]")))

    @property
    def scheme(self) -> str:
        """``https`` when the server holds a certificate, else ``http``."""
        return "https" if self.tls else "http"

    @property
    def reading_protected(self) -> bool:
        """Reading needs a credential: the read token, or a JWT signed with the secret."""
        return self.read_token is not None or self.token_secret is not None

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _number(source: Source, name: str, default: float, low: float, high: float) -> float:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    given = source.given(name, raw)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{given} is not a number; set it to a value in {low:g}..{high:g}")
    if not low <= value <= high:
        raise ConfigError(f"{given} is out of range; set it to a value in {low:g}..{high:g}")
    return value


def _integer(source: Source, name: str, default: int, low: int, high: int) -> int:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    given = source.given(name, raw)
    if not re.fullmatch(r"[0-9]{1,13}", raw):
        raise ConfigError(f"{given} is not a whole number; set it to a value in {low}..{high}")
    value = int(raw)
    if not low <= value <= high:
        raise ConfigError(f"{given} is out of range; set it to a value in {low}..{high}")
    return value


def _items(raw: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (raw or "").split(",") if item.strip())


def normalise_origin(origin: str) -> str | None:
    """``HTTP://Example.com:80`` -> ``http://example.com``; ``None`` if not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = 80 if scheme == "http" else 443
    if port is None or port == default_port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def parse_origins(raw: str | None, *, credential: str | None) -> tuple[str, ...]:
    """Validate ``LIVEFEED_ALLOWED_ORIGINS``; every mistake names the entry and the fix.
    ``credential`` names the setting that makes reading need a credential, if any:
    with one, ``*`` would let every site read with a visitor's credentials."""
    origins: list[str] = []
    for entry in _items(raw):
        name = f"LIVEFEED_ALLOWED_ORIGINS entry {entry!r}"
        if entry == "*":
            if credential:
                raise ConfigError(
                    f"{name}: '*' cannot be combined with {credential} (credentials); "
                    "list the dashboard origins explicitly, e.g. https://dash.example.com"
                )
            origins.append("*")
            continue
        scheme = entry.split(":", 1)[0].lower()
        if scheme in ("ws", "wss"):
            fixed = ("http" if scheme == "ws" else "https") + entry[len(scheme) :]
            raise ConfigError(
                f"{name}: browsers send the page's http(s) origin on WebSocket handshakes, "
                f"never ws:// or wss://; write {fixed.rstrip('/')!r} instead"
            )
        if entry.endswith("/"):
            raise ConfigError(
                f"{name}: an origin has no trailing slash; write {entry.rstrip('/')!r} instead"
            )
        normalised = normalise_origin(entry)
        if normalised is None:
            raise ConfigError(
                f"{name}: not an origin; write scheme://host[:port] with no path, "
                "e.g. https://dash.example.com or http://localhost:3000"
            )
        origins.append(normalised)
    return tuple(origins)


def _rate(source: Source, name: str, default: str) -> str:
    raw = source.get(name) or default
    try:
        parse_rate(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a rate; write e.g. '100/second', '20/minute' or '5 per second'"
        )
    return raw


def _proxies(raw: str | None) -> tuple[str, ...]:
    proxies = []
    for entry in _items(raw):
        try:
            proxies.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise ConfigError(
                f"LIVEFEED_TRUST_PROXY entry {entry!r} is not an IP address or network; "
                "list the proxies' addresses, e.g. 127.0.0.1,10.0.0.0/8"
            )
    return tuple(proxies)


def _database_url(source: Source) -> str:
    """A SQLite URL is ``sqlite:///`` and a path, so ``sqlite://./x.db`` (which reads
    as a host named ``.``) is refused with the form that was meant."""
    name = "LIVEFEED_DATABASE_URL"
    url = source.get(name) or DEFAULT_DATABASE_URL
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:").lstrip("/")
        if not url.startswith("sqlite:///") or not path:
            meant = f"sqlite:///{path or 'data/livefeed.db'}"
            raise ConfigError(
                f"{source.given(name, url)} is not a SQLite URL: write three slashes and a "
                f"relative path, {meant!r}, or four and an absolute one, 'sqlite:////srv/x.db'"
            )
    elif not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"{source.given(name, url)} is not supported; use sqlite:///path/to/file.db "
            "or postgresql://user@host/db"
        )
    return url


def _token_secret(raw: str | None) -> str | None:
    """A short HS256 key can be brute-forced offline from one token, so refuse it."""
    if not raw:
        return None
    if len(raw.encode()) < MIN_TOKEN_SECRET_BYTES:
        raise ConfigError(
            f"LIVEFEED_TOKEN_SECRET is {len(raw.encode())} bytes; an HS256 key needs at least "
            f"{MIN_TOKEN_SECRET_BYTES}: generate one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return raw


def _tls(source: Source) -> Tls | None:
    """Both files or neither: a certificate without its key (or the reverse) would
    serve plain HTTP while the operator believes it is HTTPS."""
    cert, key = source.get("LIVEFEED_TLS_CERT"), source.get("LIVEFEED_TLS_KEY")
    if not cert and not key:
        return None
    if not cert or not key:
        given, missing = ("LIVEFEED_TLS_CERT", "LIVEFEED_TLS_KEY")[:: 1 if cert else -1]
        raise ConfigError(
            f"{source.name(given)} is set but {missing} is not: give the certificate chain and "
            "its private key together (--certfile and --keyfile, or LIVEFEED_TLS_CERT and "
            "LIVEFEED_TLS_KEY), both PEM files, or neither for plain HTTP"
        )
    return Tls(cert, key)


def _read_credential(env: Mapping[str, str]) -> str | None:
    """The setting that makes reading need a credential, if one is set."""
    for name in ("LIVEFEED_READ_TOKEN", "LIVEFEED_TOKEN_SECRET"):
        if env.get(name):
            return name
    return None


def from_env(env: Mapping[str, str], flags: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``LIVEFEED_*`` variables (missing ones keep defaults).

    ``flags`` maps a variable to the command-line flag that set it (``{"LIVEFEED_PORT":
    "--port"}``), so that a mistake names the flag the person typed.
    """
    source = Source(env, flags or {})
    read_token = env.get("LIVEFEED_READ_TOKEN") or None
    publish_token = env.get("LIVEFEED_PUBLISH_TOKEN") or None
    if read_token and publish_token and read_token == publish_token:
        raise ConfigError(
            "LIVEFEED_READ_TOKEN and LIVEFEED_PUBLISH_TOKEN are equal; use two different "
            "secrets so that a dashboard's read token cannot publish"
        )
    metrics_token = env.get("LIVEFEED_METRICS_TOKEN") or None
    if metrics_token and metrics_token == publish_token:
        raise ConfigError(
            "LIVEFEED_METRICS_TOKEN and LIVEFEED_PUBLISH_TOKEN are equal; use two different "
            "secrets so that a scraper's token cannot publish"
        )
    retention = env.get("LIVEFEED_RETENTION")
    log_format = env.get("LIVEFEED_LOG_FORMAT") or "text"
    if log_format not in ("text", "json"):
        raise ConfigError(
            f"{source.given('LIVEFEED_LOG_FORMAT', log_format)}: use 'text' or 'json'"
        )
    return Settings(
        database_url=_database_url(source),
        host=env.get("LIVEFEED_HOST") or DEFAULT_HOST,
        port=_integer(source, "LIVEFEED_PORT", DEFAULT_PORT, 0, 65535),
        workers=_integer(source, "LIVEFEED_WORKERS", 1, 1, 64),
        allowed_origins=parse_origins(
            env.get("LIVEFEED_ALLOWED_ORIGINS"), credential=_read_credential(env)
        ),
        allowed_hosts=tuple(h.lower() for h in _items(env.get("LIVEFEED_ALLOWED_HOSTS"))),
        trust_proxy=_proxies(env.get("LIVEFEED_TRUST_PROXY")),
        publish_token=publish_token,
        read_token=read_token,
        token_secret=_token_secret(env.get("LIVEFEED_TOKEN_SECRET")),
        metrics_token=metrics_token,
        heartbeat_s=_number(source, "LIVEFEED_HEARTBEAT_S", 30.0, 0.05, 3600),
        queue_size=_integer(source, "LIVEFEED_QUEUE_SIZE", 1000, 1, 1_000_000),
        max_event_bytes=_integer(source, "LIVEFEED_MAX_EVENT_BYTES", 64 * 1024, 64, 1024 * 1024),
        retention=(
            Retention.parse(retention, source.given("LIVEFEED_RETENTION", retention))
            if retention
            else None
        ),
        retry_ms=_integer(source, "LIVEFEED_RETRY_MS", 3000, 0, 3_600_000),
        write_timeout_s=_number(source, "LIVEFEED_WRITE_TIMEOUT_S", 30.0, 0.1, 3600),
        poll_interval_s=_number(source, "LIVEFEED_POLL_INTERVAL_S", 0.05, 0.005, 60),
        sqlite_max_bytes=(
            _integer(source, "LIVEFEED_SQLITE_MAX_BYTES", 0, 65_536, 2**40)
            if env.get("LIVEFEED_SQLITE_MAX_BYTES")
            else None
        ),
        max_connections=_integer(source, "LIVEFEED_MAX_CONNECTIONS", 10_000, 1, 1_000_000),
        max_connections_per_client=_integer(
            source, "LIVEFEED_MAX_CONNECTIONS_PER_CLIENT", 1_000, 1, 1_000_000
        ),
        publish_rate=_rate(source, "LIVEFEED_PUBLISH_RATE", "5000/second"),
        connect_rate=_rate(source, "LIVEFEED_CONNECT_RATE", "1000/second"),
        auth_failure_rate=_rate(source, "LIVEFEED_AUTH_FAILURE_RATE", "30/minute"),
        demo_rate=_number(source, "LIVEFEED_DEMO_RATE", 0.0, 0, 10_000),
        log_format=log_format,
        tls=_tls(source),
        signing_key=env.get("LIVEFEED_SIGNING_KEY") or None,
        log_origin=env.get("LIVEFEED_LOG_ORIGIN") or None,
    )
