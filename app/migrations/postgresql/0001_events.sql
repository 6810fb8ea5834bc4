-- The append-only event log, as in migrations/sqlite/0001_events.sql.
-- Ids are assigned by the appender from log_head while it holds that row's
-- lock, so they are never reused (not even after a trim empties the table)
-- and no sequence is needed: a sequence would hand out ids that can commit
-- out of order, and a reader could skip one that commits late.
--
-- ts and data are TEXT on purpose: ts is the fixed-width
-- 2026-11-25T18:00:00.123456Z string, compared byte-wise (COLLATE "C") so
-- that text order is time order whatever the database's locale; data is the
-- compact JSON exactly as published (jsonb would reorder keys and change the
-- bytes every surface serves).
CREATE TABLE events (
    id BIGINT PRIMARY KEY,
    type TEXT NOT NULL,
    workflow_id TEXT,
    ts TEXT COLLATE "C" NOT NULL,
    data TEXT NOT NULL
);

CREATE INDEX events_workflow_id_id ON events (workflow_id, id);
CREATE INDEX events_type_id ON events (type, id);
CREATE INDEX events_ts ON events (ts);

-- One row: the newest id and timestamp ever appended, so that ids and ts
-- keep increasing even if a clock steps back or the table is trimmed.  Every
-- append updates this row, so its row lock serialises appenders on every
-- node and ids become visible in id order.
CREATE TABLE log_head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_id BIGINT NOT NULL,
    last_ts TEXT COLLATE "C" NOT NULL
);

INSERT INTO log_head (singleton, last_id, last_ts) VALUES (1, 0, '');
