//! What every store part shares: its error, and the clock rows are stamped with.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("PostgreSQL schema: {0}")]
    PostgresSchema(#[from] PostgresError),
    #[error("{0}")]
    Unsupported(&'static str),
    /// A command that reads what a node stored, pointed where nothing is stored.
    #[error("{0}")]
    Missing(String),
    /// Other nodes kept taking the keys a group counted on.
    #[error("{0}")]
    Conflict(String),
    #[error("cannot start a storage thread: {source}")]
    Thread { source: std::io::Error },
    #[error("cannot create the folder for {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
}

/// What the PostgreSQL store's connection and schema can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("PostgreSQL: {0}")]
    Client(#[from] postgres::Error),
    #[error("the PostgreSQL connection thread panicked")]
    Panicked,
    #[error("migration {version} ({name}): {source}")]
    Migration {
        version: i32,
        name: &'static str,
        source: postgres::Error,
    },
}

/// Unix milliseconds: every time a store writes.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
