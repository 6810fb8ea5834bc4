-- The verifiable log, as in migrations/sqlite/0005_merkle_tree.sql: the hash
-- of every complete subtree of the log's Merkle tree, 32 to a row, appended
-- in the same transaction as the events they cover and never trimmed.  A row
-- is 1 KiB, under the size at which PostgreSQL would compress or move it out
-- of line (random hashes do not compress).  The tree of events written before
-- this migration is built by its Python step (app/store/postgres_tree.py).
CREATE TABLE tree_nodes (
    chunk BIGINT PRIMARY KEY,
    hashes BYTEA NOT NULL
);

-- The log's signing key, generated once unless LIVEFEED_SIGNING_KEY is set.
CREATE TABLE log_signer (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    signer_key TEXT NOT NULL
);
