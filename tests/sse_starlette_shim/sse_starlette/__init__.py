"""``import sse_starlette`` loads Livefeed's helpers, so upstream's tests run against them."""

from app.sse import EventSourceResponse, JSONServerSentEvent, ServerSentEvent

__all__ = ["EventSourceResponse", "JSONServerSentEvent", "ServerSentEvent"]
