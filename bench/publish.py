"""Durable publish throughput on SQLite: single events and batches.

``POST /api/events`` answers 201 only after the commit is durable (WAL,
``synchronous=FULL``), so every figure here includes an fsync.  Concurrent
publishers are group-committed, which is what the unbatched run exercises:
C keep-alive connections each posting one event at a time.

    python -m bench.publish                      # 8 publishers, batches of 100 and 1000
    python -m bench.publish --concurrency 16 --seconds 5 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    Background,
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
    run_and_report,
    run_options,
    running_server,
    saturated,
    use_uvloop,
    wait_for_quiet,
)

WARMUP_REQUESTS = 20


@dataclass
class Phase:
    """What one publishing mode did, and what it cost on both sides."""

    mode: str
    batch: int
    concurrency: int
    requests: int = 0
    errors: int = 0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    server_cpu_percent: float = 0.0
    client_cpu_percent: float = 0.0
    other_cpu_percent: float = 0.0
    server_runnable_percent: float = float("nan")
    load_cores: int = 1

    @property
    def events(self) -> int:
        return (self.requests - self.errors) * self.batch

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_s)
        events_per_s = self.events / self.wall_s if self.wall_s else 0.0
        return {
            "mode": self.mode,
            "batch": self.batch,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "events": self.events,
            "seconds": self.wall_s,
            "events_per_s": events_per_s,
            "p50_ms": 1000 * percentile_sorted(ordered, 50),
            "p99_ms": 1000 * percentile_sorted(ordered, 99),
            "max_ms": 1000 * ordered[-1] if ordered else float("nan"),
            "server_cpu_percent": self.server_cpu_percent,
            "server_runnable_percent": self.server_runnable_percent,
            "server_us_per_event": (
                10_000 * self.server_cpu_percent * self.wall_s / self.events
                if self.events
                else float("nan")
            ),
            "client_cpu_percent": self.client_cpu_percent,
            "client_saturated": saturated(self.client_cpu_percent, self.load_cores),
            "other_cpu_percent": self.other_cpu_percent,
        }


def make_body(batch: int, seed: int, array: bool | None = None) -> bytes:
    """A realistic workflow event (about 120 bytes); a JSON array when batched."""
    events = [
        {
            "type": "validation_created",
            "workflow_id": f"wf_bench_{(seed + n) % 50}",
            "data": {"file": f"docs/page-{seed + n}.md", "seq": seed + n, "rule": "links"},
        }
        for n in range(batch)
    ]
    as_array = batch > 1 if array is None else array
    return orjson.dumps(events if as_array else events[0])


async def _publisher(
    conn: HttpConnection, phase: Phase, bodies: list[bytes], deadline: float, max_requests: int
) -> None:
    """Post back-to-back on one connection until the deadline or the request budget."""
    n = 0
    while time.monotonic() < deadline and phase.requests < max_requests:
        phase.requests += 1
        started = time.perf_counter()
        status, _ = await conn.post_json("/api/events", bodies[n % len(bodies)])
        phase.latencies_s.append(time.perf_counter() - started)
        if status != 201:
            phase.errors += 1
        n += 1


async def run_phase(
    server: Server, batch: int, concurrency: int, seconds: float, max_events: int, load_cores: int
) -> Phase:
    """One mode: ``concurrency`` connections posting ``batch``-sized bodies for ``seconds``."""
    phase = Phase("single" if batch == 1 else f"batch {batch}", batch, concurrency)
    phase.load_cores = load_cores
    bodies = [make_body(batch, seed) for seed in range(0, 64 * batch, batch)][
        : 64 if batch == 1 else 4
    ]
    conns = [await HttpConnection(server.port).open() for _ in range(concurrency)]
    try:
        warm = Phase(phase.mode, batch, concurrency)
        forever = time.monotonic() + 30
        await asyncio.gather(
            *(_publisher(c, warm, bodies, forever, WARMUP_REQUESTS) for c in conns)
        )
        max_requests = max(1, max_events // batch)
        await measure(
            server,
            phase,
            seconds,
            lambda deadline: asyncio.gather(
                *(_publisher(c, phase, bodies, deadline, max_requests) for c in conns)
            ),
        )
    finally:
        for conn in conns:
            await conn.close()
    return phase


async def measure(
    server: Server, phase: Phase, seconds: float, work: Callable[[float], Awaitable[object]]
) -> None:
    """Run ``work(deadline)`` inside the measuring window and put its wall time and
    the CPU of both sides into ``phase``: one window for every way of publishing."""
    background = Background().start()
    server_cpu, client_cpu = CpuWindow([server.pid]).start(), SelfCpu().start()
    runnable = Runnable(server.pid).start()
    await work(time.monotonic() + seconds)
    server_cpu.stop()
    runnable.stop()
    client_cpu.stop()
    background.stop()
    phase.wall_s = server_cpu.wall_s
    phase.server_cpu_percent = server_cpu.percent
    phase.client_cpu_percent = client_cpu.percent
    phase.server_runnable_percent = runnable.percent
    phase.other_cpu_percent = background.percent(server_cpu.cpu_s + client_cpu.cpu_s)


def run(
    *,
    batches: list[int],
    concurrency: int = 8,
    seconds: float = 3.0,
    max_events: int = 1_000_000,
    runs: int = 1,
    pin: bool = True,
    server: Server | None = None,
    quiet_s: float = 0.0,
    profile: Path | None = None,
    target: str = "livefeed",
) -> dict[str, Any]:
    """Every mode ``runs`` times; each row is the median run by events/s.

    ``quiet_s``: wait up to that long before each mode for the machine to be idle;
    ``profile``: sample the server with py-spy throughout and print its top functions.
    """
    load_cores = pin_load_generator(pin)
    use_uvloop()
    samples: list[list[dict[str, Any]]] = [[] for _ in batches]
    with running_server(pin, reuse=server, target=target) as live:
        profiler = Profiler(live.pids(), profile).start() if profile else None
        for _ in range(runs):
            for i, batch in enumerate(batches):
                if quiet_s:
                    wait_for_quiet(quiet_s, [live.pid])
                phase = asyncio.run(
                    run_phase(live, batch, concurrency, seconds, max_events, load_cores)
                )
                samples[i].append(phase.summary())
        if profiler is not None:
            print_profile(profiler.stop())
    rows = [median_run(mode, "events_per_s") for mode in samples]
    every = [sample for mode in samples for sample in mode]
    failures = [f"{s['mode']}: {s['errors']} failed requests" for s in every if s["errors"]]
    failures += [f"{s['mode']}: nothing published" for s in every if not s["events"]]
    return {"rows": rows, "runs": runs, "failures": failures}


def print_results(result: dict[str, Any]) -> None:
    headers = [
        "publish",
        "conc",
        "events",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "server CPU%",
        "srv busy%",
        "srv µs/event",
        "client CPU%",
        "client saturated",
        "other CPU%",
    ]
    rows = [
        [
            r["mode"],
            r["concurrency"],
            r["events"],
            r["events_per_s"],
            r["p50_ms"],
            r["p99_ms"],
            r["max_ms"],
            r["server_cpu_percent"],
            r["server_runnable_percent"],
            r["server_us_per_event"],
            r["client_cpu_percent"],
            r["client_saturated"],
            r["other_cpu_percent"],
        ]
        for r in result["rows"]
    ]
    print_table(
        f"Durable publish on SQLite (median of {result['runs']} run(s); latency per request)",
        headers,
        rows,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="keep-alive publisher connections"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each mode")
    parser.add_argument("--max-events", type=int, default=1_000_000, help="event budget per mode")
    parser.add_argument("--batches", default="1,100,1000", help="body sizes; 1 = a single object")
    add_profile_flag(parser)
    add_run_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        not args.no_pin,
        lambda: run(
            batches=[int(b) for b in args.batches.split(",")],
            concurrency=args.concurrency,
            seconds=args.seconds,
            max_events=args.max_events,
            profile=args.profile,
            **run_options(args),
        ),
        print_results,
    )


if __name__ == "__main__":
    raise SystemExit(main())
