-- A profile's version, bumped by every write: a node writes a profile only if it is still the
-- version it loaded, and loads again if another node wrote it meanwhile (no row lock is held
-- while a group is decided).
ALTER TABLE profiles ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
