"""The whole suite in one command, Livefeed beside the baseline, then one table.

    python -m bench.run_all             # every scenario once, about 17 minutes
    python -m bench.run_all --runs 3    # medians of 3, what bench/README.md reports
    python -m bench.run_all --smoke     # under a minute: does the suite still work? (CI)
    python -m bench.run_all --only fanout,replay

Scenarios (``--only`` names):

- ``publish``, ``ws_publish``: durable single-event and batched publish by
  POST, and single events over WebSocket (Livefeed only: the baseline keeps
  nothing);
- ``replay``: 20,000 events read back over SSE, WebSocket (one frame per event,
  read by the ``websockets`` client and by a raw frame reader, and
  ``?batch=1``), pages and the NDJSON export (the baseline: SSE and one frame
  per event, all it has);
- ``fanout``: 100 and 1,000 subscribers x 100 events/s: SSE, and 500 SSE + 500
  WebSocket with one frame per event and with ``?batch=1``; 1,000 SSE following
  one workflow, and following 50 with the events spread over them;
- ``saturation``: 1,000 SSE, the rate ladder until p99 > 1 s;
- ``workers``: the same with 500 SSE, one worker against ``--workers 2``, every
  worker pinned to the one server core (Livefeed only);
- ``idle``: 2,000 and 5,000 idle connections held 30 s, SSE and WebSocket;
- ``scaleout``: ``bench/scaleout.py``: cross-worker delivery on SQLite
  (``--workers 2``), cross-node delivery on PostgreSQL, and PostgreSQL publish
  throughput on one node and two, single and batched (Livefeed only: the
  baseline has no database).  PostgreSQL unreachable fails its cases, not the run.

Everything the baseline can do runs on Livefeed and on the Starlette +
sse-starlette baseline (``bench/baseline_app.py``) with the same load generator.

Exits non-zero if any benchmark failed: a request error, a lost, duplicated
or reordered event, a subscriber that could not connect, a server that did
not start, a database that could not be reached.  ``--smoke`` uses tiny sizes
and shares one Livefeed server between its steps (the baseline gets its own;
scale-out starts its own, at ``bench.scaleout --smoke`` sizes), so it checks
the machinery, not the speed; saturation, workers and idle are too slow for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import fanout, idle, publish, replay, saturation, scaleout, ws_publish
from bench.common import (
    NOISY_BACKGROUND_PERCENT,
    TARGETS,
    BenchFailure,
    Server,
    add_quiet_flag,
    environment_line,
    pin_load_generator,
    print_table,
    raise_fd_limit,
    running_server,
)

SCENARIOS = (
    "publish",
    "ws_publish",
    "replay",
    "fanout",
    "saturation",
    "workers",
    "idle",
    "scaleout",
)
SMOKE = {
    "publish": {"batches": [1, 100], "seconds": 0.3},
    # under 1000 publishes a second per socket: the server's WebSocket frame cap
    "ws_publish": {"seconds": 0.3, "max_events": 300},
    "replay": {"events": 500},
    "fanout": [
        {"subscribers": 20, "rate": 50, "seconds": 1.0, "drain_s": 5.0},
        {"subscribers": 20, "rate": 50, "seconds": 1.0, "drain_s": 5.0, "channels": 50},
    ],
    "scaleout": {"smoke": True},  # its own smoke sizes: about 15 s, PostgreSQL included
}
WORKERS_LADDER = (200, 300, 400, 500, 600, 800, 1000)
#: The issue's scenarios; each runs on both servers where the baseline can.
DEFAULTS = {
    "publish": {"batches": [1, 100, 1000], "seconds": 3.0},
    "ws_publish": {"seconds": 3.0},
    "replay": {"events": 20_000},
    "fanout": [
        {"subscribers": 100, "rate": 100, "seconds": 10.0, "ws_fraction": 0.0},
        {"subscribers": 1000, "rate": 100, "seconds": 10.0, "ws_fraction": 0.0},
        {"subscribers": 1000, "rate": 100, "seconds": 10.0, "ws_fraction": 0.5},
        {"subscribers": 1000, "rate": 100, "seconds": 10.0, "ws_fraction": 0.5, "batch": True},
        # what following 50 workflows on one connection costs, against one workflow
        {"subscribers": 1000, "rate": 100, "seconds": 10.0, "ws_fraction": 0.0, "channels": 1},
        {"subscribers": 1000, "rate": 100, "seconds": 10.0, "ws_fraction": 0.0, "channels": 50},
    ],
    "saturation": {"subscribers": 1000, "seconds": 5.0},
    # what a second process costs on the same core: one worker, then two
    "workers": [
        {"subscribers": 500, "seconds": 5.0, "ladder": WORKERS_LADDER, "server_workers": n}
        for n in (1, 2)
    ],
    "idle": {"counts": [2000, 5000], "hold_s": 30.0},  # over each of idle.TRANSPORTS
    "scaleout": {"smoke": False},  # bench/scaleout.py's DEFAULTS
}
SUMMARY_HEADERS = [
    "benchmark",
    "server",
    "case",
    "rate /s",
    "p50 ms",
    "p99 ms",
    "lost",
    "KiB/conn",
    "server CPU%",
    "server busy%",
    "srv µs/event",
    "load CPU%",
    "load saturated",
    "other CPU%",
]
#: How each replay method reads the log, as the summary names it.
REPLAY_LABELS = {
    "sse": "SSE",
    "websocket": "WebSocket, one frame per event",
    "websocket-frames": "WebSocket, one frame per event, raw frame reader",
    "websocket+batch": "WebSocket ?batch=1",
    "websocket+deflate": "WebSocket, deflate",
    "pages": "pages of 1000",
    "ndjson": "NDJSON export",
}

Row = list[Any]
Result = dict[str, Any]
Step = tuple[str, Callable[[], Result], Callable[[Result], None], Callable[[Result], list[Row]]]


def _row(
    benchmark: str,
    case: str,
    r: Result,
    rate: float | None,
    lost: int | None = None,
    kib: float | None = None,
    load: str = "load",
) -> Row:
    """One summary row; latency and the CPU columns come from ``r``.  ``load`` names
    the load generator in ``r``'s keys ("client" in publish and replay)."""
    return [
        benchmark,
        r.get("target", "livefeed"),
        case,
        rate,
        r.get("p50_ms"),
        r.get("p99_ms"),
        lost,
        kib,
        r["server_cpu_percent"],
        r.get("server_runnable_percent"),
        r.get("server_us_per_event"),
        r[f"{load}_cpu_percent"],
        r[f"{load}_saturated"],
        r["other_cpu_percent"],
    ]


def _blank(row: Row, *columns: str) -> Row:
    """Empty the named columns: figures the benchmark measured that mean nothing there."""
    for column in columns:
        row[SUMMARY_HEADERS.index(column)] = None
    return row


def _publish_rows(result: Result) -> list[Row]:
    return [
        _row(
            "publish",
            f"{r['mode']}, {r['concurrency']} conns (events/s)",
            r,
            r["events_per_s"],
            load="client",
        )
        for r in result["rows"]
    ]


def _replay_rows(result: Result) -> list[Row]:
    return [
        _row(
            "replay",
            f"{r['expected']:,} over {REPLAY_LABELS.get(r['method'], r['method'])} (events/s)",
            r,
            r["events_per_s"],
            lost=r["expected"] - r["events"],
            load="client",
        )
        for r in result["rows"]
    ]


def _delivery_row(benchmark: str, case: str, r: Result) -> Row:
    return _row(
        benchmark, case, r, r["deliveries_per_s"], r["lost"], r["first_run_kib_per_connection"]
    )


def _ws_frames(r: Result, batch: bool) -> str:
    """How the WebSocket subscribers got their events: the figures differ several-fold."""
    if not r["ws_subscribers"]:
        return ""
    return " ?batch=1" if batch else ", one frame per event"


def _fanout_rows(result: Result) -> list[Row]:
    return [
        _delivery_row(
            "fan-out",
            f"{fanout.mix_label(r)}{_ws_frames(r, result.get('batch', False))} (deliveries/s)",
            r,
        )
        for r in result["rows"]
    ]


def _saturation_rows(result: Result) -> list[Row]:
    best = result["best"]
    shown = best or result["steps"][0]  # none within the limit: show the first step
    workers = shown["server_workers"]
    where = "on one core" if result["pinned"] else "unpinned"
    setup = f"{shown['subscribers']} SSE, {workers} worker{'s' if workers > 1 else ''} {where}"
    if best is None:
        limit = f"{result['limit_ms'] / 1000:g} s"
        case = f"{setup}: none within {limit}, at {shown['rate']:g}/s (deliveries/s)"
    else:
        case = f"{setup}, best {best['rate']:g} events/s (deliveries/s)"
    row = _delivery_row("saturation", case, shown)
    # Per connection only on a fresh server's first step, and only when the RSS
    # read (the process started) is the one serving, not a --workers supervisor.
    if shown is not result["steps"][0] or workers > 1:
        _blank(row, "KiB/conn")
    return [row]


def _idle_rows(result: Result) -> list[Row]:
    name = "WebSocket" if result["transport"] == "websocket" else "SSE"
    return [
        # the probe's rate and latency say nothing here
        _blank(
            _delivery_row("idle", f"{r['subscribers']:,} {name} held {result['hold_s']:g} s", r),
            "rate /s",
            "p50 ms",
            "p99 ms",
        )
        for r in result["rows"]
    ]


def _scaleout_rows(result: Result) -> list[Row]:
    rows = []
    for r in scaleout.shown_rows(result["rows"]):
        if "subscribers" in r:  # delivery latency at an offered rate
            case = f"{r['case'].strip()}, {r['subscribers']} WS x {r['rate']:g}/s (events/s)"
            rows.append(_row("scale-out", case, r, r["rate"], r["lost"]))
        else:  # publish throughput; its latency is per request
            rows.append(_row("scale-out", r["case"], r, r["events_per_s"]))
    return rows


def _attempt(
    name: str, bench: Callable[[], Result], printer: Callable[[Result], None]
) -> tuple[Result | None, list[str]]:
    """Run one benchmark; a crash is a failure of that benchmark, not of the suite run."""
    started = time.monotonic()
    try:
        result = bench()
    except (BenchFailure, OSError, AssertionError) as exc:
        return None, [f"{name}: {exc}"]
    except Exception:
        return None, [f"{name}: crashed\n{traceback.format_exc()}"]
    printer(result)
    print(f"  ({name} took {time.monotonic() - started:.1f} s)")
    return result, [f"{name}: {failure}" for failure in result["failures"]]


def _steps(
    smoke: bool, only: set[str], shared: Server | None, common: dict[str, Any]
) -> list[Step]:
    """Every (name, benchmark, printer, summary rows) of the suite, in running order."""
    sizes: dict[str, Any] = SMOKE if smoke else DEFAULTS
    steps: list[Step] = []
    if "publish" in only:
        steps.append(
            (
                "publish",
                lambda: publish.run(**sizes["publish"], server=shared, **common),
                publish.print_results,
                _publish_rows,
            )
        )
    if "ws_publish" in only:
        steps.append(
            (
                "publish over WebSocket",
                lambda: ws_publish.run(**sizes["ws_publish"], server=shared, **common),
                publish.print_results,
                _publish_rows,
            )
        )
    for target in TARGETS:
        reuse = shared if target == "livefeed" else None  # the shared server is Livefeed
        if "replay" in only:
            steps.append(
                (
                    f"replay on {target}",
                    lambda t=target, r=reuse: replay.run(
                        **sizes["replay"], server=r, target=t, **common
                    ),
                    replay.print_results,
                    _replay_rows,
                )
            )
        for case in sizes["fanout"] if "fanout" in only else []:
            if (case.get("batch") or case.get("channels")) and target == "baseline":
                continue  # batch frames and channel lists are Livefeed's
            steps.append(
                (
                    f"fan-out on {target}",
                    lambda t=target, c=case, r=reuse: {
                        **fanout.run(**c, server=r, target=t, **common),
                        "batch": c.get("batch", False),
                    },
                    fanout.print_results,
                    _fanout_rows,
                )
            )
        if "saturation" in only and not smoke:
            steps.append(
                (
                    f"saturation on {target}",
                    lambda t=target: saturation.run(**sizes["saturation"], target=t, **common),
                    saturation.print_results,
                    _saturation_rows,
                )
            )
        if "workers" in only and not smoke and target == "livefeed":  # --workers is Livefeed's
            steps += [
                (
                    f"saturation with {case['server_workers']} worker(s) on {target}",
                    lambda c=case: saturation.run(**c, **common),
                    saturation.print_results,
                    _saturation_rows,
                )
                for case in sizes["workers"]
            ]
        if "idle" in only and not smoke:
            steps += [
                (
                    f"idle {transport} on {target}",
                    lambda t=target, tr=transport: idle.run(
                        **sizes["idle"], transport=tr, target=t, **common
                    ),
                    idle.print_results,
                    _idle_rows,
                )
                for transport in idle.TRANSPORTS
            ]
    if "scaleout" in only:  # Livefeed only: the baseline has no database to share
        steps.append(
            (
                "scale-out",
                lambda: scaleout.run(**sizes["scaleout"], **common),
                scaleout.print_results,
                _scaleout_rows,
            )
        )
    return steps


def run_suite(
    smoke: bool,
    runs: int,
    pin: bool,
    shared: Server | None,
    quiet_s: float = 0.0,
    only: set[str] | None = None,
) -> tuple[list[Row], list[str]]:
    """Every step in turn; returns the summary rows and every failure."""
    rows: list[Row] = []
    failures: list[str] = []
    common = {"runs": runs, "pin": pin, "quiet_s": quiet_s}
    for name, bench, printer, rows_of in _steps(smoke, only or set(SCENARIOS), shared, common):
        result, failed = _attempt(name, bench, printer)
        failures += failed
        if result is not None:
            rows += rows_of(result)
    return rows, failures


def print_summary(rows: list[Row], runs: int) -> None:
    print_table(f"Livefeed benchmark summary (median of {runs} run(s))", SUMMARY_HEADERS, rows)
    noisy = [row for row in rows if (row[-1] or 0) > NOISY_BACKGROUND_PERCENT]
    if noisy:
        print(
            f"  NOTE: {len(noisy)} row(s) ran while other processes used more than "
            f"{NOISY_BACKGROUND_PERCENT:.0f}% of a core (other CPU%); rerun on a quiet machine."
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one shared server")
    parser.add_argument("--runs", type=int, default=1, help="repeat each and report medians")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}"
    )
    add_quiet_flag(parser)
    parser.add_argument("--json", type=Path, help="also write the summary rows to this file")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:  # a typo would otherwise run nothing and say only that nothing ran
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin = not args.no_pin
    started = time.monotonic()
    print(environment_line(pin))
    raise_fd_limit()
    pin_load_generator(pin)
    only = set(args.only.split(","))
    try:
        # Without --smoke every benchmark starts a fresh server of its own.
        with running_server(pin) if args.smoke else contextlib.nullcontext() as shared:
            rows, failures = run_suite(args.smoke, args.runs, pin, shared, args.wait_quiet, only)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print_summary(rows, args.runs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"headers": SUMMARY_HEADERS, "rows": rows}, indent=2))
    print(f"  suite took {time.monotonic() - started:.1f} s")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
