"""Hostile clients on raw sockets (FAULTS 8-10, 31-33, 35): the attacker is cut off or
refused as documented, and everyone else is served normally meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.sse_parser import SSEMessage, SSEParser
from tests.support import ServerProcess

pytestmark = [pytest.mark.asyncio, pytest.mark.serial]  # bystanders' delays are bounded

KEEP_ALIVE_S = 5.0  # app/server.py KEEP_ALIVE_TIMEOUT_S
BODY_TIMEOUT_S = 30.0  # Quart BODY_TIMEOUT in app/__init__.py
MAX_FRAME = 64 * 1024


# --- raw sockets ---------------------------------------------------------------------


async def close_writer(writer: asyncio.StreamWriter) -> None:
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()  # a flood the server stopped reading: never flushes
    else:
        writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def ws_client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame; the all-zero mask leaves the payload as it is."""
    length = len(payload)
    if length < 126:
        head = bytes([0x80 | opcode, 0x80 | length])
    elif length < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


class RawSocket:
    """A plain non-blocking socket on the event loop.  Unlike asyncio streams, a failed
    write (the server reset a flood) does not make already received bytes unreadable."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buffer = b""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, server: ServerProcess) -> AsyncIterator[RawSocket]:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            yield cls(sock)
        finally:
            sock.close()

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = await self.loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise EOFError(f"closed after {self.buffer[:100]!r}")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = await self.loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise EOFError(f"closed after {self.buffer[:100]!r}")
            self.buffer += chunk
        return await self.read_exactly(self.buffer.index(marker) + len(marker))

    async def read_available(self, timeout: float) -> bytes | None:
        """What arrives within ``timeout``: None for nothing, b"" at EOF (or a reset)."""
        if self.buffer:
            data, self.buffer = self.buffer, b""
            return data
        try:
            async with asyncio.timeout(timeout):
                return await self.loop.sock_recv(self.sock, 65536)
        except TimeoutError:
            return None
        except ConnectionError:
            return b""

    async def http_response(self) -> tuple[int, dict[str, str], bytes]:
        head = await self.read_until(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.read_exactly(int(headers.get("content-length", "0")))
        return int(status_line.split(" ")[1]), headers, body

    async def seconds_until_closed(self, limit: float) -> float:
        started = time.monotonic()
        async with asyncio.timeout(limit):
            with contextlib.suppress(ConnectionError):
                while await self.loop.sock_recv(self.sock, 65536):
                    pass
        return time.monotonic() - started

    async def ws_handshake(self, server: ServerProcess) -> None:
        """Upgrade to a WebSocket on a channel filter nobody publishes to."""
        await self.send(
            f"GET /ws/validation_updates?types=quiet HTTP/1.1\r\nHost: 127.0.0.1:{server.port}"
            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        head = await self.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        opcode, hello = await self.ws_frame()
        assert opcode == 0x1 and orjson.loads(hello)["type"] == "connection_established"

    async def ws_frame(self) -> tuple[int, bytes]:
        """One (unmasked) server frame: opcode and payload."""
        first, second = await self.read_exactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.read_exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.read_exactly(8), "big")
        return first & 0x0F, await self.read_exactly(length)

    async def flood(self, frame: bytes, count: int, limit: float) -> int:
        """Send ``count`` frames as fast as the socket takes them, reading nothing;
        returns how many went before the server stopped taking them."""
        sent = 0
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(limit):
                for _ in range(count):
                    await self.send(frame)
                    sent += 1
        return sent

    async def ws_until_close(self) -> tuple[int, str, Counter]:
        """Frames until the close frame: its code and reason, and what came before it."""
        seen: Counter = Counter()
        async with asyncio.timeout(10):
            while True:
                opcode, payload = await self.ws_frame()
                if opcode == 0x8:
                    return int.from_bytes(payload[:2], "big"), payload[2:].decode(), seen
                seen[orjson.loads(payload)["type"] if opcode == 0x1 else f"op {opcode}"] += 1


# --- the server process --------------------------------------------------------------


def proc_status(server: ServerProcess, field: str) -> int:
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/<pid>/status")


def open_fds(server: ServerProcess) -> int:
    assert server.process is not None
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def assert_alive(server: ServerProcess) -> None:
    assert server.process is not None and server.process.poll() is None, server.log()[-3000:]


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_server(
    request: pytest.FixtureRequest, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> ServerProcess:
    """A server on each event loop app/server.py runs on: uvloop when it is installed,
    else plain asyncio (here uvloop is hidden by a module on PYTHONPATH that fails to
    import).  The loop is checked in the server's memory map."""
    env: dict[str, str] = {}
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    else:
        hide = tmp_path / "no_uvloop"
        hide.mkdir()
        (hide / "uvloop.py").write_text('raise ImportError("hidden by the test")\n')
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")]))
    server = start_server(**env)
    assert server.process is not None
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert ("uvloop" in maps) == (request.param == "uvloop"), "not on the loop under test"
    return server


# --- a normal client, served meanwhile --------------------------------------------------


class Bystander:
    """A WebSocket reader plus a publisher: each round publishes one event and times its
    arrival; rounds run until stopped.  Latency is request to delivery."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.latencies: list[float] = []
        self.ready = asyncio.Event()  # the first round is done
        self.stop = asyncio.Event()

    async def run(self, interval: float = 0.25) -> None:
        async with (
            httpx.AsyncClient(base_url=self.server.url, timeout=5) as http,
            connect(self.server.ws_url + "/ws/validation_updates?types=bystander") as ws,
        ):
            assert orjson.loads(await ws.recv())["type"] == "connection_established"
            while not self.stop.is_set():
                await self.round(http, ws)
                self.ready.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self.stop.wait()
            await self.round(http, ws)  # one more after the attack ended

    async def round(self, http: httpx.AsyncClient, ws: ClientConnection) -> None:
        started = time.monotonic()
        assert (await http.get("/healthz")).status_code == 200
        response = await http.post(
            "/api/events",
            content=b'{"type":"bystander"}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 201, response.text
        async with asyncio.timeout(5):
            frame = orjson.loads(await ws.recv())
            while frame["type"] == "heartbeat":
                frame = orjson.loads(await ws.recv())
        assert frame["id"] == response.json()["id"]
        self.latencies.append(time.monotonic() - started)

    def assert_served(self, rounds: int) -> None:
        assert len(self.latencies) >= rounds, self.latencies
        assert max(self.latencies) < 1.0, f"slowest round {max(self.latencies):.3f} s"


@contextlib.asynccontextmanager
async def bystander(server: ServerProcess, rounds: int) -> AsyncIterator[Bystander]:
    """Runs a Bystander around the block and checks it was served throughout."""
    watcher = Bystander(server)
    task = asyncio.create_task(watcher.run())
    try:
        ready = asyncio.create_task(watcher.ready.wait())
        try:
            await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if task.done():
            task.result()  # its first round failed: raise that
        assert watcher.ready.is_set(), "the bystander was not served before the attack"
        yield watcher
    finally:
        watcher.stop.set()
        async with asyncio.timeout(10):
            await task
    watcher.assert_served(rounds)


# --- slowloris, silent, trickled -------------------------------------------------------


async def test_slowloris_head_and_silent_connection_are_closed_after_keep_alive(server):
    """FAULTS 9: a 1-byte-per-0.5 s head and a silent socket are closed after ~5 s; others
    are served meanwhile."""

    async def slowloris() -> float:
        async with RawSocket.open(server) as raw:
            started = time.monotonic()
            head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Slow: "
            with contextlib.suppress(ConnectionError):
                for byte in head.encode() + b"a" * 1000:
                    await raw.send(bytes([byte]))
                    if await raw.read_available(0.5) == b"":
                        break  # closed by the server
            return time.monotonic() - started

    async def silent() -> float:
        async with RawSocket.open(server) as raw:
            return await raw.seconds_until_closed(20)

    async with bystander(server, rounds=12):
        slow, quiet = await asyncio.wait_for(asyncio.gather(slowloris(), silent()), 20)
    assert KEEP_ALIVE_S - 1 <= slow <= KEEP_ALIVE_S + 3, slow
    assert KEEP_ALIVE_S - 1 <= quiet <= KEEP_ALIVE_S + 3, quiet
    assert_alive(server)


async def test_silent_h2c_connection_is_closed_after_keep_alive(loop_server):
    """FAULTS 9: a connection that sends only the HTTP/2 preface is a silent connection too
    (Hypercorn stopped its idle timer at the preface; app/hypercorn_fixes re-arms it)."""
    async with RawSocket.open(loop_server) as raw:
        await raw.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        quiet = await raw.seconds_until_closed(KEEP_ALIVE_S + 3)
    assert KEEP_ALIVE_S - 1 <= quiet <= KEEP_ALIVE_S + 3, quiet
    assert_alive(loop_server)


async def test_h2c_stream_is_not_cut_by_the_idle_timer(server):
    """FAULTS 9: re-arming the idle timer at the h2c preface does not cut what follows: an
    SSE stream over HTTP/2 prior knowledge outlives the keep-alive timeout, then a request
    on the same connection is served."""
    async with httpx.AsyncClient(
        base_url=server.url, http1=False, http2=True, timeout=KEEP_ALIVE_S + 10
    ) as h2c:
        async with h2c.stream("GET", "/sse/validation_updates?types=h2c") as stream:
            assert (stream.http_version, stream.status_code) == ("HTTP/2", 200)
            parser, messages = SSEParser(), []
            chunks = stream.aiter_raw()
            while not messages:
                messages = parser.feed(await anext(chunks))
            assert messages[0].event == "connection_established"
            await asyncio.sleep(KEEP_ALIVE_S + 2)
            [event_id] = await asyncio.to_thread(server.publish, {"type": "h2c"})
            async with asyncio.timeout(5):
                while not [m for m in messages if m.id == str(event_id)]:
                    messages = parser.feed(await anext(chunks))
        response = await h2c.get("/healthz")
        assert (response.http_version, response.status_code) == ("HTTP/2", 200)


async def test_trickled_post_body_gets_408_json_and_writes_nothing(server):
    """FAULTS 10: a body trickled at 1 byte / 0.5 s gets 408 JSON after the 30 s body
    timeout, nothing is written, and other clients are served all along."""
    body = orjson.dumps({"type": "trickled", "data": {"pad": "x" * 200}})
    async with RawSocket.open(server) as raw:
        await raw.send(
            f"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        started = time.monotonic()

        async def trickle() -> None:  # the whole body would take over 100 s
            with contextlib.suppress(ConnectionError):
                for byte in body:
                    await raw.send(bytes([byte]))
                    await asyncio.sleep(0.5)

        trickler = asyncio.create_task(trickle())
        try:
            async with bystander(server, rounds=60):
                status, headers, answer = await asyncio.wait_for(
                    raw.http_response(), BODY_TIMEOUT_S + 10
                )
                elapsed = time.monotonic() - started
        finally:
            trickler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await trickler
    assert BODY_TIMEOUT_S - 1 <= elapsed <= BODY_TIMEOUT_S + 5, elapsed
    assert status == 408 and headers["content-type"] == "application/json"
    error = orjson.loads(answer)
    assert error["error"] == "request_timeout" and error["detail"]
    assert [e for e in server.events() if e["type"] == "trickled"] == []


# --- oversized and malformed input ------------------------------------------------------


async def test_70_kb_header_gets_431_and_a_trickled_20_kib_header_is_cut_off(server):
    """FAULTS 8: 70 KB of header gets 431 with a JSON body (Hypercorn's own answer, given a
    body by app/hypercorn_fixes); 20 KiB trickled in 1 KiB pieces is cut off too (with
    that 431 or a close); others unaffected."""

    async def big() -> tuple[int, dict[str, str], bytes]:
        async with RawSocket.open(server) as raw:
            with contextlib.suppress(ConnectionError):
                await raw.send(
                    f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
                    + b"X-Big: "
                    + b"a" * 70_000
                    + b"\r\n\r\n"
                )
            return await asyncio.wait_for(raw.http_response(), 10)

    async def trickled() -> tuple[bytes, float]:
        async with RawSocket.open(server) as raw:
            started = time.monotonic()
            answer: bytes | None = None
            with contextlib.suppress(ConnectionError):
                await raw.send(
                    f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
                )
                for n in range(20):
                    await raw.send(f"X-Piece-{n}: ".encode() + b"a" * 1000 + b"\r\n")
                    answer = await raw.read_available(0.2)
                    if answer is not None:
                        break
            await raw.seconds_until_closed(10)
            return answer or b"", time.monotonic() - started

    async with bystander(server, rounds=2):
        (status, headers, body), (cut, cut_after) = await asyncio.gather(big(), trickled())
    assert status == 431 and headers["content-type"] == "application/json"
    assert orjson.loads(body)["error"] == "headers_too_large"
    assert cut.startswith(b"HTTP/1.1 431") or cut == b"", cut[:100]
    assert cut_after <= KEEP_ALIVE_S + 3
    assert_alive(server)


HEAD_LIMIT = 16 * 1024  # Hypercorn's h11_max_incomplete_size, which Livefeed keeps

#: Requests Hypercorn refuses before the app sees them: status, error code, and words
#: the detail must contain.
REFUSED_BY_HYPERCORN = {
    "100 KiB header": (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 102_400 + b"\r\n\r\n",
        431,
        "headers_too_large",
        [f"{HEAD_LIMIT} bytes", "headers"],
    ),
    "malformed request line": (
        b"\xff\xfe GET /\r\n\r\n",
        400,
        "bad_request",
        ["not valid HTTP/1.1", "illegal request line"],
    ),
    "malformed header line": (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\x00\x01\x02\r\n\r\n",
        400,
        "bad_request",
        ["not valid HTTP/1.1", "illegal header line"],
    ),
    "no Host header": (b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request", ["Host"]),
    "unknown Transfer-Encoding": (
        b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
        "not_implemented",
        ["Transfer-Encoding"],
    ),
}


async def test_errors_hypercorn_answers_itself_are_json(loop_server):
    """FAULTS 8, 9: what Hypercorn refuses before the app runs (a head over 16 KiB, malformed
    HTTP/1.1) is still the documented JSON error, with a detail that says what was wrong,
    on uvloop and on plain asyncio; the connection is closed afterwards."""

    async def refused(payload: bytes) -> tuple[int, dict[str, str], bytes, bytes | None]:
        async with RawSocket.open(loop_server) as raw:
            with contextlib.suppress(ConnectionError):
                await raw.send(payload)
            status, headers, body = await asyncio.wait_for(raw.http_response(), 10)
            return status, headers, body, await raw.read_available(KEEP_ALIVE_S)

    answers = await asyncio.gather(*(refused(p) for p, *_ in REFUSED_BY_HYPERCORN.values()))
    for (name, (_, status, code, words)), answer in zip(
        REFUSED_BY_HYPERCORN.items(), answers, strict=True
    ):
        got, headers, body, after = answer
        assert got == status, (name, got, body)
        assert headers["content-type"] == "application/json", (name, headers)
        assert headers["cache-control"] == "no-store" and headers["connection"] == "close"
        error = orjson.loads(body)
        assert set(error) == {"error", "detail"} and error["error"] == code, (name, error)
        assert all(word in error["detail"] for word in words), (name, error["detail"])
        assert after == b"", (name, after)  # closed, nothing more
    assert_alive(loop_server)


GARBAGE = {
    "random bytes": os.urandom(4000),
    "NUL bytes": b"\x00" * 1000,
    "TLS ClientHello": bytes.fromhex("160301020001000001fc0303") + os.urandom(500),
    "bad header line": b"GET / HTTP/1.1\r\n\x00\x01\x02\r\n\r\n",
    "bad request line": b"\xff\xfe GET /\r\n\r\n",
    "huge content-length": b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "negative content-length": b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Length: -5\r\n\r\n{}",
    "chunked garbage": b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
    b"application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + os.urandom(100),
}


async def test_garbage_bytes_on_the_socket_do_not_hurt_the_server(server):
    """Issue 4 "garbage on the socket", FAULTS 9: non-HTTP bytes (also after a WebSocket
    upgrade) get a 400 or a close within the keep-alive timeout; others are served."""

    async def garbage(payload: bytes) -> tuple[bytes, float]:
        """What the server answers before it closes, and when it closed."""
        async with RawSocket.open(server) as raw:
            started = time.monotonic()
            with contextlib.suppress(ConnectionError):
                await raw.send(payload)
            answer = b""
            while chunk := await raw.read_available(KEEP_ALIVE_S + 3):
                answer += chunk
            assert chunk == b"", f"still open after {KEEP_ALIVE_S + 3} s: {payload[:20]!r}"
            return answer, time.monotonic() - started

    async def after_upgrade() -> tuple[bytes, float]:
        async with RawSocket.open(server) as raw:
            await raw.ws_handshake(server)
            with contextlib.suppress(ConnectionError):
                await raw.send(b"\xff" * 10 + os.urandom(1000))  # not WebSocket framing
            return b"", await raw.seconds_until_closed(KEEP_ALIVE_S + 3)

    async with bystander(server, rounds=2):
        results = await asyncio.gather(*(garbage(p) for p in GARBAGE.values()), after_upgrade())
    for name, (answer, elapsed) in zip([*GARBAGE, "after upgrade"], results, strict=True):
        assert elapsed <= KEEP_ALIVE_S + 2, (name, elapsed)
        assert answer == b"" or re.match(rb"HTTP/1\.1 4\d\d ", answer), (name, answer[:100])
        assert not answer.startswith(b"HTTP/1.1 5"), name
    assert [e["type"] for e in server.events()] == ["bystander"] * len(server.events())
    assert_alive(server)


# --- 2,000 connections at once ----------------------------------------------------------


class RawSSE:
    """An SSE response read off a raw socket: HTTP/1.1 chunks into the spec parser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = SSEParser()
        self.pending: list[SSEMessage] = []

    async def next_message(self) -> SSEMessage:
        while not self.pending:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            assert size, "the stream ended"
            chunk = await self.reader.readexactly(size + 2)
            self.pending.extend(self.parser.feed(chunk[:-2]))
        return self.pending.pop(0)


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, hard


async def test_2000_sse_connections_at_once_are_served_or_refused_as_documented(start_server):
    """FAULTS 35: 2,000 simultaneous SSE GETs from one address: each is a stream or the
    documented 200 + retry: + error (cap 1000/client, 1000 new streams/s); every open
    stream gets a live event; no crash, no fd left behind, a new client works after."""
    previous = raise_fd_limit(8192)  # for this process, and the server inherits it
    try:
        await storm(start_server())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, previous)


async def storm(server: ServerProcess) -> None:
    baseline_fds = open_fds(server)
    request = f"GET /sse/validation_updates HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"

    opened: list[asyncio.StreamWriter] = []

    async def open_stream() -> tuple[str, RawSSE]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        opened.append(writer)
        stream = RawSSE(reader, writer)
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        assert b"transfer-encoding: chunked" in head.lower()
        first = await stream.next_message()
        if first.event == "connection_established":
            return "ok", stream
        assert first.event == "stream_error" and first.retry is not None, first
        error = orjson.loads(first.data)
        assert error["type"] == "stream_error" and error["detail"]
        return error["error"], stream

    try:
        async with asyncio.timeout(60):
            answers = await asyncio.gather(
                *(open_stream() for _ in range(2000)), return_exceptions=True
            )
            failures = [a for a in answers if isinstance(a, BaseException)]
            if failures:
                raise AssertionError(f"{len(failures)} of 2000 failed") from failures[0]
            results = [a for a in answers if not isinstance(a, BaseException)]
            verdicts = Counter(verdict for verdict, _ in results)
            assert set(verdicts) <= {"ok", "overloaded", "rate_limited"}, verdicts
            assert 1 <= verdicts["ok"] <= 1000, verdicts
            [event_id] = await asyncio.to_thread(server.publish, {"type": "storm"})
            open_streams = [stream for verdict, stream in results if verdict == "ok"]
            delivered = await asyncio.gather(*(s.next_message() for s in open_streams))
            assert {(m.event, m.id) for m in delivered} == {("storm", str(event_id))}
    finally:
        for writer in opened:
            await close_writer(writer)
    assert_alive(server)
    deadline = time.monotonic() + 15
    while open_fds(server) > baseline_fds + 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert open_fds(server) <= baseline_fds + 5, (open_fds(server), baseline_fds)
    await asyncio.sleep(1.1)  # let the 1000-per-second new-stream window move on
    async with connect(server.ws_url + "/ws/validation_updates") as ws:
        assert orjson.loads(await ws.recv())["type"] == "connection_established"
        [after] = await asyncio.to_thread(server.publish, {"type": "after_storm"})
        assert orjson.loads(await ws.recv())["id"] == after


# --- WebSocket abuse --------------------------------------------------------------------

# {"type":"ping"} padded with JSON whitespace to 16 KiB: still exactly the ping object,
# but 5,000 of them are 80 MiB that must not end up in the server's memory.
PADDED_PING = b'{"type":"ping"}' + b" " * (16 * 1024 - 15)


async def test_ws_flood_without_reading_is_closed_1008_with_bounded_memory(server):
    """FAULTS 33, 32: 5,000 pings (16 KiB each) sent without reading get close 1008; the
    server's RSS stays bounded; another client keeps receiving events meanwhile."""
    rss_before = proc_status(server, "VmRSS")
    async with RawSocket.open(server) as flooder, bystander(server, rounds=2):
        await flooder.ws_handshake(server)
        sent = await flooder.flood(ws_client_frame(PADDED_PING), 5000, limit=2)
        rss_during = proc_status(server, "VmRSS")
        code, reason, seen = await flooder.ws_until_close()
    assert code == 1008 and reason == "too many messages per second", (code, reason)
    assert set(seen) <= {"pong"} and seen["pong"] <= 51, seen
    growth_mib = (rss_during - rss_before) / 1024
    assert growth_mib < 40, f"RSS grew {growth_mib:.0f} MiB after {sent} frames of 16 KiB"
    assert_alive(server)


async def test_ws_flooder_connection_is_released_after_the_1008_close(server):
    """FAULTS 33: after the 1008 close and the client's close reply, the server closes the
    TCP connection promptly and its file descriptor is freed."""
    baseline_fds = open_fds(server)
    async with RawSocket.open(server) as flooder:
        await flooder.ws_handshake(server)
        await flooder.send(ws_client_frame(b'{"type":"ping"}') * 300)  # one burst
        code, _, _ = await flooder.ws_until_close()
        assert code == 1008
        with contextlib.suppress(ConnectionError):  # the close reply
            await flooder.send(ws_client_frame((1000).to_bytes(2, "big"), opcode=0x8))
        assert await flooder.seconds_until_closed(5) < 5
    deadline = time.monotonic() + 5
    while open_fds(server) > baseline_fds and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert open_fds(server) <= baseline_fds


async def test_ws_text_frame_over_64_kib_closes_1009(server):
    """FAULTS 31: a 64 KiB + 1 text frame closes that socket with 1009; exactly 64 KiB is
    accepted (a padded ping gets its pong); other clients are unaffected."""
    async with connect(server.ws_url + "/ws/validation_updates?types=after_big") as other:
        await other.recv()
        async with connect(server.ws_url + "/ws/validation_updates", max_queue=None) as ws:
            await ws.recv()
            await ws.send('{"type":"ping"}' + " " * (MAX_FRAME - 15))
            assert orjson.loads(await ws.recv()) == {"type": "pong"}
            await ws.send("x" * (MAX_FRAME + 1))
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        [event_id] = await asyncio.to_thread(server.publish, {"type": "after_big"})
        async with asyncio.timeout(5):
            assert orjson.loads(await other.recv())["id"] == event_id
