-- The append-only event log.  Ids are assigned by the appender under the
-- write lock from log_head, so they are never reused, even after a trim
-- empties the table; AUTOINCREMENT keeps SQLite itself from reusing them too.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    workflow_id TEXT,
    ts TEXT NOT NULL,
    data TEXT NOT NULL
);

CREATE INDEX events_workflow_id_id ON events (workflow_id, id);
CREATE INDEX events_type_id ON events (type, id);
CREATE INDEX events_ts ON events (ts);

-- One row: the newest id and timestamp ever appended, so that ids and ts
-- keep increasing even if the clock steps back or the table is trimmed.
CREATE TABLE log_head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_id INTEGER NOT NULL,
    last_ts TEXT NOT NULL
);

INSERT INTO log_head (singleton, last_id, last_ts) VALUES (1, 0, '');
