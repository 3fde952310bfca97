//! Reading the stored raw messages of a window one at a time, for the mapping preview: a
//! million messages pass through without being held at once. Only SQL here.

use super::codec::unpack_raw;
use super::{StoreError, StoreLocation};

/// One stored message as it arrived.
pub struct StoredRaw<'a> {
    pub message_id: Option<&'a str>,
    pub environment: &'a str,
    pub received_at_ms: i64,
    pub raw: &'a [u8],
}

/// How many rows one round trip fetches from a fleet's database.
const FETCH: i32 = 5_000;

impl StoreLocation {
    /// Call `each` for every accepted message received since `since_ms` (of `environment` when
    /// given), oldest first. Returns how many there were. Synchronous: from a plain thread.
    pub fn each_message(
        &self,
        since_ms: i64,
        environment: Option<&str>,
        each: &mut dyn FnMut(StoredRaw<'_>),
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        match self {
            StoreLocation::Sqlite(path) => {
                let reader = super::StoreReader::open(path)?;
                let mut stmt = reader.conn_for_scan().prepare(
                    "SELECT message_id, environment, received_at_ms, raw FROM messages
                     WHERE status = 'accepted' AND received_at_ms >= ?1
                       AND (?2 IS NULL OR environment = ?2) AND raw IS NOT NULL
                     ORDER BY id",
                )?;
                let mut rows = stmt.query(rusqlite::params![since_ms, environment])?;
                while let Some(row) = rows.next()? {
                    let message_id: Option<String> = row.get(0)?;
                    let environment: String = row.get(1)?;
                    let raw = unpack_raw(row.get_ref(3)?.as_blob().unwrap_or_default());
                    each(StoredRaw {
                        message_id: message_id.as_deref(),
                        environment: &environment,
                        received_at_ms: row.get(2)?,
                        raw: &raw,
                    });
                    count += 1;
                }
            }
            StoreLocation::Postgres(url) => {
                let mut client = super::postgres::connect(url)?;
                let mut tx = client.transaction()?;
                // A portal: the server keeps the result and hands it over FETCH rows at a time.
                let statement = tx.prepare(
                    "SELECT message_id, environment, received_at_ms, raw FROM messages
                     WHERE status = 'accepted' AND received_at_ms >= $1
                       AND ($2::text IS NULL OR environment = $2) AND raw IS NOT NULL
                     ORDER BY id",
                )?;
                let portal = tx.bind(&statement, &[&since_ms, &environment])?;
                loop {
                    let rows = tx.query_portal(&portal, FETCH)?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        let message_id: Option<&str> = row.get(0);
                        let raw = unpack_raw(row.get(3));
                        each(StoredRaw {
                            message_id,
                            environment: row.get(1),
                            received_at_ms: row.get(2),
                            raw: &raw,
                        });
                        count += 1;
                    }
                }
                tx.commit()?;
            }
        }
        Ok(count)
    }
}
