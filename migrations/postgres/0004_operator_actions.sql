-- What people did from the dashboard (see migrations/0011_operator_actions.sql).
CREATE TABLE operator_actions (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    who       TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    target    TEXT   NOT NULL,
    detail    TEXT   NOT NULL,
    affected  BIGINT NOT NULL
);
