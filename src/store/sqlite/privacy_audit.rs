//! The forget audit on SQLite: the rows a request leaves (no personal data) and how they read
//! back, with each request's forwards. Only SQL.

use rusqlite::{params, Connection};

use crate::store::model::privacy::{ForwardRecord, NewPrivacyRequest, PrivacyRecord};

pub(super) fn insert_request(
    conn: &Connection,
    request: &NewPrivacyRequest,
) -> Result<i64, rusqlite::Error> {
    conn.execute(
        "INSERT INTO privacy_requests (request_id, action, who, environment, received_at_ms,
             finished_at_ms, identifiers, status)
         VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?7 = 'deleting' THEN NULL ELSE ?5 END, ?6, ?7)",
        params![
            request.request_id,
            request.action,
            request.who,
            request.environment,
            request.received_at_ms,
            request.identifiers,
            request.status
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn read_requests(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<PrivacyRecord>, rusqlite::Error> {
    let rows: Vec<(i64, PrivacyRecord)> = conn
        .prepare(sql)?
        .query_map(args, |r| {
            let json = |text: String| serde_json::from_str(&text).unwrap_or_default();
            Ok((
                r.get(0)?,
                PrivacyRecord {
                    request_id: r.get(1)?,
                    action: r.get(2)?,
                    who: r.get(3)?,
                    environment: r.get(4)?,
                    received_at_ms: r.get(5)?,
                    finished_at_ms: r.get(6)?,
                    identifiers: json(r.get(7)?),
                    status: r.get(8)?,
                    deleted: json(r.get(9)?),
                    suppressed_messages: r.get(10)?,
                    last_suppressed_ms: r.get(11)?,
                    forwards: Vec::new(),
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut forwards = conn.prepare_cached(
        "SELECT destination, kind, status, attempts, status_code, last_error, updated_at_ms
         FROM privacy_forwards WHERE request_row = ?1 ORDER BY id",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (row, mut record) in rows {
        record.forwards = forwards
            .query_map([row], |r| {
                Ok(ForwardRecord {
                    destination: r.get(0)?,
                    kind: r.get(1)?,
                    status: r.get(2)?,
                    attempts: r.get(3)?,
                    status_code: r.get(4)?,
                    last_error: r.get(5)?,
                    updated_at_ms: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        out.push(record);
    }
    Ok(out)
}

/// The newest forget requests (the dashboard's audit list).
pub fn recent(conn: &Connection, limit: usize) -> Result<Vec<PrivacyRecord>, rusqlite::Error> {
    read_requests(
        conn,
        "SELECT id, request_id, action, who, environment, received_at_ms, finished_at_ms,
                identifiers, status, deleted, suppressed_messages, last_suppressed_ms
         FROM privacy_requests ORDER BY id DESC LIMIT ?1",
        params![limit as i64],
    )
}
