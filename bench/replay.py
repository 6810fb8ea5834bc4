"""Catch-up speed: N events in the log, one client reconnects from before them.

Four ways to read the same N events, each timed from the request to the
last event received (and checked: every id once, in order):

- SSE ``/sse/validation_updates?last_event_id=C`` read with raw httpx
  streaming and a byte split on ``\\n\\n`` (a spec parser would measure itself);
- WebSocket ``/ws/validation_updates?last_event_id=C`` with ``websockets``, and
  with a raw frame reader (``websocket-frames``: what the server sends, which
  the ``websockets`` client cannot read as fast);
- the paged API ``/api/events?after=C&limit=1000`` in a loop;
- the NDJSON export ``/api/events?format=ndjson&after=C``.

    python -m bench.replay                 # 20,000 events, 1 run
    python -m bench.replay --events 20000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from bench.common import (
    HOST,
    BenchFailure,
    HttpConnection,
    Runnable,
    Server,
    add_run_flags,
    machine_busy_seconds,
    median,
    pin_load_generator,
    print_table,
    proc_cpu_seconds,
    run_and_report,
    run_options,
    running_server,
    saturated,
    use_uvloop,
    wait_for_quiet,
)
from bench.fanout import Tally, WsSubscriber
from bench.publish import make_body

SEED_BATCH = 1000
READ_TIMEOUT_S = 60.0
METHODS = ("sse", "websocket", "websocket-frames", "websocket+batch", "pages", "ndjson")
BASELINE_METHODS = ("sse", "websocket", "websocket-frames")


@dataclass
class Received:
    """What a reader got: checked against the seeded range before it counts.

    ``started`` is set just before the request goes out (client set-up such as
    httpx building its SSL context is not the server's time), ``finished``
    when the last expected event arrives.
    """

    server_pid: int
    count: int = 0
    last_id: int = 0
    out_of_order: int = 0
    started: float = 0.0
    first_byte: float = 0.0
    finished: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    server_runnable_percent: float = float("nan")
    _runnable: Runnable | None = None

    def begin(self) -> None:
        self._runnable = Runnable(self.server_pid, interval_s=0.001).start()
        self.machine_busy_s = -machine_busy_seconds()
        self.server_cpu_s = -proc_cpu_seconds(self.server_pid)
        self.client_cpu_s = -time.process_time()
        self.started = time.perf_counter()

    def arrived(self) -> None:
        if not self.first_byte:
            self.first_byte = time.perf_counter()

    def take(self, event_id: int) -> None:
        if event_id <= self.last_id:
            self.out_of_order += 1
        self.last_id = event_id
        self.count += 1

    def end(self) -> Received:
        self.finished = time.perf_counter()
        self.server_cpu_s += proc_cpu_seconds(self.server_pid)
        self.client_cpu_s += time.process_time()
        self.machine_busy_s += machine_busy_seconds()
        if self._runnable is not None:
            self.server_runnable_percent = self._runnable.stop().percent
        return self


async def seed(server: Server, events: int) -> tuple[int, int]:
    """Append ``events`` in batches; returns the cursor before them and the last id."""
    conn = await HttpConnection(server.port).open()
    try:
        first = last = 0
        for start in range(0, events, SEED_BATCH):
            size = min(SEED_BATCH, events - start)
            status, body = await conn.post_json("/api/events", make_body(size, start, array=True))
            if status != 201:
                raise BenchFailure(f"seeding failed: {status} {body[:200]!r}")
            ids = [e["id"] for e in orjson.loads(body)["events"]]
            first = first or ids[0]
            last = ids[-1]
    finally:
        await conn.close()
    return first - 1, last


async def read_sse(server: Server, cursor: int, last_id: int) -> Received:
    """Raw httpx streaming; frames are split on the blank line, ids read from ``id:``."""
    got = Received(server.pid)
    url = f"{server.url}/sse/validation_updates?last_event_id={cursor}"
    async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as client:
        got.begin()
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise BenchFailure(f"SSE answered {response.status_code}")
            rest = b""
            async for chunk in response.aiter_raw():
                got.arrived()
                frames = (rest + chunk).split(b"\n\n")
                rest = frames.pop()
                for frame in frames:
                    if frame.startswith(b"id: "):
                        got.take(int(frame[4 : frame.index(b"\n")]))
                if got.last_id >= last_id:
                    return got.end()
    raise BenchFailure(f"the SSE stream ended at id {got.last_id}, before {last_id}")


async def read_websocket(
    server: Server, cursor: int, last_id: int, deflate: bool, batch: bool = False
) -> Received:
    """``websockets`` client; ``deflate`` offers compression as every browser does;
    ``batch`` asks for ``?batch=1`` (several envelopes per frame, as the dashboard does)."""
    got = Received(server.pid)
    url = f"{server.ws_url}/ws/validation_updates?last_event_id={cursor}"
    if batch:
        url += "&batch=1"
    compression = "deflate" if deflate else None
    got.begin()
    async with connect(
        url,
        max_size=None,
        max_queue=None,
        compression=compression,
        open_timeout=10,
        close_timeout=1,
    ) as ws:
        async with asyncio.timeout(READ_TIMEOUT_S):
            async for message in ws:
                got.arrived()
                raw = message.encode() if isinstance(message, str) else message
                if raw.startswith(b"["):
                    for envelope in orjson.loads(raw):
                        got.take(envelope["id"])
                    if got.last_id >= last_id:
                        return got.end()
                elif raw.startswith(b'{"id":'):
                    got.take(int(raw[6 : raw.index(b",")]))
                    if got.last_id >= last_id:
                        return got.end()
    raise BenchFailure(f"the WebSocket closed at id {got.last_id}, before {last_id}")


async def read_websocket_frames(server: Server, cursor: int, last_id: int) -> Received:
    """The server's one-frame-per-event WebSocket replay read by the fan-out
    benchmark's raw RFC 6455 reader (:class:`bench.fanout.WsSubscriber`): the
    ``websockets`` client parses each frame in Python and tops out before the
    server does, so this shows what the server sends."""
    got = Received(server.pid)
    tally = Tally()
    loop = asyncio.get_running_loop()
    got.begin()
    _, sub = await loop.create_connection(
        lambda: WsSubscriber(tally, server.port, deflate=False, after=cursor), HOST, server.port
    )
    tally.expect(last_id, [sub])
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            await tally.drained.wait()
    finally:
        sub.close()
    if sub.last_id < last_id:
        raise BenchFailure(f"the WebSocket closed at id {sub.last_id}, before {last_id}")
    got.first_byte = got.started  # the raw reader does not note it
    got.count, got.last_id, got.out_of_order = sub.count, sub.last_id, sub.out_of_order
    return got.end()


async def read_pages(server: Server, cursor: int, last_id: int) -> Received:
    """What an audit script does: follow ``next_after`` until ``has_more`` is false."""
    got = Received(server.pid)
    after = cursor
    async with httpx.AsyncClient(base_url=server.url, timeout=READ_TIMEOUT_S) as client:
        got.begin()
        while got.last_id < last_id:
            response = await client.get("/api/events", params={"after": after, "limit": 1000})
            got.arrived()
            if response.status_code != 200:
                raise BenchFailure(f"/api/events answered {response.status_code}")
            page = orjson.loads(response.content)
            for event in page["events"]:
                got.take(event["id"])
            if not page["has_more"]:
                break
            after = page["next_after"]
    return got.end()


async def read_ndjson(server: Server, cursor: int, last_id: int) -> Received:
    """The streamed export, split on newlines, read to its end."""
    got = Received(server.pid)
    url = f"{server.url}/api/events?format=ndjson&after={cursor}"
    async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as client:
        got.begin()
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise BenchFailure(f"the NDJSON export answered {response.status_code}")
            rest = b""
            async for chunk in response.aiter_raw():
                got.arrived()
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.startswith(b'{"id":'):
                        got.take(int(line[6 : line.index(b",")]))
    return got.end()


async def timed(
    server: Server,
    method: str,
    reader: Callable[[], Awaitable[Received]],
    expected: int,
    load_cores: int,
) -> dict[str, Any]:
    """Run one reader and report what it got, how fast, and the CPU on both sides."""
    got = await reader()
    seconds = got.finished - got.started
    server_cpu_percent = 100 * got.server_cpu_s / seconds if seconds else 0.0
    client_cpu_percent = 100 * got.client_cpu_s / seconds if seconds else 0.0
    other = got.machine_busy_s - got.server_cpu_s - got.client_cpu_s
    other_cpu_percent = max(0.0, 100 * other / seconds) if seconds else 0.0
    return {
        "method": method,
        "events": got.count,
        "expected": expected,
        "out_of_order": got.out_of_order,
        "seconds": seconds,
        "events_per_s": got.count / seconds if seconds else 0.0,
        "first_byte_ms": 1000 * (got.first_byte - got.started),
        "server_cpu_percent": server_cpu_percent,
        "server_runnable_percent": got.server_runnable_percent,
        "client_cpu_percent": client_cpu_percent,
        "client_saturated": saturated(client_cpu_percent, load_cores),
        "other_cpu_percent": other_cpu_percent,
    }


async def warm_up(server: Server) -> None:
    """httpx and websockets import parts of themselves on first use (~30 ms of
    client CPU); pay that before the clock starts, not in the first reader."""
    async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as client:
        await client.get(f"{server.url}/healthz")
        async with client.stream("GET", f"{server.url}/api/events?limit=1") as response:
            await response.aread()
    # close_timeout: the baseline never reads its socket, so it never answers a close
    async with connect(
        f"{server.ws_url}/ws/validation_updates", compression=None, close_timeout=1
    ) as ws:
        await ws.recv()


async def run_once(
    server: Server, cursor: int, last_id: int, methods: list[str], load_cores: int
) -> list[dict[str, Any]]:
    await warm_up(server)
    expected = last_id - cursor
    readers: dict[str, Callable[[], Awaitable[Received]]] = {
        "sse": lambda: read_sse(server, cursor, last_id),
        "websocket": lambda: read_websocket(server, cursor, last_id, deflate=False),
        "websocket+deflate": lambda: read_websocket(server, cursor, last_id, deflate=True),
        "websocket+batch": lambda: read_websocket(server, cursor, last_id, False, batch=True),
        "websocket-frames": lambda: read_websocket_frames(server, cursor, last_id),
        "pages": lambda: read_pages(server, cursor, last_id),
        "ndjson": lambda: read_ndjson(server, cursor, last_id),
    }
    return [await timed(server, m, readers[m], expected, load_cores) for m in methods]


def run(
    *,
    events: int = 20_000,
    methods: list[str] | None = None,
    runs: int = 1,
    pin: bool = True,
    server: Server | None = None,
    quiet_s: float = 0.0,
    target: str = "livefeed",
) -> dict[str, Any]:
    """Seed once, then read the same range ``runs`` times with every method.

    ``quiet_s``: wait up to that long before each run for the machine to be idle.
    """
    methods = methods or list(METHODS)
    if target == "baseline":  # it has streams only: no paged API, no export
        methods = [m for m in methods if m in BASELINE_METHODS]
    load_cores = pin_load_generator(pin)
    use_uvloop()
    all_runs: list[list[dict[str, Any]]] = []
    with running_server(pin, reuse=server, target=target) as live:
        cursor, last_id = asyncio.run(seed(live, events))
        for _ in range(runs):
            if quiet_s:
                wait_for_quiet(quiet_s, [live.pid])
            all_runs.append(asyncio.run(run_once(live, cursor, last_id, methods, load_cores)))
    rows = []
    for i in range(len(methods)):
        samples = [run[i] for run in all_runs]
        row = dict(sorted(samples, key=lambda s: s["seconds"])[len(samples) // 2])
        row["runs_seconds"] = [s["seconds"] for s in samples]
        row["median_seconds"] = median(row["runs_seconds"])
        row["target"] = live.target
        rows.append(row)
    failures = [
        f"{s['method']}: got {s['events']} of {s['expected']} events, "
        f"{s['out_of_order']} out of order"
        for run in all_runs
        for s in run
        if s["events"] != s["expected"] or s["out_of_order"]
    ]
    return {"rows": rows, "runs": runs, "events": events, "failures": failures}


def print_results(result: dict[str, Any]) -> None:
    headers = [
        "server",
        "replay",
        "events",
        "seconds",
        "events/s",
        "first byte ms",
        "server CPU%",
        "srv busy%",
        "client CPU%",
        "client saturated",
        "other CPU%",
    ]
    rows = [
        [
            r["target"],
            r["method"],
            r["events"],
            r["seconds"],
            r["events_per_s"],
            r["first_byte_ms"],
            r["server_cpu_percent"],
            r["server_runnable_percent"],
            r["client_cpu_percent"],
            r["client_saturated"],
            r["other_cpu_percent"],
        ]
        for r in result["rows"]
    ]
    print_table(
        f"Replay of {result['events']:,} events (median of {result['runs']} run(s))",
        headers,
        rows,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="events in the log to replay")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated: sse, websocket, websocket-frames, websocket+batch,"
        " websocket+deflate, pages, ndjson",
    )
    add_run_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        not args.no_pin,
        lambda: run(
            events=args.events,
            methods=args.methods.split(","),
            **run_options(args),
        ),
        print_results,
    )


if __name__ == "__main__":
    raise SystemExit(main())
