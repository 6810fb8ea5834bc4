"""Open the store a database URL names; engines are imported only when used."""

from __future__ import annotations

from app.config import Settings
from app.store.base import (
    Appended,
    Bounds,
    LogReader,
    LogTree,
    LogWriter,
    Maintenance,
    Page,
    RedeemedTicket,
    Store,
    TicketStore,
)

__all__ = [
    "Appended",
    "Bounds",
    "LogReader",
    "LogTree",
    "LogWriter",
    "Maintenance",
    "Page",
    "RedeemedTicket",
    "Store",
    "TicketStore",
    "open_store",
]


def open_store(settings: Settings) -> Store:
    """Build (not yet open) the store for ``settings.database_url``."""
    url = settings.database_url
    if url.startswith("sqlite://"):
        from app.store.sqlite import SqliteStore

        return SqliteStore(
            url,
            poll_interval_s=settings.poll_interval_s,
            max_bytes=settings.sqlite_max_bytes,
            signing_key=settings.signing_key,
            log_origin=settings.log_origin,
            wake_dir=settings.wake_dir,
        )
    if url.startswith(("postgresql://", "postgres://")):
        # LISTEN/NOTIFY carries "the log advanced"; its poll is only a slow safety net,
        # so poll_interval_s and wake_dir (SQLite's change detection) do not apply.
        from app.store.postgres import PostgresStore

        return PostgresStore(url, signing_key=settings.signing_key, log_origin=settings.log_origin)
    raise ValueError(
        f"no store for {url!r}; use sqlite:///path/to/file.db or postgresql://user@host/db"
    )
