"""Nudges between the workers of one supervisor: "the log advanced, look now".

Without them a worker noticed another worker's appends only when its poll of
``PRAGMA data_version`` came round (every 50 ms), which was most of the
cross-worker delivery time.  Each worker binds a Unix datagram socket in a
directory its supervisor made, and after each commit that appended it sends
one byte to every other socket there.  A nudge carries nothing: the worker
that gets one checks the database as its poll does, so a lost or late nudge
costs only latency, and the poll stays as the safety net (and as the only
path for a process that is not one of these workers).

Sending never waits and never fails a publish: a full buffer means that peer
has nudges pending already, and a dead worker's socket refuses and is
skipped.  The directory is listed on each send, so a restarted worker is
found at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

SUFFIX = ".sock"


def socket_name(pid: int) -> str:
    """``<pid>.<random>.sock``: unique however many stores a process opens, and
    found by pid when the supervisor cleans up after a dead worker."""
    return f"{pid}.{secrets.token_hex(4)}{SUFFIX}"


def forget(directory: str, pid: int) -> None:
    """Remove the sockets of a process that died without closing them (kill -9), so
    that nobody nudges them any more."""
    for name in os.listdir(directory):
        if name.startswith(f"{pid}.") and name.endswith(SUFFIX):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


class Doorbell:
    """The poll's pause: it ends after ``seconds``, or at once when rung.  A ring
    while nobody waits is kept (one is enough), so none is lost between checks.
    As cheap as the ``asyncio.sleep`` it replaces: one future, one timer."""

    def __init__(self) -> None:
        self._rung = False
        self._waiter: asyncio.Future[None] | None = None

    def ring(self) -> None:
        self._rung = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, seconds: float) -> None:
        if not self._rung:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(seconds, _end, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        self._rung = False


def _end(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Nudges:
    """This worker's socket in ``directory``: nudges arriving ring ``on_nudge`` (once
    per burst), and :meth:`send` nudges every other worker."""

    def __init__(self, directory: str, on_nudge: Callable[[], None]) -> None:
        self._directory = directory
        self._path = os.path.join(directory, socket_name(os.getpid()))
        self._on_nudge = on_nudge
        self._sock: socket.socket | None = None

    def open(self) -> None:
        """Bind and listen on the running loop; if that fails, the poll alone delivers."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(self._path)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._received)
        except OSError as exc:
            sock.close()
            log.warning("no nudges from other workers (%s); polling only", exc)
            return
        self._sock = sock

    def send(self) -> None:
        """One byte to every other worker's socket; never blocks, never raises."""
        if self._sock is None:
            return
        try:
            names = os.listdir(self._directory)
        except OSError:
            return
        for name in names:
            path = os.path.join(self._directory, name)
            if name.endswith(SUFFIX) and path != self._path:
                with contextlib.suppress(OSError):  # full (already nudged), gone or dead
                    self._sock.sendto(b"!", path)

    def _received(self) -> None:
        """Drain every pending nudge, then ring once: a burst costs one check."""
        assert self._sock is not None
        with contextlib.suppress(OSError):  # BlockingIOError: drained
            while True:
                self._sock.recv(16)
        self._on_nudge()

    def close(self) -> None:
        if self._sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(OSError):
            os.unlink(self._path)
