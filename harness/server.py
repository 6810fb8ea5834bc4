"""One server process on a loopback port it chose itself.

The server is started with ``--port 0`` and announces the port it bound on
stdout (``listening on http://127.0.0.1:PORT``, as ``run.py serve`` and the
benchmark baseline both do; ``https://`` when it serves TLS), so there is no
moment between picking a port and binding it in which another process could
take it.  A restart reuses the port learned at the first start: clients that
reconnect expect the same address.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = ROOT / "run.py"
HOST = "127.0.0.1"
LISTENING = re.compile(rb"^listening on (https?)://\S+:(\d+)$", re.MULTILINE)
POLL_S = 0.02

T = TypeVar("T")
_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE


class ServerFailed(RuntimeError):
    """The server exited, or did not become ready, while starting."""


def livefeed_command(*args: str) -> list[str]:
    """``python run.py serve`` with ``args``, from this checkout."""
    return [sys.executable, str(RUN_PY), "serve", *args]


class ServerProcess:
    """``command --port N`` in ``workdir`` with its own ``LIVEFEED_*`` environment.

    Its output goes to ``workdir/server.log`` (appended across restarts).  It
    runs in a session of its own, so :meth:`kill` also reaches the workers a
    supervisor started.
    """

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        command: Sequence[str] | None = None,
        start_timeout_s: float = 20.0,
    ) -> None:
        self.workdir = workdir
        self.env = dict(env or {})
        self.command = list(command) if command is not None else livefeed_command()
        self.start_timeout_s = start_timeout_s
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self.scheme = "http"  # "https" once the server announced it serves TLS

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the port is known once the server has started")
        return self._port

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    def start(self) -> ServerProcess:
        """Start on port 0 (or the port of the first start); return once ``/readyz`` is 200."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LIVEFEED_")}
        env = {**inherited, **self.env, "PYTHONUNBUFFERED": "1"}
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.command, "--port", str(self._port or 0)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        announced = self._until(deadline, "announce its port", lambda: self._announced(offset))
        if self._port not in (None, announced):
            raise ServerFailed(f"restarted on port {announced}, not {self._port}:\n{self.log()}")
        self._port = announced
        tls = self.scheme == "https"
        self._until(
            deadline, "become ready", lambda: http_status(announced, "/readyz", tls=tls) == 200
        )
        return self

    def _announced(self, offset: int) -> int | None:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            found = LISTENING.search(log.read())
        if not found:
            return None
        self.scheme = found.group(1).decode()
        return int(found.group(2))

    def _until(self, deadline: float, what: str, check: Callable[[], T | None]) -> T:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"the server exited at start-up:\n{self.log()}")
            found = check()
            if found:
                return found
            time.sleep(POLL_S)
        raise ServerFailed(f"the server did not {what} in {self.start_timeout_s} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send ``sig`` (SIGTERM: the graceful goodbye) and wait; SIGKILL if it hangs.
        The exit status, or ``None`` if it was not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        """SIGKILL the server and every process it started."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def http_status(port: int, path: str, *, tls: bool = False) -> int | None:
    """A tiny blocking GET for readiness checks (no client library at start-up); with
    ``tls`` over HTTPS, trusting any certificate (it only asks whether the server is up)."""
    try:
        with (
            socket.create_connection((HOST, port), timeout=1) as raw,
            _UNVERIFIED.wrap_socket(raw) if tls else contextlib.nullcontext(raw) as sock,
        ):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
            head = sock.recv(64)
    except OSError:  # ssl.SSLError is one
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
