//! Read-only queries. Each reader has its own connection opened read-only, so readers never
//! block the writer (WAL) and cannot write by mistake.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use super::StoreError;

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredMessage {
    pub row_id: i64,
    pub request_id: String,
    pub position: i64,
    pub received_at_ms: i64,
    pub environment: String,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub event: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub duplicate_of: Option<i64>,
    pub raw_sha256: String,
    /// The raw bytes; for an identical duplicate, the original's bytes.
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// False for an identical duplicate, whose bytes are stored only once (on the original).
    pub raw_stored: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRequest {
    pub request_id: String,
    pub received_at_ms: i64,
    pub environment: String,
    pub path: String,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub auth_scheme: String,
    pub body_shape: String,
    pub body_bytes: i64,
    pub message_count: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRejection {
    pub received_at_ms: i64,
    pub path: String,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub account_header: Option<String>,
    pub environment_header: Option<String>,
    pub content_type: Option<String>,
    pub body_bytes: Option<i64>,
    pub status_code: u16,
    pub reason_code: String,
    pub reason: String,
}

pub struct StoreReader {
    conn: Connection,
}

const MESSAGE_COLUMNS: &str = "m.id, m.request_id, m.position, m.received_at_ms, m.environment,
    m.message_id, m.type, m.event, m.user_id, m.anonymous_id, m.status, m.reason, m.duplicate_of,
    m.raw_sha256, COALESCE(m.raw, o.raw), m.raw IS NOT NULL";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let digest: Vec<u8> = row.get(13)?;
    Ok(StoredMessage {
        row_id: row.get(0)?,
        request_id: row.get(1)?,
        position: row.get(2)?,
        received_at_ms: row.get(3)?,
        environment: row.get(4)?,
        message_id: row.get(5)?,
        message_type: row.get(6)?,
        event: row.get(7)?,
        user_id: row.get(8)?,
        anonymous_id: row.get(9)?,
        status: row.get(10)?,
        reason: row.get(11)?,
        duplicate_of: row.get(12)?,
        raw_sha256: hex::encode(digest),
        raw: row.get::<_, Option<Vec<u8>>>(14)?.unwrap_or_default(),
        raw_stored: row.get(15)?,
    })
}

impl StoreReader {
    /// Open an existing database for reading. Fails if it does not exist.
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        // Not SQLITE_OPEN_READ_ONLY: a read-only connection cannot create the WAL index (-shm)
        // when no writer is running. `query_only` refuses writes just as firmly.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(StoreReader { conn })
    }

    /// Every stored arrival of a messageId (the original, duplicates, invalid copies), oldest first.
    pub fn messages_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN messages o ON o.id = m.duplicate_of
             WHERE m.message_id = ?1 ORDER BY m.id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([message_id], message_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The messages of one request, in batch order.
    pub fn messages_of_request(&self, request_id: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN messages o ON o.id = m.duplicate_of
             WHERE m.request_id = ?1 ORDER BY m.position"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([request_id], message_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn request(&self, request_id: &str) -> Result<Option<StoredRequest>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT request_id, received_at_ms, environment, path, remote_addr, user_agent,
                    auth_scheme, body_shape, body_bytes, message_count
             FROM requests WHERE request_id = ?1",
        )?;
        Ok(stmt
            .query_row([request_id], |row| {
                Ok(StoredRequest {
                    request_id: row.get(0)?,
                    received_at_ms: row.get(1)?,
                    environment: row.get(2)?,
                    path: row.get(3)?,
                    remote_addr: row.get(4)?,
                    user_agent: row.get(5)?,
                    auth_scheme: row.get(6)?,
                    body_shape: row.get(7)?,
                    body_bytes: row.get(8)?,
                    message_count: row.get(9)?,
                })
            })
            .optional()?)
    }

    /// The newest rejected requests first.
    pub fn recent_rejections(&self, limit: usize) -> Result<Vec<StoredRejection>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT received_at_ms, path, remote_addr, user_agent, account_header,
                    environment_header, content_type, body_bytes, status_code, reason_code, reason
             FROM rejections ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(StoredRejection {
                received_at_ms: row.get(0)?,
                path: row.get(1)?,
                remote_addr: row.get(2)?,
                user_agent: row.get(3)?,
                account_header: row.get(4)?,
                environment_header: row.get(5)?,
                content_type: row.get(6)?,
                body_bytes: row.get(7)?,
                status_code: row.get(8)?,
                reason_code: row.get(9)?,
                reason: row.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Message counts by status: (accepted, duplicate, invalid).
    pub fn message_counts(&self) -> Result<(i64, i64, i64), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT status, COUNT(*) FROM messages GROUP BY status")?;
        let mut counts = (0, 0, 0);
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (status, n) = row?;
            match status.as_str() {
                "accepted" => counts.0 = n,
                "duplicate" => counts.1 = n,
                _ => counts.2 = n,
            }
        }
        Ok(counts)
    }

    /// Whether an accepted message with this messageId exists (used by durability checks).
    pub fn has_accepted(&self, environment: &str, message_id: &str) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT 1 FROM messages WHERE environment = ?1 AND message_id = ?2 AND status = 'accepted'",
        )?;
        Ok(stmt.exists([environment, message_id])?)
    }

    pub fn local_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM local_settings WHERE key = ?1")?;
        Ok(stmt.query_row([key], |row| row.get(0)).optional()?)
    }
}
