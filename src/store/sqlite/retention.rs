//! Retention: delete messages, events, collisions and finished deliveries older than a cutoff,
//! a bounded chunk at a time (oldest rows first, by rowid, so no time index is needed and a
//! pass with nothing to delete reads a handful of rows). Pending deliveries are never deleted.

use rusqlite::{params, Connection};

/// Rows per table per pass, so a prune never holds the write lock for long.
pub const CHUNK: i64 = 2000;

/// (table, time column, extra condition) in the order rows are deleted.
const TABLES: [(&str, &str, &str); 12] = [
    ("delivery_attempts", "at_ms", ""),
    ("delivery_requests", "started_at_ms", ""),
    (
        "deliveries",
        "updated_at_ms",
        "AND status IN ('delivered', 'dead')",
    ),
    ("routes_by_event", "", ""),
    ("events", "created_at_ms", ""),
    ("collisions", "detected_at_ms", ""),
    ("unmapped", "received_at_ms", ""),
    ("identity_changes", "at_ms", ""),
    ("messages", "received_at_ms", ""),
    ("requests", "received_at_ms", ""),
    ("rejections", "received_at_ms", ""),
    ("rejection_counts", "", ""),
];

/// Delete up to CHUNK old rows from each table. Returns how many rows went.
pub fn prune(conn: &Connection, cutoff_ms: i64) -> Result<usize, rusqlite::Error> {
    let mut deleted = 0;
    for (table, time, extra) in TABLES {
        if table == "rejection_counts" {
            // No rowid: its key starts with the minute, so the oldest rows come first.
            deleted += conn.execute(
                "DELETE FROM rejection_counts WHERE (minute_ms, environment, reason_code, peer) IN
                     (SELECT minute_ms, environment, reason_code, peer FROM rejection_counts
                      WHERE minute_ms < ?1 ORDER BY minute_ms LIMIT ?2)",
                params![cutoff_ms, CHUNK],
            )?;
            continue;
        }
        if table == "routes_by_event" {
            // Routes have no time of their own: they go with their event.
            deleted += conn.execute(
                "DELETE FROM routes WHERE event_row IN
                     (SELECT id FROM (SELECT id, created_at_ms AS t FROM events ORDER BY id LIMIT ?2)
                      WHERE t < ?1)",
                params![cutoff_ms, CHUNK],
            )?;
            continue;
        }
        // The oldest CHUNK rows by rowid, of which those past the cutoff are deleted: ids grow
        // with time, so this never scans the table.
        let key = if table == "unmapped" {
            "message_row"
        } else {
            "id"
        };
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN
                 (SELECT {key} FROM (SELECT {key}, {time} AS t FROM {table} ORDER BY {key} LIMIT ?2)
                  WHERE t < ?1) {extra}"
        );
        if table == "unmapped" {
            let names: Vec<String> = conn
                .prepare(&format!("{sql} RETURNING segment_event"))?
                .query_map(params![cutoff_ms, CHUNK], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            deleted += names.len();
            recount_unmapped_names(conn, &names.into_iter().collect())?;
            continue;
        }
        deleted += conn.execute(&sql, params![cutoff_ms, CHUNK])?;
    }
    // A destination's minutes: 1,440 rows a day each, read an hour at a time.
    for table in ["destination_minutes", "destination_minute_errors"] {
        deleted += conn.execute(
            &format!("DELETE FROM {table} WHERE minute_ms < ?1"),
            [cutoff_ms],
        )?;
    }
    Ok(deleted + prune_people(conn, cutoff_ms)?)
}

/// People untouched for the retention period: no profile write since the cutoff and no event of
/// theirs left (older events went above). Their identifiers and identity history go with them.
/// Returns how many rows went; the writer's profile cache must forget them when any did.
pub fn prune_people(conn: &Connection, cutoff_ms: i64) -> Result<usize, rusqlite::Error> {
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS retention_people (id INTEGER PRIMARY KEY);
         DELETE FROM retention_people;",
    )?;
    let people = conn.execute(
        "INSERT INTO retention_people (id)
         SELECT p.id FROM profiles p
         WHERE p.last_seen_ms < ?1
           AND NOT EXISTS (SELECT 1 FROM events e WHERE e.profile_id = p.id)
         ORDER BY p.last_seen_ms LIMIT ?2",
        params![cutoff_ms, CHUNK],
    )?;
    if people == 0 {
        return Ok(0);
    }
    let mut deleted = 0;
    for table_and_key in [
        "identities WHERE profile_id",
        "identity_changes WHERE profile_id",
        "profiles WHERE id",
    ] {
        deleted += conn.execute(
            &format!("DELETE FROM {table_and_key} IN (SELECT id FROM retention_people)"),
            [],
        )?;
    }
    Ok(deleted)
}

/// The pane's row for each name some of whose unmapped messages were deleted, from what is
/// left (`unmapped_by_name` makes each a short range read); no message left, no row.
pub(super) fn recount_unmapped_names(
    conn: &Connection,
    names: &std::collections::BTreeSet<String>,
) -> Result<(), rusqlite::Error> {
    for name in names {
        conn.prepare_cached("DELETE FROM unmapped_names WHERE segment_event = ?1")?
            .execute([name])?;
        conn.prepare_cached(
            "INSERT INTO unmapped_names
                 (segment_event, n, first_ms, last_ms, environments, suggestion, reason, last_row)
             SELECT segment_event, COUNT(*), MIN(received_at_ms), MAX(received_at_ms),
                    GROUP_CONCAT(DISTINCT environment), MAX(suggestion), MAX(reason),
                    MAX(message_row)
             FROM unmapped WHERE segment_event = ?1 GROUP BY segment_event",
        )?
        .execute([name])?;
    }
    Ok(())
}

/// Where body clearing got to: requests up to this id have had their bodies cleared.
const BODIES_CLEARED_KEY: &str = "retention.bodies_cleared_through";

/// Clear the bodies (request, response, headers) of up to CHUNK successful delivery requests
/// started before `cutoff_ms`, in id order from where the last pass stopped. The rows, with
/// their status, latency and error, stay; a failed request keeps its bodies for as long as it
/// is kept (they are what explains the failure). Returns how many were cleared.
pub fn clear_request_bodies(conn: &Connection, cutoff_ms: i64) -> Result<usize, rusqlite::Error> {
    let through: i64 = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM local_settings WHERE key = ?1",
            [BODIES_CLEARED_KEY],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(0),
            other => Err(other),
        })?;
    // Requests in id order, up to the first one still inside the window: ids follow time
    // closely but not strictly, and the walk never passes a request it has not cleared.
    let walked: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT id, started_at_ms FROM delivery_requests WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![through, CHUNK], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let ids: Vec<i64> = walked
        .iter()
        .take_while(|(_, started)| *started < cutoff_ms)
        .map(|(id, _)| *id)
        .collect();
    let Some(last) = ids.last() else {
        return Ok(0);
    };
    let cleared = conn.execute(
        "UPDATE delivery_requests SET request_body = NULL, response_body = NULL,
             request_headers = NULL
         WHERE id > ?1 AND id <= ?2 AND status_code BETWEEN 200 AND 299 AND error IS NULL",
        params![through, last],
    )?;
    conn.execute(
        "INSERT INTO local_settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![BODIES_CLEARED_KEY, last.to_string()],
    )?;
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prunes_old_rows_and_keeps_pending_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_for_writing(&dir.path().join("t.db")).unwrap();
        for (id, at) in [(1, 1_000), (2, 2_000), (3, 9_000)] {
            conn.execute(
                "INSERT INTO messages (id, request_id, position, received_at_ms, environment, status, raw_sha256)
                 VALUES (?1, 'r', 0, ?2, 'production', 'accepted', x'00')",
                params![id, at],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO events (id, event_id, message_row, message_id, environment, name, segment_event,
                     mapping_version, event_time_ms, fingerprint, canonical, created_at_ms)
                 VALUES (?1, 'e', ?1, 'm', 'production', 'purchase', 'Order Completed', 1, 0, x'00', '{}', ?2)",
                params![id, at],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO routes (event_row, destination, kind, destination_event, verdict, reason,
                     consent_source, consent_allowed, consent_reason)
                 VALUES (?1, 'meta', 'meta_capi', 'Purchase', 'ready', '', 'none', 1, '')",
                params![id],
            )
            .unwrap();
            let status = if id == 1 { "pending" } else { "delivered" };
            conn.execute(
                "INSERT INTO deliveries (id, event_row, event_id, message_row, destination, kind, destination_event,
                     consent_source, status, next_attempt_ms, event_time_ms, created_at_ms, updated_at_ms)
                 VALUES (?1, ?1, 'e', ?1, 'meta', 'meta_capi', 'Purchase', 'none', ?3, 0, 0, ?2, ?2)",
                params![id, at, status],
            )
            .unwrap();
        }
        let deleted = prune(&conn, 5_000).unwrap();
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count("messages"), 1, "the new message stays");
        assert_eq!(count("events"), 1);
        assert_eq!(count("routes"), 1);
        assert_eq!(
            count("deliveries"),
            2,
            "the pending delivery is kept even when old"
        );
        assert_eq!(deleted, 2 + 2 + 2 + 1);
        // Nothing left to prune: a pass deletes nothing.
        assert_eq!(prune(&conn, 5_000).unwrap(), 0);
    }

    #[test]
    fn people_untouched_for_the_retention_period_go_with_their_identifiers() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_for_writing(&dir.path().join("t.db")).unwrap();
        // 1: idle since long ago; 2: idle profile but a recent event; 3: seen recently.
        for (id, last_seen) in [(1, 1_000), (2, 1_000), (3, 9_000)] {
            conn.execute(
                "INSERT INTO profiles (id, first_seen_ms, last_seen_ms) VALUES (?1, 0, ?2)",
                params![id, last_seen],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO identities (kind, value, profile_id, first_seen_ms, last_seen_ms)
                 VALUES ('email', ?1, ?2, 0, 0)",
                params![format!("p{id}@example.com"), id],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO identity_changes (at_ms, message_row, kind, profile_id, detail)
                 VALUES (0, 0, 'created', ?1, 'email')",
                [id],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO events (id, event_id, message_row, message_id, environment, name, segment_event,
                 mapping_version, event_time_ms, profile_id, fingerprint, canonical, created_at_ms)
             VALUES (1, 'e', 1, 'm', 'production', 'purchase', 'Order Completed', 1, 0, 2, x'00', '{}', 8000)",
            [],
        )
        .unwrap();
        assert_eq!(prune_people(&conn, 5_000).unwrap(), 3);
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM profiles ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, vec![2, 3]);
        let emails: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM identities WHERE value = 'p1@example.com'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(emails, 0);
        assert_eq!(prune_people(&conn, 5_000).unwrap(), 0);
    }

    /// `unmapped_names` as the pane reads it, and the same computed from `unmapped` itself:
    /// (name, count, first, last, environments sorted, suggestion, reason, last row).
    type NameRow = (String, i64, i64, i64, String, Option<String>, String, i64);

    fn names(conn: &Connection, sql: &str) -> Vec<NameRow> {
        let mut rows: Vec<NameRow> = conn
            .prepare(sql)
            .unwrap()
            .query_map([], |r| {
                let envs: String = r.get(4)?;
                let mut envs: Vec<&str> = envs.split(',').collect();
                envs.sort_unstable();
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    envs.join(","),
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        rows
    }

    #[test]
    fn unmapped_names_count_what_unmapped_holds_through_retention() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_for_writing(&dir.path().join("t.db")).unwrap();
        let rows = [
            (1, "production", "Sign up", None, 1_000),
            (2, "staging", "Sign up", Some("Signed Up"), 2_000),
            (3, "production", "Sign up", None, 9_000),
            (4, "production", "lead", Some("Lead Submitted"), 1_500),
            (5, "staging", "Sign up", None, 9_500),
        ];
        for (row, env, name, suggestion, at) in rows {
            conn.execute(
                "INSERT INTO unmapped (message_row, environment, segment_event, mapping_version,
                     suggestion, reason, received_at_ms) VALUES (?1, ?2, ?3, 1, ?4, 'not in the table', ?5)",
                params![row, env, name, suggestion, at],
            )
            .unwrap();
            super::super::pipeline::count_unmapped_name(
                &conn,
                name,
                env,
                suggestion,
                "not in the table",
                at,
                row,
            )
            .unwrap();
        }
        let kept = "SELECT segment_event, n, first_ms, last_ms, environments, suggestion, reason,
                        last_row FROM unmapped_names";
        let grouped = "SELECT segment_event, COUNT(*), MIN(received_at_ms), MAX(received_at_ms),
                           GROUP_CONCAT(DISTINCT environment), MAX(suggestion), MAX(reason),
                           MAX(message_row) FROM unmapped GROUP BY segment_event";
        assert_eq!(names(&conn, kept), names(&conn, grouped));
        assert_eq!(names(&conn, kept)[0].1, 4, "Sign up four times");
        assert_eq!(names(&conn, kept)[0].4, "production,staging");

        prune(&conn, 5_000).unwrap();
        assert_eq!(names(&conn, kept), names(&conn, grouped));
        let after = names(&conn, kept);
        assert_eq!(after.len(), 1, "`lead` has no message left: {after:?}");
        assert_eq!((after[0].1, after[0].2), (2, 9_000));
        assert_eq!(after[0].5, None, "the suggestion went with its message");
    }

    #[test]
    fn request_bodies_are_cleared_after_their_own_retention_and_the_rows_stay() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_for_writing(&dir.path().join("t.db")).unwrap();
        for (id, at, status) in [
            (1, 1_000, 200),
            (2, 2_000, 200),
            (3, 2_500, 400),
            (4, 9_000, 200),
        ] {
            conn.execute(
                "INSERT INTO delivery_requests (id, destination, started_at_ms, item_count,
                     request_body, response_body, request_headers, status_code)
                 VALUES (?1, 'meta', ?2, 1, 'body', 'reply', '[]', ?3)",
                params![id, at, status],
            )
            .unwrap();
        }
        assert_eq!(clear_request_bodies(&conn, 5_000).unwrap(), 2);
        assert_eq!(clear_request_bodies(&conn, 5_000).unwrap(), 0, "done once");
        let kept: Vec<(i64, Option<String>, i64)> = conn
            .prepare("SELECT id, request_body, status_code FROM delivery_requests ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            kept,
            vec![
                (1, None, 200),
                (2, None, 200),
                // A refusal keeps what explains it; a young request keeps its bodies.
                (3, Some("body".into()), 400),
                (4, Some("body".into()), 200),
            ]
        );
    }
}
