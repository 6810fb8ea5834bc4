"""The whole suite in one command: publish, replay and fan-out, then one table.

    python bench/run_all.py             # small defaults, about a minute
    python bench/run_all.py --runs 3    # medians of 3, what bench/README.md reports
    python bench/run_all.py --smoke     # seconds: does the suite still work? (CI)

Exits non-zero if any benchmark failed: a request error, a lost, duplicated
or reordered event, a subscriber that could not connect, a server that did
not start.  ``--smoke`` shares one server between the three and uses tiny
sizes, so it checks the machinery, not the speed.
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

import fanout
import publish
import replay
from common import (
    NOISY_BACKGROUND_PERCENT,
    BenchFailure,
    Server,
    add_quiet_flag,
    environment_line,
    pin_load_generator,
    print_table,
    raise_fd_limit,
    running_server,
)

SMOKE = {
    "publish": {"batches": [1, 100], "seconds": 0.3},
    "replay": {"events": 500},
    "fanout": {"subscribers": 20, "rate": 50, "seconds": 1.0, "drain_s": 5.0},
}
DEFAULTS = {
    "publish": {"batches": [1, 100, 1000], "seconds": 3.0},
    "replay": {"events": 20_000},
    "fanout": {"subscribers": 200, "rate": 100, "seconds": 5.0},
}
SUMMARY_HEADERS = [
    "benchmark",
    "case",
    "rate /s",
    "seconds",
    "p50 ms",
    "p99 ms",
    "lost",
    "server CPU%",
    "server busy%",
    "load CPU%",
    "load saturated",
    "other CPU%",
]


def _publish_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            "publish",
            f"{r['mode']}, {r['concurrency']} conns (events/s)",
            r["events_per_s"],
            r["seconds"],
            r["p50_ms"],
            r["p99_ms"],
            None,
            r["server_cpu_percent"],
            r.get("server_runnable_percent"),
            r["client_cpu_percent"],
            r["client_saturated"],
            r["other_cpu_percent"],
        ]
        for r in result["rows"]
    ]


def _replay_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            "replay",
            f"{r['events']:,} over {r['method']} (events/s)",
            r["events_per_s"],
            r["seconds"],
            None,
            None,
            r["expected"] - r["events"],
            r["server_cpu_percent"],
            r.get("server_runnable_percent"),
            r["client_cpu_percent"],
            r["client_saturated"],
            r["other_cpu_percent"],
        ]
        for r in result["rows"]
    ]


def _fanout_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            "fan-out",
            f"{fanout.mix_label(r)} (deliveries/s)",
            r["deliveries_per_s"],
            r["seconds"],
            r["p50_ms"],
            r["p99_ms"],
            r["lost"],
            r["server_cpu_percent"],
            r.get("server_runnable_percent"),
            r["load_cpu_percent"],
            r["load_saturated"],
            r["other_cpu_percent"],
        ]
        for r in result["rows"]
    ]


def _attempt(
    name: str, bench: Callable[[], dict[str, Any]], printer: Callable[[dict[str, Any]], None]
) -> tuple[dict[str, Any] | None, list[str]]:
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


def run_suite(
    smoke: bool, runs: int, pin: bool, shared: Server | None, quiet_s: float = 0.0
) -> tuple[dict[str, Any], list[str]]:
    sizes = SMOKE if smoke else DEFAULTS
    results: dict[str, Any] = {}
    failures: list[str] = []
    benches: list[tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]]] = [
        (
            "publish",
            lambda: publish.run(
                **sizes["publish"], runs=runs, pin=pin, server=shared, quiet_s=quiet_s
            ),
            publish.print_results,
        ),
        (
            "replay",
            lambda: replay.run(
                **sizes["replay"], runs=runs, pin=pin, server=shared, quiet_s=quiet_s
            ),
            replay.print_results,
        ),
        (
            "fanout",
            lambda: fanout.run(
                **sizes["fanout"], runs=runs, pin=pin, server=shared, quiet_s=quiet_s
            ),
            fanout.print_results,
        ),
    ]
    for name, bench, printer in benches:
        result, failed = _attempt(name, bench, printer)
        failures += failed
        if result is not None:
            results[name] = result
    return results, failures


def print_summary(results: dict[str, Any], runs: int) -> None:
    rows: list[list[Any]] = []
    for name, rows_of in (
        ("publish", _publish_rows),
        ("replay", _replay_rows),
        ("fanout", _fanout_rows),
    ):
        if name in results:
            rows += rows_of(results[name])
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
    add_quiet_flag(parser)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin = not args.no_pin
    started = time.monotonic()
    print(environment_line(pin))
    raise_fd_limit()
    pin_load_generator(pin)
    try:
        # Without --smoke every benchmark starts a fresh server of its own.
        with running_server(pin) if args.smoke else contextlib.nullcontext() as shared:
            results, failures = run_suite(args.smoke, args.runs, pin, shared, args.wait_quiet)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print_summary(results, args.runs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"  suite took {time.monotonic() - started:.1f} s")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures or len(results) < 3 else 0


if __name__ == "__main__":
    raise SystemExit(main())
