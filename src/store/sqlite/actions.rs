//! Operator actions on SQLite: performed and recorded in one transaction on a connection of
//! their own (the running writer sees the result at its next claim).

use rusqlite::{params, Connection};

use crate::store::model::actions::{OperatorAction, OperatorRecord, UNTIL_RESUMED_MS};

/// Do `action` for `who` at `now_ms`; returns how many rows it touched.
pub fn perform(
    conn: &mut Connection,
    action: &OperatorAction,
    who: &str,
    now_ms: i64,
) -> Result<i64, rusqlite::Error> {
    let tx = conn.transaction()?;
    let affected = match action {
        OperatorAction::RetryNow { delivery_id, .. } => tx.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = ?2, lease_until_ms = NULL,
                 updated_at_ms = ?2
             WHERE id = ?1 AND status IN ('pending', 'dead')",
            params![delivery_id, now_ms],
        )? as i64,
        OperatorAction::ReplayDead {
            destination,
            since_ms,
        } => super::delivery::requeue(&tx, destination, "dead", since_ms.unwrap_or(0), now_ms)?
            as i64,
        OperatorAction::Pause { destination } => {
            super::delivery::set_destination_state(
                &tx,
                destination,
                Some(UNTIL_RESUMED_MS),
                Some(&format!("paused by {who}")),
                now_ms,
            )?;
            1
        }
        OperatorAction::Resume { destination } => {
            super::delivery::set_destination_state(
                &tx,
                destination,
                None,
                Some(&format!("resumed by {who}")),
                now_ms,
            )?;
            1
        }
        OperatorAction::AllowReplay {
            environment,
            minutes,
        } => {
            super::pipeline::open_replay_window(
                &tx,
                environment,
                now_ms,
                now_ms + minutes * 60_000,
                &format!("dashboard: {who}"),
            )?;
            1
        }
        // The file was written by the command; the store records who put it in force, when.
        OperatorAction::ActivateMapping { .. } => 1,
    };
    tx.execute(
        "INSERT INTO operator_actions (at_ms, who, action, target, detail, affected)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            now_ms,
            who,
            action.name(),
            action.target(),
            action.done(affected),
            affected
        ],
    )?;
    tx.commit()?;
    Ok(affected)
}

/// The newest recorded actions.
pub fn recent(conn: &Connection, limit: usize) -> Result<Vec<OperatorRecord>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, who, action, target, detail, affected FROM operator_actions
         ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(OperatorRecord {
            at_ms: r.get(0)?,
            who: r.get(1)?,
            action: r.get(2)?,
            target: r.get(3)?,
            detail: r.get(4)?,
            affected: r.get(5)?,
        })
    })?;
    rows.collect()
}
