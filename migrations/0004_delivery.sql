-- The durable delivery queue: one row per (event, destination), created in the same commit as
-- the canonical event; every HTTP request and every attempt is kept.

CREATE TABLE deliveries (
    id                INTEGER PRIMARY KEY,
    event_row         INTEGER,            -- NULL for profile deliveries (identify → Klaviyo)
    event_id          TEXT    NOT NULL,   -- the canonical event_id, reused on every attempt
    message_row       INTEGER NOT NULL,
    destination       TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    destination_event TEXT    NOT NULL,
    consent_source    TEXT    NOT NULL,
    subject           TEXT,               -- JSON snapshot for profile deliveries
    status            TEXT    NOT NULL CHECK (status IN ('pending', 'in_flight', 'delivered', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    failures          INTEGER NOT NULL DEFAULT 0,   -- since the last re-queue: the retry step
    solo              INTEGER NOT NULL DEFAULT 0,   -- send alone: a batch it was in failed whole
    next_attempt_ms   INTEGER NOT NULL,
    lease_until_ms    INTEGER,
    event_time_ms     INTEGER NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    last_status_code  INTEGER,
    last_error        TEXT
);
CREATE INDEX deliveries_due ON deliveries (destination, status, next_attempt_ms);
CREATE INDEX deliveries_by_event ON deliveries (event_row);
CREATE INDEX deliveries_by_message ON deliveries (message_row);

-- One row per HTTP request (a batch shares it); credentials redacted.
CREATE TABLE delivery_requests (
    id              INTEGER PRIMARY KEY,
    destination     TEXT    NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    latency_ms      INTEGER,
    item_count      INTEGER NOT NULL,
    request_url     TEXT,
    request_headers TEXT,              -- JSON [[name, value], ...]
    request_body    TEXT,
    status_code     INTEGER,
    response_body   TEXT,              -- truncated
    error           TEXT               -- transport error (timeout, refused)
);
CREATE INDEX delivery_requests_by_destination ON delivery_requests (destination, id);

CREATE TABLE delivery_attempts (
    id              INTEGER PRIMARY KEY,
    delivery_id     INTEGER NOT NULL,
    request_row     INTEGER,           -- NULL when nothing was sent (rejected while building)
    attempt         INTEGER NOT NULL,
    at_ms           INTEGER NOT NULL,
    outcome         TEXT    NOT NULL,  -- delivered | retry | dead
    reason          TEXT,
    next_attempt_ms INTEGER
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id);

-- A destination paused by its circuit breaker (visible in diagnostics).
CREATE TABLE destination_state (
    destination     TEXT PRIMARY KEY,
    paused_until_ms INTEGER,
    reason          TEXT,
    updated_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;
