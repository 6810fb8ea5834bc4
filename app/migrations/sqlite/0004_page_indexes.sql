-- A page of a filtered read is a few index ranges in id order, so its cost is
-- bounded by the page (see app/store/seek.py).  (workflow_id, id) and
-- (type, id) serve a filter on one of them; a filter on both (a workflow's
-- events of some types) needs both columns before id, or it reads the
-- workflow's whole range and checks each row's type.
--
-- events_ts (ts) needs no change here: an SQLite index ends with the rowid,
-- so it is already ordered by (ts, id), which finds the first id at a moment.
CREATE INDEX events_workflow_id_type_id ON events (workflow_id, type, id);
