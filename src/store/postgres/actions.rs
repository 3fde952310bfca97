//! Operator actions on the fleet's database: performed and recorded in one transaction; every
//! node sees them at its next claim (a pause is the fleet's pause).

use postgres::Client;

use crate::store::model::actions::{OperatorAction, OperatorRecord, UNTIL_RESUMED_MS};

type PgResult<T> = Result<T, postgres::Error>;

pub(super) fn perform(
    client: &mut Client,
    action: &OperatorAction,
    who: &str,
    now_ms: i64,
) -> PgResult<i64> {
    let mut tx = client.transaction()?;
    const STATE: &str =
        "INSERT INTO destination_state (destination, paused_until_ms, reason, updated_at_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (destination) DO UPDATE SET paused_until_ms = excluded.paused_until_ms,
             reason = excluded.reason, updated_at_ms = excluded.updated_at_ms";
    let affected = match action {
        OperatorAction::RetryNow { delivery_id, .. } => tx.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = $2, lease_until_ms = NULL,
                 leased_by = NULL, updated_at_ms = $2
             WHERE id = $1 AND status IN ('pending', 'dead')",
            &[delivery_id, &now_ms],
        )? as i64,
        OperatorAction::ReplayDead {
            destination,
            since_ms,
        } => tx.execute(
            "UPDATE deliveries SET status = 'pending', failures = 0, solo = FALSE,
                 next_attempt_ms = $2, lease_until_ms = NULL, leased_by = NULL, updated_at_ms = $2
             WHERE destination = $1 AND status = 'dead' AND updated_at_ms >= $3",
            &[destination, &now_ms, &since_ms.unwrap_or(0)],
        )? as i64,
        OperatorAction::Pause { destination } => {
            let reason = format!("paused by {who}");
            tx.execute(STATE, &[destination, &UNTIL_RESUMED_MS, &reason, &now_ms])?;
            1
        }
        OperatorAction::Resume { destination } => {
            let reason = format!("resumed by {who}");
            tx.execute(STATE, &[destination, &None::<i64>, &reason, &now_ms])?;
            1
        }
        OperatorAction::AllowReplay {
            environment,
            minutes,
        } => {
            let note = format!("dashboard: {who}");
            tx.execute(
                "INSERT INTO replay_windows (environment, starts_ms, ends_ms, note, created_at_ms)
                 VALUES ($1, $2, $3, $4, $2)",
                &[environment, &now_ms, &(now_ms + minutes * 60_000), &note],
            )?;
            1
        }
        // The file was written by the command; the store records who put it in force, when.
        OperatorAction::ActivateMapping { .. } => 1,
    };
    tx.execute(
        "INSERT INTO operator_actions (at_ms, who, action, target, detail, affected)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &now_ms,
            &who,
            &action.name(),
            &action.target(),
            &action.done(affected),
            &affected,
        ],
    )?;
    tx.commit()?;
    Ok(affected)
}

pub(super) fn recent(client: &mut Client, limit: usize) -> PgResult<Vec<OperatorRecord>> {
    Ok(client
        .query(
            "SELECT at_ms, who, action, target, detail, affected FROM operator_actions
             ORDER BY id DESC LIMIT $1",
            &[&(limit as i64)],
        )?
        .iter()
        .map(|r| OperatorRecord {
            at_ms: r.get(0),
            who: r.get(1),
            action: r.get(2),
            target: r.get(3),
            detail: r.get(4),
            affected: r.get(5),
        })
        .collect())
}
