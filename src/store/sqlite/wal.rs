//! Keeping the write-ahead log small: checkpoints on their own thread, and a fold by the writer
//! when sustained load keeps the log from ever starting over.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::store::error::StoreError;

/// Past this size the writer folds the WAL back into the database itself (see `WalFold`). Each
/// fold stalls the writer (~40 ms at the benchmark's full load, about once a second), so it
/// should be rare.
pub(super) const WAL_LIMIT_BYTES: u64 = 256 << 20;

/// How often the checkpointer copies the WAL into the database file. (Checkpointing every 10 ms
/// under load, to leave less for `WalFold`, measured worse: p99 ack latency 7 → 12 ms.)
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Checkpoints run on their own connection and thread: with SQLite's automatic checkpoints the
/// writer itself would stop every ~1000 pages to copy and fsync the database file, and every
/// request waiting for that commit would see the stall. PASSIVE never blocks the writer.
pub(super) fn spawn_checkpointer(
    path: &Path,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    std::thread::Builder::new()
        .name("tracklayer-checkpoint".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::park_timeout(CHECKPOINT_INTERVAL);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
        })
        .map_err(|source| StoreError::Thread { source })
}

/// Keeps the WAL from growing without bound. The background checkpointer copies frames into the
/// database but cannot restart the log: SQLite starts it over only when a write begins with every
/// frame already copied, which never happens while the writer commits back to back (measured:
/// hundreds of MB a second at full ingest rate). So once the file passes its limit, the writer
/// copies the remainder itself between two groups; its next commit starts the log over and
/// `journal_size_limit` truncates the file back to the limit.
pub(super) struct WalFold {
    path: PathBuf,
    limit: u64,
    retry_at: Option<Instant>,
}

impl WalFold {
    /// A fold that a reader kept from finishing is retried after this long, not after every
    /// commit.
    const RETRY: Duration = Duration::from_millis(50);

    /// Also sets the writer connection's `journal_size_limit`, which must equal the limit: a
    /// file truncated to less would be extended again on every cycle.
    pub(super) fn new(
        conn: &Connection,
        db_path: &Path,
        limit: u64,
    ) -> Result<WalFold, rusqlite::Error> {
        conn.pragma_update(None, "journal_size_limit", limit as i64)?;
        Ok(WalFold {
            path: wal_path(db_path),
            limit,
            retry_at: None,
        })
    }

    pub(super) fn after_commit(&mut self, conn: &Connection) {
        let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if len <= self.limit || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let folded = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        self.retry_at = match folded {
            Ok((0, frames, copied)) if frames == copied => None,
            // The background checkpointer holds the checkpoint lock: try again after the next
            // commit (a busy check costs microseconds).
            Ok((1, _, _)) => None,
            Ok((_, frames, copied)) => {
                tracing::debug!(
                    frames,
                    copied,
                    "WAL not folded yet (a reader still uses old frames)"
                );
                Some(Instant::now() + Self::RETRY)
            }
            Err(e) => {
                tracing::warn!(error = %e, "folding the WAL failed; retrying");
                Some(Instant::now() + Self::RETRY)
            }
        };
    }
}

/// SQLite's name for a database's write-ahead log.
pub(super) fn wal_path(db_path: &Path) -> PathBuf {
    let mut path = db_path.as_os_str().to_owned();
    path.push("-wal");
    PathBuf::from(path)
}
