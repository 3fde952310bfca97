-- One row per authenticated ingest request (a receipt), and one row per Segment message in it.
CREATE TABLE requests (
    id             INTEGER PRIMARY KEY,
    request_id     TEXT    NOT NULL UNIQUE,
    received_at_ms INTEGER NOT NULL,
    environment    TEXT    NOT NULL,
    path           TEXT    NOT NULL,
    remote_addr    TEXT,
    user_agent     TEXT,
    auth_scheme    TEXT    NOT NULL,   -- tracklayer | segment | write_key
    body_shape     TEXT    NOT NULL,   -- single | array | batch
    body_bytes     INTEGER NOT NULL,
    message_count  INTEGER NOT NULL
);

CREATE TABLE messages (
    id             INTEGER PRIMARY KEY,
    request_id     TEXT    NOT NULL,
    position       INTEGER NOT NULL,   -- index within the request's batch
    received_at_ms INTEGER NOT NULL,
    environment    TEXT    NOT NULL,
    message_id     TEXT,
    type           TEXT,
    event          TEXT,
    user_id        TEXT,
    anonymous_id   TEXT,
    status         TEXT    NOT NULL CHECK (status IN ('accepted', 'duplicate', 'invalid')),
    reason         TEXT,
    duplicate_of   INTEGER REFERENCES messages(id),
    raw_sha256     BLOB    NOT NULL,
    -- The message exactly as received. NULL only for a duplicate whose bytes equal the original's
    -- (raw_sha256 proves it), so a Segment retry storm does not multiply storage.
    raw            BLOB
);

-- Every index costs each ingest write, so there are only two. Dedup and `inspect` look up by
-- messageId (few rows per id); "recent" and retention walk the rowid, which follows arrival time.
CREATE INDEX messages_by_message_id ON messages (message_id);
CREATE INDEX messages_by_request ON messages (request_id, position);
