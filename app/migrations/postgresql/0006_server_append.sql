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
    levels INT[];
    nodes BYTEA[];
    depth INT;
    missing BIGINT;
    -- The new nodes as row pieces: piece_hashes[i] to append to row piece_chunks[i].
    piece_chunks BIGINT[] := '{}';
    piece_hashes BYTEA[] := '{}';
    pieces INT := 0;
    pos BIGINT;  -- the next node's position
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

    -- 4. The frontier of after_id leaves: one complete subtree per one-bit k
    -- of the size, largest first (cover(0, size) in app/tlog/tree.py).  Its
    -- last leaf is the size with bits 0..k-1 cleared, minus one, and a node of
    -- level k sits at first_position(its last leaf) + k (Node.position).  One
    -- query finds them and reads the rows that hold them, by primary key.
    SELECT coalesce(array_agg(f.k ORDER BY f.k DESC), '{}'),
           coalesce(array_agg(f.hash ORDER BY f.k DESC), '{}'),
           min(f.pos) FILTER (WHERE length(f.hash) IS DISTINCT FROM 32)
    INTO levels, nodes, missing
    FROM (
        SELECT b.k, b.pos, substr(t.hashes, (b.pos % 32 * 32 + 1)::INT, 32) AS hash
        FROM (
            SELECT k, livefeed_first_position(((after_id >> k) << k) - 1) + k AS pos
            FROM generate_series(62, 0, -1) AS k
            WHERE ((after_id >> k) & 1) = 1
        ) AS b
        LEFT JOIN tree_nodes AS t ON t.chunk = b.pos / 32
    ) AS f;
    IF missing IS NOT NULL THEN
        -- Events appended around the tree (by a server of the version before
        -- it): nothing is written, and the node appends under the head lock,
        -- where app.store.postgres_tree.load_frontier adds them to the tree.
        RAISE EXCEPTION 'the tree has no node at position %', missing
            USING ERRCODE = 'LF001';
    END IF;
    depth := cardinality(levels);

    -- Append each leaf as Frontier.append does: push it, merging while the top
    -- of the stack is a subtree of the same level.  Every leaf and every merge
    -- is the next node in position order: each is added to the row pieces
    -- (chunk, hashes) as node_rows() cuts them, a new piece at each multiple
    -- of 32.
    pos := livefeed_first_position(after_id);
    FOREACH leaf IN ARRAY leaves LOOP
        level := 0;
        value := leaf;
        LOOP
            IF pieces = 0 OR pos % 32 = 0 THEN
                pieces := pieces + 1;
                piece_chunks[pieces] := pos / 32;
                piece_hashes[pieces] := value;
            ELSE
                piece_hashes[pieces] := piece_hashes[pieces] || value;
            END IF;
            pos := pos + 1;
            EXIT WHEN depth = 0 OR levels[depth] <> level;
            value := sha256(node_prefix || nodes[depth] || value);
            depth := depth - 1;
            level := level + 1;
        END LOOP;
        depth := depth + 1;
        levels[depth] := level;
        nodes[depth] := value;
    END LOOP;

    -- The pieces appended to their rows: the first to the last row (a new row
    -- when it starts one), the rest as new rows; GROW_TREE's statement.
    INSERT INTO tree_nodes (chunk, hashes)
    SELECT * FROM unnest(piece_chunks, piece_hashes)
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
