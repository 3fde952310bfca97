-- What people did from the dashboard (issue 14): retry now, replay dead letters, pause, resume,
-- allow a replay window. Who, when, on what, and how many rows it touched.
CREATE TABLE operator_actions (
    id        INTEGER PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    who       TEXT    NOT NULL,   -- user@host of the dashboard
    action    TEXT    NOT NULL,   -- retry_now | replay_dead | pause | resume | allow_replay
    target    TEXT    NOT NULL,   -- the delivery id, destination or environment
    detail    TEXT    NOT NULL,   -- for people: what it did
    affected  INTEGER NOT NULL
);
