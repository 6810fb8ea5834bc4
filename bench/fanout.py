"""Fan-out: S subscribers on one channel, one publisher at R events/s for T s.

With ``--channels N`` every subscriber follows the N workflows ``wf_0``..
``wf_{N-1}`` on one connection (``/sse/wf_0,wf_1,...``) and the events go
round robin over them, so each subscriber still gets every event: the cost
of a many-channel subscription against ``--channels 1`` (all on ``wf_0``).

Each event carries its publish time (``{"t": time.time()}``, taken just
before the POST), so latency is publish -> durable commit -> delivery, as a
dashboard sees it.  Subscribers are raw asyncio protocols (HTTP/1.1 chunked
SSE and RFC 6455 WebSocket written here, a few microseconds per event) in
``--workers`` forked processes, so that the load generator is not what is
measured; its CPU is reported, and the run says whether it was saturated.

    python -m bench.fanout                                  # 200 subscribers, 100 ev/s, 5 s
    python -m bench.fanout --subscribers 1000 --rate 100 --seconds 10 --runs 3
    python -m bench.fanout --ws-fraction 0 --rate 200       # SSE only
    python -m bench.fanout --subscribers 1000 --ws-fraction 0 --channels 50
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import os
import re
import time
import zlib
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    HOST,
    SERVER_SATURATED_RUNNABLE_PERCENT,
    Background,
    BenchFailure,
    CpuWindow,
    HttpConnection,
    Profiler,
    Runnable,
    SelfCpu,
    Server,
    add_profile_flag,
    add_run_flags,
    median_run,
    percentile_sorted,
    pin_load_generator,
    print_profile,
    print_table,
    raise_fd_limit,
    run_and_report,
    run_options,
    running_server,
    saturated,
    use_uvloop,
    wait_for_quiet,
)

CHANNEL = "validation_updates"
CONNECT_TIMEOUT_S = 30.0
CONNECT_CONCURRENCY = 64
PIPE_TIMEOUT_S = 60.0
PUBLISH_CONNECTIONS = 8  # opened up front
MAX_PUBLISH_CONNECTIONS = 256  # more are opened when commits are slow, so the rate holds
RSS_SAMPLE_S = 0.25
_PUBLISH_TIME = re.compile(rb'"t": ?([0-9.eE+-]+)')  # json.dumps puts a space, orjson none


# ---------------------------------------------------------------- subscribers (worker side)


@dataclass
class Tally:
    """One worker's deliveries; latencies are kept for every event, not sampled."""

    latencies: array[float] = field(default_factory=lambda: array("d"))
    last_delivery: float = 0.0
    target: int = 0  # the last published id, once the publisher has finished
    waiting: int = 0  # subscribers still short of it
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, target: int, subs: list[Subscriber]) -> None:
        """From now on, count down subscribers as they reach ``target`` (or leave)."""
        self.target = target
        for sub in subs:
            sub.reached = sub.last_id >= target or sub.closed
        self.waiting = sum(1 for sub in subs if not sub.reached)
        if not self.waiting:
            self.drained.set()

    def arrived(self, sub: Subscriber) -> None:
        sub.reached = True
        self.waiting -= 1
        if not self.waiting:
            self.drained.set()


class Subscriber(asyncio.Protocol):
    """The transport-independent half: connection state and per-event bookkeeping.

    ``channel`` is the path's channel part: one name or a comma-separated list.
    """

    def __init__(self, tally: Tally, channel: str = CHANNEL) -> None:
        self.tally = tally
        self.channel = channel
        self.transport: asyncio.Transport | None = None
        self.established: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.count = 0
        self.last_id = 0
        self.out_of_order = 0
        self.reached = False
        self.failure: str | None = None
        self._head: bytearray | None = bytearray()

    def request(self) -> bytes:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(self.request())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"connection lost: {exc or 'closed by the server'}")
        if self.tally.target and not self.reached:
            self.tally.arrived(self)  # it will get nothing more: stop waiting for it

    def _fail(self, why: str) -> None:
        if self.failure is None and not self.established.done():
            self.failure = why
            self.established.set_exception(BenchFailure(why))

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head = None
            self.on_head(head)
        if data:
            self.on_body(data)

    def on_head(self, head: bytes) -> None:
        raise NotImplementedError

    def on_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_event(self, event_id: int, payload: bytes, now: float) -> None:
        """Count one log event and record its publish -> delivery latency."""
        if event_id <= self.last_id:
            self.out_of_order += 1
        self.last_id = event_id
        self.count += 1
        found = _PUBLISH_TIME.search(payload)
        if found is not None:
            self.tally.latencies.append(now - float(found.group(1)))
        self.tally.last_delivery = now
        if self.tally.target and not self.reached and event_id >= self.tally.target:
            self.tally.arrived(self)

    def on_control(self, payload: bytes) -> None:
        if b"connection_established" in payload and not self.established.done():
            self.established.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


class SseSubscriber(Subscriber):
    """``GET /sse/{channel}`` over HTTP/1.1: de-chunk, split frames on ``\\n\\n``."""

    def __init__(self, tally: Tally, port: int, channel: str = CHANNEL) -> None:
        super().__init__(tally, channel)
        self.port = port
        self._raw = bytearray()
        self._chunk_left = 0
        self._need_crlf = False
        self._chunked = False
        self._rest = b""

    def request(self) -> bytes:
        return (
            f"GET /sse/{self.channel} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()

    def on_head(self, head: bytes) -> None:
        if head[9:12] != b"200":
            self._fail(f"SSE answered {head[:64]!r}")
        self._chunked = b"transfer-encoding: chunked" in head.lower()

    def on_body(self, data: bytes) -> None:
        payload = self._dechunk(data) if self._chunked else data
        if not payload:
            return
        frames = (self._rest + payload).split(b"\n\n")
        self._rest = frames.pop()
        now = time.time()
        for frame in frames:
            if frame.startswith(b"id: "):
                self.on_event(int(frame[4 : frame.index(b"\n")]), frame, now)
            else:
                self.on_control(frame)

    def _dechunk(self, data: bytes) -> bytes:
        """HTTP/1.1 chunked transfer coding, incrementally: what a browser does too."""
        buf = self._raw
        buf += data
        out: list[bytes] = []
        pos = 0
        while True:
            if self._chunk_left:
                take = min(self._chunk_left, len(buf) - pos)
                if not take:
                    break
                out.append(bytes(buf[pos : pos + take]))
                pos += take
                self._chunk_left -= take
                if self._chunk_left:
                    break
                self._need_crlf = True
            if self._need_crlf:
                if len(buf) - pos < 2:
                    break
                pos += 2
                self._need_crlf = False
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            pos = line_end + 2
            if size == 0:  # the last chunk: the server ended the stream
                break
            self._chunk_left = size
        del buf[:pos]
        return b"".join(out)


class WsSubscriber(Subscriber):
    """``GET /ws/{channel}``: RFC 6455 handshake and unmasked server frames.

    ``deflate`` offers permessage-deflate as every browser does (Hypercorn
    accepts it, and then compresses each frame for each connection).
    """

    def __init__(
        self,
        tally: Tally,
        port: int,
        deflate: bool,
        batch: bool = False,
        channel: str = CHANNEL,
        after: int | None = None,
    ) -> None:
        super().__init__(tally, channel)
        self.port = port
        self.deflate = deflate
        self.batch = batch
        self.after = after  # resume after this id (replay), else live only
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._compressed = False
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)

    def request(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        extension = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.deflate else ""
        query = "&".join(
            ["batch=1"] * self.batch + [f"last_event_id={self.after}"] * (self.after is not None)
        )
        return (
            f"GET /ws/{self.channel}{'?' if query else ''}{query} HTTP/1.1\r\n"
            f"Host: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extension}\r\n"
        ).encode()

    def on_head(self, head: bytes) -> None:
        if head[9:12] != b"101":
            self._fail(f"the WebSocket handshake answered {head[:64]!r}")

    def on_body(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, size = 0, len(buf)
        now = time.time()
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < header + length:
                break
            payload = bytes(buf[pos + header : pos + header + length])
            pos += header + length
            self._frame(first, payload, now)
        del buf[:pos]

    def _frame(self, first: int, payload: bytes, now: float) -> None:
        opcode = first & 0x0F
        if opcode in (0x1, 0x2, 0x0):
            if opcode:
                self._compressed = bool(first & 0x40)
            self._fragments.append(payload)
            if first & 0x80:  # FIN: the message is complete
                message = b"".join(self._fragments)
                self._fragments.clear()
                if self._compressed:
                    message = self._inflater.decompress(message + b"\x00\x00\xff\xff")
                self._message(message, now)
        elif opcode == 0x9 and self.transport is not None:  # ping -> masked pong
            self.transport.write(_client_frame(0xA, payload))
        elif opcode == 0x8:
            self.close()

    def _message(self, message: bytes, now: float) -> None:
        if message.startswith(b"["):  # ?batch=1: several envelopes in one frame
            # safe for this benchmark's events, whose data holds no object with an "id"
            for n, part in enumerate(message[1:-1].split(b',{"id":')):
                self._message(part if n == 0 else b'{"id":' + part, now)
            return
        if message.startswith(b'{"id":'):
            self.on_event(int(message[6 : message.index(b",")]), message, now)
        else:
            self.on_control(message)


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A small masked client frame (pong/close): the mask is required, not secret."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def _recv(pipe: Connection) -> Any:
    """Wait for the parent's next message without blocking the event loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def ready() -> None:
        if not future.done():
            os.set_blocking(pipe.fileno(), True)  # uvloop made it non-blocking
            future.set_result(pipe.recv())

    loop.add_reader(pipe.fileno(), ready)
    try:
        return await future
    finally:
        loop.remove_reader(pipe.fileno())
        os.set_blocking(pipe.fileno(), True)  # the results are sent with a blocking write


async def _connect_all(subs: list[Subscriber], port: int) -> list[str]:
    """Open every subscription, a bounded number of handshakes at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(sub: Subscriber) -> str | None:
        async with gate:
            try:
                await loop.create_connection(lambda: sub, HOST, port)
                await asyncio.wait_for(asyncio.shield(sub.established), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, BenchFailure) as exc:
                return f"{type(sub).__name__}: {exc}"
        return None

    results = await asyncio.gather(*(one(sub) for sub in subs))
    return [r for r in results if r is not None]


async def _wait_drained(tally: Tally, subs: list[Subscriber], last_id: int, drain_s: float) -> None:
    """Until every subscriber has the last published id, or ``drain_s`` has passed."""
    tally.expect(last_id, subs)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(drain_s):
            await tally.drained.wait()


async def _worker(
    pipe: Connection,
    port: int,
    kinds: list[str],
    deflate: bool,
    batch: bool = False,
    channel: str = CHANNEL,
) -> None:
    tally = Tally()
    subs: list[Subscriber] = [
        WsSubscriber(tally, port, deflate, batch, channel)
        if kind == "ws"
        else SseSubscriber(tally, port, channel)
        for kind in kinds
    ]
    errors = await _connect_all(subs, port)
    pipe.send({"errors": errors[:5], "failed": len(errors)})
    await _recv(pipe)  # go
    cpu, wall = time.process_time(), time.monotonic()
    finish = await _recv(pipe)
    await _wait_drained(tally, subs, finish["last_id"], finish["drain_s"])
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    pipe.send(
        {
            "cpu_s": cpu,
            "wall_s": wall,
            "received": [sub.count for sub in subs],
            "out_of_order": sum(sub.out_of_order for sub in subs),
            "closed_early": sum(1 for sub in subs if sub.closed),
            "latencies": tally.latencies.tobytes(),
            "last_delivery": tally.last_delivery,
        }
    )
    for sub in subs:
        sub.close()


def worker_main(
    pipe: Connection,
    port: int,
    kinds: list[str],
    deflate: bool,
    batch: bool = False,
    channel: str = CHANNEL,
) -> None:
    """Entry point of a forked subscriber process."""
    use_uvloop()
    try:
        asyncio.run(_worker(pipe, port, kinds, deflate, batch, channel))
    except Exception as exc:  # report, so the parent fails with a reason instead of hanging
        with contextlib.suppress(OSError):
            pipe.send({"fatal": repr(exc)})
        raise


# ---------------------------------------------------------------- the parent: publisher + report


@dataclass
class Published:
    ids: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    max_lag_s: float = 0.0
    connections: int = 0
    started_wall: float = 0.0
    rss_peak_kib: int = 0


class PublisherPool:
    """Keep-alive connections for the publisher, grown on demand.

    A fixed pool would quietly lower the offered rate when commits slow down
    (8 connections at 130 ms per POST carry only 61 events/s); growing it
    keeps the schedule, and ``Published.max_lag_s`` says if it still slipped.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[HttpConnection] = []
        self.opened = 0
        self._returned = asyncio.Condition()

    async def fill(self, count: int) -> None:
        for _ in range(count):
            self.idle.append(await HttpConnection(self.port).open())
            self.opened += 1

    async def acquire(self) -> HttpConnection:
        if self.idle:
            return self.idle.pop()
        if self.opened < MAX_PUBLISH_CONNECTIONS:
            self.opened += 1
            return await HttpConnection(self.port).open()
        async with self._returned:
            await self._returned.wait_for(lambda: bool(self.idle))
            return self.idle.pop()

    async def release(self, conn: HttpConnection) -> None:
        self.idle.append(conn)
        async with self._returned:
            self._returned.notify()

    async def close(self) -> None:
        for conn in self.idle:
            await conn.close()


def channel_list(channels: int) -> str:
    """What subscribers follow: every event (``channels`` 0), or the workflows
    ``wf_0``..``wf_{N-1}`` as one comma-separated list."""
    return ",".join(workflow_of(n, channels) for n in range(channels)) if channels else CHANNEL


def workflow_of(seq: int, channels: int) -> str:
    """The workflow of the ``seq``-th event: round robin over ``channels``."""
    return f"wf_{seq % channels}"


async def _publish_one(
    pool: PublisherPool, out: Published, seq: int, due: float, channels: int = 0
) -> None:
    """One POST; the event carries the wall-clock time it was sent and, with
    ``channels``, the workflow that takes its turn."""
    conn = await pool.acquire()
    try:
        out.max_lag_s = max(out.max_lag_s, time.monotonic() - due)
        started = time.time()
        event: dict[str, Any] = {"type": "bench.tick", "data": {"t": started, "seq": seq}}
        if channels:
            event["workflow_id"] = workflow_of(seq, channels)
        body = orjson.dumps(event)
        status, answer = await conn.post_json("/api/events", body, f"fanout-{started}-{seq}")
        out.latencies.append(time.time() - started)
    finally:
        await pool.release(conn)
    if status == 201:
        out.ids.append(orjson.loads(answer)["id"])
    else:
        out.errors += 1


async def _sample_rss(server: Server, out: Published, stop: asyncio.Event) -> None:
    while not stop.is_set():
        out.rss_peak_kib = max(out.rss_peak_kib, server.memory_kib().get("VmRSS", 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_S)


async def publish_at_rate(
    server: Server, rate: float, seconds: float, channels: int = 0
) -> Published:
    """``rate`` single-event POSTs per second on a schedule, over a small connection pool.

    A POST is started on time even while earlier ones wait for their commit;
    ``max_lag_s`` says how late the latest one was sent.
    """
    out = Published()
    pool = PublisherPool(server.port)
    await pool.fill(PUBLISH_CONNECTIONS)
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(server, out, stop))
    tasks: list[asyncio.Task[None]] = []
    total = max(1, int(rate * seconds))
    out.started_wall = time.time()
    start = time.monotonic()
    for seq in range(total):
        due = start + seq / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_publish_one(pool, out, seq, due, channels)))
    await asyncio.gather(*tasks)
    stop.set()
    await sampler
    out.connections = pool.opened
    await pool.close()
    return out


def subscriber_kinds(subscribers: int, ws_fraction: float) -> list[str]:
    """``"sse"``/``"ws"`` per subscriber, WebSockets spread evenly through the list."""
    return [
        "ws" if int((i + 1) * ws_fraction) > int(i * ws_fraction) else "sse"
        for i in range(subscribers)
    ]


def _spawn_workers(
    port: int,
    kinds: list[str],
    workers: int,
    deflate: bool,
    batch: bool = False,
    channel: str = CHANNEL,
) -> list[tuple[multiprocessing.Process, Connection]]:
    """Fork the subscriber processes; SSE and WS are interleaved across them."""
    context = multiprocessing.get_context("fork")
    started = []
    for n in range(workers):
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=worker_main,
            args=(child_end, port, kinds[n::workers], deflate, batch, channel),
            daemon=True,
        )
        process.start()
        child_end.close()
        started.append((process, parent_end))
    return started


def _gather(pipes: list[Connection], what: str) -> list[dict[str, Any]]:
    answers = []
    for pipe in pipes:
        if not pipe.poll(PIPE_TIMEOUT_S):
            raise BenchFailure(f"a subscriber worker did not answer ({what})")
        answer = pipe.recv()
        if "fatal" in answer:
            raise BenchFailure(f"a subscriber worker failed: {answer['fatal']}")
        answers.append(answer)
    return answers


def run_once(
    server: Server,
    *,
    subscribers: int,
    rate: float,
    seconds: float,
    ws_fraction: float,
    workers: int,
    deflate: bool,
    drain_s: float,
    load_cores: int,
    batch: bool = False,
    hold_s: float = 0.0,
    profile: Path | None = None,
    channels: int = 0,
) -> dict[str, Any]:
    """Connect, hold ``hold_s`` idle, publish, drain, and add it all up."""
    rss_before = server.memory_kib().get("VmRSS", 0)
    connect_started = time.monotonic()
    kinds = subscriber_kinds(subscribers, ws_fraction)
    procs = _spawn_workers(server.port, kinds, workers, deflate, batch, channel_list(channels))
    pipes = [pipe for _, pipe in procs]
    try:
        ready = _gather(pipes, "connect")
        connect_s = time.monotonic() - connect_started
        failed = sum(r["failed"] for r in ready)
        if failed:
            raise BenchFailure(f"{failed} subscribers could not connect: {ready[0]['errors']}")
        time.sleep(hold_s)  # idle connections: what they cost once settled
        rss_connected = server.memory_kib().get("VmRSS", 0)
        background = Background().start()
        server_cpu = CpuWindow(server.pids()).start()
        runnable = Runnable(server.pids()).start()  # --workers N: every worker
        parent_cpu = SelfCpu().start()
        profiler = Profiler(server.pids(), profile).start() if profile else None
        for pipe in pipes:
            pipe.send("go")
        published = asyncio.run(publish_at_rate(server, rate, seconds, channels))
        if profiler is not None:
            print_profile(profiler.stop())
        last_id = max(published.ids, default=0)
        for pipe in pipes:
            pipe.send({"last_id": last_id, "drain_s": drain_s})
        results = _gather(pipes, "results")
        server_cpu.stop()
        runnable.stop()
        parent_cpu.stop()
        background.stop()
    finally:
        for process, pipe in procs:
            process.join(5)
            if process.is_alive():
                process.terminate()
            pipe.close()
    row = _summarise(
        published=published,
        results=results,
        subscribers=subscribers,
        rate=rate,
        seconds=seconds,
        server_cpu=server_cpu,
        parent_cpu=parent_cpu,
        background=background,
        runnable=runnable,
        rss_before=rss_before,
        rss_connected=rss_connected,
        connect_s=connect_s,
        load_cores=load_cores,
        ws_subscribers=kinds.count("ws"),
    )
    row["channels"] = channels
    return row


def _summarise(
    *,
    published: Published,
    results: list[dict[str, Any]],
    subscribers: int,
    rate: float,
    seconds: float,
    server_cpu: CpuWindow,
    parent_cpu: SelfCpu,
    background: Background,
    runnable: Runnable,
    rss_before: int,
    rss_connected: int,
    connect_s: float,
    load_cores: int,
    ws_subscribers: int,
) -> dict[str, Any]:
    """One row: throughput, loss, latency, and what it cost on both sides."""
    latencies = array("d")
    for result in results:
        latencies.frombytes(result["latencies"])
    ordered = sorted(latencies)
    expected = len(published.ids) * subscribers
    received = sum(sum(r["received"]) for r in results)
    out_of_order = sum(r["out_of_order"] for r in results)
    unique = received - out_of_order
    last_delivery = max(r["last_delivery"] for r in results)
    span = max(last_delivery - published.started_wall, 1e-9)
    worker_cpu = [100 * r["cpu_s"] / r["wall_s"] for r in results]
    load_cpu_s = sum(r["cpu_s"] for r in results) + parent_cpu.cpu_s
    load_cpu = 100 * load_cpu_s / parent_cpu.wall_s
    return {
        "subscribers": subscribers,
        "ws_subscribers": ws_subscribers,
        "rate": rate,
        "seconds": seconds,
        "published": len(published.ids),
        "publish_errors": published.errors,
        "publisher_max_lag_ms": 1000 * published.max_lag_s,
        "publisher_connections": published.connections,
        "publish_p50_ms": 1000 * percentile_sorted(sorted(published.latencies), 50),
        "publish_p99_ms": 1000 * percentile_sorted(sorted(published.latencies), 99),
        "expected": expected,
        "delivered": unique,
        "lost": expected - unique,
        "duplicates": out_of_order,
        "offered_per_s": subscribers * rate,
        "deliveries_per_s": unique / span,
        "p50_ms": 1000 * percentile_sorted(ordered, 50),
        "p90_ms": 1000 * percentile_sorted(ordered, 90),
        "p99_ms": 1000 * percentile_sorted(ordered, 99),
        "max_ms": 1000 * ordered[-1] if ordered else float("nan"),
        "server_cpu_percent": server_cpu.percent,
        "server_runnable_percent": runnable.percent,
        "server_saturated": runnable.percent >= SERVER_SATURATED_RUNNABLE_PERCENT,
        "server_us_per_delivery": 1e6 * server_cpu.cpu_s / unique if unique else float("nan"),
        "rss_before_mib": rss_before / 1024,
        "rss_connected_mib": rss_connected / 1024,
        "rss_peak_mib": published.rss_peak_kib / 1024,
        "kib_per_connection": (rss_connected - rss_before) / subscribers,
        "connect_s": connect_s,
        "load_cpu_percent": load_cpu,
        "worker_cpu_percent": worker_cpu,
        "load_cores": load_cores,
        "other_cpu_percent": background.percent(server_cpu.cpu_s + load_cpu_s),
        "load_saturated": saturated(load_cpu, load_cores)
        or any(saturated(w, 1) for w in worker_cpu),
    }


def run(
    *,
    subscribers: int = 200,
    rate: float = 100,
    seconds: float = 5,
    ws_fraction: float = 0.5,
    workers: int = 2,
    deflate: bool = False,
    batch: bool = False,
    drain_s: float = 10.0,
    runs: int = 1,
    pin: bool = True,
    server: Server | None = None,
    quiet_s: float = 0.0,
    server_env: dict[str, str] | None = None,
    target: str = "livefeed",
    hold_s: float = 0.0,
    profile: Path | None = None,
    channels: int = 0,
) -> dict[str, Any]:
    """``runs`` runs on one server; the row shown is the median run by p99.

    ``quiet_s``: wait up to that long before each run for the machine to be idle.
    ``server_env``: ``LIVEFEED_*`` settings for the server (e.g. a tiny queue size
    to exercise the overflow path, which must lose nothing either).
    """
    raise_fd_limit()
    load_cores = pin_load_generator(pin)
    use_uvloop()
    samples = []
    with running_server(pin, env=server_env, reuse=server, target=target) as live:
        for _ in range(runs):
            if quiet_s:
                wait_for_quiet(quiet_s, [live.pid])
            samples.append(
                run_once(
                    live,
                    subscribers=subscribers,
                    rate=rate,
                    seconds=seconds,
                    ws_fraction=ws_fraction,
                    workers=workers,
                    deflate=deflate,
                    drain_s=drain_s,
                    load_cores=load_cores,
                    batch=batch,
                    hold_s=hold_s,
                    profile=profile,
                    channels=channels,
                )
            )
    row = dict(median_run(samples, "p99_ms"))
    row["target"] = live.target
    # Freed memory stays in the process, so only a fresh server's growth is per connection.
    row["first_run_kib_per_connection"] = samples[0]["kib_per_connection"]
    failures = []
    for sample in samples:
        if sample["lost"] or sample["duplicates"] or sample["publish_errors"]:
            failures.append(
                f"lost {sample['lost']}, duplicated {sample['duplicates']}, "
                f"publish errors {sample['publish_errors']}"
            )
    return {"rows": [row], "samples": samples, "runs": runs, "failures": failures}


def mix_label(row: dict[str, Any]) -> str:
    sse = row["subscribers"] - row["ws_subscribers"]
    label = f"{sse} SSE + {row['ws_subscribers']} WS x {row['rate']:g}/s"
    channels = row.get("channels", 0)
    return f"{label} over {channels} channel{'s' if channels > 1 else ''}" if channels else label


def print_results(result: dict[str, Any]) -> None:
    headers = [
        "server",
        "fan-out",
        "events",
        "deliv/s",
        "lost",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "srv CPU%",
        "srv busy%",
        "srv µs/deliv",
        "RSS MiB",
        "KiB/conn",
        "load CPU%",
        "saturated",
        "other CPU%",
    ]
    rows = [
        [
            r["target"],
            mix_label(r),
            r["published"],
            r["deliveries_per_s"],
            r["lost"],
            r["p50_ms"],
            r["p90_ms"],
            r["p99_ms"],
            r["max_ms"],
            r["server_cpu_percent"],
            r["server_runnable_percent"],
            r["server_us_per_delivery"],
            r["rss_peak_mib"],
            r["first_run_kib_per_connection"],
            r["load_cpu_percent"],
            r["load_saturated"],
            r["other_cpu_percent"],
        ]
        for r in result["rows"]
    ]
    print_table(
        f"Fan-out, publish -> delivery (median of {result['runs']} run(s) by p99)", headers, rows
    )
    for r in result["rows"]:
        print(
            f"  server: {r['server_cpu_percent']:.0f}% CPU, a thread runnable "
            f"{r['server_runnable_percent']:.0f}% of the time (saturated: "
            f"{'YES' if r['server_saturated'] else 'no'}), "
            f"{r['server_us_per_delivery']:.1f} µs CPU per delivery (publishing included); "
            f"RSS {r['rss_before_mib']:.1f} MiB before connecting, "
            f"{r['rss_connected_mib']:.1f} MiB connected, {r['rss_peak_mib']:.1f} MiB peak; "
            f"{r['first_run_kib_per_connection']:.1f} KiB per connection (first run)"
        )
        workers = ", ".join(f"{w:.0f}%" for w in r["worker_cpu_percent"])
        print(
            f"  load generator: {r['load_cpu_percent']:.0f}% CPU of {r['load_cores']} core(s) "
            f"(workers {workers}; saturated: {'YES' if r['load_saturated'] else 'no'}); "
            f"publish 201 p50/p99 {r['publish_p50_ms']:.1f}/{r['publish_p99_ms']:.1f} ms, "
            f"sent at most {r['publisher_max_lag_ms']:.1f} ms late over "
            f"{r['publisher_connections']} connections; "
            f"{r['subscribers']} connected in {r['connect_s']:.2f} s"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100, help="events per second")
    parser.add_argument("--seconds", type=float, default=5, help="how long to publish")
    parser.add_argument(
        "--ws-fraction", type=float, default=0.5, help="share of WebSocket subscribers"
    )
    parser.add_argument("--workers", type=int, default=2, help="subscriber processes (2-4)")
    parser.add_argument(
        "--ws-deflate", action="store_true", help="offer permessage-deflate like a browser"
    )
    parser.add_argument(
        "--ws-batch", action="store_true", help="WebSockets ask for ?batch=1 (array frames)"
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=0,
        help="subscribers follow wf_0..wf_{N-1} on one connection and events go round "
        "robin over them; 1 = all on wf_0 (0: every event, on validation_updates)",
    )
    parser.add_argument(
        "--drain", type=float, default=10.0, help="max seconds to wait for stragglers"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a LIVEFEED_* setting for the server (repeatable)",
    )
    add_profile_flag(parser)
    add_run_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        not args.no_pin,
        lambda: run(
            subscribers=args.subscribers,
            rate=args.rate,
            seconds=args.seconds,
            ws_fraction=args.ws_fraction,
            workers=args.workers,
            deflate=args.ws_deflate,
            batch=args.ws_batch,
            channels=args.channels,
            drain_s=args.drain,
            server_env=dict(item.split("=", 1) for item in args.server_env),
            profile=args.profile,
            **run_options(args),
        ),
        print_results,
    )


if __name__ == "__main__":
    raise SystemExit(main())
