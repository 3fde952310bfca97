-- One normal form per identifier: see migrations/0015_one_person_one_key.sql. Where two
-- spellings of one mailbox both had a row, the oldest keeps the key.
WITH rekeyed AS (
    SELECT kind, value,
           replace(split_part(split_part(value, '@', 1), '+', 1), '.', '') || '@gmail.com' AS normal
    FROM identities
    WHERE kind = 'email' AND (value LIKE '%@gmail.com' OR value LIKE '%@googlemail.com')
), chosen AS (
    SELECT DISTINCT ON (r.normal) r.kind, r.value, r.normal
    FROM rekeyed r JOIN identities i ON i.kind = r.kind AND i.value = r.value
    WHERE r.normal <> r.value AND r.normal <> '@gmail.com'
      AND NOT EXISTS (SELECT 1 FROM identities t WHERE t.kind = 'email' AND t.value = r.normal)
    ORDER BY r.normal, i.first_seen_ms, r.value
)
UPDATE identities i SET value = c.normal
FROM chosen c WHERE i.kind = c.kind AND i.value = c.value;

CREATE TABLE signed_request_uses (
    digest        BYTEA  PRIMARY KEY,
    expires_at_ms BIGINT NOT NULL
);
