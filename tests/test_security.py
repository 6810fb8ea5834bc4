"""Origins, hosts, CORS and security headers (FAULTS 23-27, 49)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support import ServerProcess


def raw_handshake_status(server: ServerProcess, host: str, origin: str) -> int:
    """A hand-written upgrade request, since clients derive Host from the URL."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            f"GET /ws/validation_updates HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        return int(sock.recv(1024).split(b" ", 2)[1])


async def handshake(server: ServerProcess, origin: str | None) -> int:
    try:
        async with connect(server.ws_url + "/ws/validation_updates", origin=origin) as ws:
            await ws.recv()
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


@pytest.fixture
def guarded(start_server) -> ServerProcess:
    return start_server(LIVEFEED_ALLOWED_ORIGINS="https://app.example.com,http://localhost:3000")


@pytest.mark.parametrize(("origin", "expected"), [
    (None, 101),                                     # curl and scripts are not browsers
    ("https://app.example.com", 101),                # listed
    ("HTTPS://APP.EXAMPLE.COM:443", 101),            # case and default port normalised
    ("http://localhost:3000", 101),
    ("https://app.example.com.evil.net", 403),       # the prefix trick
    ("null", 403),                                   # sandboxed frames, file: pages
    ("http://localhost:3001", 403),                  # same host, other port
    ("https://evil.example", 403),
])
def test_websocket_origin_rules(guarded: ServerProcess, origin, expected):
    """Browsers' handshakes pass only from the server's own origin or the allow-list."""
    assert asyncio.run(handshake(guarded, origin)) == expected


def test_same_origin_page_is_allowed_without_configuration(server: ServerProcess):
    """The dashboard's own origin needs no setting."""
    assert asyncio.run(handshake(server, server.url)) == 101


def test_refused_origin_gets_403_json_naming_origin_and_setting(guarded: ServerProcess):
    """The refusal says which origin was refused and which setting would allow it."""

    async def refuse() -> httpx.Response:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(guarded.ws_url + "/ws/validation_updates",
                               origin="http://intranet:3000"):
                pass
        return refused.value.response

    response = asyncio.run(refuse())
    body = orjson.loads(response.body)
    assert response.status_code == 403 and body["error"] == "origin_not_allowed"
    assert "http://intranet:3000" in body["detail"]
    assert "LIVEFEED_ALLOWED_ORIGINS" in body["detail"]
    diag = httpx.get(guarded.url + "/api/diag/ws/validation_updates",
                     params={"origin": "http://intranet:3000"}).json()
    assert diag["ok"] is False and diag["reason"] == "origin_not_allowed"
    assert httpx.get(guarded.url + "/api/diag/ws/validation_updates",
                     params={"origin": "https://app.example.com"}).json()["ok"] is True
    assert httpx.get(guarded.url + "/api/diag/ws/no%2Fsuch").json()["reason"] == "not_found"


def test_dns_rebinding_host_is_refused_on_every_surface(server: ServerProcess):
    """Host: attacker.example with a matching Origin is refused (421) before anything else."""
    evil = {"Host": f"attacker.example:{server.port}",
            "Origin": f"http://attacker.example:{server.port}"}
    assert httpx.get(server.url + "/sse/validation_updates", headers=evil).status_code == 421
    response = httpx.post(server.url + "/api/events", content=b'{"type":"a"}',
                          headers={**evil, "Content-Type": "application/json"})
    assert response.status_code == 421 and response.json()["error"] == "host_not_allowed"
    assert raw_handshake_status(server, evil["Host"], evil["Origin"]) == 421
    assert server.events() == []


def test_api_and_dashboard_send_security_headers(server: ServerProcess):
    """JSON answers forbid framing and sniffing; the dashboard has a strict CSP."""
    api = httpx.get(server.url + "/api/stats")
    assert api.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in api.headers["content-security-policy"]
    page = httpx.get(server.url + "/dashboard/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp


def test_cors_for_allowed_origins_only(guarded: ServerProcess):
    """HTTP CORS uses the same allow-list; SSE answers carry it too."""
    allowed = {"Origin": "https://app.example.com"}
    api = httpx.get(guarded.url + "/api/events", headers=allowed)
    assert api.headers["access-control-allow-origin"] == "https://app.example.com"
    other = httpx.get(guarded.url + "/api/events", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers

    async def sse_headers() -> httpx.Headers:
        async with httpx.AsyncClient() as client, client.stream(
            "GET", guarded.url + "/sse/validation_updates", headers=allowed
        ) as response:
            return response.headers

    assert asyncio.run(sse_headers())["access-control-allow-origin"] == "https://app.example.com"


def test_same_origin_behind_a_tls_proxy_uses_forwarded_proto_and_host(start_server):
    """Behind a trusted proxy that terminates TLS, https://public.example is same-origin."""
    server = start_server(LIVEFEED_TRUST_PROXY="127.0.0.1")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}

    async def open_with(headers: dict[str, str]) -> int:
        try:
            async with connect(server.ws_url + "/ws/validation_updates",
                               origin="https://public.example", additional_headers=headers):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    assert asyncio.run(open_with(forwarded)) == 101
    assert asyncio.run(open_with({})) == 403
