//! SQL of the delivery queue: creating deliveries with their event, leasing due rows,
//! recording requests and attempts, re-queueing dead ones.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::destinations::{ProfileSnapshot, Subject};
use crate::pipeline::{CanonicalEvent, RouteDecision, RouteVerdict};

/// A delivery handed to a destination worker.
#[derive(Debug, Clone)]
pub struct LeasedDelivery {
    pub id: i64,
    pub event_id: String,
    /// This attempt's number (1 for the first).
    pub attempt: i64,
    /// Failed attempts since the last re-queue (the retry schedule step).
    pub failures: i64,
    pub event_time_ms: i64,
    pub subject: Subject,
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub items: Vec<LeasedDelivery>,
    /// When the next pending delivery of this destination falls due, if any.
    pub next_due_ms: Option<i64>,
}

/// One HTTP request as sent (credentials redacted) and what came back.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub started_at_ms: i64,
    pub latency_ms: Option<i64>,
    pub item_count: usize,
    pub url: Option<String>,
    pub headers: Option<String>,
    pub body: Option<String>,
    pub status_code: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    Retry,
    Dead,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ItemResult {
    pub delivery_id: i64,
    pub attempt: i64,
    pub outcome: AttemptOutcome,
    pub reason: Option<String>,
    pub next_attempt_ms: Option<i64>,
    /// Send it alone next time (its batch failed as a whole).
    pub solo: bool,
    /// This failure does not count toward the retry schedule (e.g. batch bisection).
    pub free_retry: bool,
}

/// What a worker reports after a request (or after refusing items without sending).
#[derive(Debug, Clone)]
pub struct Completion {
    pub destination: String,
    pub request: Option<RequestRecord>,
    pub items: Vec<ItemResult>,
    pub at_ms: i64,
}

/// Create the deliveries of a new canonical event: one per destination that is ready.
pub fn create_for_event(
    conn: &Connection,
    event_row: i64,
    message_row: i64,
    event: &CanonicalEvent,
    decisions: &[RouteDecision],
    now_ms: i64,
) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO deliveries (event_row, event_id, message_row, destination, kind, destination_event,
             consent_source, status, next_attempt_ms, event_time_ms, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?8, ?8)",
    )?;
    let mut created = Vec::new();
    for d in decisions
        .iter()
        .filter(|d| d.verdict == RouteVerdict::Ready)
    {
        stmt.execute(params![
            event_row,
            event.event_id,
            message_row,
            d.destination,
            d.kind,
            d.destination_event,
            d.consent.source,
            now_ms,
            event.event_time_ms
        ])?;
        created.push(d.destination.clone());
    }
    Ok(created)
}

/// Create a profile delivery (identify → Klaviyo profile-import).
pub fn create_for_profile(
    conn: &Connection,
    message_row: i64,
    destination: &str,
    kind: &str,
    consent_source: &str,
    snapshot: &ProfileSnapshot,
    now_ms: i64,
) -> Result<(), rusqlite::Error> {
    let subject = serde_json::to_string(snapshot).unwrap_or_else(|_| "{}".into());
    conn.prepare_cached(
        "INSERT INTO deliveries (event_row, event_id, message_row, destination, kind, destination_event,
             consent_source, subject, status, next_attempt_ms, event_time_ms, created_at_ms, updated_at_ms)
         VALUES (NULL, ?1, ?2, ?3, ?4, 'profile', ?5, ?6, 'pending', ?7, ?7, ?7, ?7)",
    )?
    .execute(params![
        format!("profile_{}_{}", snapshot.profile_id, snapshot.message_id),
        message_row,
        destination,
        kind,
        consent_source,
        subject,
        now_ms
    ])?;
    Ok(())
}

struct DueRow {
    id: i64,
    event_id: String,
    event_row: Option<i64>,
    destination_event: String,
    consent_source: String,
    subject: Option<String>,
    attempts: i64,
    failures: i64,
    event_time_ms: i64,
    solo: bool,
}

/// Lease up to `limit` due deliveries of a destination (and expired leases of a crashed run).
/// A delivery marked `solo` is leased alone.
pub fn lease(
    conn: &Connection,
    destination: &str,
    now_ms: i64,
    limit: usize,
    lease_ms: i64,
) -> Result<Lease, rusqlite::Error> {
    let rows: Vec<DueRow> = conn
        .prepare_cached(
            "SELECT d.id, d.event_id, d.event_row, d.destination_event, d.consent_source, d.subject,
                    d.attempts, d.failures, d.event_time_ms, d.solo
             FROM deliveries d
             WHERE d.destination = ?1
               AND ((d.status = 'pending' AND d.next_attempt_ms <= ?2)
                 OR (d.status = 'in_flight' AND d.lease_until_ms < ?2))
             ORDER BY d.solo DESC, d.next_attempt_ms, d.id
             LIMIT ?3",
        )?
        .query_map(params![destination, now_ms, limit as i64], |r| {
            Ok(DueRow {
                id: r.get(0)?,
                event_id: r.get(1)?,
                event_row: r.get(2)?,
                destination_event: r.get(3)?,
                consent_source: r.get(4)?,
                subject: r.get(5)?,
                attempts: r.get(6)?,
                failures: r.get(7)?,
                event_time_ms: r.get(8)?,
                solo: r.get(9)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let take = match rows.first() {
        Some(first) if first.solo => 1,
        _ => rows.len(),
    };
    let mut items = Vec::with_capacity(take);
    let mut mark = conn.prepare_cached(
        "UPDATE deliveries SET status = 'in_flight', lease_until_ms = ?2, attempts = attempts + 1,
             updated_at_ms = ?3 WHERE id = ?1",
    )?;
    let mut canonical = conn.prepare_cached("SELECT canonical FROM events WHERE id = ?1")?;
    for row in rows.into_iter().take(take) {
        let DueRow {
            id,
            event_id,
            event_row,
            destination_event,
            consent_source,
            subject,
            attempts,
            failures,
            event_time_ms,
            ..
        } = row;
        let subject = match (event_row, subject) {
            (Some(row), _) => {
                let text: Option<String> = canonical.query_row([row], |r| r.get(0)).optional()?;
                let Some(event) =
                    text.and_then(|t| serde_json::from_str::<CanonicalEvent>(&t).ok())
                else {
                    continue;
                };
                Subject::Event {
                    event: Box::new(event),
                    destination_event,
                    consent_source,
                }
            }
            (None, Some(snapshot)) => match serde_json::from_str::<ProfileSnapshot>(&snapshot) {
                Ok(p) => Subject::Profile(p),
                Err(_) => continue,
            },
            (None, None) => continue,
        };
        mark.execute(params![id, now_ms + lease_ms, now_ms])?;
        items.push(LeasedDelivery {
            id,
            event_id,
            attempt: attempts + 1,
            failures,
            event_time_ms,
            subject,
        });
    }
    let next_due_ms: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(next_attempt_ms) FROM deliveries WHERE destination = ?1 AND status = 'pending'",
        )?
        .query_row([destination], |r| r.get(0))?;
    Ok(Lease { items, next_due_ms })
}

/// Record a request and the outcome of each delivery it carried.
pub fn complete(conn: &Connection, c: &Completion) -> Result<(), rusqlite::Error> {
    let request_row = match &c.request {
        Some(r) => {
            conn.prepare_cached(
                "INSERT INTO delivery_requests (destination, started_at_ms, latency_ms, item_count,
                     request_url, request_headers, request_body, status_code, response_body, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                c.destination,
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
            Some(conn.last_insert_rowid())
        }
        None => None,
    };
    let status_code = c.request.as_ref().and_then(|r| r.status_code);
    let mut attempt = conn.prepare_cached(
        "INSERT INTO delivery_attempts (delivery_id, request_row, attempt, at_ms, outcome, reason, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut update = conn.prepare_cached(
        "UPDATE deliveries SET status = ?2, next_attempt_ms = COALESCE(?3, next_attempt_ms),
             failures = failures + ?4, solo = ?5, lease_until_ms = NULL, updated_at_ms = ?6,
             last_status_code = COALESCE(?7, last_status_code), last_error = ?8
         WHERE id = ?1",
    )?;
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
        let (status, failed) = match item.outcome {
            AttemptOutcome::Delivered => ("delivered", 0),
            AttemptOutcome::Retry => ("pending", i64::from(!item.free_retry)),
            AttemptOutcome::Dead => ("dead", 1),
        };
        let error = match item.outcome {
            AttemptOutcome::Delivered => None,
            _ => item.reason.clone(),
        };
        update.execute(params![
            item.delivery_id,
            status,
            item.next_attempt_ms,
            failed,
            item.solo,
            c.at_ms,
            status_code,
            error
        ])?;
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
    use crate::pipeline::consent::ConsentVerdict;

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

    #[test]
    fn leases_expire_so_a_crash_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open_for_writing(&dir.path().join("t.db")).unwrap();
        conn.execute(
            "INSERT INTO events (id, event_id, message_row, message_id, environment, name, segment_event,
                 mapping_version, event_time_ms, fingerprint, canonical, created_at_ms)
             VALUES (1, 'ev_purchase_1', 1, 'm-1', 'production', 'purchase', 'Order Completed', 1, 0, x'00', ?1, 0)",
            [serde_json::to_string(&event()).unwrap()],
        )
        .unwrap();
        let decision = RouteDecision {
            destination: "meta".into(),
            kind: "meta_capi".into(),
            destination_event: "Purchase".into(),
            verdict: RouteVerdict::Ready,
            reason: "ready".into(),
            consent: ConsentVerdict {
                allowed: true,
                source: "none".into(),
                reason: String::new(),
            },
        };
        create_for_event(&conn, 1, 1, &event(), &[decision], 1_000).unwrap();

        let first = lease(&conn, "meta", 1_000, 10, 100).unwrap();
        assert_eq!(first.items.len(), 1);
        assert_eq!(first.items[0].attempt, 1);
        // Leased: invisible to a second lease until it expires (the worker "crashed").
        assert!(lease(&conn, "meta", 1_050, 10, 100)
            .unwrap()
            .items
            .is_empty());
        let again = lease(&conn, "meta", 1_200, 10, 100).unwrap();
        assert_eq!(again.items.len(), 1);
        assert_eq!(again.items[0].attempt, 2);
        assert_eq!(
            again.items[0].event_id, "ev_purchase_1",
            "the same event_id on every attempt"
        );

        complete(
            &conn,
            &Completion {
                destination: "meta".into(),
                request: None,
                items: vec![ItemResult {
                    delivery_id: again.items[0].id,
                    attempt: 2,
                    outcome: AttemptOutcome::Delivered,
                    reason: None,
                    next_attempt_ms: None,
                    solo: false,
                    free_retry: false,
                }],
                at_ms: 1_300,
            },
        )
        .unwrap();
        assert!(lease(&conn, "meta", 100_000, 10, 100)
            .unwrap()
            .items
            .is_empty());
    }
}
