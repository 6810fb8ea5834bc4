"""The verifiable log's endpoints on a live server, on both engines.

Every checkpoint is opened and every proof checked here without the server's
own code: the note and key by hand with ``cryptography``, the proofs with
``tests/rfc9162.py`` (the RFC's algorithms), over the leaves of an NDJSON
export.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.tlog import SignerKey
from tests import rfc9162
from tests.support import ServerProcess, assert_error

pytestmark = pytest.mark.both_engines

Start = Callable[..., ServerProcess]


def publish_batches(server: ServerProcess, sizes: list[int]) -> None:
    for n, size in enumerate(sizes):
        events = [
            {"type": "step.done", "workflow_id": f"wf_{i % 3}", "data": {"batch": n, "i": i}}
            for i in range(size)
        ]
        server.publish(events if size > 1 else events[0])


def leaves(server: ServerProcess, **headers: str) -> list[bytes]:
    """The NDJSON export's lines: each is the leaf of its event."""
    answer = httpx.get(f"{server.url}/api/events?format=ndjson", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.content.splitlines()


def opened_checkpoint(note: bytes, vkey: str) -> tuple[str, int, bytes]:
    """(origin, size, root) of a C2SP signed checkpoint, checked by hand: key ID,
    one signature line by that key, Ed25519 over the text."""
    name, key_id, encoded = vkey.strip().split("+", 2)
    raw = base64.b64decode(encoded)
    assert raw[0] == 1 and len(raw) == 33
    assert hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() == key_id
    text, _, signatures = note.decode().partition("\n\n")
    [line] = signatures.splitlines()
    dash, signer, blob = line.split(" ")
    signature = base64.b64decode(blob)
    assert (dash, signer, signature[:4].hex()) == ("\u2014", name, key_id)
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(signature[4:], (text + "\n").encode())
    origin, size, root = text.split("\n")
    assert origin == name
    return origin, int(size), base64.b64decode(root)


def get(server: ServerProcess, path: str, **params: Any) -> httpx.Response:
    return httpx.get(server.url + path, params=params, timeout=10)


def signed(server: ServerProcess) -> tuple[str, int, bytes]:
    key = get(server, "/api/log/key")
    note = get(server, "/api/log/checkpoint")
    assert note.headers["content-type"] == "text/plain; charset=utf-8"
    return opened_checkpoint(note.content, key.text)


def hashes(answer: httpx.Response) -> list[bytes]:
    assert answer.status_code == 200, answer.text
    return [base64.b64decode(h) for h in answer.json()["hashes"]]


def test_checkpoint_and_every_proof_verify_by_rfc9162(server: ServerProcess) -> None:
    """The signed root is the RFC's MTH of the export; every inclusion and consistency
    proof is the RFC's, and verifies by its algorithms."""
    publish_batches(server, [1, 5, 2, 8, 1, 3])
    entries = leaves(server)
    _, size, root = signed(server)
    assert size == len(entries) == 20
    assert root == rfc9162.mth(entries)
    with httpx.Client(base_url=server.url, timeout=10) as client:  # one connection, 240 proofs
        for tree_size in (1, 2, 7, 13, size):
            tree_root = rfc9162.mth(entries[:tree_size])
            for leaf in range(1, tree_size + 1):
                answer = client.get(
                    "/api/log/proof/inclusion", params={"id": leaf, "tree_size": tree_size}
                )
                assert answer.json()["leaf_index"] == leaf - 1
                assert answer.json()["tree_size"] == tree_size
                proof = hashes(answer)
                assert proof == rfc9162.path(leaf - 1, entries[:tree_size])
                leaf_hash = rfc9162.sha256(b"\x00" + entries[leaf - 1])
                assert rfc9162.verify_inclusion(leaf - 1, tree_size, leaf_hash, proof, tree_root)
        for second in range(1, size + 1):
            for first in range(1, second):
                query = {"first": first, "second": second}
                answer = client.get("/api/log/proof/consistency", params=query)
                assert answer.json()["first"] == first and answer.json()["second"] == second
                old, new = rfc9162.mth(entries[:first]), rfc9162.mth(entries[:second])
                assert rfc9162.verify_consistency(first, second, old, new, hashes(answer))
    same = get(server, "/api/log/proof/consistency", first=size, second=size)
    assert same.json() == {"first": size, "second": size, "hashes": []}
    default = get(server, "/api/log/proof/inclusion", id=3)
    assert default.json()["tree_size"] == size and hashes(default) == rfc9162.path(2, entries)


def test_a_checkpoint_covers_every_acknowledged_event(server: ServerProcess) -> None:
    """Asked right after a publish is acknowledged, the checkpoint already covers it."""
    for turn in range(15):
        [last] = server.publish({"type": "tick", "data": {"turn": turn}})[-1:]
        _, size, _ = signed(server)
        assert size >= last


def test_an_empty_log_has_size_0_and_nothing_to_prove(server: ServerProcess) -> None:
    """Size 0, root SHA-256(""); any proof is 400."""
    assert signed(server)[1:] == (0, hashlib.sha256(b"").digest())
    assert_error(get(server, "/api/log/proof/inclusion", id=1), 400, "bad_parameter")
    assert_error(get(server, "/api/log/proof/consistency", first=1, second=1), 400)


BAD_QUERIES = [  # (endpoint, query, the parameter the answer must name), on a log of 5
    ("inclusion", "id=0", "id"),
    ("inclusion", "id=6", "id"),
    ("inclusion", "id=2&tree_size=1", "id"),
    ("inclusion", "id=1&tree_size=6", "tree_size"),
    ("inclusion", "id=1&tree_size=0", "tree_size"),
    ("inclusion", "", "id"),
    ("inclusion", "tree_size=3", "id"),
    ("inclusion", "id=-1", "id"),
    ("inclusion", "id=+1", "id"),
    ("inclusion", "id=%201", "id"),
    ("inclusion", "id=1.0", "id"),
    ("inclusion", "id=%D9%A1", "id"),  # an Arabic-Indic one
    ("inclusion", "id=0x1", "id"),
    ("inclusion", "id=99999999999999999999", "id"),
    ("inclusion", "id=1&id=1", "id"),
    ("inclusion", "id=1&tree_size=5&tree_size=5", "tree_size"),
    ("inclusion", "id=1&size=5", "size"),
    ("consistency", "first=0&second=3", "first"),
    ("consistency", "first=4&second=3", "first"),
    ("consistency", "first=1&second=6", "second"),
    ("consistency", "first=1", "second"),
    ("consistency", "second=2", "first"),
    ("consistency", "first=1&second=2&second=2", "second"),
    ("consistency", "first=1&second=x", "second"),
    ("consistency", "first=1&second=2&tree_size=2", "tree_size"),
]


@pytest.mark.parametrize(("kind", "query", "named"), BAD_QUERIES)
def test_out_of_range_malformed_repeated_or_unknown_parameters_are_400(
    server: ServerProcess, kind: str, query: str, named: str
) -> None:
    """Never a proof of something else: 400 bad_parameter naming the parameter."""
    publish_batches(server, [5])
    answer = httpx.get(f"{server.url}/api/log/proof/{kind}?{query}", timeout=10)
    body = assert_error(answer, 400, "bad_parameter")
    assert body["detail"].startswith((f"{named}=", f"{named} ", f"unknown parameter '{named}'"))


def test_proofs_need_the_read_credential_and_the_checkpoint_and_key_do_not(
    start_server: Start,
) -> None:
    """With a read token, proofs are 401 without it; checkpoint and key stay public."""
    server = start_server(LIVEFEED_READ_TOKEN="reader-secret")
    publish_batches(server, [3])
    bearer = {"Authorization": "Bearer reader-secret"}
    for path in ("/api/log/proof/inclusion?id=1", "/api/log/proof/consistency?first=1&second=3"):
        assert_error(httpx.get(server.url + path, timeout=10), 401)
        assert httpx.get(server.url + path, headers=bearer, timeout=10).status_code == 200
        with_query = f"{server.url}{path}&access_token=reader-secret"
        assert httpx.get(with_query, timeout=10).status_code == 200
    assert signed(server)[1] == 3


def test_a_restart_keeps_the_key_and_the_history(start_server: Start) -> None:
    """After a restart the same key signs a checkpoint consistent with the old one."""
    server = start_server()
    publish_batches(server, [4, 3])
    key = get(server, "/api/log/key").text
    _, before, old_root = signed(server)
    server.stop()
    server.start()
    publish_batches(server, [2])
    assert get(server, "/api/log/key").text == key
    _, after, new_root = signed(server)
    proof = hashes(get(server, "/api/log/proof/consistency", first=before, second=after))
    assert rfc9162.verify_consistency(before, after, old_root, new_root, proof)


def test_two_nodes_on_one_log_sign_with_the_same_key(
    start_server: Start, engine: str, tmp_path: Path
) -> None:
    """A second server on the same database (another node, or another process on the
    same SQLite file) serves the same key and identical checkpoints."""
    first = start_server(LIVEFEED_LOG_ORIGIN="audit.example/shared")
    publish_batches(first, [6])
    workdir = tmp_path / "second"
    workdir.mkdir()
    second = ServerProcess(workdir, {}, database_url=first.database_url).start()
    try:
        publish_batches(second, [2])
        assert get(first, "/api/log/key").text == get(second, "/api/log/key").text
        assert (
            get(first, "/api/log/checkpoint").content == get(second, "/api/log/checkpoint").content
        )
        origin, size, root = signed(second)
        assert (origin, size) == ("audit.example/shared", 8)
        assert root == rfc9162.mth(leaves(first))
    finally:
        second.kill()


def test_the_endpoints_are_in_the_openapi_document(server: ServerProcess) -> None:
    """/openapi.json lists the four endpoints, with the proofs' parameters."""
    paths = httpx.get(f"{server.url}/openapi.json", timeout=10).json()["paths"]
    for path in ("checkpoint", "key", "proof/inclusion", "proof/consistency"):
        assert "get" in paths[f"/api/log/{path}"]
    parameters = paths["/api/log/proof/inclusion"]["get"]["parameters"]
    assert {p["name"] for p in parameters} == {"id", "tree_size"}


def test_the_configured_signing_key_signs(start_server: Start) -> None:
    """LIVEFEED_SIGNING_KEY is the key: its name is the origin, its verifier key is served."""
    key = SignerKey.generate("feed.example/prod")
    server = start_server(LIVEFEED_SIGNING_KEY=key.encode())
    publish_batches(server, [2])
    assert get(server, "/api/log/key").text == key.verifier().encode() + "\n"
    assert signed(server)[0] == "feed.example/prod"
