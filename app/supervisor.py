"""``--workers N``: N serving processes on one port, one log.

Each worker is a full Livefeed process (its own hub, its own store
connections) serving a listening socket that the supervisor binds and hands
down (with ``--port 0`` every worker is then on the one port the kernel chose,
which the supervisor announces).  On Linux each worker gets a socket of its own
on that port (SO_REUSEPORT) and the kernel spreads new connections over them by
address: with one socket shared by all, the worker that woke first took a whole
burst of connections (199 of 200 opened four at a time).  The supervisor keeps
every socket, so connections that arrive while a worker restarts wait for it.
The log's database is what the workers share, and each hub notices the others'
appends by itself, nudged by the appending worker through a directory of sockets
the supervisor makes (:mod:`app.store.nudge`).  The supervisor only binds, starts the workers,
forwards SIGTERM/SIGINT so each says its own graceful goodbye, and restarts a
worker that dies.  Prometheus metrics are summed across workers through
``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from prometheus_client import multiprocess

from app.config import Settings, from_env
from app.server import LISTEN_FD_ENV, WAKE_DIR_ENV, announce, listening_socket
from app.store import nudge

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


def worker_sockets(settings: Settings, count: int) -> list[socket.socket]:
    """A listening socket per worker on one port where the kernel balances them
    (Linux's SO_REUSEPORT), else one socket that every worker shares."""
    if sys.platform != "linux":
        return [listening_socket(settings)]
    first = listening_socket(settings, balanced=True)
    port = first.getsockname()[1]
    return [first, *(listening_socket(settings, port, balanced=True) for _ in range(count - 1))]


class Supervisor:
    def __init__(self, workers: int, env: Mapping[str, str]) -> None:
        self._count = workers
        self._metrics_dir = tempfile.mkdtemp(prefix="livefeed-metrics-")
        self._wake_dir = tempfile.mkdtemp(prefix="livefeed-wake-")  # only we can write it
        self._env = {
            **env,
            "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir,
            WAKE_DIR_ENV: self._wake_dir,
        }
        self._workers: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False
        self._sockets: list[socket.socket] = []  # one per slot, kept for a restarted worker

    def _spawn(self, slot: int) -> None:
        if not self._sockets:
            raise RuntimeError("the supervisor binds its sockets before it starts workers")
        fd = self._sockets[slot % len(self._sockets)].fileno()
        # the program this one was started as (run.py, or an installed `livefeed`)
        command = [sys.executable, sys.argv[0], "serve", "--as-worker"]
        env = {**self._env, LISTEN_FD_ENV: str(fd)}
        self._workers[slot] = subprocess.Popen(command, env=env, pass_fds=[fd])
        log.info("worker %d started (pid %d)", slot, self._workers[slot].pid)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        for sock in self._sockets:
            sock.close()  # once the workers close theirs, new connections are refused
        for process in self._workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    def run(self) -> int:
        settings = from_env(self._env)
        self._sockets = worker_sockets(settings, self._count)
        with contextlib.ExitStack() as sockets:
            for sock in self._sockets:
                sockets.enter_context(sock)
            announce(self._sockets[0], settings.scheme)
            return self._supervise()

    def _supervise(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for slot in range(self._count):
            self._spawn(slot)
        while self._workers:
            for slot, process in list(self._workers.items()):
                code = process.poll()
                if code is None:
                    continue
                del self._workers[slot]
                multiprocess.mark_process_dead(process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
                nudge.forget(self._wake_dir, process.pid)
                if not self._stopping:
                    log.warning("worker %d exited with %s; restarting it", slot, code)
                    time.sleep(RESTART_DELAY_S)
                    self._spawn(slot)
            time.sleep(0.2)
        for leftover in Path(self._metrics_dir).glob("*.db"):
            leftover.unlink()
        os.rmdir(self._metrics_dir)
        shutil.rmtree(self._wake_dir, ignore_errors=True)
        return 0
