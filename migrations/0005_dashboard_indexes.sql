-- The profile pane lists merges and conflicts from both sides.
CREATE INDEX identity_changes_by_other ON identity_changes (other_profile_id);
