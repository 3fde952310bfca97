-- The claim that leased a delivery (a random token per claim): a claim asked again after its
-- answer was lost finds what the first one took, instead of leaving it in flight until its
-- lease runs out.
ALTER TABLE deliveries ADD COLUMN claim_token INTEGER;

-- Two indexes nothing reads any more: due rows are found by deliveries_ready (pending),
-- deliveries_leased (in flight) and deliveries_dead, and a delivery by its message. Each cost
-- every delivery a few dozen bytes and every status change an index write.
DROP INDEX IF EXISTS deliveries_due;
DROP INDEX IF EXISTS deliveries_by_event;
