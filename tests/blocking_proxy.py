"""A loopback HTTP proxy that blocks chosen paths, as a corporate proxy or a
misconfigured load balancer does (refusing WebSockets, breaking streams).

Every request it lets through is forwarded with ``Connection: close`` (except
WebSocket upgrades), so that each request on a kept-alive client pool is seen
and judged on its own.
"""

from __future__ import annotations

import asyncio
import contextlib

BLOCKED_ANSWER = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 29\r\n"
    b"Connection: close\r\n\r\n<h1>Blocked by the proxy</h1>"
)


class BlockingProxy:
    """Forwards to ``target_port``; ``blocked`` holds path prefixes refused with 403 HTML."""

    def __init__(self, target_port: int, blocked: set[str] | None = None) -> None:
        self.target_port = target_port
        self.blocked = set(blocked or ())
        self.refused: list[str] = []
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> BlockingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            if any(path.startswith(prefix) for prefix in self.blocked):
                self.refused.append(path)
                writer.write(BLOCKED_ANSWER)
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            try:
                up_writer.write(_one_request_only(head))
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            self._pipes.discard(task)
            writer.close()


def _one_request_only(head: bytes) -> bytes:
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    if any(line.lower().startswith(b"upgrade:") for line in lines):
        return head
    kept = [line for line in lines if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*kept, b"Connection: close", b"", b""])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()
