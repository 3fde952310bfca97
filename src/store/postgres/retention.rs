//! Retention on PostgreSQL, once per fleet: every node's retention pass asks for one advisory
//! lock, and only the node holding it deletes (the others find nothing to do this time). Rows
//! go a bounded chunk at a time, oldest first, as on SQLite; pending deliveries are kept, and
//! profiles with their identities until nobody has been seen for the whole retention period.

use super::db::Db;

/// Rows per table per pass.
const CHUNK: i64 = 2000;
/// The advisory lock a retention pass holds ("retentio").
const RETENTION_LOCK: i64 = 0x7265_7465_6e74_696f;

type PgResult<T> = Result<T, postgres::Error>;

/// Delete up to CHUNK rows older than `cutoff_ms` from each table (and clear request bodies
/// older than `bodies_cutoff_ms`). Returns how many rows changed; 0 also when another node is
/// running the fleet's pass.
pub(super) fn prune(
    tx: &mut Db<'_, '_>,
    cutoff_ms: i64,
    bodies_cutoff_ms: Option<i64>,
) -> PgResult<usize> {
    let ours: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETENTION_LOCK])?
        .get(0);
    if !ours {
        return Ok(0);
    }
    const DELETES: [&str; 17] = [
        "DELETE FROM destination_minutes WHERE minute_ms < $1 AND $2::bigint > 0",
        "DELETE FROM destination_minute_errors WHERE minute_ms < $1 AND $2::bigint > 0",
        "DELETE FROM delivery_attempts WHERE id IN
             (SELECT id FROM delivery_attempts WHERE at_ms < $1 ORDER BY id LIMIT $2)",
        "DELETE FROM delivery_requests WHERE id IN
             (SELECT id FROM delivery_requests WHERE started_at_ms < $1 ORDER BY id LIMIT $2)",
        "DELETE FROM deliveries WHERE id IN
             (SELECT id FROM deliveries WHERE updated_at_ms < $1 AND status IN ('delivered', 'dead')
              ORDER BY id LIMIT $2)",
        "DELETE FROM routes WHERE event_row IN
             (SELECT id FROM events WHERE created_at_ms < $1 ORDER BY id LIMIT $2)",
        "DELETE FROM event_ids WHERE event_id IN
             (SELECT event_id FROM event_ids WHERE created_at_ms < $1 LIMIT $2)",
        "DELETE FROM events WHERE id IN
             (SELECT id FROM events WHERE created_at_ms < $1 ORDER BY id LIMIT $2)",
        "DELETE FROM collisions WHERE id IN
             (SELECT id FROM collisions WHERE detected_at_ms < $1 ORDER BY id LIMIT $2)",
        "DELETE FROM unmapped WHERE message_row IN
             (SELECT message_row FROM unmapped WHERE received_at_ms < $1 ORDER BY message_row LIMIT $2)",
        "DELETE FROM identity_changes WHERE id IN
             (SELECT id FROM identity_changes WHERE at_ms < $1 ORDER BY id LIMIT $2)",
        "DELETE FROM message_ids WHERE (environment, message_id) IN
             (SELECT environment, message_id FROM message_ids WHERE first_seen_ms < $1 LIMIT $2)",
        "DELETE FROM messages WHERE id IN
             (SELECT id FROM messages WHERE received_at_ms < $1 ORDER BY id LIMIT $2)",
        "DELETE FROM requests WHERE id IN
             (SELECT id FROM requests WHERE received_at_ms < $1 ORDER BY id LIMIT $2)",
        "DELETE FROM rejections WHERE id IN
             (SELECT id FROM rejections WHERE received_at_ms < $1 ORDER BY id LIMIT $2)",
        "DELETE FROM rejection_counts WHERE (minute_ms, environment, reason_code, peer) IN
             (SELECT minute_ms, environment, reason_code, peer FROM rejection_counts
              WHERE minute_ms < $1 ORDER BY minute_ms LIMIT $2)",
        "DELETE FROM nodes WHERE last_seen_ms < $1
             AND node_id NOT IN (SELECT DISTINCT leased_by FROM deliveries WHERE leased_by IS NOT NULL)
             AND node_id IN (SELECT node_id FROM nodes ORDER BY last_seen_ms LIMIT $2)",
    ];
    let mut changed = 0;
    for sql in DELETES {
        changed += tx.execute(sql, &[&cutoff_ms, &CHUNK])? as usize;
    }
    // People untouched for the retention period: no profile write and no event of theirs left
    // (their events went above). Their identifiers and identity history go with them.
    changed += tx.execute(
        "WITH gone AS (
             SELECT p.id FROM profiles p
             WHERE p.last_seen_ms < $1
               AND NOT EXISTS (SELECT 1 FROM events e WHERE e.profile_id = p.id)
             ORDER BY p.last_seen_ms LIMIT $2
         ),
         identities_ AS (DELETE FROM identities WHERE profile_id IN (SELECT id FROM gone) RETURNING 1),
         changes_ AS (DELETE FROM identity_changes WHERE profile_id IN (SELECT id FROM gone) RETURNING 1)
         DELETE FROM profiles WHERE id IN (SELECT id FROM gone)",
        &[&cutoff_ms, &CHUNK],
    )? as usize;
    if let Some(cutoff) = bodies_cutoff_ms {
        // As on SQLite: successful requests only, walked from where the last pass stopped (a
        // failed request keeps its bodies, and is not looked at again).
        let through: i64 = tx
            .query_opt(
                "SELECT value::bigint FROM local_settings WHERE key = 'retention.bodies_cleared_through'",
                &[],
            )?
            .map_or(0, |r| r.get(0));
        // Up to the first request still inside the window (ids follow time closely, not
        // strictly; the walk never passes a request it has not cleared).
        let last: Option<i64> = tx
            .query(
                "SELECT id, started_at_ms FROM delivery_requests WHERE id > $1 ORDER BY id LIMIT $2",
                &[&through, &CHUNK],
            )?
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .take_while(|(_, started)| *started < cutoff)
            .map(|(id, _)| id)
            .last();
        if let Some(last) = last {
            changed += tx.execute(
                "UPDATE delivery_requests SET request_body = NULL, response_body = NULL,
                     request_headers = NULL
                 WHERE id > $1 AND id <= $2 AND status_code BETWEEN 200 AND 299 AND error IS NULL",
                &[&through, &last],
            )? as usize;
            tx.execute(
                "INSERT INTO local_settings (key, value) VALUES ('retention.bodies_cleared_through', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&last.to_string()],
            )?;
        }
    }
    Ok(changed)
}
