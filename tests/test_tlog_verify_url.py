"""``livefeed verify FILE --url BASE``: any export checked against a live server's
inclusion proofs, every altered event named by id."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from app.cli import main
from app.tlog import Checkpoint, SignerKey
from app.tlog.exports import Record
from app.tlog.remote import aligned_subtrees, verify_with_proofs
from tests import rfc9162
from tests.support import ROOT, ServerProcess

TOKEN = "reader-token-for-verify"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with 70 events in three workflows, reading behind a token."""
    started = ServerProcess(tmp_path_factory.mktemp("server"), {"LIVEFEED_READ_TOKEN": TOKEN})
    started.start()
    try:
        for batch in range(7):
            started.publish(
                [
                    {
                        "type": "step.done",
                        "workflow_id": f"wf_{n % 3}",
                        "data": {"b": batch, "n": n},
                    }
                    for n in range(10)
                ]
            )
        yield started
    finally:
        started.kill()


def export(server: ServerProcess, **params: str) -> bytes:
    answer = httpx.get(
        f"{server.url}/api/events",
        params={"format": "ndjson", **params},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.content


def run_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, *args: str
) -> tuple[int, str, str]:
    (tmp_path / "export.ndjson").write_bytes(content)
    status = main(["verify", str(tmp_path / "export.ndjson"), *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def with_url(server: ServerProcess) -> list[str]:
    return ["--url", server.url, "--token", TOKEN]


def test_a_whole_export_verifies_fetching_checkpoint_and_key(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With only --url, checkpoint and key come from the server, and that is said."""
    status, out, err = run_verify(tmp_path, capsys, export(server), *with_url(server))
    assert status == 0, out
    assert "verified: 70 events, each in the tree of size 70" in out
    assert "not pinned" in err


@pytest.mark.parametrize(
    "params", [{"workflow_id": "wf_1"}, {"after": "33"}, {"types": "step.done", "after": "68"}]
)
def test_filtered_and_partial_exports_verify_against_a_pinned_key(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str], params: dict
) -> None:
    """An export that is not ids 1..N verifies event by event, with the key file given."""
    (tmp_path / "key").write_bytes(httpx.get(f"{server.url}/api/log/key", timeout=10).content)
    content = export(server, **params)
    status, out, err = run_verify(
        tmp_path, capsys, content, *with_url(server), "--key", str(tmp_path / "key")
    )
    assert status == 0, out
    assert f"verified: {len(content.splitlines())} events" in out and not err


def test_every_altered_event_is_named(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Data changed in well-encoded lines, a re-encoded line, a repeated line and an
    invented id: each is named, by id; exit status 1."""
    lines = export(server).splitlines()
    lines[4] = lines[4].replace(b'"n":4', b'"n":7')  # id 5
    lines[40] = lines[40].replace(b'"b":4', b'"b":5')  # id 41
    lines[41] = lines[41].replace(b'"wf_1"', b'"wf_0"')  # id 42
    lines[60] = lines[60].replace(b'"data":{', b'"data": {')  # id 61, not the encoding
    lines.append(lines[10])  # id 11 again
    lines.append(lines[0].replace(b'"id":1,', b'"id":71,'))
    status, out, _ = run_verify(tmp_path, capsys, b"\n".join(lines) + b"\n", *with_url(server))
    assert status == 1
    assert (
        "ids not the events the checkpoint signed (their inclusion proofs fail): 5, 41..42" in out
    )
    assert "line 61 (id 61) is not the server's encoding" in out
    assert "ids repeated: 11" in out
    assert "ids outside 1..70, the checkpoint's size: 71" in out


def test_a_trimmed_log_still_verifies_by_proofs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After trimming, the export starts past id 1: offline it cannot verify, with --url it does."""
    (tmp_path / "srv").mkdir()
    server = ServerProcess(tmp_path / "srv").start()
    try:
        for batch in range(4):
            server.publish([{"type": "tick", "data": {"b": batch, "n": n}} for n in range(9)])
        trim = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), "trim", "--retention", "10"],
            env={**os.environ, "LIVEFEED_DATABASE_URL": server.database_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert trim.returncode == 0, trim.stderr
        content = export_open(server)
        assert content.splitlines()[0].startswith(b'{"id":27,')
        (tmp_path / "cp").write_bytes(httpx.get(f"{server.url}/api/log/checkpoint").content)
        (tmp_path / "key").write_bytes(httpx.get(f"{server.url}/api/log/key").content)
        files = ["--checkpoint", str(tmp_path / "cp"), "--key", str(tmp_path / "key")]
        status, out, _ = run_verify(tmp_path, capsys, content, *files)
        assert status == 1 and "ids missing: 1..26" in out
        status, out, _ = run_verify(tmp_path, capsys, content, *files, "--url", server.url)
        assert status == 0, out
    finally:
        server.kill()


def export_open(server: ServerProcess) -> bytes:
    return httpx.get(f"{server.url}/api/events?format=ndjson", timeout=10).content


def test_an_older_checkpoint_file_names_the_newer_events(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint file kept from before some events: those are outside it."""
    key = SignerKey.generate("livefeed/test")
    lines = export(server).splitlines()
    (tmp_path / "key").write_text(key.verifier().encode())
    stale = Checkpoint("livefeed/test", 60, rfc9162.mth(lines[:60])).sign(key)
    (tmp_path / "cp").write_text(stale)
    files = ["--checkpoint", str(tmp_path / "cp"), "--key", str(tmp_path / "key")]
    status, out, _ = run_verify(tmp_path, capsys, b"\n".join(lines) + b"\n", *files)
    assert status == 1 and "ids outside 1..60, the checkpoint's size: 61..70" in out


def test_a_key_the_log_never_used_refuses_the_checkpoint(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pinned key that did not sign the server's checkpoint: nothing is verified."""
    other = SignerKey.generate("livefeed/elsewhere").verifier().encode()
    (tmp_path / "key").write_text(other)
    status, out, _ = run_verify(
        tmp_path, capsys, export(server), *with_url(server), "--key", str(tmp_path / "key")
    )
    assert status == 1 and "checkpoint not verified" in out


def test_without_the_read_token_the_command_says_so(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Proofs need the read credential: one line naming --token, exit status 2."""
    status, _, err = run_verify(tmp_path, capsys, export(server), "--url", server.url)
    assert status == 2 and "answered 401" in err and "--token" in err


def test_offline_without_files_asks_for_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --url, --checkpoint and --key are needed: one line, exit status 2."""
    status, _, err = run_verify(tmp_path, capsys, b"")
    assert status == 2 and "--checkpoint and --key" in err


def test_a_contiguous_export_costs_one_proof_per_aligned_subtree() -> None:
    """Ids 3..1000 of 1000 are 13 aligned subtrees, so 13 proofs, not 998; one altered
    leaf costs one more per level of the subtree it is in."""
    entries = [b"leaf %d" % n for n in range(1000)]
    checkpoint = Checkpoint("livefeed/test", 1000, rfc9162.mth(entries))
    asked: list[int] = []

    async def proof(index: int, size: int) -> Sequence[bytes]:
        asked.append(index)
        return rfc9162.path(index, entries[:size])

    records = [Record(n, n, entries[n - 1]) for n in range(3, 1001)]
    assert len(aligned_subtrees(2, 1000)) == 13
    count, problems = asyncio.run(verify_with_proofs(records, checkpoint, proof))
    assert (count, problems, len(asked)) == (998, [], 13)
    records[500] = Record(503, 503, b"forged")
    asked.clear()
    _, problems = asyncio.run(verify_with_proofs(records, checkpoint, proof))
    assert problems == [
        "ids not the events the checkpoint signed (their inclusion proofs fail): 503"
    ]
    assert len(asked) <= 13 + 2 * 9  # 503 is in the subtree of 256 leaves 256..511


def test_the_tlog_benchmark_verifies_the_export_of_the_log_it_filled() -> None:
    """python -m bench.tlog --smoke: fill, proofs, export and both verifications succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.tlog", "--smoke", "--no-pin"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "inclusion proof" in done.stdout and "verify --url" in done.stdout
