"""Heavy queries on a large log: what one costs, and what it costs everyone else.

A filter that matches little must not make a request read the whole log, and
one client's heavy requests must not hold up other clients' pages and
handshakes.  With N events (1,000,000) in the log:

1. **Alone**: each heavy shape, median and max of ``--repeat`` (5) requests:
   ``until`` before every event (alone and with four ``types``), ``since``
   after every event, a workflow with a type only other workflows have; and
   an SSE stream of that workflow and type from ``last_event_id=0``, timed
   from the connect to a probe event published once it is open (so the
   catch-up read of the log is in the figure); and a full page of nine types
   (too many index ranges for one page of 1000: it reads a window of ids).
2. **Under load**: C clients (16) send those shapes back to back for T
   seconds (the SSE one reconnects every 100 ms), while probes measure a
   light page (the newest 100 events, every 50 ms) and a new live SSE
   handshake (to its ``connection_established`` frame, every 100 ms).

The log is written straight into the SQLite file before the server starts,
with this checkout's migrations, as the store writes it: ids from 1, ``ts``
10 ms apart and ending now, ``log_head`` at the last one; event n has type
``TYPES[n % 5]`` and workflow ``wf_{n % 1000}``, so wf_1 only ever has
``TYPES[1]``.  (Publishing 1,000,000 events over HTTP would take ~40 s.)

    python -m bench.heavy_queries                 # 1,000,000 events, ~1.5 min
    python -m bench.heavy_queries --smoke         # 20,000 events, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from app.events import utc_timestamp
from app.store.migrate import apply_sqlite_migrations
from app.store.sqlite_tree import build_tree
from bench.common import (
    HOST,
    BenchFailure,
    HttpConnection,
    Server,
    add_quiet_flag,
    percentile,
    pin_load_generator,
    print_table,
    run_and_report,
    use_uvloop,
    wait_for_quiet,
)

TYPES = ("validation_created", "validation_completed", "workflow_started", "file_changed", "note")
WORKFLOWS = 1000
SEED_CHUNK = 50_000
PAST, FUTURE = "0001-01-02T00:00:00Z", "9999-01-01T00:00:00Z"
UNUSED = [f"unused{n}" for n in range(8)]
#: The shapes the heavy clients send: name -> path (``sse:`` marks a stream).
SHAPES = {
    "until before every event": f"/api/events?until={PAST}",
    "the same with four types": f"/api/events?until={PAST}&types={','.join(TYPES[:3])},nope",
    "since after every event": f"/api/events?since={FUTURE}",
    "wf_1, a type only others have": f"/api/events?workflow_id=wf_1&types={TYPES[0]}",
    "sse: wf_1, that type, from 0": f"/sse/wf_1?types={TYPES[0]}&last_event_id=0",
    "nine types, 1000 a page": f"/api/events?types={TYPES[0]},{','.join(UNUSED)}&limit=1000",
}
LIGHT_PAGE_EVERY_S = 0.05
HANDSHAKE_EVERY_S = 0.1
SSE_HOLD_S = 0.1
TIMEOUT_S = 60.0


def seed_file(path: Path, events: int) -> None:
    """Write ``events`` into a fresh database as the store would have (see the top)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        apply_sqlite_migrations(conn)
        conn.execute("PRAGMA synchronous = OFF")  # a benchmark's fixture, not a publish
        first = datetime.now(UTC) - timedelta(milliseconds=10 * events)

        def rows(start: int, stop: int) -> Iterator[tuple[int, str, str, str, str]]:
            for n in range(start, stop):
                ts = utc_timestamp(first + timedelta(milliseconds=10 * n))
                yield n, TYPES[n % 5], f"wf_{n % WORKFLOWS}", ts, f'{{"file":"docs/a.md","n":{n}}}'

        conn.execute("BEGIN IMMEDIATE")
        for start in range(1, events + 1, SEED_CHUNK):
            conn.executemany(
                "INSERT INTO events (id, type, workflow_id, ts, data) VALUES (?, ?, ?, ?, ?)",
                rows(start, min(start + SEED_CHUNK, events + 1)),
            )
        last_ts = utc_timestamp(first + timedelta(milliseconds=10 * events))
        conn.execute("UPDATE log_head SET last_id = ?, last_ts = ?", (events, last_ts))
        build_tree(conn)  # the log's Merkle tree, as the store keeps it with every append
        conn.execute("COMMIT")
    finally:
        conn.close()


async def open_sse(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    return reader, writer


async def read_until(reader: asyncio.StreamReader, marker: bytes, path: str) -> None:
    """Read the stream until ``marker`` has gone by (what came before is dropped)."""
    seen = b""
    while marker not in seen:
        chunk = await reader.read(65536)
        if not chunk:
            raise BenchFailure(f"{path} closed before {marker!r}")
        seen = seen[-len(marker) :] + chunk


async def closed(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def handshake(port: int, path: str, hold_s: float = 0.0) -> float:
    """Seconds from the connect to the stream's ``connection_established``; then
    hold the stream ``hold_s`` and close it."""
    started = time.perf_counter()
    reader, writer = await open_sse(port, path)
    try:
        await read_until(reader, b"connection_established", path)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(hold_s)
    finally:
        await closed(writer)
    return elapsed


async def sse_catch_up(port: int, path: str) -> float:
    """Connect, publish a probe the stream's filter matches once it is open, and
    time from the connect until the probe arrives."""
    token = uuid.uuid4().hex.encode()
    body = orjson.dumps(
        {"type": TYPES[0], "workflow_id": "wf_1", "data": {"probe": token.decode()}}
    )
    publisher = await HttpConnection(port).open()
    started = time.perf_counter()
    reader, writer = await open_sse(port, path)
    try:
        await read_until(reader, b"connection_established", path)
        status, answer = await publisher.post_json("/api/events", body)
        if status != 201:
            raise BenchFailure(f"the probe publish answered {status}: {answer[:200]!r}")
        await read_until(reader, token, path)
        return time.perf_counter() - started
    finally:
        await closed(writer)
        await publisher.close()


async def get_page(conn: HttpConnection, path: str) -> float:
    started = time.perf_counter()
    status, body = await conn.get(path)
    if status != 200:
        raise BenchFailure(f"{path} answered {status}: {body[:200]!r}")
    return time.perf_counter() - started


async def alone(port: int, repeat: int) -> list[dict[str, Any]]:
    """Each shape on its own, ``repeat`` times."""
    rows = []
    conn = await HttpConnection(port).open()
    try:
        for name, path in SHAPES.items():
            if path.startswith("/sse/"):
                seconds = [await sse_catch_up(port, path) for _ in range(repeat)]
            else:
                seconds = [await get_page(conn, path) for _ in range(repeat)]
            rows.append(
                {
                    "shape": name,
                    "median_ms": 1000 * percentile(seconds, 50),
                    "max_ms": 1000 * max(seconds),
                }
            )
    finally:
        await conn.close()
    return rows


async def heavy_client(port: int, first: int, until: float, done: list[int]) -> None:
    """Send the shapes one after another, starting at the ``first``, until ``until``."""
    paths = list(SHAPES.values())
    conn = await HttpConnection(port).open()
    try:
        n = first
        while time.perf_counter() < until:
            path = paths[n % len(paths)]
            if path.startswith("/sse/"):
                await handshake(port, path, SSE_HOLD_S)
            else:
                await get_page(conn, path)
            done[0] += 1
            n += 1
    finally:
        await conn.close()


async def probe(every_s: float, until: float, take: Callable[[], Awaitable[float]]) -> list[float]:
    """Call ``take`` every ``every_s`` until ``until``; its durations."""
    seconds = []
    while time.perf_counter() < until:
        started = time.perf_counter()
        seconds.append(await take())
        await asyncio.sleep(max(0.0, every_s - (time.perf_counter() - started)))
    return seconds


async def under_load(port: int, events: int, clients: int, seconds: float) -> dict[str, Any]:
    light = await HttpConnection(port).open()
    newest = f"/api/events?after={events - 100}&limit=100"

    quiet = await probe(
        LIGHT_PAGE_EVERY_S, time.perf_counter() + 1, lambda: get_page(light, newest)
    )
    until = time.perf_counter() + seconds
    done = [0]
    heavy = [asyncio.create_task(heavy_client(port, n, until, done)) for n in range(clients)]
    pages, handshakes = await asyncio.gather(
        probe(LIGHT_PAGE_EVERY_S, until, lambda: get_page(light, newest)),
        probe(HANDSHAKE_EVERY_S, until, lambda: handshake(port, "/sse/validation_updates")),
    )
    await asyncio.gather(*heavy)
    await light.close()
    return {
        "quiet_pages": quiet,
        "pages": pages,
        "handshakes": handshakes,
        "heavy_per_s": done[0] / seconds,
    }


def run(
    *, events: int, clients: int, seconds: float, repeat: int, pin: bool, quiet_s: float
) -> dict[str, Any]:
    pin_load_generator(pin)
    use_uvloop()
    server = Server(pin=pin)
    try:
        started = time.perf_counter()
        seed_file(Path(server.database_url.removeprefix("sqlite:///")), events)
        seeded_s = time.perf_counter() - started
        server.start()
        if quiet_s:
            wait_for_quiet(quiet_s, [server.pid])
        shapes = asyncio.run(alone(server.port, repeat))
        load = asyncio.run(under_load(server.port, events, clients, seconds))
    finally:
        server.stop()
    return {
        "events": events,
        "clients": clients,
        "seconds": seconds,
        "seeded_s": seeded_s,
        "shapes": shapes,
        "load": load,
        "failures": [],
    }


def summary(name: str, seconds: list[float]) -> list[Any]:
    ms = [1000 * s for s in seconds]
    return [name, len(ms), percentile(ms, 50), percentile(ms, 99), max(ms)]


def show(result: dict[str, Any]) -> None:
    print(f"{result['events']:,} events seeded in {result['seeded_s']:.1f} s")
    rows = [[r["shape"], r["median_ms"], r["max_ms"]] for r in result["shapes"]]
    print_table("Each heavy shape alone", ["shape", "median ms", "max ms"], rows)
    load = result["load"]
    title = (
        f"Probes while {result['clients']} clients send heavy shapes for "
        f"{result['seconds']:g} s ({load['heavy_per_s']:.1f} heavy requests/s done)"
    )
    print_table(
        title,
        ["probe", "count", "p50 ms", "p99 ms", "max ms"],
        [
            summary("newest 100 events, no load", load["quiet_pages"]),
            summary("newest 100 events", load["pages"]),
            summary("new SSE handshake (live)", load["handshakes"]),
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=16, help="heavy clients under load")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the load lasts")
    parser.add_argument("--repeat", type=int, default=5, help="requests per shape alone")
    parser.add_argument("--smoke", action="store_true", help="20,000 events, 4 clients, 2 s")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    add_quiet_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.events, args.clients, args.seconds, args.repeat = 20_000, 4, 2.0, 2
    return run_and_report(
        not args.no_pin,
        lambda: run(
            events=args.events,
            clients=args.clients,
            seconds=args.seconds,
            repeat=args.repeat,
            pin=not args.no_pin,
            quiet_s=args.wait_quiet,
        ),
        show,
    )


if __name__ == "__main__":
    sys.exit(main())
