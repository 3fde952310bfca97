//! The warehouse destination's SQLite sink (see `store::warehouse` for the table's contract).

use std::path::Path;

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::pipeline::CanonicalEvent;
use crate::store::model::warehouse::{WarehouseForget, WarehouseSink, SCHEMA_VERSION};

/// The table's schema (version `SCHEMA_VERSION`), created if missing. One row per event_id;
/// re-sending is a no-op.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tracklayer_events (
    event_id        TEXT PRIMARY KEY,   -- stable TrackLayer event id
    event_name      TEXT NOT NULL,      -- canonical name (purchase, add_to_cart, ...)
    segment_event   TEXT NOT NULL,      -- the Segment name it came from
    environment     TEXT NOT NULL,
    event_time      TEXT NOT NULL,      -- RFC 3339, UTC
    message_id      TEXT NOT NULL,      -- Segment messageId of the first arrival
    user_id         TEXT,
    anonymous_id    TEXT,
    order_id        TEXT,
    value           REAL,
    currency        TEXT,
    items_json      TEXT,               -- JSON array of items
    properties_json TEXT NOT NULL,      -- every canonical property, JSON
    context_json    TEXT NOT NULL,      -- ip, user agent, page, click ids, JSON
    mapping_version INTEGER NOT NULL,
    loaded_at       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tracklayer_events_by_time ON tracklayer_events (event_time);
CREATE TABLE IF NOT EXISTS tracklayer_warehouse_schema (version INTEGER NOT NULL);
";

pub struct SqliteWarehouse {
    conn: Connection,
}

impl SqliteWarehouse {
    pub fn open(path: &Path) -> Result<SqliteWarehouse, String> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let conn =
            Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| e.to_string())?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        // A forgotten person's rows are zeroed on disk as they are deleted.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(|e| e.to_string())?;
        conn.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
        conn.execute(
            "INSERT INTO tracklayer_warehouse_schema (version)
             SELECT ?1 WHERE NOT EXISTS (SELECT 1 FROM tracklayer_warehouse_schema)",
            [SCHEMA_VERSION],
        )
        .map_err(|e| e.to_string())?;
        Ok(SqliteWarehouse { conn })
    }
}

impl WarehouseSink for SqliteWarehouse {
    fn write(&mut self, events: &[&CanonicalEvent]) -> Result<usize, String> {
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let mut new = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO tracklayer_events (event_id, event_name, segment_event, environment,
                         event_time, message_id, user_id, anonymous_id, order_id, value, currency,
                         items_json, properties_json, context_json, mapping_version, loaded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                     ON CONFLICT (event_id) DO NOTHING",
                )
                .map_err(|e| e.to_string())?;
            let loaded_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            for e in events {
                let p = &e.properties;
                new += insert
                    .execute(params![
                        e.event_id,
                        e.name,
                        e.segment_event,
                        e.environment,
                        e.event_time,
                        e.message_id,
                        e.user.user_id,
                        e.user.anonymous_id,
                        p.get("order_id").and_then(Value::as_str),
                        p.get("value").and_then(Value::as_f64),
                        p.get("currency").and_then(Value::as_str),
                        p.get("items").map(Value::to_string),
                        Value::Object(p.clone()).to_string(),
                        serde_json::to_string(&e.context).unwrap_or_else(|_| "{}".into()),
                        e.mapping_version,
                        loaded_at,
                    ])
                    .map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(new)
    }

    fn forget(&mut self, person: &WarehouseForget) -> Result<usize, String> {
        let list = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let deleted = self
            .conn
            .execute(
                "DELETE FROM tracklayer_events
                 WHERE event_id IN (SELECT value FROM json_each(?1))
                    OR user_id IN (SELECT value FROM json_each(?2))
                    OR anonymous_id IN (SELECT value FROM json_each(?3))",
                params![
                    list(&person.event_ids),
                    list(&person.user_ids),
                    list(&person.anonymous_ids)
                ],
            )
            .map_err(|e| e.to_string())?;
        // The WAL still holds the pages as they were: fold it in and cut it to nothing.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| e.to_string())?;
        Ok(deleted)
    }
}

/// Rows of the warehouse table (for tests and the demo summary): (event_id, event_name, value).
pub fn read_rows(path: &Path) -> Result<Vec<(String, String, Option<f64>)>, String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("SELECT event_id, event_name, value FROM tracklayer_events ORDER BY event_time, event_id")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
}
