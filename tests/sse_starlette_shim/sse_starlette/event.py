"""Stands in for ``sse_starlette.event``: the encoder is ``app.sse``'s."""

from app.sse import JSONServerSentEvent, ServerSentEvent, ensure_bytes

__all__ = ["JSONServerSentEvent", "ServerSentEvent", "ensure_bytes"]
