"""Debian's nginx running deploy/nginx-livefeed.conf in front of the given upstream ports."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port
from tests.test_nodes import NGINX, nginx_config


def require_nginx() -> None:
    """Skip without nginx on a developer machine; fail in CI, where it must be there."""
    if not os.path.exists(NGINX):
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed; scripts/test.sh installs it")
        pytest.skip("nginx is not installed")


@contextlib.contextmanager
def shipped_nginx(workdir: Path, upstreams: list[int]) -> Iterator[int]:
    """The shipped site configuration, listening on a free loopback port (yielded)."""
    require_nginx()
    port = free_port()
    proxy = subprocess.Popen(
        [NGINX, "-c", str(nginx_config(workdir, port, upstreams)), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proxy.poll() is not None or time.monotonic() > deadline:
                assert proxy.stderr is not None
                raise RuntimeError(f"nginx did not start: {proxy.stderr.read().decode()}")
            time.sleep(0.05)
        yield port
    finally:
        proxy.terminate()
        proxy.wait(10)
        if proxy.stderr is not None:
            proxy.stderr.close()


def non_loopback_address() -> str:
    """This machine's address on its default route: a client seen from it is not loopback
    (no packet is sent to find it).  Skips without one on a developer machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        if os.environ.get("CI") == "true":
            pytest.fail("no non-loopback IPv4 address to act as a remote client")
        pytest.skip("no non-loopback IPv4 address to act as a remote client")
    return address
