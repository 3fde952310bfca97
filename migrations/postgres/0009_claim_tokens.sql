-- See migrations/0016_lean_deliveries.sql: a claim whose COMMIT succeeded but whose answer was
-- lost (the server restarted, the connection dropped) is found again by its token.
ALTER TABLE deliveries ADD COLUMN claim_token BIGINT;
