"""How a page is read with work bounded by the page, whatever its filter.

A reader asks for up to ``limit`` matching events after a cursor.  Read
naively, a filter that matches little makes that one page scan the log: every
row for an ``until`` in the past, every row of a workflow for a type it never
had.  Each part of a filter therefore becomes index ranges:

- ``since`` and ``until`` become ids.  Ids and ``ts`` only grow together (an
  append is stamped ``max(now, previous ts)``), so the events at or after a
  moment are exactly the ids from the first one stamped then on: one lookup
  in the ``(ts, id)`` index each, and no row is checked against a timestamp.
- Workflow ids and types are index prefixes: each (workflow, type) pair, or
  each workflow, or each type, is one range of ``(…, id)`` in id order, of
  which a page needs at most ``limit`` entries.  So a page visits at most
  ``ranges * limit`` index entries and fetches only its own rows.
- When ``ranges * limit`` is over :data:`SCAN_BUDGET` (many workflows times
  many types), the page instead looks at no more than ``SCAN_BUDGET`` ids and
  says where it stopped: it may hold fewer events than asked, or none, and
  the reader continues from there (:attr:`app.store.base.Page.more`).

Each engine writes this as its own SQL; the rules are stated once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from app.events import EventFilter

#: Index entries (or, for a windowed page, ids) one page may visit.  About 5 ms
#: of one SQLite reader thread, so a heavy reader waits its turn between pages.
SCAN_BUDGET = 8192


@dataclass(frozen=True, slots=True)
class Window:
    """The ids ``(start, stop]`` a page looks at; ``short``: it stops before the
    filter's range ends, so matching events may follow ``stop`` (asc pages)."""

    start: int
    stop: int
    short: bool


@dataclass(frozen=True, slots=True)
class Seek:
    """The index ranges of one page: sorted workflow ids and types (``None``: any),
    and whether there are too many of them and a window of ids bounds it instead."""

    workflow_ids: tuple[str, ...] | None
    types: tuple[str, ...] | None
    windowed: bool

    @classmethod
    def plan(cls, filt: EventFilter, limit: int) -> Seek:
        workflows = filt.workflow_ids
        ids = None if workflows is None else tuple(sorted(workflows))
        types = None if filt.types is None else tuple(sorted(filt.types))
        ranges = prod(len(values) for values in (ids, types) if values is not None)
        keyed = ids is not None or types is not None
        return cls(ids, types, windowed=keyed and ranges * limit > SCAN_BUDGET)

    @property
    def keyed(self) -> bool:
        """Read through a workflow or type index (else the id order itself)."""
        return self.workflow_ids is not None or self.types is not None

    @property
    def matches_nothing(self) -> bool:
        """An empty set of workflows or types: no row can match."""
        return self.workflow_ids == () or self.types == ()

    def window(self, lo: int, hi: int, newest: bool) -> Window:
        """What a page of the filter's range ``(lo, hi]`` looks at: all of it, or
        when windowed the ``SCAN_BUDGET`` ids at its start (the end, for a tail)."""
        if not self.windowed:
            return Window(lo, hi, short=False)
        if newest:
            return Window(max(lo, hi - SCAN_BUDGET), hi, short=False)
        stop = min(hi, lo + SCAN_BUDGET)
        return Window(lo, stop, short=stop < hi)


def id_range(after: int, head: int, since_id: int | None, until_id: int | None) -> tuple[int, int]:
    """The ids ``(lo, hi]`` that can match a filter read after ``after`` up to
    ``head``, given the first ids stamped at or after its ``since`` and ``until``
    (``head + 1`` when no event up to the head is; ``None`` for a bound not asked).

    Everything before the first id at ``since`` is older; everything from the
    first id at ``until`` on is too new, now and forever (ts never goes back).
    """
    lo, hi = after, head
    if since_id is not None:
        lo = max(lo, since_id - 1)
    if until_id is not None:
        hi = min(hi, until_id - 1)
    return lo, hi
