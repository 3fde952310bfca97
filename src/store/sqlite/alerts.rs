//! Alerts on SQLite: at most one open row per rule and subject (a partial unique index), so a
//! firing is an insert that either takes effect or finds one already open.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::model::alerts::{AlertChange, AlertNotice, AlertWrite, StoredAlert};

pub fn record(conn: &Connection, change: &AlertChange) -> Result<AlertWrite, rusqlite::Error> {
    if change.firing {
        // A notified firing that resolved within the cooldown keeps this one quiet.
        let quiet = conn
            .prepare_cached(
                "SELECT 1 FROM alerts INDEXED BY alerts_by_subject
                 WHERE rule = ?1 AND subject = ?2 AND notified = 1 AND resolved_at_ms >= ?3
                 LIMIT 1",
            )?
            .exists(params![
                change.rule,
                change.subject,
                change.cooldown_since_ms
            ])?;
        let inserted = conn.prepare_cached(
            "INSERT INTO alerts (rule, subject, state, started_at_ms, evidence, notified, node_id)
             VALUES (?1, ?2, 'firing', ?3, ?4, ?5, ?6)
             ON CONFLICT (rule, subject) WHERE state = 'firing' DO NOTHING",
        )?
        .execute(params![
            change.rule,
            change.subject,
            change.at_ms,
            change.evidence,
            !quiet,
            change.node_id
        ])?;
        return Ok(AlertWrite {
            changed: inserted == 1,
            notify: inserted == 1 && !quiet,
            started_at_ms: Some(change.at_ms),
        });
    }
    let resolved = conn
        .prepare_cached(
            "UPDATE alerts SET state = 'resolved', resolved_at_ms = ?3
             WHERE rule = ?1 AND subject = ?2 AND state = 'firing'
             RETURNING notified, started_at_ms",
        )?
        .query_row(params![change.rule, change.subject, change.at_ms], |r| {
            Ok((r.get::<_, bool>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?;
    Ok(match resolved {
        Some((notified, started)) => AlertWrite {
            changed: true,
            notify: notified,
            started_at_ms: Some(started),
        },
        None => AlertWrite::default(),
    })
}

pub fn record_notice(conn: &Connection, notice: &AlertNotice) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "UPDATE alerts SET notice = ?4 WHERE rule = ?1 AND subject = ?2 AND started_at_ms = ?3",
    )?
    .execute(params![
        notice.rule,
        notice.subject,
        notice.started_at_ms,
        notice.notice
    ])?;
    Ok(())
}

const COLUMNS: &str =
    "id, rule, subject, state, started_at_ms, resolved_at_ms, evidence, notified, node_id, notice";

fn from_row(r: &rusqlite::Row) -> Result<StoredAlert, rusqlite::Error> {
    Ok(StoredAlert {
        id: r.get(0)?,
        rule: r.get(1)?,
        subject: r.get(2)?,
        state: r.get(3)?,
        started_at_ms: r.get(4)?,
        resolved_at_ms: r.get(5)?,
        evidence: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
        notified: r.get(7)?,
        node_id: r.get(8)?,
        notice: r.get(9)?,
    })
}

/// Open alerts first, then the newest resolved ones.
pub fn recent(conn: &Connection, limit: usize) -> Result<Vec<StoredAlert>, rusqlite::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM alerts ORDER BY state = 'firing' DESC, id DESC LIMIT ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([limit as i64], from_row)?;
    rows.collect()
}
