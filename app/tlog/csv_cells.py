"""The CSV export's rows: written by ``GET /api/events?format=csv``, read back by the
verifier, so that both sides agree on one rule.

Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or CR
before one) as a formula: a workflow id like ``-2-3`` becomes ``-5``, and a crafted
one can run commands when an auditor opens the file.  As OWASP's CSV-injection rule
says, such a cell is written with a ``'`` in front and in double quotes; the
verifier takes the ``'`` off again, so the leaf it rebuilds is the event's own.  No
field the server writes starts with ``'`` (ids and timestamps are digits, types
start with a letter, ``data`` with ``{``, and workflow ids have no ``'``), so
undoing it is exact.
"""

from __future__ import annotations

from collections.abc import Iterable

COLUMNS = ("id", "type", "workflow_id", "ts", "data")
HEADER = ",".join(COLUMNS)
FORMULA_STARTS = frozenset("=+-@\t\r")
_NEEDS_QUOTES = frozenset(',"\r\n')


def csv_row(cells: Iterable[str]) -> str:
    """One CRLF-terminated row: RFC 4180 quoting, formula starts neutralised."""
    return ",".join(_cell(value) for value in cells) + "\r\n"


def restore_cell(value: str) -> str:
    """A cell as the event has it: the export's ``'`` before a formula start removed."""
    if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_STARTS:
        return value[1:]
    return value


def _cell(value: str) -> str:
    neutralised = bool(value) and value[0] in FORMULA_STARTS
    if neutralised:
        value = "'" + value
    if neutralised or not _NEEDS_QUOTES.isdisjoint(value):
        return '"' + value.replace('"', '""') + '"'
    return value
