//! The SQLite store: the embedded default, one process on one file. Opening (0600 files, WAL,
//! migrations), the local settings of the embedded default, and the SQL of every part.

pub mod actions;
pub mod alerts;
pub mod delivery;
pub(super) mod ingest;
pub mod pipeline;
pub mod privacy;
mod privacy_audit;
pub mod reader;
pub mod retention;
mod stage;
pub mod views;
mod wal;
pub mod warehouse;
pub mod writer;

use std::path::Path;
use std::sync::LazyLock;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

use super::error::{now_ms, StoreError};
use reader::StoreReader;

/// The migrations, in order. Each file is applied once; `PRAGMA user_version` records how far.
static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::new(vec![
        M::up(include_str!("../../../migrations/0001_receipts.sql")),
        M::up(include_str!(
            "../../../migrations/0002_rejections_and_settings.sql"
        )),
        M::up(include_str!("../../../migrations/0003_pipeline.sql")),
        M::up(include_str!("../../../migrations/0004_delivery.sql")),
        M::up(include_str!(
            "../../../migrations/0005_dashboard_indexes.sql"
        )),
        M::up(include_str!(
            "../../../migrations/0006_backlog_proof_queue.sql"
        )),
        M::up(include_str!(
            "../../../migrations/0007_bounded_requests.sql"
        )),
        M::up(include_str!("../../../migrations/0008_signed_batches.sql")),
        M::up(include_str!("../../../migrations/0009_alerts.sql")),
        M::up(include_str!("../../../migrations/0010_alert_notice.sql")),
        M::up(include_str!(
            "../../../migrations/0011_operator_actions.sql"
        )),
        M::up(include_str!("../../../migrations/0012_unmapped_names.sql")),
        M::up(include_str!(
            "../../../migrations/0013_events_by_profile.sql"
        )),
        M::up(include_str!("../../../migrations/0014_privacy.sql")),
        M::up(include_str!(
            "../../../migrations/0015_one_person_one_key.sql"
        )),
        M::up(include_str!("../../../migrations/0016_lean_deliveries.sql")),
        M::up(include_str!(
            "../../../migrations/0017_destination_minutes.sql"
        )),
    ])
});

pub fn migrations() -> &'static Migrations<'static> {
    &MIGRATIONS
}

/// Open (creating if needed) the database for writing and bring its schema up to date.
pub fn open_for_writing(path: &Path) -> Result<Connection, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
            path: path.display().to_string(),
            source,
        })?;
    }
    create_private(path)?;
    let mut conn = Connection::open(path)?;
    configure_writer(&conn)?;
    MIGRATIONS.to_latest(&mut conn)?;
    Ok(conn)
}

/// Create the database file readable by its owner only, before SQLite opens it: it holds
/// personal data and, for the embedded default, its secret. SQLite gives the WAL and shared-memory
/// files the same permissions as the database.
fn create_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(std::fs::File::open(path)?),
                    _ => Err(e),
                })
                .map_err(|source| StoreError::CreateDir {
                    path: path.display().to_string(),
                    source,
                })?;
        }
    }
    Ok(())
}

fn configure_writer(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsynced at every commit, so an acknowledged request survives a power
    // loss too, not only a process crash. Group commit pays for it.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // Deleted rows are overwritten with zeros as their space is freed: a forgotten person's
    // bytes must not stay readable in free pages (retention's deletes pay the same small cost).
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The writer cycles through ~20 statements per message; the default cache of 16 would
    // evict and re-parse some of them on every message.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// The embedded default's development secret: read it, or create and store it on first start.
/// Returns the secret and whether it was created just now (so it is shown exactly once).
pub fn local_secret(path: &Path, key: &str) -> Result<(String, bool), StoreError> {
    let conn = open_for_writing(path)?;
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM local_settings WHERE key = ?1",
            [key],
            |row| row.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })?;
    if let Some(secret) = existing {
        return Ok((secret, false));
    }
    let secret = generate_secret();
    conn.execute(
        "INSERT INTO local_settings (key, value) VALUES (?1, ?2)",
        (key, &secret),
    )?;
    Ok((secret, true))
}

/// Read a local setting without creating anything (for `send` against the embedded default).
pub fn read_local_secret(path: &Path, key: &str) -> Result<Option<String>, StoreError> {
    let reader = StoreReader::open(path)?;
    reader.local_setting(key)
}

/// Let repeated event_ids through for `environment` between two instants (a Segment Replay
/// reuses messageIds). Writes on its own connection; the running server sees it at once.
pub fn open_replay_window(
    path: &Path,
    environment: &str,
    starts_ms: i64,
    ends_ms: i64,
    note: &str,
) -> Result<i64, StoreError> {
    let conn = open_for_writing(path)?;
    Ok(pipeline::open_replay_window(
        &conn,
        environment,
        starts_ms,
        ends_ms,
        note,
    )?)
}

/// Perform an operator action and record it; returns how many rows it touched.
pub fn operate(
    path: &Path,
    action: &crate::store::model::actions::OperatorAction,
    who: &str,
) -> Result<i64, StoreError> {
    let mut conn = open_for_writing(path)?;
    Ok(actions::perform(&mut conn, action, who, now_ms())?)
}

/// The newest operator actions.
pub fn operator_actions(
    path: &Path,
    limit: usize,
) -> Result<Vec<crate::store::model::actions::OperatorRecord>, StoreError> {
    let conn = open_for_writing(path)?;
    Ok(actions::recent(&conn, limit)?)
}

/// Put a destination's deliveries in `status` (usually `dead`) updated since `since_ms` back in
/// the queue; the running workers pick them up. Returns how many.
pub fn requeue(
    path: &Path,
    destination: &str,
    status: &str,
    since_ms: i64,
) -> Result<usize, StoreError> {
    let conn = open_for_writing(path)?;
    Ok(delivery::requeue(
        &conn,
        destination,
        status,
        since_ms,
        now_ms(),
    )?)
}

/// 32 random bytes, hex: 256 bits for an HMAC key.
fn generate_secret() -> String {
    format!("tls_{}", random_hex())
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

/// The embedded default's write key for `/v1/*`: its own value, never the HMAC secret (a key
/// that SDKs embed in apps must not also sign requests). Created on first use.
pub fn local_write_key(path: &Path, key: &str) -> Result<String, StoreError> {
    let conn = open_for_writing(path)?;
    conn.execute(
        "INSERT INTO local_settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        (key, format!("wk_{}", random_hex())),
    )?;
    Ok(conn.query_row(
        "SELECT value FROM local_settings WHERE key = ?1",
        [key],
        |row| row.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(conn: &Connection) -> Vec<(String, String, Option<String>)> {
        let mut stmt = conn
            .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn fresh_database_equals_one_upgraded_step_by_step() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = open_for_writing(&dir.path().join("fresh.db")).unwrap();

        let mut stepped = Connection::open(dir.path().join("stepped.db")).unwrap();
        // Every file in migrations/ must be registered, in order.
        let total = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "sql")
            })
            .count();
        for version in 1..=total {
            MIGRATIONS.to_version(&mut stepped, version).unwrap();
            let v: i64 = stepped
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(v, version as i64);
        }
        assert_eq!(schema(&fresh), schema(&stepped));
        let fresh_version: i64 = fresh
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(
            fresh_version, total as i64,
            "a migration file is not registered"
        );
        assert!(!schema(&fresh).is_empty());
        MIGRATIONS.validate().unwrap();
    }

    #[test]
    fn gmail_addresses_in_the_graph_are_rekeyed_to_their_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("old.db")).unwrap();
        MIGRATIONS.to_version(&mut conn, 14).unwrap();
        for (value, profile) in [
            ("jane.doe+shop@googlemail.com", 1),
            ("janedoe@gmail.com.evil.io", 2),
            ("ann@example.com", 3),
            ("b.o.b@gmail.com", 4),
            ("bob@googlemail.com", 5),
            ("+x@gmail.com", 6),
        ] {
            conn.execute(
                "INSERT INTO identities (kind, value, profile_id, first_seen_ms, last_seen_ms)
                 VALUES ('email', ?1, ?2, 1, 1)",
                rusqlite::params![value, profile],
            )
            .unwrap();
        }
        MIGRATIONS.to_latest(&mut conn).unwrap();
        let rows: Vec<(String, i64)> = conn
            .prepare("SELECT value, profile_id FROM identities ORDER BY profile_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let rows: Vec<(&str, i64)> = rows.iter().map(|(v, p)| (v.as_str(), *p)).collect();
        assert_eq!(
            rows,
            [
                ("janedoe@gmail.com", 1),
                ("janedoe@gmail.com.evil.io", 2),
                ("ann@example.com", 3),
                ("bob@gmail.com", 4),
                // The same mailbox had a row already: this spelling keeps its own.
                ("bob@googlemail.com", 5),
                // Names no mailbox: left as it was.
                ("+x@gmail.com", 6),
            ]
        );
    }

    #[test]
    fn refuses_a_database_from_a_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        {
            let conn = open_for_writing(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = open_for_writing(&path).unwrap_err().to_string();
        assert!(err.contains("database schema"), "{err}");
    }

    #[test]
    fn local_secret_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.db");
        let (first, created) = local_secret(&path, "secret.development").unwrap();
        assert!(created && first.len() == 68);
        let (again, created) = local_secret(&path, "secret.development").unwrap();
        assert!(!created);
        assert_eq!(first, again);
        assert_eq!(
            read_local_secret(&path, "secret.development").unwrap(),
            Some(first)
        );
    }

    /// The database holds personal data (and the embedded default's secret): its file and
    /// SQLite's WAL and shared-memory files are for the owner only.
    #[cfg(unix)]
    #[test]
    fn database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.db");
        let conn = open_for_writing(&path).unwrap();
        conn.execute(
            "INSERT INTO local_settings (key, value) VALUES ('k', 'v')",
            [],
        )
        .unwrap();
        for file in ["private.db", "private.db-wal", "private.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file} is {:o}", mode & 0o777);
        }
    }

    #[test]
    fn the_embedded_write_key_is_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.db");
        let (secret, _) = local_secret(&path, "secret.development").unwrap();
        let key = local_write_key(&path, "write_key.development").unwrap();
        assert_ne!(secret, key);
        assert_eq!(
            local_write_key(&path, "write_key.development").unwrap(),
            key
        );
    }
}
