"""What a WebSocket client may say: ``ping``, ``subscribe``, ``unsubscribe``, ``publish``.

A refusal is a ``stream_error`` frame and the connection stays open.  A change
of channels is not applied here, in the task that reads messages, but handed
to the subscription, which applies it between two batches of the outgoing
stream (see :meth:`app.hub.Subscription.change`): the ``subscribed`` frame then
sits exactly at the position where the change took effect.

Publishes are checked here, one after another, then committed concurrently
(group commit batches them) and answered strictly in the order they were
sent, by a task of their own, so one socket can keep many publishes in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from app.errors import ApiError, IdempotencyConflict, Rejected, StoreUnavailable, as_api_error
from app.events import (
    Control,
    Draft,
    EventFilter,
    drafts_from_value,
    error_frame,
    idempotency_key,
    parse_strict_json,
)
from app.query import Channels, parse_channels, workflow_ids
from app.runtime import Runtime
from app.security.tokens import ReadGrant

log = logging.getLogger(__name__)

PONG = Control.build("pong")
INTERNAL_ERROR_FRAME = error_frame(
    "internal_error", "the publish failed; this is a bug, and it is logged"
)
MAX_REF_CHARS = 64
MAX_IN_FLIGHT = 64  # publishes committed at once per socket; more wait for the oldest
KNOWN = "ping, subscribe, unsubscribe or publish"

SendText = Callable[[str], Awaitable[None]]


class Refused(Exception):
    """A client message that gets a ``stream_error`` frame; the connection stays."""

    def __init__(self, error: str, detail: str, ref: object = ...) -> None:
        super().__init__(detail)
        self.frame = (
            error_frame(error, detail) if ref is ... else error_frame(error, detail, ref=ref)
        )


def parse_message(text: str) -> dict[str, Any]:
    """A client message: a JSON object with a string ``type``."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
        raise Refused("bad_message", f'send a JSON object with a "type": {KNOWN}')
    return parsed


class Subscriptions:
    """What the connection follows, changed by ``subscribe`` / ``unsubscribe``."""

    def __init__(self, channels: Channels, types: frozenset[str] | None, grant: ReadGrant) -> None:
        self.channels = channels
        self._types = types
        self._grant = grant

    def change(self, message: dict[str, Any]) -> tuple[EventFilter, Callable[[int], Control]]:
        """The new filter and the frame that announces it; raises :class:`Refused`."""
        names = message.get("channels")
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(name, str) for name in names)
            or set(message) != {"type", "channels"}
        ):
            raise Refused(
                "bad_message",
                f'send {{"type":"{message["type"]}","channels":["<channel>", ...]}}',
            )
        try:
            named = parse_channels(names, "channels")
        except ApiError as error:
            raise Refused(error.code, error.detail) from None
        if message["type"] == "subscribe":
            for name in named:
                if not self._grant.allows(name):
                    raise Refused("forbidden", f"this token does not cover {name[:80]!r}")
            try:
                channels = parse_channels([*self.channels, *named], "channels")
            except ApiError as error:
                raise Refused(error.code, error.detail) from None
        else:
            channels = tuple(name for name in self.channels if name not in named)
        self.channels = channels
        filter = EventFilter(workflow_ids=workflow_ids(channels), types=self._types)
        listed = list(channels)
        return filter, lambda cursor: Control.build("subscribed", channels=listed, cursor=cursor)


class Publishing:
    """``publish`` messages of one connection: checked in order, committed together,
    answered in order."""

    def __init__(self, runtime: Runtime, client: str, allowed: bool, send: SendText) -> None:
        self._runtime = runtime
        self._client = client
        self._allowed = allowed
        self._send = send
        self._answers: InOrder | None = None  # made by the first publish

    @property
    def allowed(self) -> bool:
        return self._allowed

    async def publish(self, text: str, message: dict[str, Any]) -> bool:
        """Check one ``publish`` and start its commit, or queue its refusal: either way
        it is answered in the order sent.  ``False``: it had no valid ``ref`` (abuse
        counts those)."""
        ref = message.get("ref")
        try:
            if not isinstance(ref, str) or not 1 <= len(ref) <= MAX_REF_CHARS:
                ref = None
                raise Refused(
                    "bad_message", f"a publish needs a ref of 1..{MAX_REF_CHARS} characters", None
                )
            answer = await self._start(text, ref)
        except Refused as refused:
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            done.set_result(refused.frame.text)
            answer = done
        if self._answers is None:
            self._answers = InOrder(self._send)
        await self._answers.add(answer)
        return ref is not None

    async def _start(self, text: str, ref: str) -> asyncio.Future[str]:
        if not self._allowed:
            raise Refused(
                "forbidden",
                "this connection may not publish: connect with the "
                "publish token (Authorization: Bearer), or from loopback when none is set",
                ref,
            )
        try:
            await self._runtime.access.admission.check_publish(self._client)
            parsed = await self._runtime.parse(parse_strict_json, text.encode())
            events = parsed.get("events")
            if not isinstance(events, list):
                raise Rejected("invalid_event", "events must be an array of 1..1000 events")
            drafts = drafts_from_value(events, self._runtime.settings.max_event_bytes)
            key = idempotency_key(parsed.get("idempotency_key"))
        except (ApiError, Rejected) as exc:
            raise _refusal(exc, ref) from None
        return asyncio.ensure_future(self._commit(ref, drafts, key))

    async def _commit(self, ref: str, drafts: list[Draft], key: str | None) -> str:
        try:
            appended = await self._runtime.publish(drafts, True, key)
        except (StoreUnavailable, IdempotencyConflict) as exc:  # told, not raised
            return _refusal(exc, ref).frame.text
        answer: dict[str, Any] = {
            "type": "published",
            "ref": ref,
            "events": [{"id": event_id, "ts": ts} for event_id, ts in appended.receipt],
        }
        if appended.replayed:
            answer["replayed"] = True
        return orjson.dumps(answer).decode()

    async def close(self) -> None:
        """Stop answering (the connection is ending); commits in flight still land."""
        if self._answers is not None:
            await self._answers.close()


class InOrder:
    """A connection's publish answers, sent in the order the publishes came, at most
    ``MAX_IN_FLIGHT`` waiting.  Made by a connection's first publish: most
    connections only read, and an idle one should not hold a queue, an event and a
    task it never uses."""

    def __init__(self, send: SendText) -> None:
        self._send = send
        self._answers: deque[asyncio.Future[str]] = deque()
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._answer_in_order())

    async def add(self, answer: asyncio.Future[str]) -> None:
        """Queue an answer (waiting while ``MAX_IN_FLIGHT`` are unsent)."""
        while len(self._answers) >= MAX_IN_FLIGHT:
            await asyncio.wait({self._answers[0]})
        self._answers.append(answer)
        self._ready.set()

    async def _answer_in_order(self) -> None:
        while True:
            while not self._answers:
                self._ready.clear()
                await self._ready.wait()
            try:
                answer = await self._answers[0]
            except Exception:  # a bug: the publisher still hears back, in order
                log.exception("websocket publish failed")
                answer = INTERNAL_ERROR_FRAME.text
            self._answers.popleft()
            await self._send(answer)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _refusal(exc: Exception, ref: str) -> Refused:
    error = as_api_error(exc)
    if error is None:
        raise exc
    return Refused(error.code, error.detail, ref)
