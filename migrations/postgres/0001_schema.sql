-- TrackLayer on PostgreSQL: the SQLite schema (migrations/0001–0008) in its current shape, plus
-- what a fleet needs. Times are Unix milliseconds (BIGINT) as on SQLite, so both stores share the
-- code that reads them. Columns holding TrackLayer's compressed text (codec.rs: a tag byte,
-- then LZ4) are BYTEA.
--
-- Fleet rules, enforced here rather than by read-then-write:
--   * a messageId is accepted once per environment within the dedup window: `message_ids` has
--     one row per (environment, message_id), claimed with INSERT … ON CONFLICT;
--   * one event per event_id within the dedup window: `event_ids`, claimed the same way;
--   * each identifier names one profile: `identities` keyed by (kind, value);
--   * deliveries are claimed with FOR UPDATE SKIP LOCKED and a lease.

CREATE TABLE nodes (
    node_id       TEXT   PRIMARY KEY,          -- stable per process start: host:pid:start
    hostname      TEXT   NOT NULL,
    started_at_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    version       TEXT   NOT NULL
);

CREATE TABLE requests (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id     TEXT    NOT NULL UNIQUE,
    node_id        TEXT    NOT NULL,           -- the node that ingested it
    received_at_ms BIGINT  NOT NULL,
    environment    TEXT    NOT NULL,
    path           TEXT    NOT NULL,
    remote_addr    TEXT,
    user_agent     TEXT,
    auth_scheme    TEXT    NOT NULL,           -- tracklayer | segment | write_key
    body_shape     TEXT    NOT NULL,           -- single | array | batch
    body_bytes     BIGINT  NOT NULL,
    message_count  INTEGER NOT NULL,
    body_sha256    BYTEA
);

CREATE TABLE messages (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id     TEXT    NOT NULL,
    node_id        TEXT    NOT NULL,
    position       INTEGER NOT NULL,
    received_at_ms BIGINT  NOT NULL,
    environment    TEXT    NOT NULL,
    message_id     TEXT,
    type           TEXT,
    event          TEXT,
    user_id        TEXT,
    anonymous_id   TEXT,
    status         TEXT    NOT NULL CHECK (status IN ('accepted', 'duplicate', 'invalid')),
    reason         TEXT,
    duplicate_of   BIGINT REFERENCES messages(id),
    raw_sha256     BYTEA   NOT NULL,
    raw            BYTEA,
    raw_bytes      BIGINT,
    outcome        TEXT
);
CREATE INDEX messages_by_message_id ON messages (message_id);
CREATE INDEX messages_by_request ON messages (request_id, position);

-- The first accepted arrival of each messageId per environment. A later arrival inside the
-- dedup window is a duplicate of `message_row`; past it, the row is taken over.
CREATE TABLE message_ids (
    environment   TEXT   NOT NULL,
    message_id    TEXT   NOT NULL,
    message_row   BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (environment, message_id)
);

CREATE TABLE rejections (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at_ms     BIGINT  NOT NULL,
    path               TEXT    NOT NULL,
    remote_addr        TEXT,
    user_agent         TEXT,
    account_header     TEXT,
    environment_header TEXT,
    content_type       TEXT,
    body_bytes         BIGINT,
    status_code        INTEGER NOT NULL,
    reason_code        TEXT    NOT NULL,
    reason             TEXT    NOT NULL
);
CREATE INDEX rejections_by_time ON rejections (received_at_ms);

CREATE TABLE rejection_counts (
    minute_ms   BIGINT  NOT NULL,
    environment TEXT    NOT NULL,
    reason_code TEXT    NOT NULL,
    peer        TEXT    NOT NULL,
    status_code INTEGER NOT NULL,
    count       BIGINT  NOT NULL,
    PRIMARY KEY (minute_ms, environment, reason_code, peer)
);

CREATE TABLE local_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE profiles (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        TEXT,
    traits         TEXT   NOT NULL DEFAULT '{}',
    trait_sources  TEXT   NOT NULL DEFAULT '{}',
    consent        TEXT,
    consent_source TEXT,
    first_seen_ms  BIGINT NOT NULL,
    last_seen_ms   BIGINT NOT NULL,
    merged_into    BIGINT
);
CREATE INDEX profiles_by_user_id ON profiles (user_id);

CREATE TABLE identities (
    kind          TEXT   NOT NULL,
    value         TEXT   NOT NULL,
    profile_id    BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX identities_by_profile ON identities (profile_id);

CREATE TABLE identity_changes (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms            BIGINT NOT NULL,
    message_row      BIGINT NOT NULL,
    kind             TEXT   NOT NULL CHECK (kind IN ('created', 'merged', 'conflict')),
    profile_id       BIGINT NOT NULL,
    other_profile_id BIGINT,
    detail           TEXT   NOT NULL
);
CREATE INDEX identity_changes_by_profile ON identity_changes (profile_id);
CREATE INDEX identity_changes_by_message ON identity_changes (message_row);
CREATE INDEX identity_changes_by_other ON identity_changes (other_profile_id);

CREATE TABLE events (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT    NOT NULL,
    message_row     BIGINT  NOT NULL,
    message_id      TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    segment_event   TEXT    NOT NULL,
    mapping_version INTEGER NOT NULL,
    event_time_ms   BIGINT  NOT NULL,
    profile_id      BIGINT,
    fingerprint     BYTEA   NOT NULL,
    canonical       BYTEA   NOT NULL,
    replay          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms   BIGINT  NOT NULL
);
CREATE INDEX events_by_event_id ON events (event_id);
CREATE INDEX events_by_message_row ON events (message_row);

-- The first event of each event_id within the dedup window (the winner of any collision).
CREATE TABLE event_ids (
    event_id      TEXT   PRIMARY KEY,
    event_row     BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE routes (
    event_row         BIGINT  NOT NULL,
    destination       TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    destination_event TEXT    NOT NULL,
    verdict           TEXT    NOT NULL,
    reason            TEXT    NOT NULL,
    consent_source    TEXT    NOT NULL,
    consent_allowed   BOOLEAN NOT NULL,
    consent_reason    TEXT    NOT NULL,
    PRIMARY KEY (event_row, destination)
);

CREATE TABLE collisions (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id           TEXT   NOT NULL,
    kind               TEXT   NOT NULL,
    winner_event_row   BIGINT NOT NULL,
    winner_message_row BIGINT NOT NULL,
    message_row        BIGINT NOT NULL,
    canonical          BYTEA  NOT NULL,
    detected_at_ms     BIGINT NOT NULL
);
CREATE INDEX collisions_by_event_id ON collisions (event_id);
CREATE INDEX collisions_by_message_row ON collisions (message_row);

CREATE TABLE unmapped (
    message_row     BIGINT  PRIMARY KEY,
    environment     TEXT    NOT NULL,
    segment_event   TEXT    NOT NULL,
    mapping_version INTEGER NOT NULL,
    suggestion      TEXT,
    reason          TEXT    NOT NULL,
    received_at_ms  BIGINT  NOT NULL
);
CREATE INDEX unmapped_by_name ON unmapped (segment_event, received_at_ms);

CREATE TABLE replay_windows (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment   TEXT   NOT NULL,
    starts_ms     BIGINT NOT NULL,
    ends_ms       BIGINT NOT NULL,
    note          TEXT,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_row         BIGINT,
    event_id          TEXT    NOT NULL,
    message_row       BIGINT  NOT NULL,
    destination       TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    destination_event TEXT    NOT NULL,
    consent_source    TEXT    NOT NULL,
    subject           TEXT,               -- JSON snapshot for profile deliveries
    status            TEXT    NOT NULL CHECK (status IN ('pending', 'in_flight', 'delivered', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    failures          INTEGER NOT NULL DEFAULT 0,
    solo              BOOLEAN NOT NULL DEFAULT FALSE,
    next_attempt_ms   BIGINT  NOT NULL,
    lease_until_ms    BIGINT,
    leased_by         TEXT,                    -- the node holding the lease
    event_time_ms     BIGINT  NOT NULL,
    created_at_ms     BIGINT  NOT NULL,
    updated_at_ms     BIGINT  NOT NULL,
    last_status_code  INTEGER,
    last_error        TEXT
);
CREATE INDEX deliveries_by_message ON deliveries (message_row);
CREATE INDEX deliveries_ready ON deliveries (destination, next_attempt_ms) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until_ms) WHERE status = 'in_flight';
CREATE INDEX deliveries_dead ON deliveries (destination, updated_at_ms) WHERE status = 'dead';

CREATE TABLE delivery_requests (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination     TEXT    NOT NULL,
    node_id         TEXT    NOT NULL,          -- the node that sent it
    started_at_ms   BIGINT  NOT NULL,
    latency_ms      BIGINT,
    item_count      INTEGER NOT NULL,
    request_url     TEXT,
    request_headers BYTEA,
    request_body    BYTEA,
    status_code     INTEGER,
    response_body   BYTEA,
    error           TEXT
);
CREATE INDEX delivery_requests_by_destination ON delivery_requests (destination, id);

CREATE TABLE delivery_attempts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     BIGINT  NOT NULL,
    request_row     BIGINT,
    node_id         TEXT    NOT NULL,
    attempt         INTEGER NOT NULL,
    at_ms           BIGINT  NOT NULL,
    outcome         TEXT    NOT NULL,
    reason          TEXT,
    next_attempt_ms BIGINT
);
CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id);

-- A destination's pause belongs to the fleet: every node reads it before claiming.
CREATE TABLE destination_state (
    destination     TEXT PRIMARY KEY,
    paused_until_ms BIGINT,
    reason          TEXT,
    updated_at_ms   BIGINT NOT NULL
);

CREATE TABLE destination_totals (
    destination TEXT   PRIMARY KEY,
    delivered   BIGINT NOT NULL DEFAULT 0
);
