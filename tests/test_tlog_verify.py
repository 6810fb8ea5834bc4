"""run.py verify: real exports pass, every kind of tampering is caught and named."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from app.cli import main
from app.tlog import Checkpoint, SignerKey
from tests import rfc9162
from tests.support import ROOT, ServerProcess

ORIGIN = "livefeed/test"
FORMULA_IDS = {11: "-2-3", 13: "-A1"}


@dataclass(frozen=True)
class Exports:
    """The same log exported by a real server as NDJSON and as CSV."""

    ndjson: bytes
    csv: bytes

    @property
    def lines(self) -> list[bytes]:
        return self.ndjson.splitlines()


def _varied_events() -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    for n in range(40):
        data: dict[str, object] = {
            "n": n,
            "text": 'comma, "quote" and é ✓' if n % 3 == 0 else "plain",
            "x": n / 7,
            "big": 2**63 + n,
            "nested": {"list": [1, None, True, {"k": "v"}]},
        }
        event: dict[str, object] = {"type": f"step.{n % 4}", "data": data if n % 5 else {}}
        if n % 2:  # two ids a spreadsheet would run as formulas: the CSV neutralises them
            event["workflow_id"] = FORMULA_IDS.get(n, f"wf:{n % 3}")
        events.append(event)
    return events


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exports]:
    """One real server's log of varied events, exported in both formats."""
    server = ServerProcess(tmp_path_factory.mktemp("server")).start()
    try:
        events = _varied_events()
        server.publish(events[:25])
        for event in events[25:]:
            server.publish(event)
        fetched = [
            httpx.get(f"{server.url}/api/events", params={"format": f}, timeout=30).content
            for f in ("ndjson", "csv")
        ]
    finally:
        server.kill()
    yield Exports(*fetched)


@pytest.fixture(scope="module")
def key() -> SignerKey:
    return SignerKey.generate(ORIGIN)


def checkpoint_over(lines: list[bytes], key: SignerKey, size: int | None = None) -> str:
    """A checkpoint whose root is RFC 9162's MTH of ``lines``, computed in the test."""
    return Checkpoint(ORIGIN, len(lines) if size is None else size, rfc9162.mth(lines)).sign(key)


def verify(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    export: bytes,
    checkpoint: str,
    vkey: str,
) -> tuple[int, str]:
    """Run ``verify`` on files holding these bytes; returns its status and output."""
    (tmp_path / "export").write_bytes(export)
    (tmp_path / "checkpoint").write_text(checkpoint)
    (tmp_path / "key").write_text(vkey + "\n")
    status = main(verify_args(tmp_path, "export"))
    return status, capsys.readouterr().out


def verify_args(folder: Path, export: str) -> list[str]:
    checkpoint, key = str(folder / "checkpoint"), str(folder / "key")
    return ["verify", str(folder / export), "--checkpoint", checkpoint, "--key", key]


def join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_real_export_verifies(exports, key, tmp_path, capsys, fmt):
    """The server's NDJSON and CSV exports both verify against the same checkpoint."""
    checkpoint = checkpoint_over(exports.lines, key)
    status, out = verify(tmp_path, capsys, getattr(exports, fmt), checkpoint, _vkey(key))
    assert status == 0, out
    assert f"verified: {len(exports.lines)} events, ids 1..{len(exports.lines)}" in out


def test_a_csv_export_with_neutralised_formula_cells_verifies(exports, key, tmp_path, capsys):
    """Workflow ids like -2-3 are written '-2-3 in quotes (OWASP's CSV-injection rule),
    and verify reads them back as the event's own: the export still verifies."""
    rows = exports.csv.split(b"\r\n")
    assert rows[12].split(b",")[2] == b"\"'-2-3\"" and rows[14].split(b",")[2] == b"\"'-A1\""
    checkpoint = checkpoint_over(exports.lines, key)
    status, out = verify(tmp_path, capsys, exports.csv, checkpoint, _vkey(key))
    assert status == 0, out


def _vkey(key: SignerKey) -> str:
    return key.verifier().encode()


def test_an_empty_log_verifies(key, tmp_path, capsys):
    """Size 0, root SHA-256(""), an empty file: verified."""
    status, out = verify(tmp_path, capsys, b"", checkpoint_over([], key), _vkey(key))
    assert status == 0, out


def test_a_changed_byte_fails_the_root(exports, key, tmp_path, capsys):
    """A digit changed inside data keeps the encoding: the root says it was altered."""
    lines = exports.lines
    altered = [*lines[:9], lines[9].replace(b'"n":9', b'"n":8'), *lines[10:]]
    assert altered != lines
    status, out = verify(tmp_path, capsys, join(altered), checkpoint_over(lines, key), _vkey(key))
    assert status == 1
    assert "do not hash to the checkpoint's root" in out and "line 10" not in out


def test_a_changed_byte_in_a_csv_row_fails_the_root(exports, key, tmp_path, capsys):
    """The same alteration in a CSV data column is caught too."""
    rows = exports.csv.split(b"\r\n")
    rows[10] = rows[10].replace(b'""n"":9', b'""n"":8')
    assert rows != exports.csv.split(b"\r\n")
    checkpoint = checkpoint_over(exports.lines, key)
    status, out = verify(tmp_path, capsys, b"\r\n".join(rows), checkpoint, _vkey(key))
    assert status == 1 and "do not hash to the checkpoint's root" in out


def test_a_re_encoded_line_is_named(exports, key, tmp_path, capsys):
    """Same fields, other bytes (spaces, key order): the line and id are named."""
    lines = exports.lines
    spaced = json.dumps(orjson.loads(lines[4]), ensure_ascii=False).encode()
    fields = orjson.loads(lines[6])
    reordered = orjson.dumps({"type": fields.pop("type"), **fields})
    altered = [*lines[:4], spaced, lines[5], reordered, *lines[7:]]
    status, out = verify(tmp_path, capsys, join(altered), checkpoint_over(lines, key), _vkey(key))
    assert status == 1
    assert "line 5 (id 5) is not the server's encoding" in out
    assert "line 7 (id 7) is not the server's encoding" in out


def test_a_non_compact_csv_data_column_is_named(exports, key, tmp_path, capsys):
    """A CSV row whose data is not compact JSON is named by line and id."""
    rows = exports.csv.split(b"\r\n")
    rows[3] = rows[3].replace(b'""n"":2', b'""n"": 2')
    checkpoint = checkpoint_over(exports.lines, key)
    status, out = verify(tmp_path, capsys, b"\r\n".join(rows), checkpoint, _vkey(key))
    assert status == 1 and "line 4 (id 3) is not the server's encoding" in out


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (b"5,", b"05,", "line 6 (id 5) is not the server's encoding: id '05' has leading zeros"),
        (b"5,", b"5,x,", "line 6 is not a row of id,type,workflow_id,ts,data"),
        (b"5,", b"5,\xff", "line 6 is not one UTF-8 CSV row"),
        (b"5,step.0,", b"5,Step.0,", "line 6 (id 5) is not the server's encoding: type"),
    ],
)
def test_unreadable_csv_rows_are_named(exports, key, tmp_path, capsys, old, new, expected):
    """A CSV row the server would not write is named by line (and id when readable)."""
    rows = exports.csv.split(b"\r\n")
    assert rows[5].startswith(old)
    rows[5] = new + rows[5][len(old) :]
    checkpoint = checkpoint_over(exports.lines, key)
    status, out = verify(tmp_path, capsys, b"\r\n".join(rows), checkpoint, _vkey(key))
    assert status == 1 and expected in out, out


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda ls: ls[:6] + ls[7:], "ids missing: 7"),
        (lambda ls: ls[:7] + ls[6:], "ids repeated: 7"),
        (lambda ls: [*ls[:5], ls[6], ls[5], *ls[7:]], "ids out of order: 6"),
        (lambda ls: ls[:-3], "ids missing: 38..40"),
        (lambda ls: [*ls[:2], b"not json", *ls[2:]], "line 3 is not JSON"),
    ],
)
def test_missing_repeated_and_reordered_ids_are_named(
    exports, key, tmp_path, capsys, edit, expected
):
    """Each id that is missing, repeated or out of order is named; the root is not compared."""
    lines = exports.lines
    status, out = verify(
        tmp_path, capsys, join(edit(lines)), checkpoint_over(lines, key), _vkey(key)
    )
    assert status == 1
    assert expected in out and "root not compared" in out


def test_an_export_past_the_checkpoint_names_the_extra_ids(exports, key, tmp_path, capsys):
    """Ids beyond the checkpoint's size are named as outside it."""
    lines = exports.lines
    checkpoint = checkpoint_over(lines[:37], key)
    status, out = verify(tmp_path, capsys, exports.ndjson, checkpoint, _vkey(key))
    assert status == 1 and "ids outside 1..37, the checkpoint's size: 38..40" in out
    assert "root" not in out  # the first 37 lines did hash to the signed root


def test_another_key_with_the_same_name_is_refused(exports, key, tmp_path, capsys):
    """A checkpoint verified against a key that did not sign it fails."""
    other = SignerKey.generate(ORIGIN)
    checkpoint = checkpoint_over(exports.lines, key)
    status, out = verify(tmp_path, capsys, exports.ndjson, checkpoint, _vkey(other))
    assert status == 1 and "checkpoint not verified: the note has no signature by" in out


def test_a_bad_signature_is_refused(exports, key, tmp_path, capsys):
    """One flipped bit in the signature: refused, whatever the export."""
    head, _, b64 = checkpoint_over(exports.lines, key).rstrip("\n").rpartition(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 0x40
    checkpoint = f"{head} {base64.b64encode(bytes(raw)).decode()}\n"
    status, out = verify(tmp_path, capsys, exports.ndjson, checkpoint, _vkey(key))
    assert status == 1 and "does not verify" in out


def test_a_checkpoint_edited_after_signing_is_refused(exports, key, tmp_path, capsys):
    """Lowering the signed size to hide the newest events breaks the signature."""
    lines = exports.lines
    checkpoint = checkpoint_over(lines, key).replace(f"\n{len(lines)}\n", f"\n{len(lines) - 1}\n")
    status, out = verify(tmp_path, capsys, join(lines[:-1]), checkpoint, _vkey(key))
    assert status == 1 and "does not verify" in out


def test_every_bad_line_is_named_even_past_the_listing(key, tmp_path, capsys):
    """Beyond the first 100 detailed lines, the rest are named as id ranges."""
    lines = [
        b'{"id":%d,"type":"t","workflow_id":null,"ts":"2026-12-01T00:00:00.000000Z","data":{}}' % n
        for n in range(1, 301)
    ]
    spaced = [line.replace(b'"data":{}', b'"data": {}') for line in lines]
    spaced[150] = lines[150]
    status, out = verify(tmp_path, capsys, join(spaced), checkpoint_over(lines, key), _vkey(key))
    assert status == 1
    assert "line 100 (id 100) is not the server's encoding" in out
    assert "199 more lines are not the server's encoding: lines 101..150, 152..300" in out
    assert "ids 101..150, 152..300" in out


def test_run_py_verify_exit_status(exports, key, tmp_path):
    """The real command line exits 0 when verified and 1 when not."""
    (tmp_path / "good").write_bytes(exports.ndjson)
    (tmp_path / "bad").write_bytes(join(exports.lines[1:]))
    (tmp_path / "checkpoint").write_text(checkpoint_over(exports.lines, key))
    (tmp_path / "key").write_text(_vkey(key))
    for name, status in (("good", 0), ("bad", 1)):
        done = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *verify_args(tmp_path, name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == status, done.stdout + done.stderr
    assert "ids missing: 1" in done.stdout
