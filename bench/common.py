"""Shared pieces of the benchmark suite: a real server, CPU/RSS sampling, stats.

Every benchmark measures ``python run.py serve`` exactly as users run it, in
its own process, so that the server's CPU time and memory can be read from
``/proc`` without the load generator's mixed in.  On a machine with two or
more cores the server is pinned to core 0 (``taskset -c 0``) and the load
generator to core 1, so neither steals the other's CPU and the figures say
"one server core".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import ServerFailed, ServerProcess, livefeed_command

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
TARGETS = ("livefeed", "baseline")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CORE = 0
LOAD_CORE = 1
# All load comes from 127.0.0.1, so the per-client admission limits meant for
# the open internet would measure the rate limiter instead of the server.
BENCH_ENV = {
    "LIVEFEED_HEARTBEAT_S": "30",
    "LIVEFEED_PUBLISH_RATE": "1000000/second",
    "LIVEFEED_CONNECT_RATE": "1000000/second",
    "LIVEFEED_MAX_CONNECTIONS": "100000",
    "LIVEFEED_MAX_CONNECTIONS_PER_CLIENT": "100000",
    "LIVEFEED_LOG_FORMAT": "text",
}


class BenchFailure(Exception):
    """A benchmark could not produce a trustworthy figure (errors, lost events)."""


# ---------------------------------------------------------------- CPU pinning


#: The cores this process could use when it started, before ``pin_load_generator``
#: narrowed it to the load core.
START_CORES = frozenset(os.sched_getaffinity(0))


def can_pin() -> bool:
    """Pinning needs both cores (server and load) and ``taskset`` for the server.

    Judged on the cores we started with, not on our affinity now: once the load
    generator has pinned itself, a server it starts must still go to the server
    core, not inherit the load core (taskset may move it there).
    """
    return {SERVER_CORE, LOAD_CORE} <= START_CORES and shutil.which("taskset") is not None


def pin_load_generator(enabled: bool) -> int:
    """Pin this process (and the workers it forks later) to the load core.

    Returns how many cores the load generator may use, which is what
    "saturated" is judged against.
    """
    if enabled and can_pin():
        os.sched_setaffinity(0, {LOAD_CORE})
    return len(os.sched_getaffinity(0))


def raise_fd_limit() -> int:
    """Thousands of sockets need more than the usual soft limit of 1024 fds.

    Raised in the parent before the server and the workers start, so every
    process inherits it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- /proc sampling


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (SQLite runs on threads of its own)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        raw = stat.read()
    fields = raw[raw.rindex(b")") + 2 :].split()  # the name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) in KiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


@dataclass
class CpuWindow:
    """CPU used by a set of processes over a wall-clock window."""

    pids: Sequence[int]
    started_wall: float = 0.0
    started_cpu: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def start(self) -> CpuWindow:
        self.started_wall = time.monotonic()
        self.started_cpu = sum(proc_cpu_seconds(pid) for pid in self.pids)
        return self

    def stop(self) -> CpuWindow:
        self.wall_s = time.monotonic() - self.started_wall
        self.cpu_s = sum(proc_cpu_seconds(pid) for pid in self.pids) - self.started_cpu
        return self

    @property
    def percent(self) -> float:
        """100 = one core busy for the whole window."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class SelfCpu:
    """This process's CPU (all threads) over a window: the load generator's own cost."""

    started_wall: float = 0.0
    started_cpu: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def start(self) -> SelfCpu:
        self.started_wall, self.started_cpu = time.monotonic(), time.process_time()
        return self

    def stop(self) -> SelfCpu:
        self.wall_s = time.monotonic() - self.started_wall
        self.cpu_s = time.process_time() - self.started_cpu
        return self

    @property
    def percent(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


class Runnable:
    """How often the server has a runnable thread (state ``R`` in /proc).

    CPU% alone hides saturation here: time the kernel spends on loopback TCP
    in softirq, and other processes on the same core, are not charged to the
    server, so a server that never waits for work can still show 60-70 % CPU.
    A server with a thread in ``R`` (running or waiting for a CPU) in nearly
    every sample has no idle time left on its core: it is saturated,
    whatever its CPU% says.  Every thread counts (replay pages are built on
    the SQLite reader threads, fan-out runs on the event loop's).  Sampled
    from a thread of the load generator every ``interval_s``.  ``pid`` may be
    several processes (``--workers N``, all pinned to the server core): then a
    sample counts if a thread of any of them is runnable, which is the core
    being busy; the supervisor alone only waits.
    """

    def __init__(self, pid: int | Sequence[int], interval_s: float = 0.002) -> None:
        self._pids = [pid] if isinstance(pid, int) else list(pid)
        self._interval_s = interval_s
        self._samples = 0
        self._runnable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="runnable-sampler", daemon=True)

    def start(self) -> Runnable:
        self._thread.start()
        return self

    def stop(self) -> Runnable:
        self._stop.set()
        self._thread.join()
        return self

    def _tasks(self) -> list[str]:
        paths = []
        for pid in self._pids:
            with contextlib.suppress(OSError):
                paths += [f"/proc/{pid}/task/{tid}/stat" for tid in os.listdir(f"/proc/{pid}/task")]
        return paths

    def _sample(self) -> None:
        tasks = self._tasks()
        while tasks and not self._stop.wait(self._interval_s):
            if self._samples % 100 == 99:  # threads come and go (timers, executors)
                tasks = self._tasks()
            self._samples += 1
            self._runnable += any(_state(path) == ord("R") for path in tasks)

    @property
    def percent(self) -> float:
        return 100.0 * self._runnable / self._samples if self._samples else float("nan")


def _state(stat_path: str) -> int:
    try:
        with open(stat_path, "rb") as stat:
            raw = stat.read()
    except OSError:
        return 0
    return raw[raw.rindex(b")") + 2]


SERVER_SATURATED_RUNNABLE_PERCENT = 90.0


def machine_busy_seconds(cpu: str = "cpu") -> float:
    """CPU seconds spent busy (user, system, irq, softirq, steal) since boot.

    ``cpu`` is a ``/proc/stat`` row: ``"cpu"`` for every core, ``"cpu0"`` for one.
    """
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name == cpu:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, values[:8])
                return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
    raise BenchFailure(f"/proc/stat has no {cpu!r} row")


@dataclass
class Background:
    """CPU the rest of the machine used while we measured (other people's test runs).

    Machine-wide busy time minus the server's and the load generator's.  On
    a shared two-core box this is the first thing to look at when a figure
    looks odd; above ~15 % of a core the run is flagged as noisy.  It is
    approximate: ``/proc/stat`` is sampled per tick while process times are
    exact, so bursty work can be under-counted (the result is clamped at 0).
    """

    started_wall: float = 0.0
    started_busy: float = 0.0
    wall_s: float = 0.0
    busy_s: float = 0.0

    def start(self) -> Background:
        self.started_wall, self.started_busy = time.monotonic(), machine_busy_seconds()
        return self

    def stop(self) -> Background:
        self.wall_s = time.monotonic() - self.started_wall
        self.busy_s = machine_busy_seconds() - self.started_busy
        return self

    def percent(self, ours_cpu_s: float) -> float:
        """Busy time that was not ours, as % of one core (loopback softirq work included)."""
        return max(0.0, 100.0 * (self.busy_s - ours_cpu_s) / self.wall_s) if self.wall_s else 0.0


NOISY_BACKGROUND_PERCENT = 15.0
QUIET_PERCENT = 20.0


def wait_for_quiet(max_wait_s: float, ours: Sequence[int] = ()) -> float:
    """Wait (at most ``max_wait_s``) for a second in which the machine is nearly idle.

    On a box shared with other people's test runs a benchmark measures the
    neighbours.  ``ours`` are pids whose CPU does not count (a running
    server).  Returns the background CPU % of the last second looked at.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        window = Background().start()
        ours_before = sum(proc_cpu_seconds(pid) for pid in ours)
        time.sleep(1.0)
        window.stop()
        busy = window.percent(sum(proc_cpu_seconds(pid) for pid in ours) - ours_before)
        if busy < QUIET_PERCENT or time.monotonic() >= deadline:
            return busy


def saturated(load_cpu_percent: float, cores: int, threshold: float = 85.0) -> bool:
    """A load generator above ~85 % of the cores it may use is measuring itself."""
    return load_cpu_percent >= threshold * cores


# ---------------------------------------------------------------- the server


class Server(ServerProcess):
    """``python run.py serve`` (or the baseline) with a fresh SQLite file in a temporary
    directory, on a loopback port it binds itself (``harness.ServerProcess``).

    Started through ``taskset -c 0`` when pinning, which execs Python in
    place, so ``pid`` is the server's own and ``/proc/<pid>`` is its CPU.
    ``database_url`` names another database (PostgreSQL, shared by two nodes).
    """

    def __init__(
        self,
        pin: bool = True,
        env: dict[str, str] | None = None,
        target: str = "livefeed",  # or "baseline": bench/baseline_app.py, measured the same way
        database_url: str | None = None,
    ) -> None:
        self.target = target
        workdir = Path(tempfile.mkdtemp(prefix="livefeed-bench-"))
        self.database_url = database_url or f"sqlite:///{workdir / 'livefeed.db'}"
        if target == "baseline":
            command = [sys.executable, str(BENCH / "baseline_app.py")]
        else:
            command = livefeed_command()
        if pin and can_pin():
            command = ["taskset", "-c", str(SERVER_CORE), *command]
        settings = {**BENCH_ENV, **(env or {}), "LIVEFEED_DATABASE_URL": self.database_url}
        super().__init__(workdir, settings, command=command, start_timeout_s=START_TIMEOUT_S)

    def start(self) -> Server:
        try:
            super().start()
        except ServerFailed as exc:
            raise BenchFailure(str(exc)) from None
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (graceful, as in production), SIGKILL if it hangs; then clean up."""
        try:
            return super().stop(sig, timeout)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def pids(self) -> list[int]:
        """The server and its worker processes (``--workers N`` forks them)."""
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as children:
                        todo += [int(child) for child in children.read().split()]
        return found

    def memory_kib(self) -> dict[str, int]:
        return proc_memory_kib(self.pid)


@contextlib.contextmanager
def running_server(
    pin: bool = True,
    env: dict[str, str] | None = None,
    reuse: Server | None = None,
    target: str = "livefeed",
) -> Iterator[Server]:
    """A started server, stopped afterwards; ``reuse`` lends a running one instead."""
    if reuse is not None:
        yield reuse
        return
    server = Server(pin=pin, env=env, target=target)
    try:
        yield server.start()
    finally:
        server.stop()


# ---------------------------------------------------------------- a lean HTTP client


class HttpConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams.

    httpx spends ~150 µs of client CPU per request; this spends a fraction
    of that, so the publish benchmark measures the server, not the client.
    It handles what Livefeed's JSON endpoints answer: ``Content-Length``
    bodies.  Hypercorn closes a keep-alive connection after 5 s idle, so a
    connection the server has closed is reopened before the next request.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> HttpConnection:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def post_json(
        self, path: str, body: bytes, idempotency_key: str | None = None
    ) -> tuple[int, bytes]:
        """POST JSON.  With ``idempotency_key`` a retry after a lost answer cannot
        publish twice: the server may have committed a request whose connection
        its keep-alive timer closed before the answer went out."""
        key = f"Idempotency-Key: {idempotency_key}\r\n" if idempotency_key else ""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n{key}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return await self._exchange(head + body)

    async def get(self, path: str) -> tuple[int, bytes]:
        return await self._exchange(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode()
        )

    async def _exchange(self, request: bytes, retry: bool = True) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None, "open() first"
        if self._reader.at_eof():  # closed by the server while idle
            await self.close()
            await self.open()
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            if getattr(exc, "partial", b"") or not retry:
                raise
            # The idle timeout closed it as the request went out: nothing was read.
            await self.close()
            await self.open()
            return await self._exchange(request, retry=False)
        status = int(head[9:12])
        length = _content_length(head)
        body = await self._reader.readexactly(length) if length else b""
        return status, body


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    if b"transfer-encoding" in head.lower():
        raise BenchFailure("HttpConnection only reads Content-Length answers")
    return 0


def use_uvloop() -> None:
    """The server runs on uvloop; give the load generator the same advantage."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of unsorted ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return percentile_sorted(ordered, q)


def percentile_sorted(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_run(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose ``key`` is the median, so a row's figures come from one run."""
    ordered = sorted(runs, key=lambda run: run[key])
    return ordered[len(ordered) // 2]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------- output


def fmt(value: Any) -> str:
    """Numbers the way a reader scans them: thousands separators, sane decimals."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table that reads well in a terminal and in a Markdown code block.

    Text is left-aligned and numbers right-aligned, so columns of figures line up.
    """
    cells = [[fmt(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    left = [all(isinstance(row[i], str) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if is_text else v.rjust(w)
            for v, w, is_text in zip(values, widths, left, strict=True)
        ).rstrip()

    print(f"\n{title}")
    print(line(headers))
    print(line(["-" * w for w in widths]))
    for row in cells:
        print(line(row))
    sys.stdout.flush()


def environment_line(pinned: bool) -> str:
    """What the figures were measured on, printed above every table."""
    cores = os.cpu_count()
    placement = (
        f"server pinned to core {SERVER_CORE}, load generator to core {LOAD_CORE}"
        if pinned and can_pin()
        else "unpinned"
    )
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}  Python {sys.version.split()[0]}  "
        f"{cores} cores, {placement}"
    )


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    """``--wait-quiet S``: the shared machine's neighbours skew figures; wait them out."""
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each run, wait up to S seconds for other processes to go idle",
    )


class Profiler:
    """``py-spy record`` on the server for a window, then the functions that cost most.

    Sampling is outside the server (no instrumentation in the measured code) and
    ``--nonblocking``, so the figures move little; the top lines say where the
    server's time goes.  Needs ``py-spy`` (``pip install -e '.[bench]'``).
    """

    def __init__(self, pids: Sequence[int], path: Path) -> None:
        self.pids = pids
        self.path = path
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> Profiler:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for n, pid in enumerate(self.pids):
            command = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
            command += ["--rate", "250", "--output", f"{self.path}.{n}", "--nolineno"]
            self._processes.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )
        return self

    def stop(self) -> list[tuple[str, float, float]]:
        """(function, self %, total %) of the samples, by self time."""
        for process in self._processes:
            process.send_signal(signal.SIGINT)
            _, errors = process.communicate(timeout=30)
            if process.returncode:
                raise BenchFailure(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
        self_counts: dict[str, int] = {}
        total_counts: dict[str, int] = {}
        samples = 0
        for n in range(len(self._processes)):
            with contextlib.suppress(OSError), open(f"{self.path}.{n}") as raw:
                for line in raw:
                    stack, _, count = line.rstrip().rpartition(" ")
                    frames = stack.split(";")
                    samples += int(count)
                    self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + int(count)
                    for frame in set(frames):
                        total_counts[frame] = total_counts.get(frame, 0) + int(count)
        return [
            (name, 100 * hits / samples, 100 * total_counts[name] / samples)
            for name, hits in sorted(self_counts.items(), key=lambda kv: -kv[1])
        ]


def print_profile(top: list[tuple[str, float, float]], lines: int = 25) -> None:
    print_table(
        "Server profile (py-spy, by self time)",
        ["function", "self %", "total %"],
        [[name[:110], own, total] for name, own, total in top[:lines]],
    )


def add_profile_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="sample the server with py-spy while measuring; print the top functions",
    )


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every single benchmark takes: --wait-quiet, --runs, --no-pin."""
    add_quiet_flag(parser)
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="livefeed",
        help="the server to measure: Livefeed, or the Starlette baseline (bench/baseline_app.py)",
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat and report the median")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin server and client to cores"
    )


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """What ``add_run_flags`` parsed, as the keyword arguments every ``run()`` takes."""
    return {
        "runs": args.runs,
        "pin": not args.no_pin,
        "quiet_s": args.wait_quiet,
        "target": args.target,
    }


def run_and_report(
    pinned: bool,
    measure: Callable[[], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
) -> int:
    """Every single benchmark's ending: the machine, the figures, then each failure;
    the exit status is non-zero if anything failed, so CI can call any of them."""
    print(environment_line(pinned))
    try:
        result = measure()
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    show(result)
    for failure in result["failures"]:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if result["failures"] else 0
