-- A destination's minutes, kept by the writer as it records outcomes: the dashboard's "5 min",
-- "1 h" and last-hour chart are these minutes, so a window is time however much traffic fell
-- in it (they used to be the newest rows of the requests and attempts tables, which under load
-- covered a few minutes and let an outage fall out of "the last hour").
CREATE TABLE destination_minutes (
    destination TEXT    NOT NULL,
    minute_ms   INTEGER NOT NULL,   -- start of the minute
    requests    INTEGER NOT NULL DEFAULT 0,
    succeeded   INTEGER NOT NULL DEFAULT 0,
    -- Requests by latency: ≤10, ≤50, ≤100, ≤250, ≤500, ≤1000, ≤5000 ms, and slower.
    latency_10ms   INTEGER NOT NULL DEFAULT 0,
    latency_50ms   INTEGER NOT NULL DEFAULT 0,
    latency_100ms  INTEGER NOT NULL DEFAULT 0,
    latency_250ms  INTEGER NOT NULL DEFAULT 0,
    latency_500ms  INTEGER NOT NULL DEFAULT 0,
    latency_1s     INTEGER NOT NULL DEFAULT 0,
    latency_5s     INTEGER NOT NULL DEFAULT 0,
    latency_slower INTEGER NOT NULL DEFAULT 0,
    -- Delivery attempts by outcome.
    delivered   INTEGER NOT NULL DEFAULT 0,
    retried     INTEGER NOT NULL DEFAULT 0,
    dead        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, minute_ms)
) WITHOUT ROWID;

-- Failures per minute by kind ("HTTP 503", "Meta error 190"), with the last reason of each.
CREATE TABLE destination_minute_errors (
    destination TEXT    NOT NULL,
    minute_ms   INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    last_at_ms  INTEGER NOT NULL,
    last_reason TEXT    NOT NULL,
    PRIMARY KEY (destination, minute_ms, kind)
) WITHOUT ROWID;
