-- Forgetting a person: see migrations/0014_privacy.sql (the same tables for a fleet). None of
-- them holds a personal value once a request is finished.
CREATE TABLE privacy_requests (
    id                  BIGSERIAL PRIMARY KEY,
    request_id          TEXT    NOT NULL UNIQUE,
    action              TEXT    NOT NULL,
    who                 TEXT    NOT NULL,
    environment         TEXT    NOT NULL,
    received_at_ms      BIGINT  NOT NULL,
    finished_at_ms      BIGINT,
    identifiers         TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    deleted             TEXT    NOT NULL DEFAULT '{}',
    suppressed_messages BIGINT  NOT NULL DEFAULT 0,
    last_suppressed_ms  BIGINT,
    node_id             TEXT
);
CREATE INDEX privacy_requests_by_time ON privacy_requests (received_at_ms);

CREATE TABLE suppressions (
    hash          BYTEA   PRIMARY KEY,
    kind          TEXT    NOT NULL,
    request_row   BIGINT  NOT NULL,
    created_at_ms BIGINT  NOT NULL
);

CREATE TABLE privacy_forwards (
    id              BIGSERIAL PRIMARY KEY,
    request_row     BIGINT  NOT NULL,
    destination     TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    payload         TEXT,
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT  NOT NULL,
    lease_until_ms  BIGINT,
    leased_by       TEXT,
    status_code     INTEGER,
    last_error      TEXT,
    updated_at_ms   BIGINT  NOT NULL
);
CREATE INDEX privacy_forwards_by_request ON privacy_forwards (request_row);
CREATE INDEX privacy_forwards_due ON privacy_forwards (next_attempt_ms) WHERE status IN ('pending', 'in_flight');

CREATE INDEX profiles_by_last_seen ON profiles (last_seen_ms);
