//! Recording refused requests on PostgreSQL (the stored requests themselves are the stage's:
//! `postgres/stage.rs`).

use super::db::Db;
use crate::stage::{RejectedRequest, RejectionBatch};

type PgResult<T> = Result<T, postgres::Error>;

/// Add refusal counts to their minutes, and keep the examples.
pub(super) fn insert_rejections(tx: &mut Db<'_, '_>, batch: &RejectionBatch) -> PgResult<()> {
    for c in &batch.counts {
        tx.execute(
            "INSERT INTO rejection_counts (minute_ms, environment, reason_code, peer, status_code, count)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (minute_ms, environment, reason_code, peer)
             DO UPDATE SET count = rejection_counts.count + EXCLUDED.count",
            &[
                &c.minute_ms,
                &c.environment,
                &c.reason_code,
                &c.peer,
                &i32::from(c.status_code),
                &(c.count as i64),
            ],
        )?;
    }
    for r in &batch.examples {
        insert_rejection(tx, r)?;
    }
    Ok(())
}

fn insert_rejection(tx: &mut Db<'_, '_>, r: &RejectedRequest) -> PgResult<()> {
    tx.execute(
        "INSERT INTO rejections (received_at_ms, path, remote_addr, user_agent, account_header,
             environment_header, content_type, body_bytes, status_code, reason_code, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &r.received_at_ms,
            &r.path,
            &r.remote_addr,
            &r.user_agent,
            &r.account_header,
            &r.environment_header,
            &r.content_type,
            &r.body_bytes.map(|b| b as i64),
            &i32::from(r.status_code),
            &r.reason_code,
            &r.reason,
        ],
    )?;
    Ok(())
}
