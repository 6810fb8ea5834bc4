-- A group commit appended by the database itself, for a node that does not
-- hold the Merkle tree's frontier (another node appended since its last
-- commit, or it has not appended yet).  The node then cannot propose ids, ts
-- and node hashes (APPEND_SQL in app/store/postgres_sql.py); instead of
-- holding the head lock across round trips while it reads the frontier and
-- hashes in Python, it calls livefeed_append: one statement, one
-- transaction, the head lock held only for it.
--
-- Every hash here must be the one Python computes (app/events.py Event.build,
-- app/tlog/merkle.py, app/tlog/tree.py Frontier, app/store/tree.py): the
-- tests (tests/test_postgres_append.py) hold the trees built both ways equal
-- and check both against RFC 9162.

-- The position of the first node the leaf after `size` leaves creates:
-- 2 * size - popcount(size), as first_position() in app/store/tree.py.  (The
-- one-bits are counted in the bit string: bit_count() needs PostgreSQL 14.)
CREATE FUNCTION livefeed_first_position(size BIGINT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT 2 * size - length(replace(size::bit(64)::text, '0', '')) $$;

-- Append the events (types[i], workflow_ids[i], datas[i]), in order, and
-- return the head they follow (their ids are after_id + 1, + 2, ...), the ts
-- they were all stamped with, the database's clock then (Unix seconds, for
-- the node's DatabaseClock) and the new frontier: the hashes of the complete
-- subtrees of the new size, largest first, concatenated (32 bytes each).
--
-- VOLATILE (the default), so each statement below takes a fresh snapshot: in
-- READ COMMITTED, once the head lock is ours, the frontier read sees the
-- nodes of the transaction that held the lock before us.
CREATE FUNCTION livefeed_append(
    types TEXT[], workflow_ids TEXT[], datas TEXT[],
    OUT after_id BIGINT, OUT stamped TEXT, OUT clock_s FLOAT8, OUT frontier BYTEA
)
LANGUAGE plpgsql AS $$
DECLARE
    leaf_prefix CONSTANT BYTEA := decode('00', 'hex');  -- RFC 9162 leaf: sha256(0x00 || entry)
    node_prefix CONSTANT BYTEA := decode('01', 'hex');  -- node: sha256(0x01 || left || right)
    moment TIMESTAMPTZ;
    head_ts TEXT COLLATE "C";
    leaves BYTEA[];
    -- The frontier as a stack, top at `depth`: levels strictly decreasing
    -- upwards from the bottom, as Frontier._levels / _hashes.
    levels INT[] := '{}';
    positions BIGINT[] := '{}';
    nodes BYTEA[];
    depth INT := 0;
    covered BIGINT := 0;
    run BYTEA[] := '{}';  -- the new nodes in position order, as Frontier.append returns them
    made INT := 0;
    leaf BYTEA;
    value BYTEA;
    level INT;
BEGIN
    -- 1. The head lock, held until this statement's transaction commits; the
    -- database's clock read under it (DB_NOW's format), never before the
    -- previous event's ts.
    SELECT h.last_id, h.last_ts INTO after_id, head_ts FROM log_head AS h FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the log_head row is missing: the database was not migrated';
    END IF;
    moment := clock_timestamp();
    stamped := greatest(
        to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') COLLATE "C", head_ts
    );
    clock_s := extract(epoch FROM moment);

    -- 2. The events, with the columns APPEND_SQL writes; 3. their leaf hashes,
    -- from the rows as stored: the envelope Event.build makes (type,
    -- workflow_id and ts need no JSON escaping, data is compact JSON used as
    -- it is), in UTF-8.
    WITH written AS (
        INSERT INTO events (id, type, workflow_id, ts, data)
        SELECT after_id + batch.n, batch.type, batch.workflow_id, stamped, batch.data
        FROM unnest(types, workflow_ids, datas) WITH ORDINALITY AS batch (type, workflow_id, data, n)
        RETURNING events.id, events.type, events.workflow_id, events.ts, events.data
    )
    SELECT coalesce(array_agg(sha256(leaf_prefix || convert_to(
        '{"id":' || w.id || ',"type":"' || w.type
        || '","workflow_id":' || coalesce('"' || w.workflow_id || '"', 'null')
        || ',"ts":"' || w.ts || '","data":' || w.data || '}',
        'UTF8')) ORDER BY w.id), '{}')
    INTO leaves FROM written AS w;

    -- 4. The frontier of after_id leaves: one complete subtree per one-bit of
    -- the size, largest first (cover(0, size) in app/tlog/tree.py).  The node
    -- of `level` whose last leaf is `last` sits at first_position(last) + level
    -- (Node.position); the rows that hold them are read in one query.
    FOR k IN REVERSE 62..0 LOOP
        IF after_id & (1::BIGINT << k) <> 0 THEN
            depth := depth + 1;
            covered := covered + (1::BIGINT << k);
            levels[depth] := k;
            positions[depth] := livefeed_first_position(covered - 1) + k;
        END IF;
    END LOOP;
    SELECT coalesce(array_agg(substr(t.hashes, (p.pos % 32 * 32 + 1)::INT, 32) ORDER BY p.n), '{}')
    INTO nodes
    FROM unnest(positions) WITH ORDINALITY AS p (pos, n)
    LEFT JOIN tree_nodes AS t ON t.chunk = p.pos / 32;
    FOR i IN 1..depth LOOP
        IF length(nodes[i]) IS DISTINCT FROM 32 THEN
            RAISE EXCEPTION 'the tree has no node at position %', positions[i];
        END IF;
    END LOOP;

    -- Append each leaf as Frontier.append does: push it, merging while the top
    -- of the stack is a subtree of the same level; every leaf and merge is the
    -- next node in position order.
    FOREACH leaf IN ARRAY leaves LOOP
        made := made + 1;
        run[made] := leaf;
        level := 0;
        value := leaf;
        WHILE depth > 0 AND levels[depth] = level LOOP
            value := sha256(node_prefix || nodes[depth] || value);
            made := made + 1;
            run[made] := value;
            depth := depth - 1;
            level := level + 1;
        END LOOP;
        depth := depth + 1;
        levels[depth] := level;
        nodes[depth] := value;
    END LOOP;

    -- The run from first_position(after_id) on, 32 hashes to a row: appended
    -- to the last row, the rest in new rows (node_rows() and GROW_TREE).
    INSERT INTO tree_nodes (chunk, hashes)
    SELECT (livefeed_first_position(after_id) + r.n - 1) / 32, string_agg(r.hash, ''::BYTEA ORDER BY r.n)
    FROM unnest(run) WITH ORDINALITY AS r (hash, n)
    GROUP BY 1
    ON CONFLICT (chunk) DO UPDATE SET hashes = tree_nodes.hashes || EXCLUDED.hashes;

    -- 5. The head, and the NOTIFY (CHANNEL in postgres_sql.py), delivered on commit.
    UPDATE log_head SET last_id = after_id + cardinality(leaves), last_ts = stamped;
    PERFORM pg_notify('livefeed_log', (after_id + cardinality(leaves))::TEXT);

    -- 6. The new frontier, for the node to keep (TreeEdge).
    frontier := ''::BYTEA;
    FOR i IN 1..depth LOOP
        frontier := frontier || nodes[i];
    END LOOP;
END
$$;
