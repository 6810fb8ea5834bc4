"""Reading an export back into the log's leaves, line by line.

A leaf is an event's compact JSON envelope, exactly as :meth:`Event.build`
encodes it.  An NDJSON line *is* the leaf, so it counts as the server's own
encoding only when rebuilding the envelope from its fields gives the same
bytes.  A CSV row carries the fields and the leaf is rebuilt from them (an
empty ``workflow_id`` is null, ``data`` is taken verbatim, and a cell the export
neutralised against spreadsheet formulas is read without its ``'``, see
:mod:`app.tlog.csv_cells`); the row counts when each field is in the form the
server writes.  CSV quoting is not compared: it is not part of the leaf.

Each line becomes a :class:`Record`; judging ids, order and roots is left to
the caller, so that an offline check of a complete export and a check of
any export against the server's proofs read files the same way.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

import orjson

from app.events import TYPE_RE, WORKFLOW_ID_RE, Event
from app.tlog.csv_cells import HEADER as CSV_HEADER
from app.tlog.csv_cells import restore_cell

TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
NOT_ENCODED = "is not the server's encoding"


class Record(NamedTuple):
    """One line of an export: its leaf bytes, and why it is not the server's
    encoding (``problem``), if it is not.  ``id`` is None when unreadable."""

    line: int
    id: int | None
    leaf: bytes
    problem: str | None = None


class _Unencodable(ValueError):
    """A field the server would never have written."""


def read_export(stream: IO[bytes]) -> Iterator[Record]:
    """Records of an NDJSON or CSV export (told apart by the CSV header)."""
    first = stream.readline()
    if first.rstrip(b"\r\n") == CSV_HEADER.encode():
        yield from _csv_records(stream)
    elif first:
        yield _ndjson_record(1, first)
        for number, raw in enumerate(stream, 2):
            yield _ndjson_record(number, raw)


def _ndjson_record(number: int, raw: bytes) -> Record:
    leaf = raw[:-1] if raw.endswith(b"\n") else raw
    try:
        fields = orjson.loads(leaf)
    except orjson.JSONDecodeError as exc:
        return Record(number, None, leaf, f"is not JSON ({exc})")
    ident = fields.get("id") if isinstance(fields, dict) else None
    if type(ident) is not int:
        return Record(number, None, leaf, "has no integer id")
    try:
        data = fields.get("data")
        if not isinstance(data, dict):
            raise _Unencodable("data is not an object")
        expected = _envelope(
            ident, fields.get("type"), fields.get("workflow_id"), fields.get("ts"), data
        )
    except (_Unencodable, orjson.JSONEncodeError) as exc:
        return Record(number, ident, leaf, f"{NOT_ENCODED}: {exc}")
    if expected != leaf:
        return Record(number, ident, leaf, f"{NOT_ENCODED} (same fields, other bytes)")
    return Record(number, ident, leaf)


def _csv_records(stream: IO[bytes]) -> Iterator[Record]:
    for number, raw in enumerate(stream, 2):
        yield _csv_record(number, raw)


def _csv_record(number: int, raw: bytes) -> Record:
    try:
        [row] = csv.reader([raw.decode("utf-8")])
    except (UnicodeDecodeError, ValueError, csv.Error):
        return Record(number, None, raw, "is not one UTF-8 CSV row")
    if len(row) != 5 or not row[0].isascii() or not row[0].isdigit():
        return Record(number, None, raw, f"is not a row of {CSV_HEADER}")
    text_id, kind, workflow_id, ts, data = (restore_cell(cell) for cell in row)
    ident = int(text_id)
    try:
        if str(ident) != text_id:
            raise _Unencodable(f"id {text_id!r} has leading zeros")
        parsed = orjson.loads(data)
        if not isinstance(parsed, dict) or orjson.dumps(parsed).decode() != data:
            raise _Unencodable("data is not a compact JSON object")
        leaf = _envelope(ident, kind, workflow_id or None, ts, parsed)
    except (_Unencodable, orjson.JSONDecodeError) as exc:
        return Record(number, ident, raw, f"{NOT_ENCODED}: {exc}")
    return Record(number, ident, leaf)


def _envelope(ident: int, kind: Any, workflow_id: Any, ts: Any, data: dict[str, Any]) -> bytes:
    """The leaf the server writes for these fields, or _Unencodable."""
    if not isinstance(kind, str) or not TYPE_RE.fullmatch(kind):
        raise _Unencodable(f"type {kind!r} is not one the server accepts")
    if workflow_id is not None and (
        not isinstance(workflow_id, str) or not WORKFLOW_ID_RE.fullmatch(workflow_id)
    ):
        raise _Unencodable(f"workflow_id {workflow_id!r} is not one the server accepts")
    if not isinstance(ts, str) or not TIMESTAMP_RE.fullmatch(ts):
        raise _Unencodable(f"ts {ts!r} is not the server's timestamp form")
    return Event.build(ident, kind, workflow_id, ts, orjson.dumps(data).decode()).json
