"""The audit export: every matching event as NDJSON or CSV, page by page in constant
memory; ``format=ndjson&follow=1`` keeps the stream open (``tail -f`` over HTTP)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

from quart import Response

from app.errors import TOKEN_EXPIRED, ApiError
from app.events import Event, error_frame
from app.http.replay_query import FORMATS, ReplayQuery
from app.runtime import Runtime
from app.security.expiry import deadline, next_before
from app.security.tokens import ReadGrant

EXPORT_PAGE = 1000
CSV_COLUMNS = ("id", "type", "workflow_id", "ts", "data")
TOKEN_EXPIRED_NOTICE = error_frame(TOKEN_EXPIRED.name, TOKEN_EXPIRED.detail)


def export_response(rt: Runtime, query: ReplayQuery, client: str, grant: ReadGrant) -> Response:
    """A streamed export (or follow) of what ``query`` matches."""
    body = _follow(rt, query, client, grant) if query.follow else _export(rt, query)
    response = Response(body, content_type=FORMATS[query.format] + "; charset=utf-8")
    response.timeout = None  # Quart would cut a long export or a follow at 60 s
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


async def _export(rt: Runtime, query: ReplayQuery) -> AsyncIterator[bytes]:
    """Every matching event up to the head at the start, page by page."""
    head = (await rt.store.bounds()).latest_id
    if query.format == "csv":
        yield (",".join(CSV_COLUMNS) + "\r\n").encode()
    after = query.after
    while after < head:
        page = await rt.store.read(after, EXPORT_PAGE, query.filter)
        events = [event for event in page.events if event.id <= head]
        if events:
            yield _csv_rows(events) if query.format == "csv" else _ndjson(events)
        after = min(page.scanned_to, head)  # a short page scanned to the head: done


def _ndjson(events: list[Event]) -> bytes:
    return b"".join(event.json + b"\n" for event in events)


def _csv_rows(events: list[Event]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows((e.id, e.type, e.workflow_id or "", e.ts, e.data) for e in events)
    return buffer.getvalue().encode()


async def _follow(
    rt: Runtime, query: ReplayQuery, client: str, grant: ReadGrant
) -> AsyncIterator[bytes]:
    """NDJSON that stays open: replay after the cursor, then live events, until the
    credential expires (then one ``token_expired`` error line).

    The stream slot is taken inside the body, so that it is released even if
    the client leaves before the first byte; an overload is one error line."""
    try:
        slot = await rt.admit(client, "poll")
    except ApiError as error:
        yield error_frame(error.code, error.detail).json + b"\n"
        return
    meter, at = rt.meter("poll"), deadline(grant)
    async with slot, rt.hub.subscribe(query.filter, query.after) as sub:
        try:
            while (frames := await next_before(sub, at)) is not None:
                events = [frame for frame in frames if isinstance(frame, Event)]
                meter.record(events, sub.replaying)
                # a bare newline keeps idle proxies from closing the stream; jq skips it
                yield _ndjson(events) if events else b"\n"
        except TimeoutError:
            yield TOKEN_EXPIRED_NOTICE.json + b"\n"
