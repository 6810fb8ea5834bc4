"""``--workers N``: N serving processes on one port, one log.

Each worker is a full Livefeed process (its own hub, its own store
connections) serving one listening socket that the supervisor binds once and
hands down (with ``--port 0`` every worker is then on the one port the kernel
chose, which the supervisor announces); the log's database is what they
share, and each hub notices the others' appends by itself, nudged by the
appending worker through a directory of sockets the supervisor makes
(:mod:`app.store.nudge`).  The supervisor only binds, starts the workers,
forwards SIGTERM/SIGINT so each says its own graceful goodbye, and restarts a
worker that dies.  Prometheus metrics are summed across workers through
``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

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

from app.config import from_env
from app.server import LISTEN_FD_ENV, WAKE_DIR_ENV, announce, listening_socket
from app.store import nudge

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


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
        self._socket: socket.socket | None = None  # kept to hand to a restarted worker

    def _spawn(self, slot: int) -> None:
        if self._socket is None:
            raise RuntimeError("the supervisor binds its socket before it starts workers")
        fd = self._socket.fileno()
        # the program this one was started as (run.py, or an installed `livefeed`)
        command = [sys.executable, sys.argv[0], "serve", "--as-worker"]
        env = {**self._env, LISTEN_FD_ENV: str(fd)}
        self._workers[slot] = subprocess.Popen(command, env=env, pass_fds=[fd])
        log.info("worker %d started (pid %d)", slot, self._workers[slot].pid)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        if self._socket is not None:
            self._socket.close()  # once the workers close theirs, new connections are refused
        for process in self._workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    def run(self) -> int:
        settings = from_env(self._env)
        self._socket = listening_socket(settings)
        with self._socket:
            announce(self._socket, settings.scheme)
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
