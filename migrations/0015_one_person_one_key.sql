-- One normal form per identifier (src/pipeline/identifier.rs): a gmail.com or googlemail.com
-- address is keyed without the dots and `+suffix` of its local part, on gmail.com. Graph rows
-- written before are re-keyed; where two spellings of one mailbox both had a row, the first
-- keeps the key and the other stays under its old spelling (its profile is still found by its
-- other identifiers). Phones stay as they were written: E.164 needs the workspace's country,
-- and a national number is re-keyed when the person's next message names it.
UPDATE OR IGNORE identities
SET value = replace(
        CASE WHEN instr(substr(value, 1, instr(value, '@') - 1), '+') > 0
             THEN substr(value, 1, instr(value, '+') - 1)
             ELSE substr(value, 1, instr(value, '@') - 1) END,
        '.', '') || '@gmail.com'
WHERE kind = 'email'
  AND (value LIKE '%@gmail.com' OR value LIKE '%@googlemail.com')
  AND length(replace(
        CASE WHEN instr(substr(value, 1, instr(value, '@') - 1), '+') > 0
             THEN substr(value, 1, instr(value, '+') - 1)
             ELSE substr(value, 1, instr(value, '@') - 1) END,
        '.', '')) > 0;

-- Each signed request to /privacy/forget is taken once: its digest is kept until its timestamp
-- leaves the tolerance window, and a second use is refused as a replay.
CREATE TABLE signed_request_uses (
    digest        BLOB    PRIMARY KEY,   -- SHA-256 of environment, timestamp and signature
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
