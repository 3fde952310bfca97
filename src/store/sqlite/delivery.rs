//! SQL of the delivery queue: creating deliveries with their event, leasing due rows,
//! recording requests and attempts, re-queueing dead ones.

use crate::store::model::delivery::*;
use rusqlite::{params, Connection, OptionalExtension};

use crate::store::codec::unpacked;
use crate::store::model::destinations::MinuteRollup;
use crate::store::writer::ClaimToken;

/// The claim's read: due rows of one destination, straight off `deliveries_ready` (no sort, no
/// OR across states), so its cost is the rows it returns, whatever the backlog.
pub const CLAIM_SQL: &str =
    "SELECT d.id, d.event_id, d.destination_event, d.consent_source, d.subject,
        d.attempts, d.failures, d.event_time_ms, d.solo, d.event_row IS NOT NULL, e.canonical
     FROM deliveries d LEFT JOIN events e ON e.id = d.event_row
     WHERE d.destination = ?1 AND d.status = 'pending' AND d.next_attempt_ms <= ?2
     ORDER BY d.next_attempt_ms
     LIMIT ?3";

/// What a lost claim took: its rows still in flight under its token.
const RECLAIM_SQL: &str =
    "SELECT d.id, d.event_id, d.destination_event, d.consent_source, d.subject,
        d.attempts, d.failures, d.event_time_ms, d.solo, d.event_row IS NOT NULL, e.canonical
     FROM deliveries d LEFT JOIN events e ON e.id = d.event_row
     WHERE d.destination = ?1 AND d.status = 'in_flight' AND d.claim_token = ?2";

fn claimed_row(r: &rusqlite::Row<'_>) -> Result<ClaimedDelivery, rusqlite::Error> {
    let attempts: i64 = r.get(5)?;
    let has_event: bool = r.get(9)?;
    let stored = if has_event {
        StoredSubject::Event {
            canonical: unpacked(r.get(10)?),
            destination_event: r.get(2)?,
            consent_source: r.get(3)?,
        }
    } else {
        StoredSubject::Profile {
            snapshot: r.get(4)?,
        }
    };
    Ok(ClaimedDelivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        attempt: attempts + 1,
        failures: r.get(6)?,
        event_time_ms: r.get(7)?,
        solo: r.get(8)?,
        stored,
    })
}

/// Claim up to `limit` due deliveries of a destination: each becomes in flight with a lease until
/// `now_ms + lease_ms`, marked with the claim's token (expired leases are put back by
/// `release_expired_leases`, not here). A claim asked again with a token that failed first
/// returns what that attempt took, if it was committed. A delivery marked `solo` (its batch
/// was refused whole) is claimed alone; one that is not first in line waits, and is first at
/// the next claim. Claiming counts no attempt: an attempt is a request that carried the item.
pub fn claim(
    conn: &Connection,
    destination: &str,
    now_ms: i64,
    limit: usize,
    lease_ms: i64,
    token: ClaimToken,
) -> Result<Claim, rusqlite::Error> {
    let paused_until_ms: Option<i64> = conn
        .prepare_cached(
            "SELECT paused_until_ms FROM destination_state
             WHERE destination = ?1 AND paused_until_ms > ?2",
        )?
        .query_row(params![destination, now_ms], |r| r.get(0))
        .optional()?;
    if paused_until_ms.is_some() {
        return Ok(Claim {
            items: Vec::new(),
            next_due_ms: None,
            paused_until_ms,
        });
    }
    let mut rows: Vec<ClaimedDelivery> = Vec::with_capacity(limit.min(1024));
    if token.retried {
        let mut stmt = conn.prepare_cached(RECLAIM_SQL)?;
        let taken = stmt.query_map(params![destination, token.value], claimed_row)?;
        for row in taken {
            rows.push(row?);
        }
    }
    let reclaimed = rows.len();
    if rows.len() < limit && !rows.iter().any(|r| r.solo) {
        let mut stmt = conn.prepare_cached(CLAIM_SQL)?;
        let mut query = stmt.query(params![destination, now_ms, (limit - rows.len()) as i64])?;
        while let Some(r) = query.next()? {
            let row = claimed_row(r)?;
            if row.solo && !rows.is_empty() {
                continue;
            }
            let solo = row.solo;
            rows.push(row);
            if solo {
                break;
            }
        }
    }
    let mut mark = conn.prepare_cached(
        "UPDATE deliveries SET status = 'in_flight', lease_until_ms = ?2, claim_token = ?3,
             updated_at_ms = ?4 WHERE id = ?1",
    )?;
    for row in &rows[reclaimed..] {
        mark.execute(params![row.id, now_ms + lease_ms, token.value, now_ms])?;
    }
    let next_due_ms: Option<i64> = conn
        .prepare_cached(
            "SELECT next_attempt_ms FROM deliveries WHERE destination = ?1 AND status = 'pending'
             ORDER BY next_attempt_ms LIMIT 1",
        )?
        .query_row([destination], |r| r.get(0))
        .optional()?;
    Ok(Claim {
        items: rows,
        next_due_ms,
        paused_until_ms: None,
    })
}

/// Give claimed deliveries back unsent (their destination paused first, or the node stops):
/// pending again from `next_attempt_ms`. Returns how many.
pub fn release(
    conn: &Connection,
    ids: &[i64],
    next_attempt_ms: i64,
    now_ms: i64,
) -> Result<usize, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "UPDATE deliveries SET status = 'pending', lease_until_ms = NULL,
             next_attempt_ms = ?2, updated_at_ms = ?3
         WHERE id = ?1 AND status = 'in_flight'",
    )?;
    let mut released = 0;
    for id in ids {
        released += stmt.execute(params![id, next_attempt_ms, now_ms])?;
    }
    Ok(released)
}

/// Extend the leases of deliveries still held by their worker.
pub fn renew(
    conn: &Connection,
    ids: &[i64],
    until_ms: i64,
    now_ms: i64,
) -> Result<usize, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "UPDATE deliveries SET lease_until_ms = ?2, updated_at_ms = ?3
         WHERE id = ?1 AND status = 'in_flight'",
    )?;
    let mut renewed = 0;
    for id in ids {
        renewed += stmt.execute(params![id, until_ms, now_ms])?;
    }
    Ok(renewed)
}

/// Put in-flight deliveries whose lease ran out (their worker crashed or stopped) back in line,
/// due now. Reads only the expired rows (`deliveries_leased`). Returns how many.
pub fn release_expired_leases(conn: &Connection, now_ms: i64) -> Result<usize, rusqlite::Error> {
    conn.prepare_cached(
        "UPDATE deliveries SET status = 'pending', lease_until_ms = NULL, next_attempt_ms = ?1,
             updated_at_ms = ?1
         WHERE status = 'in_flight' AND lease_until_ms < ?1",
    )?
    .execute([now_ms])
}

/// Record a request and the outcome of each delivery it carried.
/// Record one HTTP request as sent; returns its row.
pub fn record_request(
    conn: &Connection,
    destination: &str,
    r: &RequestRecord,
) -> Result<i64, rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO delivery_requests (destination, started_at_ms, latency_ms, item_count,
             request_url, request_headers, request_body, status_code, response_body, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        destination,
        r.started_at_ms,
        r.latency_ms,
        r.item_count as i64,
        r.url,
        r.headers,
        r.body,
        r.status_code,
        r.response_body,
        r.error
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Add a group's tallies to the destinations' minutes (the dashboard's windows read these).
pub fn add_minutes(conn: &Connection, minutes: &MinuteRollup) -> Result<(), rusqlite::Error> {
    let mut tally = conn.prepare_cached(
        "INSERT INTO destination_minutes (destination, minute_ms, requests, succeeded,
             latency_10ms, latency_50ms, latency_100ms, latency_250ms, latency_500ms, latency_1s,
             latency_5s, latency_slower, delivered, retried, dead)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (destination, minute_ms) DO UPDATE SET
             requests = requests + excluded.requests, succeeded = succeeded + excluded.succeeded,
             latency_10ms = latency_10ms + excluded.latency_10ms,
             latency_50ms = latency_50ms + excluded.latency_50ms,
             latency_100ms = latency_100ms + excluded.latency_100ms,
             latency_250ms = latency_250ms + excluded.latency_250ms,
             latency_500ms = latency_500ms + excluded.latency_500ms,
             latency_1s = latency_1s + excluded.latency_1s,
             latency_5s = latency_5s + excluded.latency_5s,
             latency_slower = latency_slower + excluded.latency_slower,
             delivered = delivered + excluded.delivered, retried = retried + excluded.retried,
             dead = dead + excluded.dead",
    )?;
    for ((destination, _), t) in &minutes.tallies {
        tally.execute(params![
            destination,
            t.minute_ms,
            t.requests,
            t.succeeded,
            t.latency[0],
            t.latency[1],
            t.latency[2],
            t.latency[3],
            t.latency[4],
            t.latency[5],
            t.latency[6],
            t.latency[7],
            t.delivered,
            t.retried,
            t.dead
        ])?;
    }
    let mut errors = conn.prepare_cached(
        "INSERT INTO destination_minute_errors (destination, minute_ms, kind, count, last_at_ms,
             last_reason)
         VALUES (?1, ?2, ?3, ?6, ?4, ?5)
         ON CONFLICT (destination, minute_ms, kind) DO UPDATE SET count = count + excluded.count,
             last_reason = CASE WHEN excluded.last_at_ms >= last_at_ms
                                THEN excluded.last_reason ELSE last_reason END,
             last_at_ms = MAX(last_at_ms, excluded.last_at_ms)",
    )?;
    for ((destination, minute_ms, kind), (count, at_ms, reason)) in &minutes.errors {
        errors.execute(params![destination, minute_ms, kind, at_ms, reason, count])?;
    }
    Ok(())
}

/// Record a request (unless recorded already) and the outcome of each delivery it carried.
pub fn complete(conn: &Connection, c: &Completion) -> Result<(), rusqlite::Error> {
    let (request_row, status_code) = match &c.request {
        RequestRef::None => (None, None),
        RequestRef::New(r) => (
            Some(record_request(conn, &c.destination, r)?),
            r.status_code,
        ),
        RequestRef::Recorded { row, status_code } => (Some(*row), *status_code),
    };
    let mut attempt = conn.prepare_cached(
        "INSERT INTO delivery_attempts (delivery_id, request_row, attempt, at_ms, outcome, reason, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut update = conn.prepare_cached(
        "UPDATE deliveries SET status = ?2, next_attempt_ms = COALESCE(?3, next_attempt_ms),
             failures = failures + ?4, solo = ?5, lease_until_ms = NULL, updated_at_ms = ?6,
             attempts = MAX(attempts, ?9),
             last_status_code = COALESCE(?7, last_status_code), last_error = ?8
         WHERE id = ?1",
    )?;
    let mut delivered = 0i64;
    for item in &c.items {
        attempt.execute(params![
            item.delivery_id,
            request_row,
            item.attempt,
            c.at_ms,
            item.outcome.as_str(),
            item.reason,
            item.next_attempt_ms
        ])?;
        let change = item.status_change();
        if item.outcome == AttemptOutcome::Delivered {
            delivered += 1;
        }
        update.execute(params![
            item.delivery_id,
            change.status,
            item.next_attempt_ms,
            change.failures_added,
            item.solo,
            c.at_ms,
            status_code,
            change.error,
            item.attempt
        ])?;
    }
    if delivered > 0 {
        conn.prepare_cached(
            "INSERT INTO destination_totals (destination, delivered) VALUES (?1, ?2)
             ON CONFLICT (destination) DO UPDATE SET delivered = delivered + excluded.delivered",
        )?
        .execute(params![c.destination, delivered])?;
    }
    Ok(())
}

/// Pause (or resume, with `None`) a destination; shown in diagnostics.
pub fn set_destination_state(
    conn: &Connection,
    destination: &str,
    paused_until_ms: Option<i64>,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO destination_state (destination, paused_until_ms, reason, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (destination) DO UPDATE SET paused_until_ms = excluded.paused_until_ms,
             reason = excluded.reason, updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![destination, paused_until_ms, reason, now_ms])?;
    Ok(())
}

/// Put deliveries of a destination back in the queue (`tracklayer replay`). Returns how many.
pub fn requeue(
    conn: &Connection,
    destination: &str,
    status: &str,
    since_ms: i64,
    now_ms: i64,
) -> Result<usize, rusqlite::Error> {
    conn.execute(
        "UPDATE deliveries SET status = 'pending', failures = 0, solo = 0, next_attempt_ms = ?4,
             lease_until_ms = NULL, updated_at_ms = ?4
         WHERE destination = ?1 AND status = ?2 AND updated_at_ms >= ?3",
        params![destination, status, since_ms, now_ms],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::Subject;
    use crate::pipeline::consent::ConsentVerdict;
    use crate::pipeline::{CanonicalEvent, RouteDecision, RouteVerdict};
    use std::sync::Arc;

    fn event() -> CanonicalEvent {
        serde_json::from_value(serde_json::json!({
            "event_id": "ev_purchase_1", "event_id_basis": "purchase + order_id O-1", "dedup_key": "O-1",
            "name": "purchase", "segment_event": "Order Completed", "mapping_version": 1,
            "message_id": "m-1", "environment": "production", "event_time": "2026-01-15T18:30:00.000Z",
            "event_time_ms": 1_768_501_800_000i64, "properties": {"order_id": "O-1"},
            "user": {}, "context": {}, "provenance": {}
        }))
        .unwrap()
    }

    fn store_with_event() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations().to_latest(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO events (id, event_id, message_row, message_id, environment, name, segment_event,
                 mapping_version, event_time_ms, fingerprint, canonical, created_at_ms)
             VALUES (1, 'ev_purchase_1', 1, 'm-1', 'production', 'purchase', 'Order Completed', 1, 0, x'00', ?1, 0)",
            [serde_json::to_string(&event()).unwrap()],
        )
        .unwrap();
        conn
    }

    /// No worker takes hand-offs here: every delivery is created pending.
    fn plan() {}

    /// A pending delivery per ready route, as the stage's write makes them.
    fn create_for_event(
        conn: &Connection,
        _plan: &mut (),
        event_row: i64,
        message_row: i64,
        event: &Arc<CanonicalEvent>,
        decisions: &[RouteDecision],
        now_ms: i64,
    ) -> Result<(), rusqlite::Error> {
        for d in decisions {
            conn.execute(
                "INSERT INTO deliveries (event_row, event_id, message_row, destination, kind,
                     destination_event, consent_source, status, attempts, next_attempt_ms,
                     event_time_ms, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?9, ?8, ?8)",
                params![
                    event_row,
                    event.event_id,
                    message_row,
                    d.destination,
                    d.kind,
                    d.destination_event,
                    d.consent.source,
                    now_ms,
                    event.event_time_ms
                ],
            )?;
        }
        Ok(())
    }

    fn ready(destination: &str) -> RouteDecision {
        RouteDecision {
            destination: destination.into(),
            kind: "meta_capi".into(),
            destination_event: "Purchase".into(),
            verdict: RouteVerdict::Ready,
            reason: "ready".into(),
            consent: ConsentVerdict {
                allowed: true,
                source: "none".into(),
                reason: String::new(),
            },
        }
    }

    fn delivered(id: i64, attempt: i64) -> Completion {
        Completion {
            destination: "meta".into(),
            request: RequestRef::None,
            items: vec![ItemResult {
                delivery_id: id,
                attempt,
                outcome: AttemptOutcome::Delivered,
                reason: None,
                next_attempt_ms: None,
                solo: false,
                free_retry: false,
            }],
            at_ms: 1_300,
        }
    }

    #[test]
    fn leases_expire_so_a_crash_loses_nothing() {
        let conn = store_with_event();
        create_for_event(
            &conn,
            &mut plan(),
            1,
            1,
            &Arc::new(event()),
            &[ready("meta")],
            1_000,
        )
        .unwrap();

        let first = claim(&conn, "meta", 1_000, 10, 100, ClaimToken::fresh()).unwrap();
        assert_eq!(first.items.len(), 1);
        assert_eq!(first.items[0].attempt, 1);
        // Leased: invisible to a second claim, and not released before it expires.
        assert_eq!(release_expired_leases(&conn, 1_050).unwrap(), 0);
        assert!(claim(&conn, "meta", 1_050, 10, 100, ClaimToken::fresh())
            .unwrap()
            .items
            .is_empty());
        // The worker "crashed": the sweep puts it back and the next claim sends it again.
        assert_eq!(release_expired_leases(&conn, 1_200).unwrap(), 1);
        let again = claim(&conn, "meta", 1_200, 10, 100, ClaimToken::fresh()).unwrap();
        assert_eq!(again.items.len(), 1);
        // Nothing recorded a request for it: this is still its first attempt.
        assert_eq!(again.items[0].attempt, 1);
        let leased = again.items[0].clone().into_leased().unwrap();
        assert_eq!(
            leased.event_id, "ev_purchase_1",
            "the same event_id on every attempt"
        );
        assert!(matches!(leased.subject, Subject::Event { .. }));

        complete(&conn, &delivered(again.items[0].id, 1)).unwrap();
        let attempts: i64 = conn
            .query_row("SELECT attempts FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(attempts, 1, "one request carried it");
        assert!(claim(&conn, "meta", 100_000, 10, 100, ClaimToken::fresh())
            .unwrap()
            .items
            .is_empty());
        let total: i64 = conn
            .query_row(
                "SELECT delivered FROM destination_totals WHERE destination = 'meta'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(total, 1);
    }

    #[test]
    fn a_claim_asked_again_with_its_token_returns_what_it_took() {
        let conn = store_with_event();
        for _ in 0..3 {
            create_for_event(
                &conn,
                &mut plan(),
                1,
                1,
                &Arc::new(event()),
                &[ready("meta")],
                1_000,
            )
            .unwrap();
        }
        // Committed, but its answer never reached the worker.
        let token = ClaimToken::fresh();
        let lost = claim(&conn, "meta", 1_000, 2, 60_000, token).unwrap();
        assert_eq!(lost.items.len(), 2);
        // A new claim would not see them; the same claim asked again does, and tops up.
        let again = claim(&conn, "meta", 1_010, 3, 60_000, token.again()).unwrap();
        let ids: Vec<i64> = again.items.iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let other = claim(&conn, "meta", 1_020, 3, 60_000, ClaimToken::fresh().again()).unwrap();
        assert!(
            other.items.is_empty(),
            "another claim's token takes nothing"
        );
    }

    #[test]
    fn a_solo_delivery_is_claimed_alone_and_first() {
        let conn = store_with_event();
        for _ in 0..4 {
            create_for_event(
                &conn,
                &mut plan(),
                1,
                1,
                &Arc::new(event()),
                &[ready("meta")],
                1_000,
            )
            .unwrap();
        }
        conn.execute(
            "UPDATE deliveries SET solo = 1, next_attempt_ms = 900 WHERE id = 3",
            [],
        )
        .unwrap();
        let first = claim(&conn, "meta", 1_000, 10, 100, ClaimToken::fresh()).unwrap();
        let ids: Vec<i64> = first.items.iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![3], "the solo row, due first, goes alone");
        let rest = claim(&conn, "meta", 1_000, 10, 100, ClaimToken::fresh()).unwrap();
        let ids: Vec<i64> = rest.items.iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![1, 2, 4]);

        // A solo row behind others waits for the next claim, where it is first.
        for _ in 0..3 {
            create_for_event(
                &conn,
                &mut plan(),
                1,
                1,
                &Arc::new(event()),
                &[ready("meta")],
                2_000,
            )
            .unwrap();
        }
        conn.execute("UPDATE deliveries SET solo = 1 WHERE id = 6", [])
            .unwrap();
        let batch = claim(&conn, "meta", 2_000, 10, 100, ClaimToken::fresh()).unwrap();
        let ids: Vec<i64> = batch.items.iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![5, 7]);
        let alone = claim(&conn, "meta", 2_000, 10, 100, ClaimToken::fresh()).unwrap();
        assert_eq!(alone.items.len(), 1);
        assert_eq!(alone.items[0].id, 6);
    }

    /// reference/queues-at-scale.md: the claim reads the index range it returns, never the
    /// backlog. A plan that sorts (`USE TEMP B-TREE`) or scans would read every due row.
    #[test]
    fn the_claim_uses_the_ready_index_without_sorting() {
        let conn = store_with_event();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CLAIM_SQL}"))
            .unwrap()
            .query_map(params!["meta", 0, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" | ");
        assert!(plan.contains("USING INDEX deliveries_ready"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        assert!(!plan.contains("SCAN d"), "{plan}");
    }

    /// The work of one claim (SQLite virtual-machine steps, which count rows visited) is the same
    /// with 60,000 rows waiting as with 60: the cost follows what it returns, not the backlog.
    #[test]
    fn claim_work_does_not_grow_with_the_backlog() {
        fn steps_to_claim(backlog: usize) -> i64 {
            let conn = store_with_event();
            let tx = conn.unchecked_transaction().unwrap();
            for n in 0..backlog {
                create_for_event(
                    &tx,
                    &mut plan(),
                    1,
                    1,
                    &Arc::new(event()),
                    &[ready("meta"), ready("webhook")],
                    n as i64,
                )
                .unwrap();
            }
            // As many finished rows again, which a claim must not walk past either.
            tx.execute(
                "UPDATE deliveries SET status = 'delivered' WHERE id % 2 = 0 AND destination = 'webhook'",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
            let mut stmt = conn.prepare_cached(CLAIM_SQL).unwrap();
            let rows = stmt
                .query_map(params!["meta", i64::MAX, 50], |r| r.get::<_, i64>(0))
                .unwrap()
                .count();
            assert_eq!(rows, 50.min(backlog));
            stmt.get_status(rusqlite::StatementStatus::VmStep) as i64
        }
        let small = steps_to_claim(60);
        let large = steps_to_claim(60_000);
        assert!(
            large <= small + 50,
            "a claim took {large} VM steps with 60k waiting vs {small} with 60"
        );
    }
}
