//! Alerts on the fleet's database: at most one open row per rule and subject, so when several
//! nodes see the same problem exactly one of them fires it (and notifies).

use postgres::Row;

use super::db::Db;
use crate::store::model::alerts::{AlertChange, AlertNotice, AlertWrite, StoredAlert};

type PgResult<T> = Result<T, postgres::Error>;

pub(super) fn record(tx: &mut Db<'_, '_>, change: &AlertChange) -> PgResult<AlertWrite> {
    if change.firing {
        let quiet = !tx
            .query(
                "SELECT 1 FROM alerts
                 WHERE rule = $1 AND subject = $2 AND notified AND resolved_at_ms >= $3 LIMIT 1",
                &[&change.rule, &change.subject, &change.cooldown_since_ms],
            )?
            .is_empty();
        let inserted = tx.execute(
            "INSERT INTO alerts (rule, subject, state, started_at_ms, evidence, notified, node_id)
             VALUES ($1, $2, 'firing', $3, $4, $5, $6)
             ON CONFLICT (rule, subject) WHERE state = 'firing' DO NOTHING",
            &[
                &change.rule,
                &change.subject,
                &change.at_ms,
                &change.evidence,
                &!quiet,
                &change.node_id,
            ],
        )?;
        return Ok(AlertWrite {
            changed: inserted == 1,
            notify: inserted == 1 && !quiet,
            started_at_ms: Some(change.at_ms),
        });
    }
    let resolved = tx.query(
        "UPDATE alerts SET state = 'resolved', resolved_at_ms = $3
         WHERE rule = $1 AND subject = $2 AND state = 'firing'
         RETURNING notified, started_at_ms",
        &[&change.rule, &change.subject, &change.at_ms],
    )?;
    Ok(match resolved.first() {
        Some(r) => AlertWrite {
            changed: true,
            notify: r.get(0),
            started_at_ms: Some(r.get(1)),
        },
        None => AlertWrite::default(),
    })
}

pub(super) fn record_notice(tx: &mut Db<'_, '_>, notice: &AlertNotice) -> PgResult<()> {
    tx.execute(
        "UPDATE alerts SET notice = $4 WHERE rule = $1 AND subject = $2 AND started_at_ms = $3",
        &[
            &notice.rule,
            &notice.subject,
            &notice.started_at_ms,
            &notice.notice,
        ],
    )?;
    Ok(())
}

pub(super) fn from_row(r: &Row) -> StoredAlert {
    StoredAlert {
        id: r.get(0),
        rule: r.get(1),
        subject: r.get(2),
        state: r.get(3),
        started_at_ms: r.get(4),
        resolved_at_ms: r.get(5),
        evidence: serde_json::from_str(r.get::<_, &str>(6)).unwrap_or_default(),
        notified: r.get(7),
        node_id: r.get(8),
        notice: r.get(9),
    }
}

pub(super) const RECENT: &str =
    "SELECT id, rule, subject, state, started_at_ms, resolved_at_ms, evidence, notified, node_id
     FROM alerts ORDER BY state = 'firing' DESC, id DESC LIMIT $1";
