"""The verifiable log at scale: proofs on a big log, and verifying its export.

Fills a log through the store (the append path, tree included), serves it,
and measures one client asking one request at a time: inclusion proofs of
random ids at the current size, consistency proofs between random sizes, and
checkpoints (root read and Ed25519 signature).  Then exports the whole log as
NDJSON and times ``livefeed verify`` on it, offline and with ``--url``.

    python -m bench.tlog                          # 1,000,000 events (the fill takes a minute)
    python -m bench.tlog --events 100000 --proofs 500
    python -m bench.tlog --database-url postgresql://127.0.0.1/bench_tlog   # an empty database
    python -m bench.tlog --smoke                  # seconds; exits non-zero on any failure
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from app.events import Draft
from app.store import open_store
from app.tlog.audit import verify_files
from app.verify import verify
from bench.common import (
    HttpConnection,
    Server,
    environment_line,
    fmt,
    percentile,
    pin_load_generator,
    print_table,
    use_uvloop,
)

FILL_BATCH = 5000  # the group committer's largest group


async def fill(database_url: str, events: int) -> float:
    """Append ``events`` realistic events in batches; returns events/s."""
    store = open_store(Settings(database_url=database_url))
    await store.open()
    try:
        started = time.perf_counter()
        for first in range(0, events, FILL_BATCH):
            drafts = [
                Draft(
                    "validation_created",
                    f"wf_bench_{n % 50}",
                    f'{{"file":"docs/page-{n}.md","seq":{n},"rule":"links"}}',
                )
                for n in range(first, min(events, first + FILL_BATCH))
            ]
            await store.append(drafts)
        return events / (time.perf_counter() - started)
    finally:
        await store.close()


async def latencies(port: int, paths: list[str]) -> list[float]:
    """Each request's latency in ms, one at a time on one keep-alive connection."""
    conn = await HttpConnection(port).open()
    found = []
    try:
        for path in paths:
            started = time.perf_counter()
            status, body = await conn.get(path)
            found.append(1000 * (time.perf_counter() - started))
            if status != 200:
                raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
    finally:
        await conn.close()
    return found


def row(name: str, values: list[float]) -> list[Any]:
    return [name, len(values), percentile(values, 50), percentile(values, 99), max(values)]


def measure(args: argparse.Namespace) -> tuple[list[list[Any]], list[list[Any]]]:
    workdir = Path(tempfile.mkdtemp(prefix="livefeed-tlog-"))
    url = args.database_url or f"sqlite:///{workdir / 'log.db'}"
    rate = asyncio.run(fill(url, args.events))
    rng = random.Random(9162)
    size = args.events
    server = Server(pin=not args.no_pin, database_url=url).start()
    pin_load_generator(not args.no_pin)  # after the server, which is pinned only while we may
    try:
        inclusion = [
            f"/api/log/proof/inclusion?id={rng.randint(1, size)}&tree_size={size}"
            for _ in range(args.proofs)
        ]
        pairs = [sorted(rng.sample(range(1, size + 1), 2)) for _ in range(args.proofs)]
        consistency = [f"/api/log/proof/consistency?first={a}&second={b}" for a, b in pairs]
        requests = [
            row("inclusion proof", asyncio.run(latencies(server.port, inclusion))),
            row("consistency proof", asyncio.run(latencies(server.port, consistency))),
            row("checkpoint", asyncio.run(latencies(server.port, ["/api/log/checkpoint"] * 200))),
        ]
        export, checkpoint, key = workdir / "export.ndjson", workdir / "cp", workdir / "key"
        started = time.perf_counter()
        whole_log = f"{server.url}/api/events?format=ndjson"
        with httpx.stream("GET", whole_log, timeout=None) as got, export.open("wb") as out:
            for chunk in got.iter_bytes():
                out.write(chunk)
        exported = time.perf_counter() - started
        checkpoint.write_bytes(httpx.get(f"{server.url}/api/log/checkpoint").content)
        key.write_bytes(httpx.get(f"{server.url}/api/log/key").content)
        started = time.perf_counter()
        offline = verify_files(export, checkpoint, key)
        offline_s = time.perf_counter() - started
        started = time.perf_counter()
        remote, _ = verify(export, checkpoint, key, server.url, None)
        remote_s = time.perf_counter() - started
    finally:
        server.stop()
    failures = offline.problems + remote.problems
    if offline.events != size or remote.events != size or failures:
        raise RuntimeError(f"the export did not verify: {failures[:5]}")
    whole = [
        ["fill through the store (events/s)", fmt(rate)],
        [f"export {size:,} events as NDJSON (s)", fmt(exported)],
        ["NDJSON size (MB)", fmt(export.stat().st_size / 1e6)],
        ["verify offline (s)", fmt(offline_s)],
        ["verify --url (s)", fmt(remote_s)],
        ["database size (MB)", fmt(database_bytes(url) / 1e6) if url.startswith("sqlite") else "-"],
    ]
    return requests, whole


def database_bytes(url: str) -> int:
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2000, help="requests of each kind")
    parser.add_argument("--database-url", help="an empty database (default: a new SQLite file)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server to a core")
    parser.add_argument("--smoke", action="store_true", help="2,000 events, 50 proofs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.events, args.proofs = 2000, 50
    use_uvloop()
    print(environment_line(not args.no_pin))
    try:
        requests, whole = measure(args)
    except Exception as exc:  # a benchmark reports, it does not crash
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print_table(
        f"Verifiable log, {args.events:,} events (one client, one request at a time; ms)",
        ["request", "n", "p50 ms", "p99 ms", "max ms"],
        requests,
    )
    print_table("Exporting and verifying the whole log", ["step", "figure"], whole)
    return 0


if __name__ == "__main__":
    sys.exit(main())
