"""Livefeed: one append-only event log served over WebSocket, SSE and long-poll.

``from app import create_app`` builds the service (see :mod:`app.application`);
importing any other module of the package does not pull in the whole server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from app.application import create_app as create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from app.application import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
