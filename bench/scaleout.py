"""Scale-out: delivery across workers (SQLite) and across nodes (PostgreSQL), PG publish.

Issue 5 asks for three figures that the single-process benchmarks cannot give:

1. **cross-worker delivery** on SQLite: ``run.py serve --workers 2``; events are
   published through one keep-alive connection, whose worker is learnt from
   ``GET /api/stats`` on that same connection, and latency is kept for the
   WebSocket subscribers that the kernel placed on the *other* worker (their
   ``connection_established`` frame names it).  The other worker learns of
   the append from the appending worker's nudge (``app/store/nudge.py``), or
   else from its poll of ``PRAGMA data_version``.
2. **cross-node delivery** on PostgreSQL: two ``run.py serve`` processes on two
   ports and one fresh database; publishes through node A, subscribers on node
   B (``LISTEN/NOTIFY``).
3. **durable publish throughput** on PostgreSQL: ``bench/publish.py``'s phases
   against one node (single events from C connections, batches), then the
   same through two nodes at once (aggregate events/s).

Every event carries ``{"t": time.time()}`` taken just before its POST, so a
delivery's latency is publish -> commit -> the other process notices -> frame
received.  Subscribers on the publishing worker/node are measured too, as a
reference row: the difference is what crossing processes costs.

    python -m bench.scaleout                   # ~25 s
    python -m bench.scaleout --runs 3          # medians of 3 (rows are the median run)
    python -m bench.scaleout --smoke           # ~10 s; exits non-zero on any loss or error
    python -m bench.scaleout --cases cross-node --rate 200 --seconds 10

PostgreSQL must be reachable as ``harness.fresh_database()`` finds it
(127.0.0.1:5432, trust auth); each case gets a database of its own, dropped at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

import harness
from bench.common import (
    Background,
    BenchFailure,
    CpuWindow,
    HttpConnection,
    Profiler,
    Runnable,
    SelfCpu,
    Server,
    add_profile_flag,
    add_quiet_flag,
    environment_line,
    median_run,
    percentile_sorted,
    pin_load_generator,
    print_profile,
    print_table,
    running_server,
    saturated,
    use_uvloop,
    wait_for_quiet,
)
from bench.fanout import Published, Tally, WsSubscriber, _connect_all, _wait_drained
from bench.publish import Phase, run_phase

CASES = ("cross-worker", "cross-node", "throughput")
NODES_TIMEOUT_S = 15.0
PUBLISH_GRACE_S = 20.0  # beyond the schedule, before a stuck publisher is a failure
SUBSCRIBER_ROUND = 4  # subscribers opened at a time while spreading them over workers
SPREAD_LIMIT = 64  # subscribers opened at most while looking for the other worker
NOISY_PERCENT = 15.0
DEFAULTS: dict[str, Any] = {
    "rate": 50.0,
    "seconds": 5.0,
    "subscribers": 8,
    "throughput_seconds": 3.0,
}
SMOKE: dict[str, Any] = {
    "rate": 50.0,
    "seconds": 1.0,
    "subscribers": 4,
    "throughput_seconds": 0.5,
}


class BenchSkip(BenchFailure):
    """PostgreSQL is not reachable: a missing figure, which must still fail the run."""


# ---------------------------------------------------------------- servers


@contextlib.contextmanager
def running_nodes(
    count: int, database: str, pin: bool, env: dict[str, str] | None = None
) -> Iterator[list[Server]]:
    """``count`` separate server processes on one database, all stopped afterwards."""
    nodes = [Server(pin=pin, env=env, database_url=database) for _ in range(count)]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def fresh_database() -> str:
    """A new PostgreSQL database, dropped at exit (``harness``, as the tests get theirs).
    Unreachable, it is a benchmark that could not run."""
    try:
        return harness.fresh_database()
    except harness.PostgresUnavailable as exc:
        raise BenchSkip(str(exc)) from None


async def database_backends(url: str) -> list[int]:
    """Pids of the PostgreSQL backends serving ``url``'s database (the nodes' pools).

    Their CPU is the database's share of a row; without it PostgreSQL would
    show up as "other" CPU.  Only backends open when the window starts count.
    """
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [row["pid"] for row in rows]


def node_pid(node: str) -> int:
    """The pid in a ``host/pid`` node name (``/api/stats`` and ``connection_established``)."""
    return int(node.rsplit("/", 1)[1])


async def stats_node(conn: HttpConnection) -> str:
    """Which worker answers on this connection (a keep-alive connection stays on one)."""
    status, body = await conn.get("/api/stats")
    if status != 200:
        raise BenchFailure(f"/api/stats answered {status}: {body[:200]!r}")
    return str(orjson.loads(body)["node"])


async def discover_nodes(port: int, expected: int) -> list[str]:
    """Every worker behind ``port``: new connections until ``expected`` distinct nodes answer.

    ``/readyz`` answering means one worker is up, not all of them; SO_REUSEPORT
    spreads new connections, so a few dozen find every worker once it is up; on a
    busy machine the last worker can take seconds to start, so it is looked for
    until the deadline, not for a number of tries.
    """
    found: set[str] = set()
    deadline = time.monotonic() + NODES_TIMEOUT_S
    while len(found) < expected and time.monotonic() < deadline:
        conn = await HttpConnection(port).open()
        try:
            found.add(await stats_node(conn))
        finally:
            await conn.close()
        if len(found) < expected:
            await asyncio.sleep(0.05)
    if len(found) < expected:
        raise BenchFailure(f"only {len(found)} of {expected} workers answered: {sorted(found)}")
    return sorted(found)


def server_problems(server: Server) -> tuple[list[str], list[str]]:
    """ERROR/traceback lines (failures) and WARNING lines (notes) in a server's log."""
    lines = server.log().splitlines()
    errors = [line for line in lines if " ERROR " in line or line.startswith("Traceback")]
    warnings = [line for line in lines if " WARNING " in line]
    return errors, warnings


# ---------------------------------------------------------------- CPU of everyone involved


@dataclass
class Meters:
    """CPU of the servers, the database backends, the load generator and the rest.

    On a shared two-core box a latency figure means little without knowing
    who was busy; PostgreSQL is counted separately, not as "other".
    """

    server_pids: Sequence[int]
    db_pids: Sequence[int] = ()
    load_cores: int = 1
    _server: CpuWindow | None = None
    _db: CpuWindow | None = None
    _load: SelfCpu | None = None
    _background: Background | None = None
    _runnable: list[Runnable] = field(default_factory=list)

    def start(self) -> Meters:
        self._background = Background().start()
        self._server = CpuWindow(self.server_pids).start()
        self._db = CpuWindow(self.db_pids).start()
        self._load = SelfCpu().start()
        self._runnable = [Runnable(pid).start() for pid in self.server_pids]
        return self

    def stop(self) -> dict[str, Any]:
        assert self._server and self._db and self._load and self._background, "start() first"
        self._server.stop()
        for runnable in self._runnable:
            runnable.stop()
        self._load.stop()
        try:
            self._db.stop()
            db_cpu_s, db_percent = self._db.cpu_s, self._db.percent
        except OSError:  # a pooled connection closed during the window
            db_cpu_s, db_percent = 0.0, float("nan")
        self._background.stop()
        ours = self._server.cpu_s + self._load.cpu_s + db_cpu_s
        return {
            "server_cpu_percent": self._server.percent,
            "server_runnable_percent": max((r.percent for r in self._runnable), default=0.0),
            "db_cpu_percent": db_percent if self.db_pids else float("nan"),
            "load_cpu_percent": self._load.percent,
            "load_saturated": saturated(self._load.percent, self.load_cores),
            "other_cpu_percent": self._background.percent(ours),
        }


# ---------------------------------------------------------------- delivery latency


class NodeWsSubscriber(WsSubscriber):
    """``fanout.py``'s WebSocket subscriber, remembering which worker/node accepted it.

    Each has a ``Tally`` of its own, so its latencies can be told apart by node.
    """

    def __init__(self, port: int) -> None:
        super().__init__(Tally(), port, deflate=False)
        self.node = ""

    def on_control(self, payload: bytes) -> None:
        if not self.node and b"connection_established" in payload:
            self.node = str(orjson.loads(payload).get("node", ""))
        super().on_control(payload)


class TrackedConnection(HttpConnection):
    """A publish connection that counts its (re)opens.

    ``HttpConnection`` silently reopens a connection the server closed; a
    reopened one may land on the other worker, and then "cross-worker" would
    be mislabelled, so a reopen during the run is a failure.
    """

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.opens = 0

    async def open(self) -> TrackedConnection:
        self.opens += 1
        await super().open()
        return self


async def connect_subscribers(port: int, count: int, into: list[NodeWsSubscriber]) -> None:
    """Open ``count`` live WebSocket subscriptions; ``into`` keeps them for closing later."""
    batch = [NodeWsSubscriber(port) for _ in range(count)]
    into.extend(batch)
    errors = await _connect_all(list(batch), port)
    if errors:
        raise BenchFailure(f"{len(errors)} subscribers could not connect: {errors[:3]}")
    if any(not sub.node for sub in batch):
        raise BenchFailure("a connection_established frame carried no node")


async def spread_over_workers(
    port: int, publish_node: str, want_other: int, want_same: int, into: list[NodeWsSubscriber]
) -> None:
    """Subscribe until ``want_other`` are on another worker than the publisher (and
    ``want_same`` on its own); the kernel picks, so open a few at a time, bounded."""
    while len(into) < SPREAD_LIMIT:
        await connect_subscribers(port, min(SUBSCRIBER_ROUND, SPREAD_LIMIT - len(into)), into)
        other = sum(1 for sub in into if sub.node != publish_node)
        if other >= want_other and len(into) - other >= want_same:
            return
    raise BenchFailure(
        f"{SPREAD_LIMIT} subscribers, too few on another worker than {publish_node}: "
        f"{sorted({sub.node for sub in into})}"
    )


async def publish_on_schedule(conn: HttpConnection, rate: float, seconds: float) -> Published:
    """``rate`` single-event POSTs per second on one connection, so on one known worker.

    ``fanout.publish_at_rate`` grows a pool instead, whose connections land on
    any worker.  One connection holds 50/s while a commit takes < 20 ms;
    ``max_lag_s`` says if the schedule slipped.
    """
    out = Published(connections=1)
    total = max(1, round(rate * seconds))
    out.started_wall = time.time()
    start = time.monotonic()
    async with asyncio.timeout(seconds + PUBLISH_GRACE_S):
        for seq in range(total):
            due = start + seq / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            out.max_lag_s = max(out.max_lag_s, time.monotonic() - due)
            sent = time.time()
            body = orjson.dumps({"type": "bench.tick", "data": {"t": sent, "seq": seq}})
            status, answer = await conn.post_json("/api/events", body)
            out.latencies.append(time.time() - sent)
            if status == 201:
                out.ids.append(orjson.loads(answer)["id"])
            else:
                out.errors += 1
    return out


def delivery_group(
    label: str, subs: Sequence[NodeWsSubscriber], published: Published
) -> dict[str, Any]:
    """Latency percentiles and loss over one group of subscribers (same or other node)."""
    latencies = sorted(lat for sub in subs for lat in sub.tally.latencies)
    expected = len(published.ids) * len(subs)
    duplicates = sum(sub.out_of_order for sub in subs)
    delivered = sum(sub.count for sub in subs) - duplicates
    return {
        "case": label,
        "subscribers": len(subs),
        "events": len(published.ids),
        "deliveries": delivered,
        "lost": expected - delivered,
        "duplicates": duplicates,
        "closed_early": sum(1 for sub in subs if sub.closed),
        "p50_ms": 1000 * percentile_sorted(latencies, 50),
        "p90_ms": 1000 * percentile_sorted(latencies, 90),
        "p99_ms": 1000 * percentile_sorted(latencies, 99),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
    }


@dataclass
class DeliverySetup:
    """Where to publish, where to subscribe, and what each group is called."""

    publish_port: int
    server_pids: list[int]
    subscribe: Callable[[str, list[NodeWsSubscriber]], Awaitable[None]]  # (publish node, into)
    other_label: str
    same_label: str
    database: str = ""  # PostgreSQL URL, to meter its backends


async def delivery_once(
    setup: DeliverySetup, rate: float, seconds: float, drain_s: float, load_cores: int
) -> dict[str, Any]:
    """One measured run: subscribe, publish on schedule, wait for every delivery, tally."""
    conn = await TrackedConnection(setup.publish_port).open()
    subs: list[NodeWsSubscriber] = []
    try:
        publish_node = await stats_node(conn)
        await setup.subscribe(publish_node, subs)
        db_pids = await database_backends(setup.database) if setup.database else []
        meters = Meters(setup.server_pids, db_pids, load_cores).start()
        published = await publish_on_schedule(conn, rate, seconds)
        answered_by = await stats_node(conn)
        reopened = conn.opens - 1
        if published.ids:
            await asyncio.gather(
                *(_wait_drained(sub.tally, [sub], max(published.ids), drain_s) for sub in subs)
            )
        figures = meters.stop()
        # tallied before closing: a subscriber closed by the server counts as a failure
        groups = {
            "other": delivery_group(
                setup.other_label, [s for s in subs if s.node != publish_node], published
            ),
            "same": delivery_group(
                setup.same_label, [s for s in subs if s.node == publish_node], published
            ),
        }
    finally:
        for sub in subs:
            sub.close()
        await conn.close()
    if reopened or answered_by != publish_node:
        raise BenchFailure(
            f"the publish connection moved ({publish_node} -> {answered_by}, "
            f"{reopened} reopen(s)): worker attribution would be wrong"
        )
    publish_latencies = sorted(published.latencies)
    common = {
        **figures,
        "rate": rate,
        "publish_node": publish_node,
        "publish_errors": published.errors,
        "publish_p50_ms": 1000 * percentile_sorted(publish_latencies, 50),
        "publish_p99_ms": 1000 * percentile_sorted(publish_latencies, 99),
        "publisher_max_lag_ms": 1000 * published.max_lag_s,
        "nodes": {node: sum(1 for s in subs if s.node == node) for node in {s.node for s in subs}},
    }
    return {group: {**common, **figures} for group, figures in groups.items()}


def delivery_runs(
    setup: DeliverySetup, args: argparse.Namespace, load_cores: int
) -> list[dict[str, Any]]:
    """``--runs`` runs on the same servers; the rows shown come from the median run by p99."""
    samples = []
    for _ in range(args.runs):
        if args.wait_quiet:
            wait_for_quiet(args.wait_quiet, setup.server_pids)
        samples.append(
            asyncio.run(delivery_once(setup, args.rate, args.seconds, args.drain, load_cores))
        )
    chosen = median_run([{**s, "p99_ms": s["other"]["p99_ms"]} for s in samples], "p99_ms")
    rows = []
    for group in ("other", "same"):
        row = dict(chosen[group])
        row["runs"] = [sample[group]["p99_ms"] for sample in samples]
        rows.append(row)
    every = [{"check_only": True, **s[group]} for s in samples for group in ("other", "same")]
    return [*rows, *every]


def case_cross_worker(args: argparse.Namespace, load_cores: int) -> list[dict[str, Any]]:
    """SQLite, ``--workers 2``: subscribers on both workers, one publish connection."""
    env = {**args.env, "LIVEFEED_WORKERS": "2"}
    with running_server(not args.no_pin, env=env) as server:
        nodes = asyncio.run(discover_nodes(server.port, 2))
        want = args.subscribers

        def subscribe(publish_node: str, into: list[NodeWsSubscriber]) -> Awaitable[None]:
            return spread_over_workers(server.port, publish_node, want, max(2, want // 4), into)

        setup = DeliverySetup(
            publish_port=server.port,
            server_pids=[server.pid, *(node_pid(node) for node in nodes)],
            subscribe=subscribe,
            other_label="cross-worker delivery, SQLite, 2 workers",
            same_label="  same-worker delivery (reference)",
        )
        rows = delivery_runs(setup, args, load_cores)
        return [*rows, log_row(server, "SQLite --workers 2")]


def case_cross_node(args: argparse.Namespace, load_cores: int) -> list[dict[str, Any]]:
    """PostgreSQL, two nodes: publish through A, subscribers on B (and a few on A)."""
    database = fresh_database()
    with running_nodes(2, database, not args.no_pin, args.env) as (node_a, node_b):
        want = args.subscribers

        async def subscribe(_publish_node: str, into: list[NodeWsSubscriber]) -> None:
            await connect_subscribers(node_b.port, want, into)
            await connect_subscribers(node_a.port, max(2, want // 4), into)

        setup = DeliverySetup(
            publish_port=node_a.port,
            server_pids=[node_a.pid, node_b.pid],
            subscribe=subscribe,
            other_label="cross-node delivery, PostgreSQL, A -> B",
            same_label="  same-node delivery (reference)",
            database=database,
        )
        rows = delivery_runs(setup, args, load_cores)
        return [*rows, log_row(node_a, "PG node A"), log_row(node_b, "PG node B")]


# ---------------------------------------------------------------- publish throughput


async def phases_at_once(
    servers: Sequence[Server], batch: int, args: argparse.Namespace, load_cores: int
) -> list[Phase]:
    """``publish.run_phase`` against each server concurrently (one server: the plain phase)."""
    return list(
        await asyncio.gather(
            *(
                run_phase(
                    server, batch, args.concurrency, args.throughput_seconds, 1_000_000, load_cores
                )
                for server in servers
            )
        )
    )


def throughput_row(label: str, phases: Sequence[Phase], figures: dict[str, Any]) -> dict[str, Any]:
    """One row from one or more concurrent phases: events/s add up, latencies merge."""
    summaries = [phase.summary() for phase in phases]
    latencies = sorted(lat for phase in phases for lat in phase.latencies_s)
    return {
        **figures,
        "case": label,
        "events": sum(s["events"] for s in summaries),
        "events_per_s": sum(s["events_per_s"] for s in summaries),
        "per_node_events_per_s": [s["events_per_s"] for s in summaries],
        "requests": sum(s["requests"] for s in summaries),
        "errors": sum(s["errors"] for s in summaries),
        "p50_ms": 1000 * percentile_sorted(latencies, 50),
        "p99_ms": 1000 * percentile_sorted(latencies, 99),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
        # the phases' own windows exclude their warm-up; Meters' include it
        "server_cpu_percent": sum(s["server_cpu_percent"] for s in summaries),
        "server_runnable_percent": max(s["server_runnable_percent"] for s in summaries),
        "server_us_per_event": sum(s["server_us_per_event"] for s in summaries) / len(summaries),
    }


def throughput_runs(
    label: str,
    servers: Sequence[Server],
    batch: int,
    database: str,
    args: argparse.Namespace,
    load_cores: int,
) -> list[dict[str, Any]]:
    """``--runs`` runs of one mode; the row shown is the median run by events/s.
    With ``--profile``, every node is sampled through every run and the mode's
    top functions are printed as it ends (all nodes' samples together)."""
    samples = []
    pids = [server.pid for server in servers]
    profiler = None
    if args.profile:
        profile = args.profile.with_name(f"{args.profile.name}.{len(servers)}n{batch}b")
        profiler = Profiler(pids, profile).start()
    for _ in range(args.runs):
        if args.wait_quiet:
            wait_for_quiet(args.wait_quiet, pids)
        db_pids = asyncio.run(database_backends(database))
        meters = Meters(pids, db_pids, load_cores).start()
        phases = asyncio.run(phases_at_once(servers, batch, args, load_cores))
        samples.append(throughput_row(label, phases, meters.stop()))
    if profiler is not None:
        print(label)
        print_profile(profiler.stop())
    row = dict(median_run(samples, "events_per_s"))
    row["runs"] = [s["events_per_s"] for s in samples]
    return [row, *[{"check_only": True, **s} for s in samples]]


def case_throughput(args: argparse.Namespace, load_cores: int) -> list[dict[str, Any]]:
    """Single events from C connections, then batches: on one node, then on two at once."""
    database = fresh_database()
    pin = not args.no_pin
    rows: list[dict[str, Any]] = []

    def both_modes(servers: list[Server]) -> None:
        if len(servers) == 1:
            nodes = ", 1 node (events/s)"
        else:
            nodes = f" x {len(servers)} nodes (aggregate events/s)"
        for batch in (1, args.batch):
            mode = "single" if batch == 1 else f"batch {batch}"
            label = f"PostgreSQL publish {mode}, {args.concurrency} conns{nodes}"
            rows.extend(throughput_runs(label, servers, batch, database, args, load_cores))

    with running_nodes(1, database, pin, args.env) as (node_a,):
        both_modes([node_a])
        with running_nodes(1, database, pin, args.env) as (node_b,):
            both_modes([node_a, node_b])
            rows.append(log_row(node_b, "PG publish node B"))
        rows.append(log_row(node_a, "PG publish node A"))
    return rows


# ---------------------------------------------------------------- report


def log_row(server: Server, name: str) -> dict[str, Any]:
    """Not a table row: the server's log problems, checked before it is stopped."""
    errors, warnings = server_problems(server)
    return {"log_of": name, "errors": errors, "warnings": warnings}


def failures_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every run, not just the median one: any loss, duplicate or error fails the script."""
    found = []
    for row in rows:
        if "log_of" in row:
            found += [f"{row['log_of']} logged: {line}" for line in row["errors"][:5]]
            continue
        what = row["case"].strip()
        if row.get("lost") or row.get("duplicates") or row.get("closed_early"):
            found.append(
                f"{what}: lost {row['lost']}, duplicated {row['duplicates']}, "
                f"closed early {row['closed_early']}"
            )
        if row.get("publish_errors") or row.get("errors"):
            found.append(f"{what}: {row.get('publish_errors') or row.get('errors')} failed POSTs")
        if "subscribers" in row and not row["subscribers"]:
            found.append(f"{what}: no subscriber in this group")
        if not row.get("events"):
            found.append(f"{what}: nothing published")
    return list(dict.fromkeys(found))


HEADERS = [
    "case",
    "subs",
    "events",
    "rate /s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "lost",
    "srv CPU%",
    "srv busy%",
    "db CPU%",
    "load CPU%",
    "load sat.",
    "other CPU%",
]


def table_row(row: dict[str, Any]) -> list[Any]:
    """Delivery rows: offered rate and delivery latency; publish rows: events/s and
    per-request latency (no p90, no subscribers, no loss)."""
    delivery = "subscribers" in row
    return [
        row["case"],
        row["subscribers"] if delivery else None,
        row["events"],
        row["rate"] if delivery else row["events_per_s"],
        row["p50_ms"],
        row["p90_ms"] if delivery else float("nan"),
        row["p99_ms"],
        row["max_ms"],
        row["lost"] if delivery else None,
        row["server_cpu_percent"],
        row["server_runnable_percent"],
        row["db_cpu_percent"],
        row["load_cpu_percent"],
        row["load_saturated"],
        row["other_cpu_percent"],
    ]


def print_notes(rows: Sequence[dict[str, Any]], runs: int) -> None:
    """What the table cannot hold: where subscribers landed, publish latency, noise, logs."""
    for row in rows:
        if "log_of" in row:
            if row["warnings"]:
                print(
                    f"  {row['log_of']}: {len(row['warnings'])} WARNING line(s), first: "
                    f"{row['warnings'][0]}"
                )
            continue
        what = row["case"].strip()
        if "subscribers" in row and not what.startswith("same"):
            print(
                f"  {what}: published via {row['publish_node']}, subscribers per node "
                f"{row['nodes']}; POST p50 {row['publish_p50_ms']:.1f} ms, "
                f"p99 {row['publish_p99_ms']:.1f} ms; sent at most "
                f"{row['publisher_max_lag_ms']:.1f} ms late"
            )
        if "per_node_events_per_s" in row:
            per_node = " + ".join(f"{v:,.0f}" for v in row["per_node_events_per_s"])
            print(
                f"  {what}: {per_node} events/s per node, "
                f"{row['server_us_per_event']:.0f} µs of server CPU per event"
            )
        if runs > 1:
            key = "p99 ms" if "subscribers" in row else "events/s"
            print(f"  {what}: {key} of every run: " + ", ".join(f"{v:,.1f}" for v in row["runs"]))
        if row["other_cpu_percent"] > NOISY_PERCENT:
            print(f"  {what}: NOISY, other processes used {row['other_cpu_percent']:.0f} % CPU")


def shown_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows: the median runs, without the check-only runs and the log rows."""
    return [row for row in rows if "log_of" not in row and not row.get("check_only")]


def print_results(result: dict[str, Any]) -> None:
    rows, runs = result["rows"], result["runs"]
    shown = shown_rows(rows)
    if not shown:
        return
    print_table(
        f"Scale-out on loopback (median of {runs} run(s); delivery latency = publish -> "
        "frame received; publish latency per request)",
        HEADERS,
        [table_row(row) for row in shown],
    )
    print_notes([row for row in rows if not row.get("check_only")], runs)


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it still work?")
    parser.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    parser.add_argument("--rate", type=float, help="delivery cases: events/s published (50)")
    parser.add_argument("--seconds", type=float, help="delivery cases: publishing time (5)")
    parser.add_argument("--subscribers", type=int, help="subscribers on the other worker/node (8)")
    parser.add_argument("--drain", type=float, default=10.0, help="max wait for the last event")
    parser.add_argument("--throughput-seconds", type=float, help="publish cases: time per mode (3)")
    parser.add_argument("--concurrency", type=int, default=8, help="publisher connections/node")
    parser.add_argument("--batch", type=int, default=100, help="events per batched POST")
    parser.add_argument("--runs", type=int, default=1, help="repeat and report the median")
    add_quiet_flag(parser)
    add_profile_flag(parser)
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a LIVEFEED_* setting for every server (repeatable), e.g. LIVEFEED_POLL_INTERVAL_S",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin servers and client to cores"
    )
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    args.env = dict(item.split("=", 1) for item in args.server_env)
    for name, value in (SMOKE if args.smoke else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}")
    if args.rate <= 0 or args.seconds <= 0 or args.subscribers < 1 or args.runs < 1:
        parser.error("--rate, --seconds, --subscribers and --runs must be positive")
    return args


RUNNERS: dict[str, Callable[[argparse.Namespace, int], list[dict[str, Any]]]] = {
    "cross-worker": case_cross_worker,
    "cross-node": case_cross_node,
    "throughput": case_throughput,
}


def run_cases(args: argparse.Namespace) -> dict[str, Any]:
    """Every case asked for; one that cannot run (no PostgreSQL) is a failure, and the
    next still runs.  ``rows`` holds every run and the servers' logs (``shown_rows``)."""
    load_cores = pin_load_generator(not args.no_pin)
    use_uvloop()
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for case in (c for c in CASES if c in args.cases.split(",")):
        try:
            rows += RUNNERS[case](args, load_cores)
        except (BenchFailure, OSError, TimeoutError) as exc:  # the next case may still run
            problems.append(f"{case}: {type(exc).__name__}: {exc}")
    return {"rows": rows, "runs": args.runs, "failures": problems + failures_of(rows)}


def run(
    *,
    smoke: bool = False,
    cases: Sequence[str] = CASES,
    runs: int = 1,
    pin: bool = True,
    quiet_s: float = 0.0,
) -> dict[str, Any]:
    """``run_cases`` for ``bench.run_all``: the same sizes as the command line
    (``SMOKE`` or ``DEFAULTS``), through its own parser."""
    argv = ["--cases", ",".join(cases), "--runs", str(runs), "--wait-quiet", str(quiet_s)]
    argv += ["--smoke"] * smoke + ["--no-pin"] * (not pin)
    return run_cases(parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(environment_line(not args.no_pin) + "; PostgreSQL on 127.0.0.1:5432 unpinned")
    started = time.monotonic()
    result = run_cases(args)
    print_results(result)
    print(f"\n(took {time.monotonic() - started:.0f} s)")
    for problem in result["failures"]:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
