-- The canonical pipeline: what each message became, the identity graph, collisions, routes.

-- mapped | unmapped | identify | collision | replayed (NULL for invalid messages)
ALTER TABLE messages ADD COLUMN outcome TEXT;

CREATE TABLE profiles (
    id             INTEGER PRIMARY KEY,
    user_id        TEXT,
    traits         TEXT    NOT NULL DEFAULT '{}',   -- JSON, as sent by identify calls
    trait_sources  TEXT    NOT NULL DEFAULT '{}',   -- JSON: trait -> messageId that set it
    consent        TEXT,                            -- JSON categoryPreferences
    consent_source TEXT,                            -- messageId that set the consent
    first_seen_ms  INTEGER NOT NULL,
    last_seen_ms   INTEGER NOT NULL,
    merged_into    INTEGER                          -- set when folded into another profile
);
CREATE INDEX profiles_by_user_id ON profiles (user_id);

-- Identifier -> profile. Merges re-point rows, so every identifier names a live profile.
CREATE TABLE identities (
    kind          TEXT    NOT NULL,   -- user_id | anonymous_id | email | phone
    value         TEXT    NOT NULL,
    profile_id    INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE INDEX identities_by_profile ON identities (profile_id);

CREATE TABLE identity_changes (
    id               INTEGER PRIMARY KEY,
    at_ms            INTEGER NOT NULL,
    message_row      INTEGER NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('created', 'merged', 'conflict')),
    profile_id       INTEGER NOT NULL,
    other_profile_id INTEGER,
    detail           TEXT    NOT NULL
);
CREATE INDEX identity_changes_by_profile ON identity_changes (profile_id);
CREATE INDEX identity_changes_by_message ON identity_changes (message_row);

-- One row per canonical event that passed dedup (or was let through by a replay window).
CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT    NOT NULL,
    message_row     INTEGER NOT NULL,
    message_id      TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    segment_event   TEXT    NOT NULL,
    mapping_version INTEGER NOT NULL,
    event_time_ms   INTEGER NOT NULL,
    profile_id      INTEGER,
    fingerprint     BLOB    NOT NULL,   -- SHA-256 of name, time and canonical properties
    canonical       TEXT    NOT NULL,   -- the CanonicalEvent as JSON, with provenance
    replay          INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL
);
CREATE INDEX events_by_event_id ON events (event_id);
CREATE INDEX events_by_message_row ON events (message_row);

-- Per event and destination: go, or why not.
CREATE TABLE routes (
    event_row         INTEGER NOT NULL,
    destination       TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    destination_event TEXT    NOT NULL,
    verdict           TEXT    NOT NULL,   -- ready | blocked_consent | other_environment | missing_required
    reason            TEXT    NOT NULL,
    consent_source    TEXT    NOT NULL,   -- event | profile | none
    consent_allowed   INTEGER NOT NULL,
    consent_reason    TEXT    NOT NULL,
    PRIMARY KEY (event_row, destination)
) WITHOUT ROWID;

-- A later arrival that collapsed onto an existing event_id; both raw messages stay linked.
CREATE TABLE collisions (
    id                 INTEGER PRIMARY KEY,
    event_id           TEXT    NOT NULL,
    kind               TEXT    NOT NULL,   -- segment_retry | duplicate_order | conflicting_payload
    winner_event_row   INTEGER NOT NULL,
    winner_message_row INTEGER NOT NULL,
    message_row        INTEGER NOT NULL,
    canonical          TEXT    NOT NULL,   -- the later arrival's canonical event
    detected_at_ms     INTEGER NOT NULL
);
CREATE INDEX collisions_by_event_id ON collisions (event_id);
CREATE INDEX collisions_by_message_row ON collisions (message_row);

CREATE TABLE unmapped (
    message_row     INTEGER PRIMARY KEY,
    environment     TEXT    NOT NULL,
    segment_event   TEXT    NOT NULL,
    mapping_version INTEGER NOT NULL,
    suggestion      TEXT,
    reason          TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL
);
CREATE INDEX unmapped_by_name ON unmapped (segment_event, received_at_ms);

-- Operator-opened windows during which a repeated event_id passes (Segment Replays reuse ids).
CREATE TABLE replay_windows (
    id            INTEGER PRIMARY KEY,
    environment   TEXT    NOT NULL,
    starts_ms     INTEGER NOT NULL,
    ends_ms       INTEGER NOT NULL,
    note          TEXT,
    created_at_ms INTEGER NOT NULL
);
