"""Open the store a database URL names; engines are imported only when used."""

from __future__ import annotations

from app.config import Settings
from app.store.base import EVERYTHING, Bounds, EventFilter, Page, Store, StoreUnavailable

__all__ = ["EVERYTHING", "Bounds", "EventFilter", "Page", "Store", "StoreUnavailable", "open_store"]


def open_store(settings: Settings) -> Store:
    """Build (not yet open) the store for ``settings.database_url``."""
    url = settings.database_url
    if url.startswith("sqlite://"):
        from app.store.sqlite import SqliteStore

        return SqliteStore(url, poll_interval_s=settings.poll_interval_s)
    raise ValueError(f"no store for {url!r} yet; use sqlite:///path/to/file.db")
