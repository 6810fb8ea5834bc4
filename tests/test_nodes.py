"""Two nodes on one PostgreSQL log behind Debian's nginx, with deploy/'s configuration."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support import (
    ROOT,
    ServerProcess,
    fresh_postgres_url,
    listening_socket,
    skip_or_fail,
)

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


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    if not os.path.exists(NGINX):
        skip_or_fail("nginx is not installed; scripts/test.sh installs it")
    url = fresh_postgres_url()
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(
            ServerProcess(
                tmp_path / name, {"LIVEFEED_TRUST_PROXY": "127.0.0.1"}, database_url=url
            ).start()
        )
    # nginx takes over a socket it inherits (named in $NGINX) instead of binding its
    # own, so the port is ours from the start; its listen line names that address.
    sock = listening_socket()
    port = sock.getsockname()[1]
    proxy = subprocess.Popen(
        [
            NGINX,
            "-c",
            str(nginx_config(tmp_path, port, [n.port for n in nodes])),
            "-g",
            "daemon off;",
        ],
        env={**os.environ, "NGINX": f"{sock.fileno()};"},
        pass_fds=[sock.fileno()],
        stderr=subprocess.PIPE,
    )
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield nodes[0], nodes[1], f"127.0.0.1:{port}"
    finally:
        proxy.terminate()
        proxy.wait(10)
        proxy.stderr.close()
        for node in nodes:
            node.kill()


def test_failover_through_nginx_resumes_on_the_other_node_without_loss(cluster):
    """Publish through node A, receive via nginx from node B; stop B; the client
    reconnects through nginx to A with its last id and gets everything, once, in order."""
    node_a, node_b, proxy = cluster

    async def scenario() -> list[int]:
        for _ in range(10):  # round robin: find a connection that landed on node B
            ws = await connect(f"ws://{proxy}/ws/validation_updates")
            hello = orjson.loads(await ws.recv())
            if hello["node"].endswith(f"/{node_b.process.pid}"):
                break
            await ws.close()
        else:
            raise AssertionError("nginx never routed to node B")
        seen: list[int] = []
        first = node_a.publish([{"type": "before", "data": {"n": n}} for n in range(3)])
        async with asyncio.timeout(10):
            while len(seen) < 3:
                seen.append(orjson.loads(await ws.recv())["id"])
        assert seen == first
        stopping = asyncio.create_task(asyncio.to_thread(node_b.stop))
        try:
            async with asyncio.timeout(10):
                while True:
                    frame = orjson.loads(await ws.recv())
                    assert frame.get("error") == "shutting_down"
        except ConnectionClosed:
            pass
        assert ws.close_code == 1012
        await stopping
        during = node_a.publish([{"type": "during", "data": {"n": n}} for n in range(5)])
        async with connect(f"ws://{proxy}/ws/validation_updates?last_event_id={seen[-1]}") as again:
            hello = orjson.loads(await again.recv())
            assert hello["node"].endswith(f"/{node_a.process.pid}")
            async with asyncio.timeout(10):
                while len(seen) < 8:
                    seen.append(orjson.loads(await again.recv())["id"])
        assert seen == first + during
        return seen

    asyncio.run(scenario())
