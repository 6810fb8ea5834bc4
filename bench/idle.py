"""Idle connections: what each open stream costs the server while nothing happens.

For each count (2,000 and 5,000 by default) a fresh server gets that many SSE
(or, with ``--transport websocket``, WebSocket) subscribers, which then sit
idle for ``--hold`` seconds (30); the server's RSS growth divided by the count
is the cost per connection.  Then one probe event is published and every
subscriber must receive it (loss 0), so the figure is for connections that
still work, not for ones quietly dropped.

    python -m bench.idle                       # Livefeed, 2,000 and 5,000, 30 s each
    python -m bench.idle --target baseline     # the Starlette + sse-starlette baseline
    python -m bench.idle --counts 500 --hold 1 # a quick look
    python -m bench.idle --transport websocket # the same for WebSockets
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import fanout
from bench.common import add_run_flags, print_table, run_and_report, run_options

PROBE_DRAIN_S = 30.0
TRANSPORTS = ("sse", "websocket")


def run(
    *,
    counts: list[int],
    hold_s: float = 30.0,
    runs: int = 1,
    pin: bool = True,
    quiet_s: float = 0.0,
    target: str = "livefeed",
    transport: str = "sse",
) -> dict[str, Any]:
    """One fresh server per count: freed memory stays in a process, so reuse would flatter."""
    rows, failures = [], []
    for count in counts:
        result = fanout.run(
            subscribers=count,
            rate=1,
            seconds=1,
            ws_fraction=1 if transport == "websocket" else 0,
            drain_s=PROBE_DRAIN_S,
            runs=runs,
            pin=pin,
            quiet_s=quiet_s,
            target=target,
            hold_s=hold_s,
        )
        rows += result["rows"]
        failures += [f"{count} connections: {failure}" for failure in result["failures"]]
    return {
        "rows": rows,
        "hold_s": hold_s,
        "runs": runs,
        "failures": failures,
        "transport": transport,
    }


def print_results(result: dict[str, Any]) -> None:
    headers = [
        "server",
        "connections",
        "KiB/conn",
        "RSS before MiB",
        "RSS held MiB",
        "connect s",
        "probe delivered",
        "lost",
        "other CPU%",
    ]
    rows = [
        [
            r["target"],
            r["subscribers"],
            r["first_run_kib_per_connection"],
            r["rss_before_mib"],
            r["rss_connected_mib"],
            r["connect_s"],
            r["delivered"],
            r["lost"],
            r["other_cpu_percent"],
        ]
        for r in result["rows"]
    ]
    name = "WebSocket" if result["transport"] == "websocket" else "SSE"
    print_table(f"Idle {name} connections held {result['hold_s']:g} s", headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", default="2000,5000", help="comma-separated connection counts")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to hold them idle")
    parser.add_argument("--transport", choices=TRANSPORTS, default="sse")
    add_run_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        not args.no_pin,
        lambda: run(
            counts=[int(c) for c in args.counts.split(",")],
            hold_s=args.hold,
            transport=args.transport,
            **run_options(args),
        ),
        print_results,
    )


if __name__ == "__main__":
    raise SystemExit(main())
