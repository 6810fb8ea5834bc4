"""Offline verification of a complete export against a signed checkpoint.

An export of ids 1..N verifies against a checkpoint of size N when the
checkpoint's signature verifies under the pinned key, the ids run 1..N with
none missing, repeated or out of order, every line is the server's own
encoding, and the leaves hash to the signed root.  Every failure is named:
ids as ranges, lines by number and id.  A line altered so that it is still
well encoded changes the root, which shows *that* the export was altered;
offline, with one root and no proofs, it cannot show *which* line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from app.tlog.checkpoint import Checkpoint, open_checkpoint
from app.tlog.exports import Record, read_export
from app.tlog.merkle import leaf_hash
from app.tlog.note import NoteError, VerifierKey
from app.tlog.tree import Frontier

MAX_LINES_LISTED = 100  # lines with a reason each; past that, their ids as ranges


@dataclass(slots=True)
class Report:
    """What a verification found; ``problems`` is empty only when all verified."""

    events: int = 0
    checkpoint: Checkpoint | None = None
    problems: list[str] = field(default_factory=list)


def verify_files(export: Path, checkpoint: Path, key: Path) -> Report:
    """Verify an export file against a checkpoint file and a verifier key file."""
    report = Report()
    try:
        verifier = VerifierKey.parse(key.read_text(encoding="utf-8"))
        report.checkpoint = open_checkpoint(checkpoint.read_bytes(), verifier)
    except (NoteError, OSError, UnicodeDecodeError) as exc:
        report.problems.append(f"checkpoint not verified: {exc}")
        return report
    try:
        with export.open("rb") as stream:
            report.events, report.problems = verify_records(read_export(stream), report.checkpoint)
    except OSError as exc:
        report.problems.append(f"cannot read the export: {exc}")
    return report


def verify_records(records: Iterable[Record], checkpoint: Checkpoint) -> tuple[int, list[str]]:
    """Check records that should be leaves 1..N of ``checkpoint`` (already
    verified); returns how many were read and every problem found."""
    size = checkpoint.size
    ids = IdTally(size)
    frontier = Frontier()
    expected = 1  # while every id so far was the next one, the root is streamed
    count = highest = 0
    out_of_order: list[int] = []
    badly_encoded = BadLines()
    for record in records:
        count += 1
        if record.problem is not None:
            badly_encoded.add(record)
        ident = record.id
        if ident is not None and ident == expected:
            expected += 1
            if ident <= size:
                frontier.append((leaf_hash(record.leaf),))
        else:
            expected = 0  # no id matches again
        if ident is None:
            continue
        if ids.first_time(ident) and ident < highest:
            out_of_order.append(ident)
        highest = max(highest, ident)
    problems = [f"ids missing: {missing}"] if (missing := _format_runs(ids.missing())) else []
    problems += ids.problems(("out of order", out_of_order))
    problems += badly_encoded.problems()
    if not expected or frontier.size != size:
        problems.append(f"root not compared: the lines are not ids 1..{size} in order")
    elif frontier.root() != checkpoint.root:
        problems.append(
            f"the {size} lines do not hash to the checkpoint's root: the export was altered "
            "(offline, with one root, the altered line cannot be told)"
        )
    return count, problems


class IdTally:
    """Which ids of 1..size an export holds, and which it repeats or has outside."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen = bytearray(size + 1)
        self.repeated: list[int] = []
        self.beyond: list[int] = []

    def first_time(self, ident: int) -> bool:
        """Count ``ident``: True when it is in 1..size and was not seen before."""
        if not 1 <= ident <= self.size:
            self.beyond.append(ident)
        elif self._seen[ident]:
            self.repeated.append(ident)
        else:
            self._seen[ident] = 1
            return True
        return False

    def missing(self) -> list[tuple[int, int]]:
        """Runs of ids 1..size not seen, found a run at a time (not id by id)."""
        runs, start = [], self._seen.find(0, 1)
        while start >= 0:
            end = self._seen.find(1, start)
            end = len(self._seen) if end < 0 else end
            runs.append((start, end - 1))
            start = self._seen.find(0, end)
        return runs

    def problems(self, *others: tuple[str, list[int]]) -> list[str]:
        """``ids <what>: <ranges>`` for the repeated, the outside, and ``others``."""
        named = [
            *others,
            ("repeated", self.repeated),
            (f"outside 1..{self.size}, the checkpoint's size", self.beyond),
        ]
        return [f"ids {what}: {id_ranges(ids)}" for what, ids in named if ids]


class BadLines:
    """Lines that are not the server's encoding: the first ones with their
    reasons, the rest only as numbers (a wholly re-encoded export is large)."""

    def __init__(self) -> None:
        self.listed: list[Record] = []
        self.lines: list[int] = []
        self.ids: list[int] = []

    def add(self, record: Record) -> None:
        if len(self.listed) < MAX_LINES_LISTED:
            self.listed.append(record)
            return
        self.lines.append(record.line)
        if record.id is not None:
            self.ids.append(record.id)

    def problems(self) -> list[str]:
        problems = [
            f"line {r.line}" + ("" if r.id is None else f" (id {r.id})") + f" {r.problem}"
            for r in self.listed
        ]
        if self.lines:
            summary = f"{len(self.lines)} more lines are not the server's encoding"
            problems.append(f"{summary}: lines {id_ranges(self.lines)}; ids {id_ranges(self.ids)}")
        return problems


def id_ranges(ids: Iterable[int]) -> str:
    """``1..3, 7, 9..10``: sorted runs, each id named ("" for none)."""
    runs: list[tuple[int, int]] = []
    for ident in sorted(set(ids)):
        if runs and ident == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], ident)
        else:
            runs.append((ident, ident))
    return _format_runs(runs)


def _format_runs(runs: list[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)
