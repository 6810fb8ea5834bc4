"""Numbered SQL migrations per dialect, applied once and recorded.

``app/migrations/<dialect>/NNNN_name.sql`` (inside the package, so that an
installed wheel has them) run in order inside one transaction that also
holds the database's write lock, so several processes starting together
apply each migration exactly once.  A database that has seen a newer
migration than this code knows is refused rather than guessed at.

A migration may also have a Python *step*, run after its SQL in the same
transaction, for work SQL cannot do (hashing the events into the Merkle
tree); a step that raises :class:`MigrationError` leaves nothing behind.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


class MigrationError(RuntimeError):
    """The database and the code disagree about the schema."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    found = []
    for path in sorted((MIGRATIONS_DIR / dialect).glob("*.sql")):
        match = re.fullmatch(r"([0-9]{4})_([a-z0-9_]+)\.sql", path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    return found


def pending(known: list[Migration], applied: set[int]) -> list[Migration]:
    newest_known = max((m.version for m in known), default=0)
    if applied and max(applied) > newest_known:
        raise MigrationError(
            f"the database is at schema version {max(applied)} but this Livefeed knows only "
            f"up to {newest_known}; upgrade Livefeed instead of running an older one on it"
        )
    return [m for m in known if m.version not in applied]


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (sqlite3 runs one at a time)."""
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not current.strip().startswith("--"):
        statements.append(current.strip())
    return statements


#: A migration's Python step on SQLite, by version.
SqliteSteps = Mapping[int, Callable[[sqlite3.Connection], None]]


def apply_sqlite_migrations(
    conn: sqlite3.Connection, steps: SqliteSteps | None = None
) -> list[int]:
    """Apply what is pending on an autocommit connection; returns the versions applied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(VERSION_TABLE)
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
        todo = pending(load_migrations("sqlite"), applied)
        for migration in todo:
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            step = (steps or {}).get(migration.version)
            if step is not None:
                step(conn)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at)"
                " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (migration.version, migration.name),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return [m.version for m in todo]
