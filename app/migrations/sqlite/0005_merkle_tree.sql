-- The verifiable log (docs/verifiable-log.md).  tree_nodes holds the hash of
-- every complete subtree of the log's RFC 9162 Merkle tree, in the order
-- appends create them (app/tlog/tree.py, Node.position), 32 hashes of 32
-- bytes to a row: row `chunk` holds positions chunk*32 .. chunk*32+31.  Rows
-- are only ever appended to, in the same transaction as the events they
-- cover; trimming never touches them, so proofs outlive event bodies.  The
-- tree of events written before this migration is built by its Python step
-- (app/store/sqlite_tree.py), which refuses a log trimmed before it.
CREATE TABLE tree_nodes (
    chunk INTEGER PRIMARY KEY,
    hashes BLOB NOT NULL
);

-- The log's Ed25519 signing key (a C2SP signer key, its name the log's
-- origin), generated once by the first process that needs it unless
-- LIVEFEED_SIGNING_KEY is set: every worker and node signs with it.
CREATE TABLE log_signer (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    signer_key TEXT NOT NULL
);
