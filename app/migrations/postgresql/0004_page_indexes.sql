-- A page of a filtered read is a few index ranges in id order, so its cost is
-- bounded by the page (see app/store/seek.py).  (workflow_id, id) and
-- (type, id) serve a filter on one of them; a filter on both (a workflow's
-- events of some types) needs both columns before id, or it reads the
-- workflow's whole range and checks each row's type.
CREATE INDEX events_workflow_id_type_id ON events (workflow_id, type, id);

-- since/until become ids: the first id stamped at or after a moment is
-- "ORDER BY ts, id LIMIT 1".  A PostgreSQL index on (ts) alone keeps equal
-- timestamps (a whole group commit) in heap order, so that query would sort
-- each group; (ts, id) answers it from the first index entry.  It serves
-- everything (ts) did, so it replaces it.
CREATE INDEX events_ts_id ON events (ts, id);
DROP INDEX events_ts;

-- The planner picks these ranges over "the id order, filtered" from the
-- table's statistics; a table that was never analysed has none, and new
-- indexes bring none.  Autovacuum keeps them from then on.
ANALYZE events;
