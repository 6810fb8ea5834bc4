-- Idempotency keys: a retried publish with the same key returns the first
-- answer (the receipt: [[id, ts], ...]) instead of writing again.  Kept in
-- the log's database so they hold across restarts, workers and machines.
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    receipt TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- One-use stream tickets for browsers (EventSource and WebSocket cannot send
-- an Authorization header).  Only a SHA-256 digest of each ticket is stored.
CREATE TABLE stream_tickets (
    digest TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    expires_at REAL NOT NULL
);

CREATE INDEX stream_tickets_expires_at ON stream_tickets (expires_at);
