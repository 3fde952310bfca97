-- The Profiles pane lists a person's latest events: without this index SQLite walks the events
-- newest first until it has found 20 of theirs (64 ms at 767k events for someone with 67).
CREATE INDEX events_by_profile ON events (profile_id);
