//! SQL of recording refused requests (the stored requests themselves are the stage's:
//! `sqlite/stage.rs`).

use rusqlite::{params, Connection};

use crate::stage::{RejectedRequest, RejectionBatch};

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
