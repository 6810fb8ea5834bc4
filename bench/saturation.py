"""Saturation: raise the publish rate until p99 delivery latency passes 1 s.

S SSE subscribers (1,000) on one server; the rate climbs a ladder (100, 150,
200, ... events/s) for T seconds each until p99 > ``--limit-ms`` (1000) or an
event is lost; the answer is the highest deliveries/s seen within the limit.

    python -m bench.saturation                      # Livefeed, one process on one core
    python -m bench.saturation --target baseline    # the Starlette baseline, same ladder
    python -m bench.saturation --server-workers 2   # --workers 2, both on the server's core
    python -m bench.saturation --server-workers 2 --no-pin   # both cores, shared with the load

With pinning (the default), every worker runs on the one server core: against
one worker on that core, what the second process costs shows as saturation
reached lower (2 cores cannot show the throughput more cores would give).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import fanout
from bench.common import (
    add_run_flags,
    can_pin,
    print_table,
    raise_fd_limit,
    run_and_report,
    run_options,
    running_server,
)

LADDER = (100, 150, 200, 250, 300, 400, 500, 700, 1000)


def run(
    *,
    subscribers: int = 1000,
    seconds: float = 5.0,
    limit_ms: float = 1000.0,
    ladder: tuple[int, ...] = LADDER,
    server_workers: int = 1,
    runs: int = 1,
    pin: bool = True,
    quiet_s: float = 0.0,
    target: str = "livefeed",
) -> dict[str, Any]:
    """Climb the ladder on one server; stop at the first step over the limit."""
    env = {"LIVEFEED_WORKERS": str(server_workers)} if server_workers > 1 else {}
    raise_fd_limit()
    steps: list[dict[str, Any]] = []
    failures: list[str] = []
    with running_server(pin, env=env, target=target) as server:
        for rate in ladder:
            result = fanout.run(
                subscribers=subscribers,
                rate=rate,
                seconds=seconds,
                ws_fraction=0,
                runs=runs,
                pin=pin,
                quiet_s=quiet_s,
                server=server,
            )
            row = result["rows"][0]
            row["server_workers"] = server_workers
            steps.append(row)
            failures += [f"{rate}/s: {failure}" for failure in result["failures"]]
            if result["failures"] or row["p99_ms"] > limit_ms:
                break
    within = [r for r in steps if r["p99_ms"] <= limit_ms and not r["lost"]]
    # None is a finding, not a failure: the server cannot keep even the first step's pace
    best = max(within, key=lambda r: r["deliveries_per_s"], default=None)
    return {
        "steps": steps,
        "best": best,
        "limit_ms": limit_ms,
        "runs": runs,
        "failures": failures,
        "pinned": pin and can_pin(),  # every worker on the server core
    }


def print_results(result: dict[str, Any]) -> None:
    headers = ["server", "workers", "subscribers", "rate /s", "deliv/s", "lost", "p50 ms"]
    headers += ["p99 ms", "max ms", "srv CPU%", "load CPU%", "load saturated", "other CPU%"]
    rows = [
        [
            r["target"],
            r["server_workers"],
            r["subscribers"],
            r["rate"],
            r["deliveries_per_s"],
            r["lost"],
            r["p50_ms"],
            r["p99_ms"],
            r["max_ms"],
            r["server_cpu_percent"],
            r["load_cpu_percent"],
            r["load_saturated"],
            r["other_cpu_percent"],
        ]
        for r in result["steps"]
    ]
    print_table(f"Saturation: the rate ladder until p99 > {result['limit_ms']:g} ms", headers, rows)
    best = result["best"]
    if best is None:
        print(f"  saturation: no step kept p99 within {result['limit_ms']:g} ms")
    else:
        print(
            f"  saturation: {best['deliveries_per_s']:,.0f} deliveries/s at "
            f"{best['rate']:g} events/s x {best['subscribers']} subscribers "
            f"(p99 {best['p99_ms']:.0f} ms)"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="publishing time per step")
    parser.add_argument("--limit-ms", type=float, default=1000.0, help="the p99 that ends it")
    parser.add_argument(
        "--ladder", default=",".join(map(str, LADDER)), help="comma-separated rates to try"
    )
    parser.add_argument(
        "--server-workers", type=int, default=1, help="Livefeed --workers (all on the server core)"
    )
    add_run_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        not args.no_pin,
        lambda: run(
            subscribers=args.subscribers,
            seconds=args.seconds,
            limit_ms=args.limit_ms,
            ladder=tuple(int(r) for r in args.ladder.split(",")),
            server_workers=args.server_workers,
            **run_options(args),
        ),
        print_results,
    )


if __name__ == "__main__":
    raise SystemExit(main())
