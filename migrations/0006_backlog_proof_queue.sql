-- A delivery queue whose claim costs the same with a million rows waiting as with none
-- (reference/queues-at-scale.md). The old index covered every delivery ever made and the claim
-- sorted all due rows of an OR across two states; these partial indexes hold only live rows.

DROP INDEX deliveries_due;
-- Nothing looks deliveries up by event: routes carry the event, deliveries the message.
DROP INDEX deliveries_by_event;

-- The claim: the due pending rows of one destination, oldest first, read straight off the index.
CREATE INDEX deliveries_ready ON deliveries (destination, next_attempt_ms) WHERE status = 'pending';
-- The lease sweep: in-flight rows whose lease ran out (a crashed or stopped worker).
CREATE INDEX deliveries_leased ON deliveries (lease_until_ms) WHERE status = 'in_flight';
-- Dead letters per destination, for `replay` and the diagnostics count.
CREATE INDEX deliveries_dead ON deliveries (destination, updated_at_ms) WHERE status = 'dead';

-- Delivered rows leave the indexes; what the dashboard counts of them is kept here, one row per
-- destination, incremented in the commit that records the outcome.
CREATE TABLE destination_totals (
    destination TEXT PRIMARY KEY,
    delivered   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO destination_totals (destination, delivered)
    SELECT destination, COUNT(*) FROM deliveries WHERE status = 'delivered' GROUP BY destination;
