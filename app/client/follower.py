"""The engine of a feed: connections, the ladder, the cursor, de-duplication.

Why it cannot lose or repeat an event: ids strictly increase across the
whole log, so one number (the last id handed over) is the cursor for every
reconnection and every change of transport, and anything at or below it is
a duplicate.  A better transport is tried again now and then while a
fallback is in use; the switch opens the new connection at the cursor
*before* the old one is closed, so the seam can only repeat (then drop)
events, never skip them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from app.client.errors import Down, FeedRefused
from app.client.events import (
    ERROR_TYPES,
    TRANSPORT_LABELS,
    Control,
    Event,
    Message,
    ReplayTruncated,
    TransportName,
    event_from,
    is_envelope,
    optional_int,
    truncation_from,
)
from app.client.ladder import Ladder, Verdict, classify, spread
from app.client.options import FeedOptions
from app.client.probe import probe
from app.client.transports.base import Connection
from app.client.transports.poll import open_poll
from app.client.transports.sse import open_sse
from app.client.transports.ws import open_ws

log = logging.getLogger("app.client")

Opener = Callable[[FeedOptions, httpx.AsyncClient, "int | None"], Awaitable[Connection]]
OPENERS: dict[TransportName, Opener] = {"ws": open_ws, "sse": open_sse, "poll": open_poll}
#: No frame at all for this many heartbeat intervals: the connection is dead.
WATCHDOG_HEARTBEATS = 2
USER_AGENT = "livefeed-python-client"
State = Literal["connecting", "live", "reconnecting", "closed"]


@dataclass
class _Live:
    """The connection in use and what it told us before it ended."""

    conn: Connection
    batches: AsyncGenerator[list[Message], None]
    since: float
    server_error: str | None = None
    reconnect_after_s: float | None = None


async def _pull(batches: AsyncIterator[list[Message]]) -> list[Message]:
    return await anext(batches)


async def _close(live: _Live) -> None:
    await live.batches.aclose()
    await live.conn.aclose()


class Follower:
    """The engine behind :class:`Feed` (kept apart so that a dropped ``Feed``
    releases its generator, and with it every connection, at once)."""

    def __init__(
        self,
        options: FeedOptions,
        last_event_id: int | None,
        on_control: Callable[[Control], object] | None,
    ) -> None:
        self.options = options
        self.last_id = last_event_id  # the last id handed over (or the caller's cursor)
        self.floor: int | None = None  # with no cursor: the newest id when first connected
        self.truncated: ReplayTruncated | None = None
        self.transport: TransportName | None = None
        self.state: State = "connecting"
        self.ladder = Ladder(options)
        self.heartbeat_s = options.heartbeat_s
        self._on_control = on_control
        # one pool for SSE, long-poll and probes; creating it opens nothing yet
        self._http = httpx.AsyncClient(headers={"User-Agent": USER_AGENT})
        self._trial: asyncio.Task[Connection | None] | None = None

    @property
    def cursor(self) -> int | None:
        known = [n for n in (self.last_id, self.floor) if n is not None]
        return max(known) if known else None

    async def run(self) -> AsyncGenerator[Event, None]:
        """Every event after the cursor, once each, in id order, until closed."""
        live: _Live | None = None
        try:
            while True:
                if live is None:
                    live = await self._connect()
                try:
                    item = await self._next(live)
                except Down as down:
                    await self._drop_trial()
                    await _close(live)
                    ended, live = live, None
                    await self._recover(down, ended)
                    continue
                if isinstance(item, list):
                    for message in item:
                        event = self._handle(live, message)
                        if event is not None:
                            yield event
                else:  # a better transport works again
                    old = live
                    await _close(old)
                    self.ladder.adopt(item.transport)
                    live = _Live(item, item.batches(), time.monotonic())
                    log.info(
                        "back on %s (closed %s)",
                        TRANSPORT_LABELS[item.transport],
                        TRANSPORT_LABELS[old.conn.transport],
                    )
                    self._established(item)
        finally:
            self.state = "closed"
            await self._drop_trial()
            if live is not None:
                await _close(live)
            await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # ---- connecting and recovering -------------------------------------

    async def _connect(self) -> _Live:
        while True:
            transport = self.ladder.transport
            try:
                conn = await OPENERS[transport](self.options, self._http, self.cursor)
            except Down as down:
                await self._recover(down, None)
                continue
            self._established(conn)
            return _Live(conn, conn.batches(), time.monotonic())

    def _established(self, conn: Connection) -> None:
        hello = conn.established
        latest = optional_int(hello.get("latest_id"))
        if self.cursor is None and latest is not None:
            self.floor = latest  # a reconnection must not skip what is published meanwhile
        beat = hello.get("heartbeat_s")
        if isinstance(beat, int | float) and beat > 0:
            self.heartbeat_s = float(beat)
        self.transport, self.state = conn.transport, "live"
        why = "; ".join(self.ladder.problems[t] for t in self.ladder.better())
        log.info(
            "live over %s%s%s",
            TRANSPORT_LABELS[conn.transport],
            "" if self.cursor is None else f" after #{self.cursor}",
            f" (fallback: {why})" if why else "",
        )
        self._control(conn.transport, hello)
        if self.ladder.better() and self._trial is None:
            delay = spread(self.options.upgrade_interval_s)
            self._trial = asyncio.create_task(self._try_better(delay), name="livefeed-upgrade")

    async def _recover(self, down: Down, ended: _Live | None) -> None:
        """Decide after a failure: wait and retry, move down the ladder, or give up."""
        self.state = "reconnecting"
        transport = down.transport
        if ended is not None:
            self.ladder.live(transport, time.monotonic() - ended.since)
            if down.retry_after is None:
                down.retry_after = ended.reconnect_after_s
        server_error = ended.server_error if ended is not None else None
        verdict = classify(down, was_live=ended is not None, server_error=server_error)
        if verdict is Verdict.REFUSE:
            raise FeedRefused(down.status, down.error, down.detail)
        if verdict is Verdict.LATER:
            hint = ended.conn.retry_hint_s if ended is not None else None
            await self._wait(self.ladder.later(down, hint), down.detail + " (server busy)")
            return
        if verdict is Verdict.RETRY:
            await self._wait(self.ladder.backoff(), down.detail)
            return
        reason = down.detail
        if verdict is Verdict.PROBE:
            found = await probe(self.options, self._http, transport, down.detail)
            if found.refused is not None:
                raise FeedRefused(found.refused[0], found.refused[1], found.text)
            if not found.reachable or found.trouble or not self.ladder.strike(transport):
                await self._wait(self.ladder.backoff(), found.text)
                return
            reason = found.text
        if self.ladder.fall(reason):
            log.warning("%s — falling back to %s", reason, TRANSPORT_LABELS[self.ladder.transport])
            return
        if down.status is not None:  # a definite refusal, and no transport left to try
            raise FeedRefused(down.status, down.error, reason)
        await self._wait(self.ladder.backoff(), reason)

    async def _wait(self, delay: float, reason: str) -> None:
        log.info(
            "%s — reconnecting over %s in %.1f s",
            reason,
            TRANSPORT_LABELS[self.ladder.transport],
            delay,
        )
        await asyncio.sleep(delay)

    # ---- reading ---------------------------------------------------------

    def _silence(self, live: _Live) -> Down:
        label = TRANSPORT_LABELS[live.conn.transport]
        detail = (
            f"{label} silent for {self._dead_after():g} s (heartbeat every {self.heartbeat_s:g} s)"
        )
        return Down(live.conn.transport, detail, silent=True)

    def _dead_after(self) -> float:
        return WATCHDOG_HEARTBEATS * self.heartbeat_s

    async def _next(self, live: _Live) -> list[Message] | Connection:
        """The next batch of messages, or a better connection that is ready.

        Long-poll has no heartbeat (each request has its own timeout); the
        streams must bring a frame, heartbeats included, every so often."""
        timeout = None if live.conn.transport == "poll" else self._dead_after()
        if self._trial is None:
            try:
                async with asyncio.timeout(timeout):
                    return await anext(live.batches)
            except TimeoutError:
                raise self._silence(live) from None
            except StopAsyncIteration:
                raise Down(live.conn.transport, "the stream ended") from None
        read = asyncio.create_task(_pull(live.batches), name="livefeed-read")
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {read}
                if self._trial is not None:
                    waiting.add(self._trial)
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if read in done:
                    try:
                        return read.result()
                    except StopAsyncIteration:
                        raise Down(live.conn.transport, "the stream ended") from None
                if not done:
                    raise self._silence(live)
                better = self._trial_result()
                if better is not None:
                    return better
        finally:
            if not read.done():
                read.cancel()
                await asyncio.wait({read})

    def _handle(self, live: _Live, message: Message) -> Event | None:
        if is_envelope(message):
            if self.last_id is not None and message["id"] <= self.last_id:
                return None  # seen already: a resumed or switched connection repeats
            self.last_id = message["id"]
            return event_from(message)
        kind = message.get("type")
        if kind == "replay_truncated":
            self._truncated(live, truncation_from(message))
        elif kind in ERROR_TYPES:
            error = message.get("error")
            live.server_error = error if isinstance(error, str) else None
            after_ms = message.get("reconnect_after_ms")
            if isinstance(after_ms, int | float):
                live.reconnect_after_s = after_ms / 1000
            log.warning(
                "%s: the server says %s — %s",
                TRANSPORT_LABELS[live.conn.transport],
                error,
                message.get("detail") or "",
            )
        self._control(live.conn.transport, message)
        return None

    def _truncated(self, live: _Live, notice: ReplayTruncated) -> None:
        self.truncated = notice
        if notice.reason == "ahead":
            latest = notice.latest_id
            if latest is None:
                latest = optional_int(live.conn.established.get("latest_id"))
            log.warning(
                "the server's log ends at #%s, before this feed's cursor #%s "
                "(another or a reset database): continuing from #%s",
                latest,
                notice.requested_after,
                latest,
            )
            if latest is not None:
                self.last_id = self.floor = latest
            return
        log.warning(
            "replay truncated: events after #%s before #%s are no longer kept",
            notice.requested_after,
            notice.oldest_available,
        )

    def _control(self, transport: TransportName, message: Message) -> None:
        if self._on_control is not None:
            self._on_control(Control(str(message.get("type")), transport, message))

    # ---- trying a better transport ----------------------------------------

    async def _try_better(self, delay: float) -> Connection | None:
        await asyncio.sleep(delay)
        for transport in self.ladder.better():
            label = TRANSPORT_LABELS[transport]
            log.info("trying %s again", label)
            try:
                return await OPENERS[transport](self.options, self._http, self.cursor)
            except Down as down:
                log.info("%s still unavailable: %s", label, down.detail)
        return None

    def _trial_result(self) -> Connection | None:
        """The finished trial's connection, or None (then the next trial is scheduled)."""
        trial, self._trial = self._trial, None
        better = trial.result() if trial is not None else None
        if better is None and self.ladder.better():
            delay = spread(self.options.upgrade_interval_s)
            self._trial = asyncio.create_task(self._try_better(delay), name="livefeed-upgrade")
        return better

    async def _drop_trial(self) -> None:
        trial, self._trial = self._trial, None
        if trial is None:
            return
        trial.cancel()
        await asyncio.wait({trial})
        if not trial.cancelled() and trial.exception() is None:
            better = trial.result()
            if better is not None:
                await better.aclose()
