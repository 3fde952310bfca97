//! The PostgreSQL store, for a fleet of nodes sharing one database (issue 12). This first part
//! holds the connection and the schema: migrations in `migrations/postgres/`, applied in order
//! under an advisory lock so nodes starting together do not race, each in its own transaction
//! and recorded in `schema_migrations`.

mod actions;
mod alerts;
mod db;
mod delivery;
mod ingest;
pub mod privacy;
pub mod reader;
mod retention;
mod stage;
mod views;
pub mod warehouse;
pub mod writer;

use postgres::{Client, NoTls};

/// The migrations, in order: (version, name, SQL). A version is never edited once released;
/// a change is a new file with the next number, as for SQLite.
pub const MIGRATIONS: [(i32, &str, &str); 10] = [
    (
        1,
        "0001_schema",
        include_str!("../../../migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        "0002_alerts",
        include_str!("../../../migrations/postgres/0002_alerts.sql"),
    ),
    (
        3,
        "0003_alert_notice",
        include_str!("../../../migrations/postgres/0003_alert_notice.sql"),
    ),
    (
        4,
        "0004_operator_actions",
        include_str!("../../../migrations/postgres/0004_operator_actions.sql"),
    ),
    (
        5,
        "0005_events_by_profile",
        include_str!("../../../migrations/postgres/0005_events_by_profile.sql"),
    ),
    (
        6,
        "0006_profile_version",
        include_str!("../../../migrations/postgres/0006_profile_version.sql"),
    ),
    (
        7,
        "0007_privacy",
        include_str!("../../../migrations/postgres/0007_privacy.sql"),
    ),
    (
        8,
        "0008_one_person_one_key",
        include_str!("../../../migrations/postgres/0008_one_person_one_key.sql"),
    ),
    (
        9,
        "0009_claim_tokens",
        include_str!("../../../migrations/postgres/0009_claim_tokens.sql"),
    ),
    (
        10,
        "0010_destination_minutes",
        include_str!("../../../migrations/postgres/0010_destination_minutes.sql"),
    ),
];

/// The advisory lock key that serialises migrations across nodes ("tracklayer" in ASCII).
const MIGRATION_LOCK: i64 = 0x7472_6163_6b6c_6179;

pub use crate::store::error::PostgresError;

/// Connect to `url` (`postgres://user:pass@host:5432/db`). Errors name what failed without
/// repeating the URL, which may hold a password.
pub fn connect(url: &str) -> Result<Client, PostgresError> {
    Ok(Client::connect(url, NoTls)?)
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call, in order.
    pub applied: Vec<i32>,
    /// The schema version afterwards.
    pub version: i32,
}

/// Bring the schema up to date. Safe to call from every node at start: the advisory lock makes
/// the second node wait for the first and then find nothing to do.
pub fn migrate(client: &mut Client) -> Result<MigrationReport, PostgresError> {
    migrate_to(client, MIGRATIONS.len())
}

/// Apply the first `count` migrations (tests check that stepping through versions gives the
/// same schema as a fresh install).
pub fn migrate_to(client: &mut Client, count: usize) -> Result<MigrationReport, PostgresError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = apply(client, count);
    // Released even when a migration failed; a dropped connection releases it too.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    let report = result?;
    unlocked?;
    Ok(report)
}

fn apply(client: &mut Client, count: usize) -> Result<MigrationReport, PostgresError> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version       INTEGER PRIMARY KEY,
             name          TEXT    NOT NULL,
             applied_at_ms BIGINT  NOT NULL
         )",
    )?;
    let current: i32 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0);
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().take(count) {
        if *version <= current {
            continue;
        }
        let mut tx = client.transaction()?;
        tx.batch_execute(sql)
            .map_err(|source| PostgresError::Migration {
                version: *version,
                name,
                source,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
            &[version, name, &crate::store::error::now_ms()],
        )?;
        tx.commit()?;
        applied.push(*version);
    }
    let version = applied.last().copied().unwrap_or(current);
    Ok(MigrationReport { applied, version })
}

/// Where `url` points, without user or password: `postgres://host:5432/db`.
pub fn describe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "postgres://{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "postgres://(unreadable URL)".into(),
    }
}

/// Whether the server answers, and the schema version it holds (0: not migrated yet).
pub fn probe(url: &str) -> Result<i32, PostgresError> {
    let url = url.to_string();
    // The sync client runs its own runtime: on a plain thread, whatever the caller is.
    std::thread::spawn(move || -> Result<i32, PostgresError> {
        let mut client = connect(&url)?;
        let exists: bool = client
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
            .get(0);
        if !exists {
            return Ok(0);
        }
        Ok(client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )?
            .get(0))
    })
    .join()
    .unwrap_or_else(|_| Ok(0))
}

/// Run `work` on a connection of its own, on a plain thread (the sync client must not run on an
/// async task's thread): what the CLI's one-off commands use.
fn one_off<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
) -> Result<T, PostgresError> {
    let url = url.to_string();
    std::thread::spawn(move || -> Result<T, PostgresError> {
        let mut client = connect(&url)?;
        Ok(work(&mut client)?)
    })
    .join()
    .unwrap_or(Err(PostgresError::Panicked))
}

/// Perform an operator action on the fleet and record it; returns how many rows it touched.
pub fn operate(
    url: &str,
    action: &crate::store::model::actions::OperatorAction,
    who: &str,
) -> Result<i64, PostgresError> {
    let (action, who) = (action.clone(), who.to_string());
    let now = crate::store::error::now_ms();
    one_off(url, move |c| actions::perform(c, &action, &who, now))
}

/// The newest operator actions on the fleet.
pub fn operator_actions(
    url: &str,
    limit: usize,
) -> Result<Vec<crate::store::model::actions::OperatorRecord>, PostgresError> {
    one_off(url, move |c| actions::recent(c, limit))
}

/// Open a replay window for the fleet (`tracklayer allow-replay`); returns its row.
pub fn open_replay_window(
    url: &str,
    environment: &str,
    starts_ms: i64,
    ends_ms: i64,
    note: &str,
) -> Result<i64, PostgresError> {
    let (environment, note) = (environment.to_string(), note.to_string());
    one_off(url, move |c| {
        Ok(c.query_one(
            "INSERT INTO replay_windows (environment, starts_ms, ends_ms, note, created_at_ms)
             VALUES ($1, $2, $3, $4, $2) RETURNING id",
            &[&environment, &starts_ms, &ends_ms, &note],
        )?
        .get(0))
    })
}

/// Put a destination's deliveries in `status` updated since `since_ms` back in the queue
/// (`tracklayer replay`); whichever node claims first sends them. Returns how many.
pub fn requeue(
    url: &str,
    destination: &str,
    status: &str,
    since_ms: i64,
) -> Result<u64, PostgresError> {
    let (destination, status) = (destination.to_string(), status.to_string());
    let now = crate::store::error::now_ms();
    one_off(url, move |c| {
        c.execute(
            "UPDATE deliveries SET status = 'pending', failures = 0, solo = FALSE,
                 next_attempt_ms = $4, lease_until_ms = NULL, leased_by = NULL, updated_at_ms = $4
             WHERE destination = $1 AND status = $2 AND updated_at_ms >= $3",
            &[&destination, &status, &since_ms, &now],
        )
    })
}
