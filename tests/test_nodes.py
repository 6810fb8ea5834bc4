"""Two nodes on one PostgreSQL log behind Debian's nginx, with deploy/'s configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.nginx_proxy import shipped_nginx
from tests.support import ServerProcess, fresh_postgres_url


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    url = fresh_postgres_url()
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(
            ServerProcess(
                tmp_path / name, {"LIVEFEED_TRUST_PROXY": "127.0.0.1"}, database_url=url
            ).start()
        )
    try:
        with shipped_nginx(tmp_path, [n.port for n in nodes]) as port:
            yield nodes[0], nodes[1], f"127.0.0.1:{port}"
    finally:
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
