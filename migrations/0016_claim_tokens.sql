-- The claim that leased a delivery (a random token per claim): a claim asked again after its
-- answer was lost finds what the first one took, instead of leaving it in flight until its
-- lease runs out.
ALTER TABLE deliveries ADD COLUMN claim_token INTEGER;
