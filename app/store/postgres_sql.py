"""The SQL of the PostgreSQL store: statements, and the page queries built from a filter.

Kept apart from :mod:`app.store.postgres` (connections, pools, listening) so
that each statement can be read whole, with the reason it is shaped so.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from app.events import Event, EventFilter
from app.store.base import COLUMNS

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


def filters(filt: EventFilter, params: list[Any]) -> str:
    """`` AND ...`` clauses for ``filt``, appending their values to ``params``."""
    clauses = []

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if filt.workflow_ids is not None:
        clauses.append(f"workflow_id = ANY({arg(sorted(filt.workflow_ids))}::text[])")
    if filt.types is not None:
        clauses.append(f"type = ANY({arg(sorted(filt.types))}::text[])")
    if filt.since is not None:
        clauses.append(f"ts >= {arg(filt.since)}")
    if filt.until is not None:
        clauses.append(f"ts < {arg(filt.until)}")
    return "".join(f" AND {clause}" for clause in clauses)


def page_query(after: int, limit: int, filt: EventFilter, newest: bool) -> tuple[str, list[Any]]:
    """The head and up to ``limit`` matching rows in ``(after, head]``, in one statement.

    One statement is one snapshot: every id up to the head it sees has
    committed in that snapshot (ids commit in order), so the rows read are
    exactly the committed ones and ``head`` is a safe ``scanned_to``.  The
    LEFT JOIN yields one row with a NULL id when nothing matches.
    """
    params: list[Any] = [after, limit]
    where = filters(filt, params)
    order = "DESC" if newest else ""
    sql = (
        f"SELECT h.last_id AS head, e.id, e.type, e.workflow_id, e.ts, e.data"
        f" FROM log_head AS h LEFT JOIN LATERAL ("
        f"SELECT {COLUMNS} FROM events WHERE id > $1 AND id <= h.last_id{where}"
        f" ORDER BY id {order} LIMIT $2) AS e ON true ORDER BY e.id"
    )
    return sql, params


def page_rows(rows: list[asyncpg.Record]) -> tuple[int, list[Event]]:
    events = [Event.build(*row[1:]) for row in rows if row["id"] is not None]
    return rows[0]["head"], events
