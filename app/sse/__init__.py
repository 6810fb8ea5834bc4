"""Server-Sent Events helpers with sse-starlette's API, for Quart views and plain ASGI.

Code written against sse-starlette 3.x (``ServerSentEvent``, ``JSONServerSentEvent``,
``ensure_bytes``, ``EventSourceResponse``, ``SendTimeoutError``) ports over
unchanged and runs on Quart + Hypercorn without Starlette or anyio: the same
bytes for the same events (a test feeds both encoders the same input), and the
same meaning for every argument accepted here: ``ping=None`` is the 15 s
default and ``ping=0`` turns pings off, synchronous iterables are iterated in a
worker thread, ``data_sender_callable`` runs beside the stream and is cancelled
with it. sse-starlette's own portable tests run against this package (see
``tests/test_sse_starlette_suite.py``). Wire format: WHATWG HTML "Server-sent
events". ``event`` encodes, ``response`` streams, as in sse-starlette.

Deliberate differences, referred to as "note N" in the modules:

1. Input that would make a broken stream is refused when the event or the
   response is built, not half-way through a stream: a negative or boolean
   ``retry``, NUL in an ``id`` (browsers drop such an id, which breaks resuming),
   a ``sep`` other than CRLF/CR/LF, ``content`` that is not iterable, a ping
   interval that is not a finite number.
2. No ``Connection: keep-alive`` header: it is hop-by-hop, and HTTP/2 (which
   Hypercorn speaks) forbids it.
3. Pings and events go through one writer, so ``send`` is never called while
   another ``send`` is still running; a ping goes out after ``ping`` quiet
   seconds rather than on a fixed clock.
4. Starlette-only arguments (``background``, ``client_close_handler_callable``,
   ``shutdown_event``, ``shutdown_grace_period``, ``cleanup_timeout``,
   ``media_type``) are not accepted: passing one is a ``TypeError``, never a
   silently ignored option.
5. In a Quart view Quart owns ``send``: a write stuck beyond ``send_timeout``
   ends the stream by cancelling Quart's task, so ``SendTimeoutError`` is
   raised only at the plain ASGI level.
"""

from app.sse.event import DEFAULT_SEPARATOR, JSONServerSentEvent, ServerSentEvent, ensure_bytes
from app.sse.response import EventSourceResponse, SendTimeoutError

__all__ = [
    "DEFAULT_SEPARATOR",
    "EventSourceResponse",
    "JSONServerSentEvent",
    "SendTimeoutError",
    "ServerSentEvent",
    "ensure_bytes",
]
