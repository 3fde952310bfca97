-- Alerts the pipeline raised (issue 13): one row per firing, resolved in place. At most one
-- open (firing) row per rule and subject, so two evaluations (or two nodes) cannot both fire it.
CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY,
    rule           TEXT    NOT NULL,   -- platform_down | queue_backlog | error_rate | auth_failures | unmapped_spike | dead_letters
    subject        TEXT    NOT NULL,   -- the destination, environment or event name it is about
    state          TEXT    NOT NULL CHECK (state IN ('firing', 'resolved')),
    started_at_ms  INTEGER NOT NULL,
    resolved_at_ms INTEGER,
    evidence       TEXT    NOT NULL,   -- JSON: summary, last error, count, …
    notified       INTEGER NOT NULL,   -- 0 when a cooldown kept it quiet
    node_id        TEXT
);
CREATE UNIQUE INDEX alerts_open ON alerts (rule, subject) WHERE state = 'firing';
CREATE INDEX alerts_by_subject ON alerts (rule, subject, started_at_ms);
