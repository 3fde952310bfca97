-- One row per unmapped event name: what the Unmapped pane lists. The commit that stores an
-- unmapped message updates its name's row, so the pane reads a few hundred rows instead of
-- grouping every unmapped message (107 ms at 1M messages). Retention recomputes the names whose
-- rows it deletes. Same meaning as grouping `unmapped`: environments each once, the greatest
-- suggestion and reason.
CREATE TABLE unmapped_names (
    segment_event TEXT    PRIMARY KEY,
    n             INTEGER NOT NULL,
    first_ms      INTEGER NOT NULL,
    last_ms       INTEGER NOT NULL,
    environments  TEXT    NOT NULL,
    suggestion    TEXT,
    reason        TEXT    NOT NULL,
    last_row      INTEGER NOT NULL
);

INSERT INTO unmapped_names (segment_event, n, first_ms, last_ms, environments, suggestion, reason, last_row)
SELECT segment_event, COUNT(*), MIN(received_at_ms), MAX(received_at_ms),
       GROUP_CONCAT(DISTINCT environment), MAX(suggestion), MAX(reason), MAX(message_row)
FROM unmapped GROUP BY segment_event;
