"""What a client that stops reading leaves behind once it is cut: nothing.

The write timeout ends the stream (slot, subscription, metrics); the server must
then also let go of the connection itself, whose unsent bytes a never-reading
peer would otherwise keep in the kernel and the transport until shutdown.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx

from tests.support import ServerProcess, eventually

BIG = {"blob": "x" * 4000}


def stalled_sse(server: ServerProcess, path: str) -> socket.socket:
    """An SSE request from a client with a tiny receive buffer that then reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    assert sock.recv(64).startswith(b"HTTP/1.1 200")
    return sock


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[int, str]:
    """Read what the server still sends: how many bytes, and how it ended."""
    sock.settimeout(seconds)
    received = 0
    try:
        while chunk := sock.recv(1 << 16):
            received += len(chunk)
    except ConnectionResetError:
        return received, "reset"
    except TimeoutError:
        return received, "still open"
    return received, "closed"


def test_a_cut_streams_connection_is_aborted_not_left_holding_its_backlog(
    start_server: Callable[..., ServerProcess],
):
    """A stalled SSE client is cut at the write timeout and, soon after, its connection
    is reset: it cannot drain megabytes of backlog long after it was cut."""
    server = start_server(LIVEFEED_WRITE_TIMEOUT_S="2", LIVEFEED_QUEUE_SIZE="200")
    sock = stalled_sse(server, "/sse/wf_stuck")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(10):  # about 4 MB for the stalled client
            batch = [{"type": "big", "workflow_id": "wf_stuck", "data": BIG}] * 100
            assert client.post("/api/events", json=batch).status_code == 201
        eventually(
            lambda: client.get("/api/stats").json()["connections"]["sse"] == 0,
            timeout_s=15,
            what="the stalled stream cut at the write timeout",
        )
    time.sleep(5)  # the write timeout's margin for Hypercorn's own last writes, and then some
    received, ending = read_until_closed(sock, 10)
    sock.close()
    assert ending == "reset", (ending, received)
    assert received < 1_000_000  # not the megabytes of backlog a graceful close keeps
