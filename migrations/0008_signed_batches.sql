-- Segment's X-Signature covers only element 0 of a batch, so a captured signature could carry a
-- forged batch. A batch whose element 0 was seen before is a genuine retry only if it is the
-- same request byte for byte: each request keeps the SHA-256 of its body to tell.
ALTER TABLE requests ADD COLUMN body_sha256 BLOB;
