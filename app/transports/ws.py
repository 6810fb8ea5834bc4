"""``GET /ws/{channel}``: the log as WebSocket text frames.

The handshake is checked (path, cursor, origin, credentials) before it is
accepted, and a refusal is a real HTTP answer whose JSON body says why.
After accepting, a reader and a writer race: the reader answers pings and
refuses bad frames (a client that floods a server that never reads would
otherwise grow memory without bound), the writer sends the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import orjson

from app.errors import ApiError, CloseCode
from app.events import Control, Frame
from app.hub import Subscription
from app.runtime import Runtime
from app.security import ReadGrant, origin_refusal
from app.store import StoreUnavailable
from app.tickets import authorize_stream
from app.transports.asgi import (
    Receive,
    Scope,
    Send,
    header,
    query_params,
    race,
    refuse_websocket,
    request_origin_parts,
    scope_client,
)
from app.transports.expiry import TOKEN_EXPIRED, TOKEN_EXPIRED_FRAME, until_expiry
from app.transports.request import StreamRequest, parse_stream_request
from app.transports.sse import connection_established, unavailable

log = logging.getLogger(__name__)

MAX_BAD_MESSAGES = 10
MAX_MESSAGES_PER_S = 50
CLOSE_TIMEOUT_S = 1.0
DRAIN_TIMEOUT_S = 5.0
PONG = Control.build("pong")


class _Closed(Exception):
    """The connection ends with this close code and reason, counted in metrics as
    ``label`` (default: the code's name), after the ``farewell`` frame if any."""

    def __init__(
        self,
        code: CloseCode,
        reason: str,
        *,
        label: str | None = None,
        farewell: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.label = label or code.name.lower()
        self.farewell = farewell


# never raised, only returned by the deadline coroutine, so one instance serves all
_EXPIRED = _Closed(
    CloseCode.POLICY_VIOLATION,
    TOKEN_EXPIRED,
    label=TOKEN_EXPIRED,
    farewell=TOKEN_EXPIRED_FRAME.text,
)


def _error_frame(error: str, detail: str) -> str:
    return orjson.dumps({"type": "error", "error": error, "detail": detail}).decode()


async def _send_text(send: Send, text: str) -> None:
    await send({"type": "websocket.send", "text": text})


async def _read_client(receive: Receive, send: Send) -> _Closed | None:
    """Answer pings; refuse anything else; close on abuse.  ``None``: client left."""
    bad = 0
    recent: deque[float] = deque()
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return None
        now = time.monotonic()
        recent.append(now)
        while recent and recent[0] < now - 1:
            recent.popleft()
        if len(recent) > MAX_MESSAGES_PER_S:
            return _Closed(CloseCode.POLICY_VIOLATION, "too many messages per second")
        text = message.get("text")
        if text is None:  # binary, including an empty binary frame (bytes None)
            return _Closed(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("type") == "ping" and len(parsed) == 1:
            await _send_text(send, PONG.text)
            continue
        bad += 1
        if bad > MAX_BAD_MESSAGES:
            return _Closed(CloseCode.POLICY_VIOLATION, "too many invalid messages")
        await _send_text(
            send,
            _error_frame("bad_message", 'the only client message is {"type":"ping"}'),
        )


def batched_texts(frames: list[Frame]) -> list[str]:
    """With ``?batch=1``: the events of one write as one frame, a JSON array of
    envelopes (controls stay separate frames).  Each WebSocket frame costs the
    server about as much as the bytes it carries, so this is the fast path."""
    texts = [frame.text for frame in frames if frame.id is None]
    events = [frame.text for frame in frames if frame.id is not None]
    if len(events) == 1:
        texts.append(events[0])
    elif events:
        texts.append("[" + ",".join(events) + "]")
    return texts


async def _drain_until_disconnect(receive: Receive) -> None:
    """Read what the client still sends until the server's side learns it is gone.

    Hypercorn hands a closing connection's last frames and its disconnect to
    the app through a small queue; an app that stops reading leaves that queue
    full, and the connection (socket, task) is never released."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while (await receive())["type"] != "websocket.disconnect":
                pass


async def _pump(send: Send, sub: Subscription, runtime: Runtime, batch: bool) -> _Closed:
    guard = runtime.writes.guard()
    meter = runtime.metrics.meter("websocket")
    try:
        async for frames in sub:
            texts = batched_texts(frames) if batch else [frame.text for frame in frames]
            guard.begin()
            for text in texts:
                await _send_text(send, text)
            guard.end()
            meter.record(frames, sub.replaying)
    except asyncio.CancelledError:
        if guard.expired():
            return _Closed(CloseCode.TRY_AGAIN_LATER, "write timeout: the client is not reading")
        raise
    except StoreUnavailable as exc:
        return _Closed(
            CloseCode.TRY_AGAIN_LATER,
            "the store is unavailable",
            farewell=unavailable(str(exc)).text,
        )
    finally:
        guard.close()
    return _Closed(CloseCode.SERVICE_RESTART, "the server is restarting")


async def serve_ws(scope: Scope, receive: Receive, send: Send, runtime: Runtime) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    params = query_params(scope)
    client = scope_client(scope, runtime.settings)
    settings = runtime.settings
    try:
        request = parse_stream_request(
            scope["path"], "/ws/", params, header(scope, b"last-event-id")
        )
        scheme, host = request_origin_parts(scope, settings)
        origin = header(scope, b"origin")
        refusal = origin_refusal(origin, scheme, host, settings)
        if refusal is not None:
            log.warning(
                "websocket refused channel=%s client=%s origin=%r: %s",
                request.channel,
                client,
                (origin or "")[:200],
                refusal.code,
            )
            raise refusal
        grant = await authorize_stream(
            runtime, client, header(scope, b"authorization"), params, request.channel
        )
        if runtime.hub.closing:
            raise ApiError(503, "shutting_down", "the server is restarting; reconnect shortly")
        await runtime.admission.acquire(client)
    except ApiError as error:
        await refuse_websocket(scope, send, error)
        return
    await runtime.run_admitted(
        client, "websocket", _serve(scope, receive, send, runtime, request, grant)
    )


async def _serve(
    scope: Scope,
    receive: Receive,
    send: Send,
    runtime: Runtime,
    request: StreamRequest,
    grant: ReadGrant,
) -> str:
    """Accept, stream until either side ends, close; returns why it ended."""
    started = time.monotonic()
    connections = runtime.metrics.connections.labels("websocket")
    try:
        async with runtime.hub.subscribe(request.filter, request.cursor, request.tail) as sub:
            await send({"type": "websocket.accept"})
            connections.inc()
            log.info(
                "websocket opened channel=%s client=%s cursor=%s",
                request.channel,
                scope_client(scope, runtime.settings),
                request.cursor,
            )
            try:
                hello = connection_established(
                    request.channel, "websocket", sub, request.cursor, runtime
                )
                await _send_text(send, hello.text)
                del hello  # not kept by every idle stream's frame
                closed = await race(
                    _pump(send, sub, runtime, request.batch),
                    _read_client(receive, send),
                    *until_expiry(grant, _EXPIRED),
                )
            except Exception:
                log.exception("websocket stream failed")
                closed = _Closed(CloseCode.INTERNAL_ERROR, "internal error; reconnect")
            finally:
                connections.dec()
    except StoreUnavailable as exc:
        error = ApiError(503, "unavailable", str(exc), {"Retry-After": "1"})
        await refuse_websocket(scope, send, error)
        return "store_unavailable"
    reason, detail = "client_closed", "the client closed the connection"
    if closed is not None:
        reason, detail = closed.label, closed.reason
        with contextlib.suppress(TimeoutError):  # a client that never reads may block this too
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if closed.farewell is not None:
                    await _send_text(send, closed.farewell)
                await send({"type": "websocket.close", "code": int(closed.code), "reason": detail})
        await _drain_until_disconnect(receive)
    log.info(
        "websocket closed channel=%s client=%s duration=%.1fs reason=%s",
        request.channel,
        scope_client(scope, runtime.settings),
        time.monotonic() - started,
        detail,
    )
    return reason
