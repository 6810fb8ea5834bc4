"""Publishing over one WebSocket: ``publish`` messages with a ``ref``, many in flight.

A producer publishing one event at a time pays an HTTP request per event
over ``POST``; here every call sends a message on the same socket and waits
for the answer carrying its ``ref``, so concurrent calls are committed
together by the server.  The socket is ``GET /ws`` (it follows no channel,
so only answers arrive), opened on first use and again after it drops.
What a failure means for a retry is decided as for HTTP
(:mod:`app.client.attempts`): a publish in flight when the socket dropped
may have been committed, so only a keyed one is repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Mapping
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from app.client.attempts import Draft, Failed, receipt, refused
from app.client.errors import ErrorBody, PublishError, retry_after
from app.client.events import ERROR_TYPES, Message, Published
from app.client.options import TokenSource, bearer_headers

#: The server accepts publish messages up to 1 MiB from a connection that may publish.
MAX_MESSAGE_BYTES = 1 << 20
CLOSE_TIMEOUT_S = 1.0


class WsSender:
    """One WebSocket for publishing; each :meth:`send` is one attempt."""

    def __init__(
        self, url: str, token: TokenSource | None, headers: Mapping[str, str], timeout_s: float
    ) -> None:
        self._url = "ws" + url.removeprefix("http") + "/ws"  # http->ws, https->wss
        self._token = token
        self._headers = dict(headers)
        self._timeout_s = timeout_s
        self._refs = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Message | None]] = {}
        self._opening = asyncio.Lock()

    async def send(self, events: list[Draft], single: bool, key: str | None) -> list[Published]:
        del single  # a publish message always carries a list
        keyed = key is not None
        ws = await self._connection(keyed)
        ref = str(next(self._refs))
        message: dict[str, Any] = {"type": "publish", "ref": ref, "events": events}
        if keyed:
            message["idempotency_key"] = key
        answer: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
        self._pending[ref] = answer
        try:
            try:
                await ws.send(orjson.dumps(message).decode())
            except ConnectionClosed as exc:  # closed before it was written: never sent
                failure = PublishError(None, None, f"publish not sent: {exc!r}")
                raise Failed(failure, True) from exc
            try:
                async with asyncio.timeout(self._timeout_s):
                    reply = await answer
            except TimeoutError as exc:
                failure = PublishError(None, None, f"no answer in {self._timeout_s:g} s")
                raise Failed(failure, keyed) from exc
        finally:
            self._pending.pop(ref, None)
        return _receipts(reply, keyed)

    async def _connection(self, keyed: bool) -> ClientConnection:
        """The open socket, or a new one: a handshake refused is a refusal as over HTTP."""
        async with self._opening:
            if self._ws is not None and self._reader is not None and not self._reader.done():
                return self._ws
            headers = {**self._headers, **await bearer_headers(self._token)}
            try:
                self._ws = await connect(
                    self._url,
                    additional_headers=headers,
                    open_timeout=self._timeout_s,
                    compression=None,
                    max_size=MAX_MESSAGE_BYTES,
                    close_timeout=CLOSE_TIMEOUT_S,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = ErrorBody.parse(bytes(exc.response.body or b""))
                failure = PublishError(
                    status, body.error, body.detail, retry_after(exc.response.headers)
                )
                raise Failed(failure, refused(status, None, keyed)) from exc
            except (OSError, TimeoutError, WebSocketException) as exc:
                never_sent = isinstance(exc, ConnectionRefusedError | socket.gaierror)
                failure = PublishError(None, None, f"WebSocket could not connect: {exc!r}")
                raise Failed(failure, never_sent or keyed) from exc
            self._reader = asyncio.create_task(self._read(self._ws))
            return self._ws

    async def _read(self, ws: ClientConnection) -> None:
        """Hand each answer to the call waiting for its ``ref``; when the socket
        ends, every call still waiting learns it (``None``)."""
        try:
            async for frame in ws:
                with contextlib.suppress(orjson.JSONDecodeError):
                    message = orjson.loads(frame)
                    ref = message.get("ref") if isinstance(message, dict) else None
                    waiting = self._pending.get(ref) if isinstance(ref, str) else None
                    if waiting is not None and not waiting.done():
                        waiting.set_result(message)
        except ConnectionClosed:
            pass
        finally:
            for waiting in self._pending.values():
                if not waiting.done():
                    waiting.set_result(None)

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def _receipts(reply: Message | None, keyed: bool) -> list[Published]:
    """A ``published`` answer's receipts; a ``stream_error`` is the same
    :class:`PublishError` (code and detail) as the HTTP refusal."""
    if reply is None:
        failure = PublishError(None, None, "the WebSocket closed before the publish was answered")
        raise Failed(failure, keyed)
    kind = reply.get("type")
    if kind == "published" and isinstance(reply.get("events"), list):
        return [receipt(item) for item in reply["events"]]
    if kind in ERROR_TYPES:
        error = reply.get("error")
        code = error if isinstance(error, str) else None
        failure = PublishError(None, code, str(reply.get("detail") or ""))
        raise Failed(failure, refused(None, code, keyed))
    raise Failed(PublishError(None, None, f"unexpected answer: {reply!r}"[:300]), False)
