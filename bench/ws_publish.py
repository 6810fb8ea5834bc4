"""Single-event publishes over WebSocket beside ``POST /api/events``, durable.

A producer that publishes one event at a time pays one HTTP request per
event over ``POST``; over a WebSocket it sends ``publish`` messages back to
back and keeps up to ``--in-flight`` unanswered (the server commits them
together and answers in order).  Three modes on the same server:

- ``POST``: ``--http-connections`` (8) keep-alive connections, one request at
  a time each (what ``bench/publish.py`` calls "single");
- one WebSocket with ``--in-flight`` (64) publishes outstanding;
- ``--sockets`` (8) WebSockets, each with ``--in-flight`` outstanding.

Latency is per publish: from sending it to its ``published`` answer (or its
201).  Every answer's ``ref`` is checked against the order sent.

    python -m bench.ws_publish                       # 3 s per mode
    python -m bench.ws_publish --seconds 5 --runs 3
    python -m bench.ws_publish --in-flight 16 --sockets 4
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import (
    HOST,
    BenchFailure,
    Server,
    add_run_flags,
    median_run,
    pin_load_generator,
    run_and_report,
    run_options,
    running_server,
    use_uvloop,
    wait_for_quiet,
)
from bench.publish import WARMUP_REQUESTS, Phase, make_body, measure, print_results, run_phase

CONNECT_TIMEOUT_S = 10.0


def publish_messages(count: int = 64) -> list[bytes]:
    """``publish`` messages of one event each (the events ``bench/publish.py`` posts),
    with ``{ref}`` left for the sender to fill."""
    return [
        b'{"type":"publish","ref":"%s","events":[' + make_body(1, seed) + b"]}"
        for seed in range(count)
    ]


async def open_socket(port: int) -> ClientConnection:
    """A WebSocket that follows nothing (``GET /ws``): only answers come back."""
    ws = await connect(
        f"ws://{HOST}:{port}/ws", compression=None, max_size=None, open_timeout=CONNECT_TIMEOUT_S
    )
    first = orjson.loads(await asyncio.wait_for(ws.recv(decode=False), CONNECT_TIMEOUT_S))
    if first.get("type") != "connection_established":
        raise BenchFailure(f"the WebSocket opened with {first!r}")
    return ws


async def _pipelined(
    ws: ClientConnection,
    phase: Phase,
    messages: list[bytes],
    deadline: float,
    max_requests: int,
    in_flight: int,
) -> None:
    """Send publishes back to back, at most ``in_flight`` unanswered, until the
    deadline or the budget; then wait for every answer."""
    sent: deque[tuple[bytes, float]] = deque()
    slots = asyncio.Semaphore(in_flight)
    finished = False

    async def answers() -> None:
        async for frame in ws:
            answer = orjson.loads(frame)
            if "ref" not in answer:
                continue  # a heartbeat
            ref, started = sent.popleft()
            phase.latencies_s.append(time.perf_counter() - started)
            if answer["type"] != "published" or answer["ref"].encode() != ref:
                phase.errors += 1
            slots.release()
            if finished and not sent:
                return

    async def closed_with_reason() -> None:
        try:
            await answers()
        except ConnectionClosed as exc:  # e.g. 1008 from the server's frame cap
            raise BenchFailure(f"the server closed the WebSocket: {exc}") from None

    reader = asyncio.create_task(closed_with_reason())

    def free_every_slot(_: object) -> None:
        """A reader that ended early must not leave the sender waiting for a slot."""
        for _slot in range(in_flight):
            slots.release()

    reader.add_done_callback(free_every_slot)
    n = 0
    while time.monotonic() < deadline and phase.requests < max_requests:
        await slots.acquire()
        if reader.done():  # the connection ended: say why
            reader.result()
            raise BenchFailure("the WebSocket closed while publishing")
        ref = b"%d" % n
        phase.requests += 1
        sent.append((ref, time.perf_counter()))
        try:
            await ws.send(messages[n % len(messages)].replace(b"%s", ref, 1), text=True)
        except ConnectionClosed:
            await reader  # raises with the server's close code and reason
            raise
        n += 1
    finished = True
    if sent:
        await reader
    else:
        reader.cancel()


async def run_ws_phase(
    server: Server,
    sockets: int,
    in_flight: int,
    seconds: float,
    max_events: int,
    load_cores: int,
) -> Phase:
    """``sockets`` WebSockets each keeping ``in_flight`` single-event publishes open."""
    phase = Phase(f"single over WebSocket, {in_flight} in flight", 1, sockets)
    phase.load_cores = load_cores
    messages = publish_messages()
    conns = [await open_socket(server.port) for _ in range(sockets)]
    try:
        warm = Phase(phase.mode, 1, sockets)
        forever = time.monotonic() + 30
        await asyncio.gather(
            *(_pipelined(ws, warm, messages, forever, WARMUP_REQUESTS, in_flight) for ws in conns)
        )
        await measure(
            server,
            phase,
            seconds,
            lambda deadline: asyncio.gather(
                *(_pipelined(ws, phase, messages, deadline, max_events, in_flight) for ws in conns)
            ),
        )
    finally:
        for ws in conns:
            await ws.close()
    return phase


def run(
    *,
    seconds: float = 3.0,
    http_connections: int = 8,
    sockets: int = 8,
    in_flight: int = 64,
    max_events: int = 1_000_000,
    runs: int = 1,
    pin: bool = True,
    server: Server | None = None,
    quiet_s: float = 0.0,
    target: str = "livefeed",
) -> dict[str, Any]:
    """POST, one WebSocket and ``sockets`` WebSockets, ``runs`` times each on one
    server; each row is the median run by events/s."""
    if target != "livefeed":
        raise BenchFailure("publishing over WebSocket is Livefeed's; the baseline has none")
    load_cores = pin_load_generator(pin)
    use_uvloop()
    modes: list[Callable[[Server], Coroutine[Any, Any, Phase]]] = [
        lambda live: run_phase(live, 1, http_connections, seconds, max_events, load_cores),
        lambda live: run_ws_phase(live, 1, in_flight, seconds, max_events, load_cores),
        lambda live: run_ws_phase(live, sockets, in_flight, seconds, max_events, load_cores),
    ]
    samples: list[list[dict[str, Any]]] = [[] for _ in modes]
    failures: list[str] = []
    with running_server(pin, reuse=server) as live:
        for _ in range(runs):
            for i, mode in enumerate(modes):
                if quiet_s:
                    wait_for_quiet(quiet_s, [live.pid])
                try:
                    phase = asyncio.run(mode(live))
                except BenchFailure as exc:  # one mode failing leaves the others' figures
                    failures.append(f"mode {i + 1}: {exc}")
                    continue
                if i == 0:
                    phase.mode = "single over POST"
                samples[i].append(phase.summary())
    rows = [median_run(mode, "events_per_s") for mode in samples if mode]
    every = [sample for mode in samples for sample in mode]
    failures += [f"{s['mode']}: {s['errors']} failed publishes" for s in every if s["errors"]]
    failures += [f"{s['mode']}: nothing published" for s in every if not s["events"]]
    return {"rows": rows, "runs": runs, "failures": failures}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each mode")
    parser.add_argument(
        "--http-connections", type=int, default=8, help="keep-alive connections for POST"
    )
    parser.add_argument("--sockets", type=int, default=8, help="WebSockets of the last mode")
    parser.add_argument(
        "--in-flight", type=int, default=64, help="unanswered publishes per WebSocket"
    )
    parser.add_argument("--max-events", type=int, default=1_000_000, help="event budget per mode")
    add_run_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        not args.no_pin,
        lambda: run(
            seconds=args.seconds,
            http_connections=args.http_connections,
            sockets=args.sockets,
            in_flight=args.in_flight,
            max_events=args.max_events,
            **run_options(args),
        ),
        print_results,
    )


if __name__ == "__main__":
    raise SystemExit(main())
