-- See migrations/0017_destination_minutes.sql: a destination's minutes, added to by every node
-- as it records outcomes, so the fleet's windows are time.
CREATE TABLE destination_minutes (
    destination TEXT   NOT NULL,
    minute_ms   BIGINT NOT NULL,
    requests    BIGINT NOT NULL DEFAULT 0,
    succeeded   BIGINT NOT NULL DEFAULT 0,
    latency_10ms   BIGINT NOT NULL DEFAULT 0,
    latency_50ms   BIGINT NOT NULL DEFAULT 0,
    latency_100ms  BIGINT NOT NULL DEFAULT 0,
    latency_250ms  BIGINT NOT NULL DEFAULT 0,
    latency_500ms  BIGINT NOT NULL DEFAULT 0,
    latency_1s     BIGINT NOT NULL DEFAULT 0,
    latency_5s     BIGINT NOT NULL DEFAULT 0,
    latency_slower BIGINT NOT NULL DEFAULT 0,
    delivered   BIGINT NOT NULL DEFAULT 0,
    retried     BIGINT NOT NULL DEFAULT 0,
    dead        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, minute_ms)
);

CREATE TABLE destination_minute_errors (
    destination TEXT   NOT NULL,
    minute_ms   BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    count       BIGINT NOT NULL,
    last_at_ms  BIGINT NOT NULL,
    last_reason TEXT   NOT NULL,
    PRIMARY KEY (destination, minute_ms, kind)
);
