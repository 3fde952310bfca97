//! SQL of storing one request: its receipt, each message (dedup by messageId within the window)
//! and the stateful pipeline for each, in the writer's transaction.

use std::cell::RefCell;

use rusqlite::{params, Connection, OptionalExtension};

use super::pipeline::{self as stateful, IdentityCache, PipelineContext};
use crate::pipeline::RouteTarget;
use crate::store::handoff::HandOffPlan;
use crate::store::records::{IngestBatch, RejectedRequest, RejectionBatch, StoredOutcome, Verdict};

/// Why a batch signed only over element 0 is refused: its element 0 was first delivered in
/// another request, so the signature is a captured one carrying a different batch.
pub(super) fn reused_signature(
    conn: &Connection,
    batch: &IngestBatch,
) -> Result<Option<String>, rusqlite::Error> {
    let Some(guard) = &batch.replay_guard else {
        return Ok(None);
    };
    let environment = &batch.receipt.environment;
    if guard.newest_time_ms < batch.dedup_since_ms
        && !stateful::replay_window_open(conn, environment, batch.receipt.received_at_ms)?
    {
        return Ok(Some(format!(
            "X-Signature carries no time of its own, and the signed message's newest time ({}) is older than the dedup window: refused as a replay; for a Segment Replay, open a replay window (tracklayer allow-replay)",
            crate::segment::format_ms(guard.newest_time_ms)
        )));
    }
    let Some(message_id) = &guard.element0_message_id else {
        return Ok(None);
    };
    let first: Option<(String, Option<Vec<u8>>)> = conn
        .prepare_cached(
            "SELECT r.request_id, r.body_sha256 FROM messages m
             JOIN requests r ON r.request_id = m.request_id
             WHERE m.message_id = ?2 AND m.environment = ?1 AND m.status = 'accepted'
               AND m.received_at_ms >= ?3
             ORDER BY m.id LIMIT 1",
        )?
        .query_row(
            params![environment, message_id, batch.dedup_since_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match first {
        Some((_, Some(digest))) if digest == batch.receipt.body_sha256 => None,
        Some((request_id, _)) => Some(format!(
            "X-Signature covers only element 0, and element 0 (messageId {}) was first delivered in request {request_id} with a different batch: a re-used signature; a genuine Segment retry resends the same bytes",
            crate::segment::clip(message_id)
        )),
        None => None,
    })
}

pub(super) fn insert_batch(
    conn: &Connection,
    batch: &IngestBatch,
    targets: &[RouteTarget],
    default_country: Option<&str>,
    cache: &RefCell<IdentityCache>,
    handoff: &RefCell<HandOffPlan>,
) -> Result<Vec<StoredOutcome>, rusqlite::Error> {
    let ctx = PipelineContext {
        targets,
        default_country,
        cache,
        handoff,
        environment: &batch.receipt.environment,
        received_at_ms: batch.receipt.received_at_ms,
        dedup_since_ms: batch.dedup_since_ms,
    };
    let receipt = &batch.receipt;
    conn.prepare_cached(
        "INSERT INTO requests (request_id, received_at_ms, environment, path, remote_addr,
             user_agent, auth_scheme, body_shape, body_bytes, message_count, body_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        receipt.request_id,
        receipt.received_at_ms,
        receipt.environment,
        receipt.path,
        receipt.remote_addr,
        receipt.user_agent,
        receipt.auth_scheme,
        receipt.body_shape,
        receipt.body_bytes as i64,
        batch.messages.len() as i64,
        &receipt.body_sha256[..],
    ])?;

    let mut find_original = conn.prepare_cached(
        "SELECT id, raw_sha256 FROM messages
         WHERE message_id = ?2 AND environment = ?1 AND status = 'accepted'
           AND received_at_ms >= ?3
         ORDER BY id LIMIT 1",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO messages (id, request_id, position, received_at_ms, environment, message_id,
             type, event, user_id, anonymous_id, status, reason, duplicate_of, raw_sha256, raw, outcome,
             raw_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;

    let first_row: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM messages")?
        .query_row([], |r| r.get(0))?;
    let mut outcomes = Vec::with_capacity(batch.messages.len());
    for (row_id, message) in (first_row..).zip(&batch.messages) {
        let verdict = match Verdict::message_id(message) {
            Err(invalid) => invalid,
            Ok(message_id) => find_original
                .query_row(
                    params![receipt.environment, message_id, batch.dedup_since_ms],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
                )
                .optional()?
                .map_or(Verdict::Accepted, |(original_row_id, digest)| {
                    Verdict::Duplicate {
                        original_row_id,
                        same_payload: digest == message.raw_sha256,
                    }
                }),
        };
        let row = verdict.row(message);
        // The row id is assigned here (this thread is the only writer), so the pipeline can
        // reference the message and its outcome goes into the same INSERT.
        let pipeline = match (&verdict, &message.pipeline) {
            (Verdict::Invalid(_), _) | (_, None) => None,
            (Verdict::Duplicate { .. }, Some(input)) => {
                Some(stateful::apply(conn, &ctx, row_id, input, true)?)
            }
            (Verdict::Accepted, Some(input)) => {
                Some(stateful::apply(conn, &ctx, row_id, input, false)?)
            }
        };
        insert.execute(params![
            row_id,
            receipt.request_id,
            message.position as i64,
            receipt.received_at_ms,
            receipt.environment,
            message.message_id,
            message.message_type,
            message.event,
            message.user_id,
            message.anonymous_id,
            row.status,
            row.reason,
            row.duplicate_of,
            &message.raw_sha256[..],
            row.raw,
            pipeline.as_ref().map(|p| p.label()),
            message.raw_bytes.map(|n| n as i64),
        ])?;
        let message = verdict.outcome(row_id);
        outcomes.push(StoredOutcome { message, pipeline });
    }
    Ok(outcomes)
}

/// Add refusal counts to their minutes, and keep the examples.
pub(super) fn insert_rejections(
    conn: &Connection,
    batch: &RejectionBatch,
) -> Result<(), rusqlite::Error> {
    let mut count = conn.prepare_cached(
        "INSERT INTO rejection_counts (minute_ms, environment, reason_code, peer, status_code, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (minute_ms, environment, reason_code, peer)
         DO UPDATE SET count = count + excluded.count",
    )?;
    for c in &batch.counts {
        count.execute(params![
            c.minute_ms,
            c.environment,
            c.reason_code,
            c.peer,
            c.status_code,
            c.count as i64
        ])?;
    }
    for example in &batch.examples {
        insert_rejection(conn, example)?;
    }
    Ok(())
}

fn insert_rejection(conn: &Connection, r: &RejectedRequest) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO rejections (received_at_ms, path, remote_addr, user_agent, account_header,
             environment_header, content_type, body_bytes, status_code, reason_code, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        r.received_at_ms,
        r.path,
        r.remote_addr,
        r.user_agent,
        r.account_header,
        r.environment_header,
        r.content_type,
        r.body_bytes.map(|b| b as i64),
        r.status_code,
        r.reason_code,
        r.reason,
    ])?;
    Ok(())
}
