-- Requests refused before their body was trusted: metadata only, never the body or a secret.
CREATE TABLE rejections (
    id                 INTEGER PRIMARY KEY,
    received_at_ms     INTEGER NOT NULL,
    path               TEXT    NOT NULL,
    remote_addr        TEXT,
    user_agent         TEXT,
    account_header     TEXT,
    environment_header TEXT,
    content_type       TEXT,
    body_bytes         INTEGER,
    status_code        INTEGER NOT NULL,
    reason_code        TEXT    NOT NULL,
    reason             TEXT    NOT NULL
);
CREATE INDEX rejections_by_time ON rejections (received_at_ms);

-- Settings of the embedded default (the generated development secret) live with its data.
CREATE TABLE local_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
