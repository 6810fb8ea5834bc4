"""Start-up checks that turn what a person can fix into one line, not a traceback.

``serve``, ``migrate`` and ``trim`` open the database here first: a missing or
unwritable directory, an unreachable PostgreSQL, a missing database or role
then stop the command with a :class:`CommandError` naming the setting (or the
flag that set it) and the fix, before any worker starts.  ``serve`` also
tries the port before it opens anything, so that a port in use does not
surface as ``OSError`` from deep inside Hypercorn after the store started,
and loads the TLS certificate and key, which Hypercorn would only read once
the app had started (and then fail with a traceback).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from app.cli_errors import CommandError
from app.config import Settings, Source
from app.errors import StoreUnavailable
from app.store import Store, open_store
from app.store.migrate import MigrationError

DEPLOY_DOC = "docs/deploy.md, 'Creating the database'"


def where(settings: Settings) -> str:
    """``127.0.0.1:8080``, with brackets around an IPv6 address."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{host}:{settings.port}"


def _listen_problem(settings: Settings, exc: OSError, source: Source) -> CommandError | None:
    port, host = source.name("LIVEFEED_PORT"), source.name("LIVEFEED_HOST")
    if exc.errno == errno.EADDRINUSE:
        other = settings.port + 1 if settings.port < 65535 else 8080
        by_variable = port == "LIVEFEED_PORT" and source.get(port)
        example = f"LIVEFEED_PORT={other}" if by_variable else f"--port {other}"
        return CommandError(
            f"port {settings.port} on {settings.host} is in use by another program; pick a "
            f"free one ({example}) or stop that program"
        )
    if exc.errno == errno.EACCES:
        return CommandError(
            f"not allowed to listen on {where(settings)} (ports below 1024 need root); "
            f"choose a port above 1023 with {port}"
        )
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return CommandError(
            f"cannot listen on {settings.host!r}: it is not an address of this machine; "
            f"set {host} to one, e.g. 127.0.0.1 or 0.0.0.0"
        )
    return None


@contextlib.contextmanager
def listening(settings: Settings, source: Source) -> Iterator[None]:
    """Translate a failure to bind the listening socket into one line."""
    try:
        yield
    except OSError as exc:
        problem = _listen_problem(settings, exc, source)
        if problem is None:
            raise
        raise problem from exc


def check_port(settings: Settings, source: Source) -> None:
    """Bind the port once and let it go: taken, forbidden or foreign addresses fail here.

    Without SO_REUSEPORT, so that a running ``--workers`` server (whose sockets
    share the port with each other) is found too; with SO_REUSEADDR, as the
    server binds, so that connections in TIME_WAIT do not count as "in use".
    """
    with listening(settings, source):
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((settings.host, settings.port))


def _pem(name: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(
            f"{name}: cannot read {os.path.abspath(path)} ({exc.strerror}); give the path "
            "of a readable PEM file"
        ) from exc


def check_tls(settings: Settings, source: Source) -> None:
    """The certificate and key load, and belong together; each failure names the
    setting (or flag) that holds the bad file."""
    if settings.tls is None:
        return
    cert, key = settings.tls.cert, settings.tls.key
    cert_name, key_name = source.name("LIVEFEED_TLS_CERT"), source.name("LIVEFEED_TLS_KEY")
    try:
        x509.load_pem_x509_certificates(_pem(cert_name, cert))
    except ValueError as exc:
        raise CommandError(
            f"{cert_name}: {os.path.abspath(cert)} holds no PEM certificate "
            "(-----BEGIN CERTIFICATE-----); give the server's certificate chain"
        ) from exc
    try:
        load_pem_private_key(_pem(key_name, key), password=None)
    except TypeError as exc:  # a passphrase would have to be typed at every start
        raise CommandError(
            f"{key_name}: the key in {os.path.abspath(key)} is encrypted; give an unencrypted "
            "copy readable only by the server (openssl pkey -in KEY -out PLAIN.pem)"
        ) from exc
    except ValueError as exc:
        raise CommandError(
            f"{key_name}: {os.path.abspath(key)} holds no PEM private key "
            "(-----BEGIN PRIVATE KEY-----); give the certificate's private key"
        ) from exc
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise CommandError(
            f"{key_name}: {os.path.abspath(key)} is not the private key of the certificate "
            f"in {cert_name} ({os.path.abspath(cert)}); give the matching pair"
        ) from exc


def _sqlite_file(url: str) -> Path:
    return Path(os.path.abspath(url.removeprefix("sqlite:///")))


def _sqlite_problem(url: str) -> str | None:
    """Why the SQLite file or its directory cannot be written, and the fix (the store
    creates a missing directory, as the default ``./data/`` needs, when it can)."""
    path = _sqlite_file(url)
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists() and not os.access(file, os.W_OK):
            return f"the database file {file} is read-only; make it writable"
    directory = path.parent
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory; choose another path"
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == directory:
            return f"the directory {directory} is not writable; make it so or choose another path"
        return (
            f"the directory {directory} does not exist and {existing} is not writable; "
            "create it or choose another path"
        )
    return None


def _postgres_problem(url: str, exc: StoreUnavailable) -> str:
    """The store's explanation, with the fix for a missing database or role."""
    import asyncpg

    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    database = parts.path.lstrip("/") or parts.username or "(default)"
    cause = exc.__cause__
    if isinstance(cause, asyncpg.InvalidCatalogNameError):
        return (
            f"PostgreSQL at {host} has no database {database!r}; create it (CREATE DATABASE "
            f"{database} OWNER {parts.username or 'your_role'}, see {DEPLOY_DOC}) or fix the URL"
        )
    if isinstance(cause, asyncpg.InvalidPasswordError):
        return f"PostgreSQL at {host} refused the password for {parts.username!r}; fix the URL"
    if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError):
        return (
            f"PostgreSQL at {host} refused the role: {cause}; create it (CREATE ROLE "
            f"{parts.username or 'name'} LOGIN PASSWORD '...', see {DEPLOY_DOC}) or fix the URL"
        )
    if isinstance(cause, OSError | TimeoutError):
        return f"{exc}; start PostgreSQL there, or fix the host and port in the URL"
    return str(exc)


@contextlib.asynccontextmanager
async def opened_store(settings: Settings, source: Source) -> AsyncIterator[Store]:
    """The store, open and migrated; any reason it cannot be is a :class:`CommandError`."""
    url = settings.database_url
    name = source.name("LIVEFEED_DATABASE_URL")
    if name == "LIVEFEED_DATABASE_URL" and not source.get(name):
        name += f" (default {url})"
    problem = _sqlite_problem(url) if url.startswith("sqlite:") else None
    if problem is not None:
        raise CommandError(f"{name}: {problem}")
    store = open_store(settings)
    try:
        await store.open()
    except StoreUnavailable as exc:
        if url.startswith("sqlite:"):
            raise CommandError(f"{name}: {exc} ({_sqlite_file(url)})") from exc
        raise CommandError(f"{name}: {_postgres_problem(url, exc)}") from exc
    except MigrationError as exc:
        raise CommandError(f"{name}: {exc}") from exc
    except OSError as exc:  # the directory could not be created after all
        raise CommandError(
            f"{name}: cannot create {exc.filename or url} ({exc.strerror}); choose another path"
        ) from exc
    try:
        yield store
    finally:
        await store.close()
