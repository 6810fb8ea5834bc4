"""A connection whose peer takes no bytes for the send timeout is aborted.

The stream lifecycle cuts a client that makes no write progress for
``LIVEFEED_WRITE_TIMEOUT_S`` (its slot, its subscription, its metrics).  But
Hypercorn then ends the response or closes the WebSocket itself, gracefully:
it writes the last bytes and waits for them to drain (``writer.drain()``, then
``wait_closed()``), and a peer that never reads never lets them drain.  Seen:
a stalled SSE client's socket still established 30 s after its stream was cut,
2.8 MB queued in the kernel and more in the transport, until shutdown.

Here every write that has to wait (the transport's buffer is above its high-water
mark), and the graceful close, are bounded by ``LivefeedConfig.send_timeout_s``;
past it the transport is aborted (a TCP reset, which frees both buffers at once)
and the protocol is told the connection closed.  Writes that need not wait cost
one comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios

from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData

DRAIN_POLL_S = 0.1
FIRST_DRAIN_POLL_S = 0.001


class LivefeedConfig(Config):
    """Hypercorn's config plus the bound on a write that cannot drain."""

    send_timeout_s: float | None = None


class BoundedSendTCPServer(TCPServer):
    """Hypercorn's asyncio connection, with writes that cannot wait forever."""

    async def protocol_send(self, event: Event) -> None:
        timeout = getattr(self.config, "send_timeout_s", None)
        if timeout is None or not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        async with self.send_lock:
            try:
                self.writer.write(event.data)
                transport = self.writer.transport
                if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]:
                    await self.writer.drain()  # not paused: returns at once
                    return
                async with asyncio.timeout(timeout):
                    await self.writer.drain()
            except TimeoutError:
                transport.abort()
                await self.protocol.handle(Closed())
            except (ConnectionError, RuntimeError):
                await self.protocol.handle(Closed())

    async def _close(self) -> None:
        """Close gracefully if the peer takes the last bytes in time, else reset.

        A graceful close hands what is unsent to the kernel, which keeps the socket
        (and megabytes of send buffer) until a peer that never reads gives up, for
        minutes.  So wait while the peer takes what is queued; one that takes
        nothing for the send timeout gets a reset instead."""
        timeout = getattr(self.config, "send_timeout_s", None)
        if timeout is not None and not await self._drained(timeout):
            sock = self.writer.get_extra_info("socket")
            with contextlib.suppress(OSError):  # linger 0: close() resets, keeps nothing
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()
        await super()._close()

    async def _drained(self, patience_s: float) -> bool:
        """Whether the peer took every queued byte (transport and kernel), never going
        ``patience_s`` without taking some: a slow peer is waited for, a stalled one
        is not."""
        loop = asyncio.get_running_loop()
        deadline, left, pause = loop.time() + patience_s, self._queued(), FIRST_DRAIN_POLL_S
        while left:
            # The last bytes are usually acknowledged within a millisecond: look again
            # soon, then less often, rather than keep every closing socket 0.1 s longer.
            await asyncio.sleep(pause)
            pause = min(2 * pause, DRAIN_POLL_S)
            now, before, left = loop.time(), left, self._queued()
            if left < before:
                deadline = now + patience_s
            elif now >= deadline:
                return False
        return True

    def _queued(self) -> int:
        return self.writer.transport.get_write_buffer_size() + _unsent(self.writer)


def _unsent(writer: asyncio.StreamWriter) -> int:
    """Bytes the kernel still holds for the peer (Linux ``SIOCOUTQ``; 0 elsewhere)."""
    sock = writer.get_extra_info("socket")
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, AttributeError, ValueError):
        return 0
    unsent: int = struct.unpack("i", queued)[0]
    return unsent
