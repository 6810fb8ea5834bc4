"""The audit export: every matching event as NDJSON or CSV, page by page in constant
memory; ``format=ndjson&follow=1`` keeps the stream open (``tail -f`` over HTTP).

Both are streams like ``/sse`` and ``/ws``, and are held to the same rules: a slot
from :meth:`Runtime.admit` (the connection caps, the new-stream rate, the ``poll``
connections gauge, a disconnect reason), and the write timeout, ``begin``/``end``
of the runtime's write guard around every write.  Quart writes a streaming body
itself, each chunk right after the body's generator yields it, in the request's
task; so the guard is begun before each ``yield`` and ended when the generator is
resumed, and a stalled write is cut by cancelling that task (Quart then ends the
response, and Hypercorn the connection).  Without this, four clients that never
read held 1.4 GB between them and were never cut.

An export reads pages sized to about ``CHUNK_BYTES``, so that what a stalled
client keeps in memory does not grow with the size of its events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

from quart import Response

from app.errors import (
    CLIENT_CLOSED,
    SHUTDOWN,
    TOKEN_EXPIRED,
    WRITE_TIMEOUT,
    StoreUnavailable,
    store_failed,
)
from app.events import Event, error_frame
from app.http.replay_query import FORMATS, ReplayQuery
from app.runtime import Admitted, Runtime
from app.security.expiry import deadline, next_before
from app.security.tokens import ReadGrant
from app.store.base import fitted_limit
from app.tlog.csv_cells import HEADER, csv_row

MAX_PAGE = 1000
FIRST_PAGE = 16  # how big events are is unknown until a page is read: start small
CHUNK_BYTES = 256 * 1024
TOKEN_EXPIRED_NOTICE = error_frame(TOKEN_EXPIRED.name, TOKEN_EXPIRED.detail)

Body = Callable[[Admitted], AsyncIterator[bytes]]


async def export_response(
    rt: Runtime, query: ReplayQuery, client: str, grant: ReadGrant
) -> Response:
    """A streamed export (or follow) of what ``query`` matches.  Takes the stream's
    slot before answering, so that a refusal (``503 overloaded``, ``429``) is still a
    JSON error rather than a ``200`` with an error inside."""
    if query.follow:
        body = _guarded(rt, client, lambda slot: _follow(rt, query, grant, slot))
    else:
        body = _guarded(rt, client, lambda slot: _export(rt, query))
    await anext(body)
    response = Response(body, content_type=FORMATS[query.format] + "; charset=utf-8")
    response.timeout = None  # Quart would cut a long export or a follow at 60 s
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


async def _guarded(rt: Runtime, client: str, make: Body) -> AsyncIterator[bytes]:
    """The chunks of ``make(slot)`` inside a stream slot, each write under the write
    timeout.

    The first step only takes the slot and yields nothing worth sending
    (:func:`export_response` runs it before answering).  From then on the generator
    has started, so however the response ends, even before its first byte, closing
    the generator (Quart does; garbage collection would) frees the slot."""
    async with await rt.admit(client, "poll") as slot:
        yield b""
        guard = rt.writes.guard()  # here: in the task that writes the body
        try:
            async for chunk in make(slot):
                guard.begin()
                yield chunk
                guard.end()
        except (GeneratorExit, asyncio.CancelledError):  # stopped while writing or reading
            slot.ended = WRITE_TIMEOUT if guard.expired() else CLIENT_CLOSED
            raise
        except StoreUnavailable as exc:  # the response stays unfinished: never looks whole
            slot.ended = store_failed(exc)
            raise
        finally:
            guard.close()


async def _export(rt: Runtime, query: ReplayQuery) -> AsyncIterator[bytes]:
    """Every matching event up to the head at the start, page by page."""
    head = (await rt.store.bounds()).latest_id
    csv = query.format == "csv"
    if csv:
        yield (HEADER + "\r\n").encode()
    after, limit = query.start, FIRST_PAGE
    while after < head:
        page = await rt.store.read(after, limit, query.filter)
        events = [event for event in page.events if event.id <= head]
        for chunk in _csv_rows(events) if csv else _ndjson(events):
            yield chunk
        limit = fitted_limit(events, limit, CHUNK_BYTES, MAX_PAGE)
        after = min(page.scanned_to, head)  # a short page scanned to the head: done


def _ndjson(events: list[Event]) -> Iterator[bytes]:
    return _chunks(event.json + b"\n" for event in events)


def _csv_rows(events: list[Event]) -> Iterator[bytes]:
    return _chunks(
        csv_row((str(e.id), e.type, e.workflow_id or "", e.ts, e.data)).encode() for e in events
    )


def _chunks(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Lines joined into writes of about ``CHUNK_BYTES``: a client that stalls in a
    write leaves no more than that in the server's send buffer."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        batch.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


async def _follow(
    rt: Runtime, query: ReplayQuery, grant: ReadGrant, slot: Admitted
) -> AsyncIterator[bytes]:
    """NDJSON that stays open: replay after the cursor (without one, the last
    ``tail`` matching events, as ``tail -f``), then live events, until shutdown or
    the credential expires (then one ``token_expired`` error line)."""
    meter, at = rt.meter("poll"), deadline(grant)
    async with rt.hub.subscribe(query.filter, query.after, query.tail) as sub:
        try:
            while (frames := await next_before(sub, at)) is not None:
                events = [frame for frame in frames if isinstance(frame, Event)]
                meter.record(events, sub.replaying)
                if not events:  # a bare newline keeps idle proxies from closing; jq skips it
                    yield b"\n"
                for chunk in _ndjson(events):  # a replayed page can be megabytes
                    yield chunk
        except TimeoutError:
            slot.ended = TOKEN_EXPIRED
            yield TOKEN_EXPIRED_NOTICE.json + b"\n"
            return
    slot.ended = SHUTDOWN
