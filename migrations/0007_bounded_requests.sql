-- Bounded cost per request.

-- An invalid message over the size limit keeps only its first bytes; this is its full size
-- (NULL: `raw` is the whole message).
ALTER TABLE messages ADD COLUMN raw_bytes INTEGER;

-- Refused requests are counted, not stored one by one: a flood of bad requests costs a few
-- rows a minute. `rejections` keeps a handful of full examples per minute and reason.
CREATE TABLE rejection_counts (
    minute_ms   INTEGER NOT NULL,   -- start of the minute
    environment TEXT    NOT NULL,   -- the X-TrackLayer-Environment header as sent ('' if none)
    reason_code TEXT    NOT NULL,
    peer        TEXT    NOT NULL,   -- client IP; 'other' past the distinct-peer cap
    status_code INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (minute_ms, environment, reason_code, peer)
) WITHOUT ROWID;
