"""Stands in for ``sse_starlette.sse``: the response is ``app.sse``'s."""

from app.sse import EventSourceResponse, SendTimeoutError, ServerSentEvent, ensure_bytes

__all__ = ["EventSourceResponse", "SendTimeoutError", "ServerSentEvent", "ensure_bytes"]
