//! The delivery queue on PostgreSQL, shared by every node: deliveries created with their
//! event, claimed by one node at a time (`FOR UPDATE SKIP LOCKED` with a lease), outcomes and
//! requests recorded with the node that sent them, a destination's pause kept for the fleet.

use super::db::Db;

use crate::store::codec::{unpack, Packed};
use crate::store::model::delivery::{
    Claim, ClaimedDelivery, Completion, RequestRecord, RequestRef, StoredSubject,
};
use crate::store::model::destinations::MinuteRollup;
use crate::store::writer::ClaimToken;

type PgResult<T> = Result<T, postgres::Error>;

/// Due rows of a destination, locked for this claim (rows other nodes hold are skipped).
const CLAIM_SQL: &str = "SELECT d.id, d.event_id, d.destination_event, d.consent_source,
        d.subject, d.attempts, d.failures, d.event_time_ms, d.solo, d.event_row IS NOT NULL,
        e.canonical
     FROM deliveries d LEFT JOIN events e ON e.id = d.event_row
     WHERE d.destination = $1 AND d.status = 'pending' AND d.next_attempt_ms <= $2
     ORDER BY d.next_attempt_ms
     LIMIT $3
     FOR UPDATE OF d SKIP LOCKED";

/// What a claim whose answer was lost took: this node's rows still in flight under its token.
const RECLAIM_SQL: &str = "SELECT d.id, d.event_id, d.destination_event, d.consent_source,
        d.subject, d.attempts, d.failures, d.event_time_ms, d.solo, d.event_row IS NOT NULL,
        e.canonical
     FROM deliveries d LEFT JOIN events e ON e.id = d.event_row
     WHERE d.destination = $1 AND d.status = 'in_flight' AND d.claim_token = $2
       AND d.leased_by = $3";

fn claimed_row(r: &postgres::Row) -> ClaimedDelivery {
    let stored = if r.get::<_, bool>(9) {
        StoredSubject::Event {
            canonical: r
                .get::<_, Option<Vec<u8>>>(10)
                .and_then(|bytes| unpack(&bytes).ok())
                .map(|plain| String::from_utf8_lossy(&plain).into_owned()),
            destination_event: r.get(2),
            consent_source: r.get(3),
        }
    } else {
        StoredSubject::Profile { snapshot: r.get(4) }
    };
    ClaimedDelivery {
        id: r.get(0),
        event_id: r.get(1),
        attempt: i64::from(r.get::<_, i32>(5)) + 1,
        failures: i64::from(r.get::<_, i32>(6)),
        event_time_ms: r.get(7),
        solo: r.get(8),
        stored,
    }
}

/// Claim up to `limit` due deliveries of a destination for this node, marked with the claim's
/// token. Rows another node holds locked are skipped, not waited for, so nodes claiming
/// together each get their own rows. A claim asked again with a token whose first attempt
/// failed (its COMMIT may have succeeded with the answer lost) first takes back what that
/// attempt leased to this node. A paused destination (the fleet's pause) yields nothing. As on
/// SQLite, a `solo` delivery is claimed alone, and claiming counts no attempt.
pub(super) fn claim(
    tx: &mut Db<'_, '_>,
    node_id: &str,
    destination: &str,
    now_ms: i64,
    limit: usize,
    lease_ms: i64,
    token: ClaimToken,
) -> PgResult<Claim> {
    let paused_until_ms: Option<i64> = tx
        .query_opt(
            "SELECT paused_until_ms FROM destination_state
             WHERE destination = $1 AND paused_until_ms > $2",
            &[&destination, &now_ms],
        )?
        .map(|r| r.get(0));
    let paused = paused_until_ms.is_some();
    let mut items = Vec::new();
    if !paused {
        if token.retried {
            let taken = tx.query(RECLAIM_SQL, &[&destination, &token.value, &node_id])?;
            items.extend(taken.iter().map(claimed_row));
        }
        let reclaimed = items.len();
        if items.len() < limit && !items.iter().any(|i: &ClaimedDelivery| i.solo) {
            let rows = tx.query(
                CLAIM_SQL,
                &[&destination, &now_ms, &((limit - items.len()) as i64)],
            )?;
            for r in &rows {
                let row = claimed_row(r);
                if row.solo && !items.is_empty() {
                    continue;
                }
                let solo = row.solo;
                items.push(row);
                if solo {
                    break;
                }
            }
        }
        let ids: Vec<i64> = items[reclaimed..].iter().map(|i| i.id).collect();
        tx.execute(
            "UPDATE deliveries SET status = 'in_flight', lease_until_ms = $2, leased_by = $3,
                 claim_token = $5, updated_at_ms = $4
             WHERE id = ANY($1)",
            &[&ids, &(now_ms + lease_ms), &node_id, &now_ms, &token.value],
        )?;
    }
    let next_due_ms = tx
        .query_opt(
            "SELECT next_attempt_ms FROM deliveries WHERE destination = $1 AND status = 'pending'
             ORDER BY next_attempt_ms LIMIT 1",
            &[&destination],
        )?
        .map(|r| r.get(0));
    Ok(Claim {
        items,
        next_due_ms,
        paused_until_ms,
    })
}

/// Give claimed deliveries back unsent: pending again from `next_attempt_ms`. Only this node's
/// leases are given back.
pub(super) fn release(
    tx: &mut Db<'_, '_>,
    node_id: &str,
    ids: &[i64],
    next_attempt_ms: i64,
    now_ms: i64,
) -> PgResult<u64> {
    tx.execute(
        "UPDATE deliveries SET status = 'pending', lease_until_ms = NULL,
             leased_by = NULL, next_attempt_ms = $3, updated_at_ms = $4
         WHERE id = ANY($1) AND status = 'in_flight' AND leased_by = $2",
        &[&ids, &node_id, &next_attempt_ms, &now_ms],
    )
}

/// Extend the leases this node holds on deliveries it has not sent yet.
pub(super) fn renew(
    tx: &mut Db<'_, '_>,
    node_id: &str,
    ids: &[i64],
    until_ms: i64,
    now_ms: i64,
) -> PgResult<u64> {
    tx.execute(
        "UPDATE deliveries SET lease_until_ms = $3, updated_at_ms = $4
         WHERE id = ANY($1) AND status = 'in_flight' AND leased_by = $2",
        &[&ids, &node_id, &until_ms, &now_ms],
    )
}

/// Put in-flight deliveries whose lease ran out (their node died or stopped) back in line.
pub(super) fn release_expired_leases(tx: &mut Db<'_, '_>, now_ms: i64) -> PgResult<u64> {
    tx.execute(
        "UPDATE deliveries SET status = 'pending', lease_until_ms = NULL, leased_by = NULL,
             next_attempt_ms = $1, updated_at_ms = $1
         WHERE status = 'in_flight' AND lease_until_ms < $1",
        &[&now_ms],
    )
}

/// Put back in line what nodes silent since before `silent_before_ms` held (killed, or cut off
/// from the database): their leases would otherwise hold it for a minute or more. A node that
/// was only slow and answers later finds its deliveries sent by another node; the platforms
/// dedup on the same event_id.
pub(super) fn release_silent_nodes(
    tx: &mut Db<'_, '_>,
    node_id: &str,
    now_ms: i64,
    silent_before_ms: i64,
) -> PgResult<u64> {
    tx.execute(
        "UPDATE deliveries SET status = 'pending', lease_until_ms = NULL, leased_by = NULL,
             next_attempt_ms = $1, updated_at_ms = $1
         WHERE status = 'in_flight' AND leased_by <> $2
           AND leased_by IN (SELECT node_id FROM nodes WHERE last_seen_ms < $3)",
        &[&now_ms, &node_id, &silent_before_ms],
    )
}

/// Record one HTTP request as sent, by this node; returns its row.
pub(super) fn record_request(
    tx: &mut Db<'_, '_>,
    node_id: &str,
    destination: &str,
    r: &RequestRecord,
) -> PgResult<i64> {
    Ok(tx
        .query_one(
            "INSERT INTO delivery_requests (destination, node_id, started_at_ms, latency_ms,
                 item_count, request_url, request_headers, request_body, status_code,
                 response_body, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             RETURNING id",
            &[
                &destination,
                &node_id,
                &r.started_at_ms,
                &r.latency_ms,
                &(r.item_count as i32),
                &r.url,
                &r.headers.as_ref().map(Packed::as_bytes),
                &r.body.as_ref().map(Packed::as_bytes),
                &r.status_code.map(i32::from),
                &r.response_body.as_ref().map(Packed::as_bytes),
                &r.error,
            ],
        )?
        .get(0))
}

/// Record a request (unless recorded already) and the outcome of each delivery it carried.
/// An outcome only lands while this node still holds the lease: a delivery whose lease ran
/// out and was claimed by another node belongs to that node now, whose own send is what its
/// history shows. Asked twice (its COMMIT's answer was lost and the recorder asked again), a
/// completion lands once: the second finds its deliveries no longer in flight and writes
/// nothing, not a second request row or attempt.
pub(super) fn complete(tx: &mut Db<'_, '_>, node_id: &str, c: &Completion) -> PgResult<bool> {
    let ids: Vec<i64> = c.items.iter().map(|i| i.delivery_id).collect();
    if !ids.is_empty() {
        let ours: i64 = tx
            .query_one(
                "SELECT count(*) FROM deliveries
                 WHERE id = ANY($1) AND status = 'in_flight' AND leased_by = $2",
                &[&ids, &node_id],
            )?
            .get(0);
        if ours == 0 {
            return Ok(false);
        }
    }
    let (request_row, status_code) = match &c.request {
        RequestRef::None => (None, None),
        RequestRef::New(r) => (
            Some(record_request(tx, node_id, &c.destination, r)?),
            r.status_code,
        ),
        RequestRef::Recorded { row, status_code } => (Some(*row), *status_code),
    };
    if c.items.is_empty() {
        return Ok(true);
    }
    let changes: Vec<_> = c.items.iter().map(|i| i.status_change()).collect();
    let statuses: Vec<&str> = changes.iter().map(|ch| ch.status).collect();
    let next_attempts: Vec<Option<i64>> = c.items.iter().map(|i| i.next_attempt_ms).collect();
    let failures: Vec<i32> = changes.iter().map(|ch| ch.failures_added).collect();
    let solos: Vec<bool> = c.items.iter().map(|i| i.solo).collect();
    let errors: Vec<Option<&str>> = changes.iter().map(|ch| ch.error).collect();
    let attempts: Vec<i32> = c.items.iter().map(|i| i.attempt as i32).collect();
    let outcomes: Vec<&str> = c.items.iter().map(|i| i.outcome.as_str()).collect();
    let reasons: Vec<Option<&str>> = c.items.iter().map(|i| i.reason.as_deref()).collect();
    // One statement for the whole completion: every attempt recorded, each row changed while
    // this node still holds its lease, and the delivered ones counted in the totals.
    tx.execute(
        "WITH outcome AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::int[], $5::bool[],
                                  $6::text[], $7::int[], $8::text[], $9::text[])
                 AS o(id, status, next_attempt_ms, failures, solo, error, attempt, outcome, reason)
         ),
         changed AS (
             UPDATE deliveries d SET status = o.status,
                 next_attempt_ms = COALESCE(o.next_attempt_ms, d.next_attempt_ms),
                 failures = d.failures + o.failures, solo = o.solo, lease_until_ms = NULL,
                 attempts = GREATEST(d.attempts, o.attempt),
                 leased_by = NULL, updated_at_ms = $10,
                 last_status_code = COALESCE($11, d.last_status_code), last_error = o.error
             FROM outcome o
             WHERE d.id = o.id AND d.status = 'in_flight' AND d.leased_by = $12
             RETURNING o.id, o.status
         ),
         attempts AS (
             INSERT INTO delivery_attempts (delivery_id, request_row, node_id, attempt, at_ms,
                 outcome, reason, next_attempt_ms)
             SELECT o.id, $13, $12, o.attempt, $10, o.outcome, o.reason, o.next_attempt_ms
             FROM outcome o JOIN changed ch ON ch.id = o.id
         )
         INSERT INTO destination_totals (destination, delivered)
         SELECT $14, count(*) FROM changed WHERE status = 'delivered' HAVING count(*) > 0
         ON CONFLICT (destination) DO UPDATE
             SET delivered = destination_totals.delivered + EXCLUDED.delivered",
        &[
            &ids,
            &statuses,
            &next_attempts,
            &failures,
            &solos,
            &errors,
            &attempts,
            &outcomes,
            &reasons,
            &c.at_ms,
            &status_code.map(i32::from),
            &node_id,
            &request_row,
            &c.destination,
        ],
    )?;
    Ok(true)
}

/// Add a group's tallies to the destinations' minutes, which every node adds to (the
/// dashboard's windows read them). In key order: two writers adding to the same minutes take
/// their row locks in one order, so they never wait on each other in a circle.
pub(super) fn add_minutes(tx: &mut Db<'_, '_>, minutes: &MinuteRollup) -> PgResult<()> {
    for ((destination, _), t) in &minutes.tallies {
        tx.execute(
        "INSERT INTO destination_minutes AS m (destination, minute_ms, requests, succeeded,
             latency_10ms, latency_50ms, latency_100ms, latency_250ms, latency_500ms, latency_1s,
             latency_5s, latency_slower, delivered, retried, dead)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (destination, minute_ms) DO UPDATE SET
             requests = m.requests + EXCLUDED.requests, succeeded = m.succeeded + EXCLUDED.succeeded,
             latency_10ms = m.latency_10ms + EXCLUDED.latency_10ms,
             latency_50ms = m.latency_50ms + EXCLUDED.latency_50ms,
             latency_100ms = m.latency_100ms + EXCLUDED.latency_100ms,
             latency_250ms = m.latency_250ms + EXCLUDED.latency_250ms,
             latency_500ms = m.latency_500ms + EXCLUDED.latency_500ms,
             latency_1s = m.latency_1s + EXCLUDED.latency_1s,
             latency_5s = m.latency_5s + EXCLUDED.latency_5s,
             latency_slower = m.latency_slower + EXCLUDED.latency_slower,
             delivered = m.delivered + EXCLUDED.delivered, retried = m.retried + EXCLUDED.retried,
             dead = m.dead + EXCLUDED.dead",
        &[
            &destination,
            &t.minute_ms,
            &t.requests,
            &t.succeeded,
            &t.latency[0],
            &t.latency[1],
            &t.latency[2],
            &t.latency[3],
            &t.latency[4],
            &t.latency[5],
            &t.latency[6],
            &t.latency[7],
            &t.delivered,
            &t.retried,
            &t.dead,
        ],
    )?;
    }
    for ((destination, minute_ms, kind), (count, at_ms, reason)) in &minutes.errors {
        tx.execute(
            "INSERT INTO destination_minute_errors AS e (destination, minute_ms, kind, count,
                 last_at_ms, last_reason)
             VALUES ($1, $2, $3, $6, $4, $5)
             ON CONFLICT (destination, minute_ms, kind) DO UPDATE SET
                 count = e.count + EXCLUDED.count,
                 last_reason = CASE WHEN EXCLUDED.last_at_ms >= e.last_at_ms
                                    THEN EXCLUDED.last_reason ELSE e.last_reason END,
                 last_at_ms = GREATEST(e.last_at_ms, EXCLUDED.last_at_ms)",
            &[destination, minute_ms, kind, at_ms, reason, count],
        )?;
    }
    Ok(())
}

/// Pause (or resume, with `None`) a destination for the whole fleet.
pub(super) fn set_destination_state(
    tx: &mut Db<'_, '_>,
    destination: &str,
    paused_until_ms: Option<i64>,
    reason: Option<&str>,
    now_ms: i64,
) -> PgResult<()> {
    tx.execute(
        "INSERT INTO destination_state (destination, paused_until_ms, reason, updated_at_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (destination) DO UPDATE SET paused_until_ms = EXCLUDED.paused_until_ms,
             reason = EXCLUDED.reason, updated_at_ms = EXCLUDED.updated_at_ms",
        &[&destination, &paused_until_ms, &reason, &now_ms],
    )?;
    Ok(())
}
