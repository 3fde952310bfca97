-- Forgetting a person (tracklayer forget, POST /privacy/forget). None of these tables holds a
-- personal value once a request is finished: identifiers are kept as HMAC-SHA256 under the
-- store's own key (local_settings 'privacy.key'), and a forward's payload is cleared when the
-- platform has answered for good.

-- The audit: one row per request (forget or undo).
CREATE TABLE privacy_requests (
    id                  INTEGER PRIMARY KEY,
    request_id          TEXT    NOT NULL UNIQUE,   -- fg_… (or the HTTP request's id)
    action              TEXT    NOT NULL,          -- forget | undo
    who                 TEXT    NOT NULL,          -- cli:user@host, or http:<request id> from <peer>
    environment         TEXT    NOT NULL,
    received_at_ms      INTEGER NOT NULL,
    finished_at_ms      INTEGER,
    identifiers         TEXT    NOT NULL,          -- JSON [{"kind", "hash"}]: keyed hashes only
    status              TEXT    NOT NULL,          -- deleting | done | unknown_person | already_forgotten | lifted | not_suppressed
    deleted             TEXT    NOT NULL DEFAULT '{}',   -- JSON {table: rows}
    suppressed_messages INTEGER NOT NULL DEFAULT 0,      -- later messages refused for it
    last_suppressed_ms  INTEGER
);
CREATE INDEX privacy_requests_by_time ON privacy_requests (received_at_ms);

-- The suppression list: a message naming any of these is not stored and reaches no destination.
CREATE TABLE suppressions (
    hash          BLOB    PRIMARY KEY,   -- HMAC-SHA256(privacy.key, kind 0x1f value)
    kind          TEXT    NOT NULL,
    request_row   INTEGER NOT NULL,      -- the forget that added it
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Deletions forwarded to platforms that take them (Klaviyo's data-privacy-deletion-jobs) and the
-- signed tracklayer.forget event for webhooks; retried like deliveries.
CREATE TABLE privacy_forwards (
    id              INTEGER PRIMARY KEY,
    request_row     INTEGER NOT NULL,
    destination     TEXT    NOT NULL,
    kind            TEXT    NOT NULL,   -- klaviyo | webhook
    payload         TEXT,               -- what to send; NULL once delivered or dead
    status          TEXT    NOT NULL,   -- pending | in_flight | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER,
    status_code     INTEGER,
    last_error      TEXT,
    updated_at_ms   INTEGER NOT NULL
);
CREATE INDEX privacy_forwards_by_request ON privacy_forwards (request_row);
CREATE INDEX privacy_forwards_due ON privacy_forwards (next_attempt_ms) WHERE status IN ('pending', 'in_flight');

-- Retention deletes profiles untouched for retention_days.
CREATE INDEX profiles_by_last_seen ON profiles (last_seen_ms);
