"""Debian's nginx running deploy/nginx-livefeed.conf in front of the given upstream ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support import ROOT, listening_socket, skip_or_fail

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_config(workdir: Path, listen: int, nodes: list[int]) -> Path:
    """deploy/nginx-livefeed.conf with this test's ports, inside a minimal main config."""
    site = (ROOT / "deploy" / "nginx-livefeed.conf").read_text()
    upstreams = "".join(
        f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n" for port in nodes
    )
    lines = [
        line
        for line in site.splitlines(keepends=True)
        if not line.strip().startswith("server 127.0.0.1:")
    ]
    site = "".join(lines).replace("    keepalive 64;", upstreams + "    keepalive 64;")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    (workdir / "livefeed.conf").write_text(site)
    main = workdir / "nginx.conf"
    main.write_text(
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {workdir}/body;\n"
        f"  proxy_temp_path {workdir}/proxy;\n  include {workdir}/livefeed.conf;\n}}\n"
    )
    return main


@contextlib.contextmanager
def shipped_nginx(workdir: Path, upstreams: list[int]) -> Iterator[int]:
    """nginx with the shipped site configuration in front of ``upstreams``; yields the
    port it listens on, once it runs."""
    if not os.path.exists(NGINX):
        skip_or_fail("nginx is not installed; scripts/test.sh installs it")
    # nginx takes over a socket it inherits (named in $NGINX) instead of binding its
    # own, so the port is ours from the start; its listen line names that address.
    sock = listening_socket()
    port = sock.getsockname()[1]
    proxy = subprocess.Popen(
        [NGINX, "-c", str(nginx_config(workdir, port, upstreams)), "-g", "daemon off;"],
        env={**os.environ, "NGINX": f"{sock.fileno()};"},
        pass_fds=[sock.fileno()],
        stderr=subprocess.PIPE,
    )
    sock.close()
    try:
        deadline = time.monotonic() + 10  # started once it has written its pid file
        while not (workdir / "nginx.pid").exists() and time.monotonic() < deadline:
            if proxy.poll() is not None:
                assert proxy.stderr is not None
                raise RuntimeError(f"nginx did not start: {proxy.stderr.read().decode()}")
            time.sleep(0.05)
        yield port
    finally:
        proxy.terminate()
        proxy.wait(10)
        assert proxy.stderr is not None
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
        skip_or_fail("no non-loopback IPv4 address to act as a remote client")
    return address
