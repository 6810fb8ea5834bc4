"""TLS without a proxy: one port serves HTTPS, WSS and HTTP/2 (by ALPN).

Every test uses a self-signed certificate made here with ``cryptography`` for
``127.0.0.1`` and ``localhost``, and real clients that trust only it: curl,
httpx over HTTP/2, and a ``websockets`` client over ``wss://``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from tests.sse_parser import SSEMessage, SSEParser
from tests.support import ServerProcess, event_ids, eventually, skip_or_fail
from tests.test_cli import assert_one_line_error, clean_env, run_cli


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def write_pem(directory: Path, *, encrypted: bool = False) -> Pem:
    """A fresh key and a self-signed certificate for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "livefeed test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    protection = (
        serialization.BestAvailableEncryption(b"passphrase")
        if encrypted
        else serialization.NoEncryption()
    )
    pem = Pem(directory / "cert.pem", directory / "key.pem")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protection)
    )
    return pem


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Pem:
    return write_pem(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def trust(pem: Pem) -> ssl.SSLContext:
    """A client context that trusts the test certificate and nothing else."""
    return ssl.create_default_context(cafile=str(pem.cert))


@pytest.fixture(scope="module")
def tls_server(pem: Pem, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"LIVEFEED_TLS_CERT": str(pem.cert), "LIVEFEED_TLS_KEY": str(pem.key)}
    server = ServerProcess(tmp_path_factory.mktemp("tls-server"), env)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def publish(server: ServerProcess, trust: ssl.SSLContext, count: int) -> list[int]:
    return server.publish([{"type": "tls.test"}] * count, verify=trust)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("curl") is None:
        skip_or_fail("curl is not installed")
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30)


# --- the start ----------------------------------------------------------------------------


def test_start_announces_https_and_the_start_line_names_it(tls_server: ServerProcess):
    """The port is announced as https:// (what the harness reads) and the start line's
    URL and dashboard link are https too."""
    base = f"https://127.0.0.1:{tls_server.port}"
    log = tls_server.log()
    assert f"listening on {base}\n" in log
    assert f"Livefeed on {base}: dashboard at {base}/dashboard/" in log
    assert tls_server.url == base and tls_server.ws_url == f"wss://127.0.0.1:{tls_server.port}"


def test_workers_share_the_tls_port(pem: Pem, trust: ssl.SSLContext, start_server):
    """With --workers 2 the supervisor announces https and each worker serves TLS."""
    server = start_server(
        LIVEFEED_TLS_CERT=str(pem.cert), LIVEFEED_TLS_KEY=str(pem.key), LIVEFEED_WORKERS="2"
    )
    assert server.url.startswith("https://")
    eventually(lambda: server.log().count(f"serving {server.url} ") == 2, what="two workers")
    response = httpx.get(server.url + "/healthz", verify=trust)
    assert response.status_code == 200


# --- HTTP/2 by ALPN -----------------------------------------------------------------------


def test_curl_negotiates_http2_over_tls(tls_server: ServerProcess, pem: Pem):
    """curl --http2 gets HTTP/2 by ALPN; an HTTP/1.1-only client still gets HTTP/1.1."""
    if "HTTP2" not in curl("-V").stdout:
        skip_or_fail("this curl is built without HTTP/2")
    url = tls_server.url + "/healthz"
    h2 = curl("--http2", "--cacert", str(pem.cert), "-o", "/dev/null", "-w", "%{http_version}", url)
    assert h2.returncode == 0 and h2.stdout == "2", h2.stderr
    h1 = curl("--http1.1", "--cacert", str(pem.cert), "-w", " %{http_version}", url)
    assert h1.returncode == 0 and h1.stdout == '{"status":"ok"} 1.1', h1.stderr


def test_curl_follows_sse_over_http2_and_tls(tls_server: ServerProcess, pem: Pem, trust):
    """curl --http2 -N reads the stream over HTTP/2: the replay after Last-Event-ID arrives."""
    first, second = publish(tls_server, trust, 2)
    result = curl(
        "--http2", "-N", "--cacert", str(pem.cert), "--max-time", "2",
        "-H", f"Last-Event-ID: {first}", "-w", "\nhttp_version=%{http_version}",
        tls_server.url + "/sse/validation_updates",
    )  # fmt: skip
    assert result.returncode == 28, result.stderr  # 28: cut by --max-time, the stream was open
    assert result.stdout.endswith("\nhttp_version=2"), result.stdout
    assert "event: connection_established" in result.stdout
    assert f"id: {second}\n" in result.stdout and f"id: {first}\n" not in result.stdout


@pytest.mark.asyncio
async def test_sse_resumes_with_last_event_id_over_http2(tls_server: ServerProcess, trust):
    """A stream opened with Last-Event-ID over HTTP/2 gets exactly the missed events."""
    first, *missed = publish(tls_server, trust, 3)
    async with httpx.AsyncClient(http2=True, verify=trust, timeout=10) as client:
        async with client.stream(
            "GET", tls_server.url + "/sse/validation_updates",
            headers={"Last-Event-ID": str(first)},
        ) as response:  # fmt: skip
            assert response.status_code == 200 and response.http_version == "HTTP/2"
            messages = await read_until(response, lambda ids: len(ids) >= len(missed))
    hello = orjson.loads(messages[0].data)
    assert hello["type"] == "connection_established" and hello["resumed_from"] == first
    assert event_ids(messages) == missed


@pytest.mark.asyncio
async def test_sse_streams_of_one_client_share_one_http2_connection(
    tls_server: ServerProcess, trust
):
    """Three streams from one client are three HTTP/2 streams on one TLS connection: what
    lets a browser page follow more than six channels."""
    async with httpx.AsyncClient(http2=True, verify=trust, timeout=10) as client:
        async with (
            client.stream("GET", tls_server.url + "/sse/validation_updates") as a,
            client.stream("GET", tls_server.url + "/sse/wf_a") as b,
            client.stream("GET", tls_server.url + "/sse/wf_b") as c,
        ):
            for response in (a, b, c):
                hello = await read_until(response, lambda ids: True)
                assert hello[0].event == "connection_established"
            connections = {id(r.extensions["network_stream"]) for r in (a, b, c)}
            streams = {r.extensions["stream_id"] for r in (a, b, c)}
    assert len(connections) == 1 and len(streams) == 3


async def read_until(
    response: httpx.Response, done: Callable[[list[int]], bool]
) -> list[SSEMessage]:
    """Messages from an open SSE response until ``done(event ids so far)``."""
    parser, messages = SSEParser(), []
    async with asyncio.timeout(10):
        async for chunk in response.aiter_raw():
            messages.extend(parser.feed(chunk))
            if messages and done(event_ids(messages)):
                return messages
    raise AssertionError(f"the stream ended early: {messages}")


def test_a_silent_connection_is_closed_after_keep_alive_even_before_tls(
    tls_server: ServerProcess,
):
    """A TCP connection that never starts its TLS handshake is closed after the 5 s
    keep-alive, as a silent plain-HTTP one is, not after Hypercorn's 60 s."""
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=30) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert 4 < time.monotonic() - started < 8


# --- WebSocket over TLS -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_websocket_over_tls_replays_and_answers_pings(tls_server: ServerProcess, trust):
    """wss:// works: a same-origin page (https) is accepted, replay from a cursor, ping."""
    first, second = publish(tls_server, trust, 2)
    url = f"{tls_server.ws_url}/ws/validation_updates?last_event_id={first}"
    async with connect(url, ssl=trust, origin=tls_server.url, open_timeout=5) as ws:
        hello = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["type"] == "connection_established" and hello["transport"] == "websocket"
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["id"] == second
        await ws.send('{"type":"ping"}')
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


# --- start-up errors: one line, naming the setting ------------------------------------------


def test_a_certificate_without_its_key_is_one_line(pem: Pem, tmp_path: Path):
    """Only one of the two settings stops the start, naming both."""
    result = run_cli("serve", cwd=tmp_path, env=clean_env(LIVEFEED_TLS_CERT=str(pem.cert)))
    assert_one_line_error(result, "LIVEFEED_TLS_CERT is set but LIVEFEED_TLS_KEY is not")
    assert not (tmp_path / "data").exists()


def test_a_keyfile_flag_without_certfile_names_the_flags(pem: Pem, tmp_path: Path):
    """The same mistake made with flags names the flags."""
    result = run_cli("serve", "--keyfile", str(pem.key), cwd=tmp_path)
    assert_one_line_error(result, "--keyfile is set but LIVEFEED_TLS_CERT is not", "--certfile")


@pytest.mark.parametrize(
    ("flaw", "needles"),
    [
        ("missing cert", ["--certfile", "cannot read", "nowhere.pem", "No such file"]),
        ("cert is a directory", ["--certfile", "cannot read", "Is a directory"]),
        ("cert is not PEM", ["--certfile", "holds no PEM certificate"]),
        ("missing key", ["--keyfile", "cannot read", "nowhere.pem"]),
        ("key is not PEM", ["--keyfile", "holds no PEM private key"]),
        ("key is encrypted", ["--keyfile", "is encrypted"]),
        ("key of another cert", ["--keyfile", "is not the private key of the certificate"]),
    ],
)
def test_a_bad_certificate_or_key_file_is_one_line(
    flaw: str, needles: list[str], pem: Pem, tmp_path: Path
):
    """Each unusable file stops serve before anything starts, naming its flag and the fix."""
    cert, key = pem.cert, pem.key
    if flaw == "missing cert":
        cert = tmp_path / "nowhere.pem"
    elif flaw == "cert is a directory":
        cert = tmp_path
    elif flaw == "cert is not PEM":
        cert = tmp_path / "cert.txt"
        cert.write_text("not a certificate")
    elif flaw == "missing key":
        key = tmp_path / "nowhere.pem"
    elif flaw == "key is not PEM":
        key = pem.cert  # a certificate is no key
    elif flaw == "key is encrypted":
        key = write_pem(tmp_path / "encrypted", encrypted=True).key
    else:
        key = write_pem(tmp_path / "other").key
    result = run_cli("serve", "--certfile", str(cert), "--keyfile", str(key), cwd=tmp_path)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "data").exists()
