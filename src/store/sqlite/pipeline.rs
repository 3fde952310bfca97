//! Small writes of the stateful side that are not the stage's: replay windows, and the per-name
//! counts of unmapped messages.

use rusqlite::{params, Connection};

/// Open a replay window: while it is open, an event_id seen before passes as a replay.
pub fn open_replay_window(
    conn: &Connection,
    environment: &str,
    starts_ms: i64,
    ends_ms: i64,
    note: &str,
) -> Result<i64, rusqlite::Error> {
    conn.execute(
        "INSERT INTO replay_windows (environment, starts_ms, ends_ms, note, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?2)",
        params![environment, starts_ms, ends_ms, note],
    )?;
    Ok(conn.last_insert_rowid())
}

/// One more unmapped message for its name's row in `unmapped_names` (migration 0012).
pub(super) fn count_unmapped_name(
    conn: &Connection,
    segment_event: &str,
    environment: &str,
    suggestion: Option<&str>,
    reason: &str,
    received_at_ms: i64,
    message_row: i64,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO unmapped_names
             (segment_event, n, first_ms, last_ms, environments, suggestion, reason, last_row)
         VALUES (?1, 1, ?2, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (segment_event) DO UPDATE SET
             n = n + 1,
             first_ms = MIN(first_ms, excluded.first_ms),
             last_ms = MAX(last_ms, excluded.last_ms),
             environments = CASE
                 WHEN instr(',' || environments || ',', ',' || excluded.environments || ',') > 0
                 THEN environments ELSE environments || ',' || excluded.environments END,
             suggestion = CASE
                 WHEN suggestion IS NULL OR excluded.suggestion > suggestion
                 THEN excluded.suggestion ELSE suggestion END,
             reason = MAX(reason, excluded.reason),
             last_row = MAX(last_row, excluded.last_row)",
    )?
    .execute(params![
        segment_event,
        received_at_ms,
        environment,
        suggestion,
        reason,
        message_row
    ])?;
    Ok(())
}
