"""The SQL of the PostgreSQL store: statements, and the page queries built from a filter.

Kept apart from :mod:`app.store.postgres` (connections, pools, listening) so
that each statement can be read whole, with the reason it is shaped so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from app.events import Event, EventFilter
from app.store.base import COLUMNS
from app.store.seek import SCAN_BUDGET, Seek

#: The NOTIFY channel: its payload is the new head id.
CHANNEL = "livefeed_log"

# utc_timestamp() computed by the database: one clock for every node.
TS_FORMAT = """'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"""
DB_NOW = f"to_char(clock_timestamp() AT TIME ZONE 'UTC', {TS_FORMAT})"
DB_AGO = f"to_char((clock_timestamp() - make_interval(secs => $1)) AT TIME ZONE 'UTC', {TS_FORMAT})"

# The head row lock serialises appenders on every node until commit; the
# database's clock, read here, is one clock for all of them.
LOCK_HEAD_SQL = f"SELECT last_id, last_ts, {DB_NOW} FROM log_head FOR UPDATE"

EARLIER_KEYS_SQL = (
    "SELECT key, fingerprint, receipt FROM idempotency_keys"
    " WHERE key = ANY($1::text[]) AND created_at >= $2"
)

# Append a run of node hashes to its row of the Merkle tree (a new row starts
# empty): rows are (chunk, hashes) pairs from app.store.tree.node_rows.
GROW_TREE = (
    "INSERT INTO tree_nodes (chunk, hashes) SELECT node.chunk, node.hashes FROM {source}"
    " ON CONFLICT (chunk) DO UPDATE SET hashes = tree_nodes.hashes || EXCLUDED.hashes"
)
NODE_ROWS = "unnest({chunks}::bigint[], {hashes}::bytea[]) AS node (chunk, hashes)"

# One statement writes the whole group: events ($1-$5), idempotency keys
# ($6-$9), the new head ($10), the tree's new nodes ($11-$12), and the NOTIFY
# that is delivered on commit.
WRITE_SQL = f"""
WITH written AS (
    INSERT INTO events ({COLUMNS})
    SELECT batch.id, batch.type, batch.workflow_id, $5, batch.data
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
         AS batch (id, type, workflow_id, data)
), remembered AS (
    INSERT INTO idempotency_keys (key, fingerprint, receipt, created_at)
    SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::float8[])
    ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
        receipt = EXCLUDED.receipt, created_at = EXCLUDED.created_at
), grown AS (
    {GROW_TREE.format(source=NODE_ROWS.format(chunks="$11", hashes="$12"))}
)
UPDATE log_head SET last_id = $10, last_ts = $5 RETURNING pg_notify('{CHANNEL}', last_id::text)
"""

#: The SQLSTATE ``livefeed_append`` raises when the stored tree does not reach the
#: log's head (events appended around it): nothing was written.
TREE_BEHIND = "LF001"

#: How far a node's proposed ts may be from the database's clock (seconds).
CLOCK_LEEWAY_S = 0.5

# A group without idempotency keys, when this node appended last: one statement
# in its own transaction.  The tree's new nodes depend on the events' bytes, so
# on their ids and ts, which must be known before the statement is sent: the
# node proposes them (ids after the head it last wrote, ts from its estimate of
# the database's clock) with the nodes they make, and the statement writes it
# all only if the head is still where the node left it and the ts is not before
# the last one nor more than CLOCK_LEEWAY_S from the database's clock.  If not,
# it writes nothing and the node appends under the head lock instead.  ($1 the
# head expected, $2 the ts, $3-$5 the events' columns, $6 how many, $7-$8 the
# node rows.)  Reading last_id under FOR UPDATE in READ COMMITTED sees the head
# as the previous appender committed it; the lock is held for this statement
# and its commit, not across round trips.
APPEND_SQL = f"""
WITH head AS (
    SELECT last_id, last_ts, extract(epoch FROM clock_timestamp())::float8 AS clock
    FROM log_head FOR UPDATE
), ok AS (
    SELECT last_id FROM head
    WHERE last_id = $1 AND $2::text >= last_ts
      AND abs(extract(epoch FROM ($2::text)::timestamptz) - clock) <= {CLOCK_LEEWAY_S}
), written AS (
    INSERT INTO events ({COLUMNS})
    SELECT ok.last_id + batch.n, batch.type, batch.workflow_id, $2::text, batch.data
    FROM ok, unnest($3::text[], $4::text[], $5::text[])
         WITH ORDINALITY AS batch (type, workflow_id, data, n)
), grown AS (
    {GROW_TREE.format(source="ok, " + NODE_ROWS.format(chunks="$7", hashes="$8"))}
), moved AS (
    UPDATE log_head SET last_id = ok.last_id + $6, last_ts = $2::text FROM ok
    RETURNING pg_notify('{CHANNEL}', log_head.last_id::text)
)
SELECT head.clock, (SELECT count(*) FROM moved) AS moved FROM head
"""

# A group without idempotency keys when this node does not hold the tree's
# frontier (another node appended since, or none yet): the database numbers,
# stamps and hashes it itself (livefeed_append, migration 0006), in one
# statement that holds the head lock only for itself.  ($1-$3 the events'
# columns; it answers the head they follow, their ts, its clock and the new
# frontier.)
SERVER_APPEND_SQL = "SELECT * FROM livefeed_append($1::text[], $2::text[], $3::text[])"

READ_NODES_SQL = "SELECT chunk, hashes FROM tree_nodes WHERE chunk = ANY($1::bigint[])"

# The tree of a log written before it existed, built a page at a time.
BUILD_TREE_SQL = GROW_TREE.format(source=NODE_ROWS.format(chunks="$1", hashes="$2"))

# Keep $1 as the signing key unless one is kept.  A separate SELECT then reads
# the winner: after a conflict with a racing insert, this statement's snapshot
# would not show that row; the next statement's does.
KEEP_SIGNER_SQL = (
    "INSERT INTO log_signer (singleton, signer_key) VALUES (1, $1)"
    " ON CONFLICT (singleton) DO NOTHING"
)

ISSUE_TICKET_SQL = (
    "INSERT INTO stream_tickets (digest, channel, expires_at, credential_expires_at)"
    " VALUES ($1, $2, $3, $4)"
)

# One DELETE: of two redemptions racing, on any nodes, only one gets the row.
REDEEM_TICKET_SQL = (
    "DELETE FROM stream_tickets WHERE digest = $1 AND channel = $2 AND expires_at >= $3"
    " RETURNING credential_expires_at"
)

# Up to a cutoff id ($1), at most $2 rows: no transaction grows large.
TRIM_SQL = (
    "WITH gone AS (DELETE FROM events WHERE id IN"
    " (SELECT id FROM events WHERE id <= $1 ORDER BY id LIMIT $2) RETURNING 1)"
    " SELECT count(*) FROM gone"
)

# The newest id older than $1 seconds, by the database's clock (which also set ts).
AGED_OUT_SQL = f"SELECT max(id) FROM events WHERE ts < {DB_AGO}"

PURGE_SQL = """
WITH keys AS (DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING 1),
     tickets AS (DELETE FROM stream_tickets WHERE expires_at < $2 RETURNING 1)
SELECT (SELECT count(*) FROM keys) + (SELECT count(*) FROM tickets)
"""


# The first id stamped at or after a moment, from the first entry of (ts, id).
FIRST_AT_SQL = "SELECT id FROM events WHERE ts >= {} ORDER BY ts, id LIMIT 1"
HEAD_SQL = "(SELECT last_id FROM log_head)"
MAX_ID = 2**63 - 1


def _rows(seek: Seek, start: str, stop: str | None, newest: bool, arg: Callable[[Any], str]) -> str:
    """The page's rows with ids in ``(start, stop]`` (``stop`` ``None``: up to the
    head, which needs no bound: the statement sees no row beyond it).

    By id order; or, keyed, up to ``$2`` ids from each (workflow, type) range of
    its index (one LATERAL index scan per pair of ``unnest``), then the page's
    rows by id.  Each range is a row comparison on its index's own columns,
    ordered by them: only that index reads it in order.  With ``type = $k`` the
    planner, which knows only an average type, may read the id order and filter
    it, through the whole log for a rare type (seen with a type of 0.3 %)."""
    order = "DESC" if newest else "ASC"
    if not seek.keyed or seek.windowed:  # the id order bounds it: $2 rows, or the window
        span = f"id > {start}" + ("" if stop is None else f" AND id <= {stop}")
        where = "".join(
            f" AND {column} = ANY({arg(list(values))}::text[])"
            for column, values in (("workflow_id", seek.workflow_ids), ("type", seek.types))
            if values is not None
        )
        return f"SELECT {COLUMNS} FROM events WHERE {span}{where} ORDER BY id {order} LIMIT $2"
    keys, columns = [], []
    for column, values in (("workflow_id", seek.workflow_ids), ("type", seek.types)):
        if values is not None:
            keys.append(f"unnest({arg(list(values))}::text[]) AS k_{column} (v)")
            columns.append(column)
    index = ", ".join([*columns, "id"])
    key = ", ".join(f"k_{column}.v" for column in columns)
    ranges = (
        f"SELECT r.id FROM {' CROSS JOIN '.join(keys)} CROSS JOIN LATERAL"
        f" (SELECT id FROM events WHERE ({index}) > ({key}, {start})"
        f" AND ({index}) <= ({key}, {stop or MAX_ID})"
        f" ORDER BY {', '.join(f'{c} {order}' for c in [*columns, 'id'])} LIMIT $2) AS r"
        f" ORDER BY r.id {order} LIMIT $2"
    )
    # each row by its id; LIMIT 1 keeps this a lookup per id, never a hash join
    # that reads the whole table to meet the page's ids
    return (
        f"SELECT row.* FROM ({ranges}) AS page CROSS JOIN LATERAL"
        f" (SELECT {COLUMNS} FROM events WHERE id = page.id LIMIT 1) AS row"
    )


def page_query(after: int, limit: int, filt: EventFilter, newest: bool) -> tuple[str, list[Any]]:
    """The head, the filter's last possible id, the end of the window looked at, and
    up to ``limit`` matching rows in ``(after, head]``, in one statement.

    One statement is one snapshot: every id up to the head it sees has
    committed in that snapshot (ids commit in order, each with its head
    update), and no later one is visible, so the rows read are exactly the
    committed ones and ``head`` is a safe ``scanned_to``.  The LEFT JOIN yields
    one row with a NULL id when nothing matches.  The id bounds and the window
    follow :func:`app.store.seek.id_range` and
    :meth:`app.store.seek.Seek.window`, written in SQL as uncorrelated
    subqueries, each run once before the scan.
    """
    params: list[Any] = [after, limit]

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    def first_at(moment: str) -> str:  # head + 1 when no event is stamped then yet
        return f"coalesce(({FIRST_AT_SQL.format(arg(moment))}), {HEAD_SQL} + 1)"

    seek = Seek.plan(filt, limit)
    lo, hi = "$1::bigint", HEAD_SQL
    if filt.since is not None:
        lo = f"greatest($1, {first_at(filt.since)} - 1)"
    if filt.until is not None:
        hi = f"least({HEAD_SQL}, {first_at(filt.until)} - 1)"
    start, stop = lo, hi
    if seek.windowed and newest:
        start = f"greatest({lo}, {hi} - {SCAN_BUDGET})"
    elif seek.windowed:
        stop = f"least({hi}, {lo} + {SCAN_BUDGET})"
    nothing = f"SELECT {COLUMNS} FROM events WHERE false"
    bound = None if stop == HEAD_SQL else stop
    rows = nothing if seek.matches_nothing else _rows(seek, start, bound, newest, arg)
    sql = (
        f"SELECT {HEAD_SQL} AS head, {hi} AS hi, {stop} AS stop,"
        f" e.id, e.type, e.workflow_id, e.ts, e.data"
        f" FROM (VALUES (1)) AS one LEFT JOIN ({rows}) AS e ON true ORDER BY e.id"
    )
    return sql, params


def page_rows(rows: list[asyncpg.Record]) -> tuple[int, int | None, list[Event]]:
    """The head, where a page stopped short of its range (``None``: it did not),
    and the events, in id order."""
    head, hi, stop = rows[0]["head"], rows[0]["hi"], rows[0]["stop"]
    events = [Event.build(*row[3:]) for row in rows if row["id"] is not None]
    return head, stop if stop < hi else None, events
