-- Alerts the pipeline raised (issue 13), shared by the fleet: one row per firing, resolved in
-- place. At most one open row per rule and subject, so two nodes cannot both fire (and notify).
CREATE TABLE alerts (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule           TEXT    NOT NULL,
    subject        TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('firing', 'resolved')),
    started_at_ms  BIGINT  NOT NULL,
    resolved_at_ms BIGINT,
    evidence       TEXT    NOT NULL,
    notified       BOOLEAN NOT NULL,
    node_id        TEXT
);
CREATE UNIQUE INDEX alerts_open ON alerts (rule, subject) WHERE state = 'firing';
CREATE INDEX alerts_by_subject ON alerts (rule, subject, started_at_ms);
