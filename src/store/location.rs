//! Which store a config names, and everything opened from it. Callers hold a [`StoreLocation`]
//! and ask it for a writer, a reader or a one-off operation; only this file matches on the
//! backend, so no command, task or pane learns whether it runs on one SQLite file or a fleet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dashboard::DashboardReader;
use super::handoff::HandOffs;
use super::postgres::reader::PgReader;
use super::writer::{StoreWriter, WriterOptions, WriterThread};
use super::{StoreError, StoreReader, TraceReader};
use crate::config::StorageConfig;
use crate::pipeline::RouteTarget;

/// An SQLite file (one node) or a PostgreSQL URL (a fleet).
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

/// A running writer: the handle, its threads, and this node's name when it is one of a fleet.
pub struct RunningWriter {
    pub writer: StoreWriter,
    pub thread: WriterThread,
    pub node: Option<String>,
}

impl StoreLocation {
    /// The store `[storage]` names: `url` when set, else the SQLite `path`.
    pub fn of(storage: &StorageConfig) -> StoreLocation {
        match &storage.url {
            Some(url) => StoreLocation::Postgres(url.expose().to_string()),
            None => StoreLocation::Sqlite(storage.path.clone()),
        }
    }

    /// A PostgreSQL URL or a path to an SQLite file.
    pub fn parse(named: &str) -> StoreLocation {
        if named.starts_with("postgres://") || named.starts_with("postgresql://") {
            StoreLocation::Postgres(named.to_string())
        } else {
            StoreLocation::Sqlite(Path::new(named).to_path_buf())
        }
    }

    pub fn is_fleet(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }

    /// For people: the file, or the server and database without credentials.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(url) => super::postgres::describe(url),
        }
    }

    /// Run migrations and start the writer (threads that own the write connections).
    pub fn spawn_writer(
        &self,
        options: WriterOptions,
        targets: Vec<RouteTarget>,
        handoffs: Arc<HandOffs>,
    ) -> Result<RunningWriter, StoreError> {
        match self {
            StoreLocation::Sqlite(path) => {
                let (writer, thread) =
                    super::sqlite::writer::spawn(path, options, targets, handoffs)?;
                Ok(RunningWriter {
                    writer,
                    thread,
                    node: None,
                })
            }
            StoreLocation::Postgres(url) => {
                let node = super::postgres::writer::node_id();
                let (writer, thread) =
                    super::postgres::writer::spawn(url, node.clone(), options, targets, handoffs)?;
                Ok(RunningWriter {
                    writer,
                    thread,
                    node: Some(node),
                })
            }
        }
    }

    /// Commands that only read or adjust what a node stored must not create an empty
    /// database where none is (a mistyped folder would otherwise answer "0 found").
    fn existing(&self) -> Result<&Self, StoreError> {
        match self {
            StoreLocation::Sqlite(path) if !path.exists() => Err(StoreError::Missing(format!(
                "no database at {} (run from the folder of tracklayer.toml, or set storage.path)",
                path.display()
            ))),
            _ => Ok(self),
        }
    }

    /// What `inspect` and the test send's trace read.
    pub fn trace_reader(&self) -> Result<Box<dyn TraceReader>, StoreError> {
        Ok(match self.existing()? {
            StoreLocation::Sqlite(path) => Box::new(StoreReader::open(path)?),
            StoreLocation::Postgres(url) => Box::new(PgReader::open(url)?),
        })
    }

    /// Open a reader for the dashboard. Synchronous: call it from a plain thread (the
    /// PostgreSQL client must not run on an async task's thread).
    pub fn open(&self) -> Result<Box<dyn DashboardReader>, StoreError> {
        Ok(match self {
            StoreLocation::Sqlite(path) => Box::new(StoreReader::open(path)?),
            StoreLocation::Postgres(url) => Box::new(PgReader::open(url)?),
        })
    }

    /// Perform an operator action (and record who did it). Synchronous, like [`Self::open`].
    pub fn operate(
        &self,
        action: &super::model::actions::OperatorAction,
        who: &str,
    ) -> Result<i64, StoreError> {
        match self.existing()? {
            StoreLocation::Sqlite(path) => super::sqlite::operate(path, action, who),
            StoreLocation::Postgres(url) => Ok(super::postgres::operate(url, action, who)?),
        }
    }

    /// A connection for forgetting people. Synchronous, on the calling thread from start to
    /// end (a plain thread: the PostgreSQL client must not run on an async task's thread).
    pub fn privacy(&self) -> Result<Box<dyn super::privacy::PrivacyStore>, StoreError> {
        Ok(match self.existing()? {
            StoreLocation::Sqlite(path) => {
                Box::new(super::sqlite::privacy::SqlitePrivacy::open(path)?)
            }
            StoreLocation::Postgres(url) => {
                Box::new(super::postgres::privacy::PgPrivacy::open(url)?)
            }
        })
    }

    /// Put a destination's deliveries in `status` updated since `since_ms` back in the queue.
    pub fn requeue(
        &self,
        destination: &str,
        status: &str,
        since_ms: i64,
    ) -> Result<usize, StoreError> {
        match self.existing()? {
            StoreLocation::Sqlite(path) => {
                super::sqlite::requeue(path, destination, status, since_ms)
            }
            StoreLocation::Postgres(url) => {
                Ok(super::postgres::requeue(url, destination, status, since_ms)? as usize)
            }
        }
    }

    /// Let repeated event_ids of an environment pass between `starts_ms` and `ends_ms`.
    pub fn open_replay_window(
        &self,
        environment: &str,
        starts_ms: i64,
        ends_ms: i64,
        note: &str,
    ) -> Result<i64, StoreError> {
        match self.existing()? {
            StoreLocation::Sqlite(path) => {
                super::sqlite::open_replay_window(path, environment, starts_ms, ends_ms, note)
            }
            StoreLocation::Postgres(url) => Ok(super::postgres::open_replay_window(
                url,
                environment,
                starts_ms,
                ends_ms,
                note,
            )?),
        }
    }
}
