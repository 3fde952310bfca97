-- The Profiles pane lists a person's latest events (see migrations/0013_events_by_profile.sql).
CREATE INDEX events_by_profile ON events (profile_id, id);
