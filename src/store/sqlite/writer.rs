//! SQLite's side of the writer (`store::writer`): one connection, groups applied in one
//! transaction, the WAL folded in on its own thread.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::delivery;
use super::ingest::insert_rejections;
use super::open_for_writing;
use super::stage::{self, IdentityCache};
use super::wal::{spawn_checkpointer, WalFold, WAL_LIMIT_BYTES};
use crate::pipeline::RouteTarget;
use crate::stage::{Decision, Ids, Keys, RejectionBatch, Snapshot};
use crate::store::apply::{apply_items, StoreTx, Written};
use crate::store::error::StoreError;
use crate::store::handoff::{HandOffPlan, HandOffs};
use crate::store::model::alerts::{AlertChange, AlertNotice, AlertWrite};
use crate::store::model::delivery::{Claim, Completion, RequestRecord};
use crate::store::model::destinations::MinuteRollup;
use crate::store::writer::{
    ClaimRequest, GroupWriter, Item, JobOutput, StoreWriter, WriterOptions, WriterState,
    WriterThread,
};

/// The writer's SQLite connection and what it keeps between groups.
pub(crate) struct SqliteGroups {
    conn: Connection,
    wal: WalFold,
    /// Profiles known to this single writer, so known users cost no identity queries.
    cache: RefCell<IdentityCache>,
    stop: Arc<AtomicBool>,
    checkpointer: Option<JoinHandle<()>>,
    /// The suppression list (keyed hash → the forget that added it), read again whenever
    /// another connection committed: a forget runs on its own connection, never this one.
    suppressions: std::collections::HashMap<Vec<u8>, i64>,
    /// `PRAGMA data_version` when the list and the cache were last known true.
    data_version: Option<i64>,
}

impl SqliteGroups {
    /// Another connection committed (a forget, an operator): what this writer keeps in memory
    /// may be stale, so the cache starts over and the suppression list is read again.
    fn notice_other_writers(&mut self) -> Result<(), rusqlite::Error> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if self.data_version != Some(version) {
            self.cache.borrow_mut().clear();
            self.suppressions = super::privacy::suppressions(&self.conn)?;
            self.data_version = Some(version);
        }
        Ok(())
    }
}

/// Open the database at `path` (running migrations) and start the writer over it.
pub fn spawn(
    path: &Path,
    options: WriterOptions,
    targets: Vec<RouteTarget>,
    handoffs: Arc<HandOffs>,
) -> Result<(StoreWriter, WriterThread), StoreError> {
    spawn_with_wal_limit(path, options, targets, handoffs, WAL_LIMIT_BYTES)
}

fn spawn_with_wal_limit(
    path: &Path,
    options: WriterOptions,
    targets: Vec<RouteTarget>,
    handoffs: Arc<HandOffs>,
    wal_limit_bytes: u64,
) -> Result<(StoreWriter, WriterThread), StoreError> {
    let conn = open_for_writing(path)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // SQLite's own wait for a lock backs off to 100 ms sleeps, so a writer waiting behind
    // another connection that writes in short transactions back to back (a forget walking
    // its ranges) kept missing the gaps between them: ingest fell to a tenth. Looking every
    // millisecond (for up to 5 s, as before) takes the first gap.
    conn.busy_handler(Some(|attempt: i32| {
        std::thread::sleep(std::time::Duration::from_millis(1));
        attempt < 5_000
    }))?;
    let mut options = options;
    options.suppression_key = super::privacy::suppression_key(&conn)?;
    let wal = WalFold::new(&conn, path, wal_limit_bytes)?;
    let stop = Arc::new(AtomicBool::new(false));
    let checkpointer = spawn_checkpointer(path, stop.clone())?;
    let backend = SqliteGroups {
        conn,
        wal,
        cache: RefCell::new(IdentityCache::default()),
        stop,
        checkpointer: Some(checkpointer),
        suppressions: Default::default(),
        data_version: None,
    };
    StoreWriter::start(backend, options, targets, handoffs)
}

impl GroupWriter for SqliteGroups {
    /// One transaction over `items`; on commit, its deliveries go to their workers.
    fn apply(
        &mut self,
        items: &[Item<'_>],
        state: &WriterState,
    ) -> Result<Vec<JobOutput>, StoreError> {
        self.notice_other_writers()?;
        // IMMEDIATE: the write lock is taken before the group reads anything. A deferred
        // transaction reads first, and if another connection (a forget, `replay`, an operator
        // action) committed meanwhile, its upgrade to a writer fails at once with "database
        // is locked" instead of waiting: measured, every group during a forget failed so.
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let mut store = SqliteTx {
            conn: &tx,
            cache: &self.cache,
            suppressions: &self.suppressions,
        };
        let (outputs, ingest_time, delivery_time) = apply_items(&mut store, items, state)?;
        tx.commit()?;
        state.committed(ingest_time, delivery_time);
        Ok(outputs)
    }

    fn rolled_back(&mut self) {
        // The cache saw writes that are gone.
        self.cache.borrow_mut().clear();
    }

    fn after_commit(&mut self) {
        self.wal.after_commit(&self.conn);
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.thread().unpark();
            let _ = checkpointer.join();
        }
        // Leave a compact database behind: fold the WAL in and truncate it.
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "final checkpoint failed; the WAL is replayed at next start");
        }
    }
}

/// The writer's transaction on SQLite.
struct SqliteTx<'a> {
    conn: &'a Connection,
    cache: &'a RefCell<IdentityCache>,
    suppressions: &'a std::collections::HashMap<Vec<u8>, i64>,
}

impl StoreTx for SqliteTx<'_> {
    fn load(&mut self, keys: &Keys) -> Result<Snapshot, StoreError> {
        let mut snapshot = stage::load(self.conn, keys, self.cache)?;
        if !self.suppressions.is_empty() {
            snapshot.suppressed = keys
                .suppression
                .iter()
                .filter_map(|h| self.suppressions.get(h).map(|row| (h.clone(), *row)))
                .collect();
        }
        Ok(snapshot)
    }
    fn ids(&mut self, _counted: [usize; 4]) -> Result<Ids, StoreError> {
        Ok(Ids::From(stage::next_ids(self.conn)?))
    }
    fn needs_count(&self) -> bool {
        false
    }
    fn may_suppress(&self) -> bool {
        // The list as of this group (read again whenever another connection committed).
        !self.suppressions.is_empty()
    }
    fn write(
        &mut self,
        decision: &Decision<'_>,
        snapshot: &Snapshot,
        handoff: &mut HandOffPlan,
    ) -> Result<Written, StoreError> {
        // The only writer: nobody can take a key between the load and the write.
        stage::write(self.conn, decision, self.cache, handoff, &snapshot.paused)?;
        if !decision.suppressed.is_empty() {
            super::privacy::count_suppressed(
                self.conn,
                &decision.suppressed,
                crate::store::now_ms(),
            )?;
        }
        Ok(Written::Done)
    }
    fn rejections(&mut self, batch: &RejectionBatch) -> Result<(), StoreError> {
        Ok(insert_rejections(self.conn, batch)?)
    }
    fn claim(&mut self, r: &ClaimRequest) -> Result<Claim, StoreError> {
        Ok(delivery::claim(
            self.conn,
            &r.destination,
            r.now_ms,
            r.limit,
            r.lease_ms,
            r.token,
        )?)
    }
    fn complete(&mut self, completion: &Completion) -> Result<bool, StoreError> {
        delivery::complete(self.conn, completion)?;
        Ok(true)
    }
    fn add_minutes(&mut self, minutes: &MinuteRollup) -> Result<(), StoreError> {
        Ok(delivery::add_minutes(self.conn, minutes)?)
    }
    fn record_request(
        &mut self,
        destination: &str,
        request: &RequestRecord,
    ) -> Result<i64, StoreError> {
        Ok(delivery::record_request(self.conn, destination, request)?)
    }
    fn release(
        &mut self,
        ids: &[i64],
        next_attempt_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        delivery::release(self.conn, ids, next_attempt_ms, now_ms)?;
        Ok(())
    }
    fn renew(&mut self, ids: &[i64], until_ms: i64, now_ms: i64) -> Result<(), StoreError> {
        delivery::renew(self.conn, ids, until_ms, now_ms)?;
        Ok(())
    }
    fn prune(
        &mut self,
        cutoff_ms: i64,
        bodies_cutoff_ms: Option<i64>,
    ) -> Result<usize, StoreError> {
        let mut changed = super::retention::prune(self.conn, cutoff_ms)?;
        // Retention may have deleted people this writer remembers.
        self.cache.borrow_mut().clear();
        if let Some(cutoff) = bodies_cutoff_ms {
            changed += super::retention::clear_request_bodies(self.conn, cutoff)?;
        }
        Ok(changed)
    }
    fn destination_state(
        &mut self,
        destination: &str,
        paused_until_ms: Option<i64>,
        reason: Option<&str>,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        Ok(delivery::set_destination_state(
            self.conn,
            destination,
            paused_until_ms,
            reason,
            at_ms,
        )?)
    }
    fn probe(&mut self, now_ms: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO local_settings (key, value) VALUES ('readiness_probe', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([now_ms.to_string()])?;
        Ok(())
    }
    fn alert(&mut self, change: &AlertChange) -> Result<AlertWrite, StoreError> {
        Ok(super::alerts::record(self.conn, change)?)
    }
    fn alert_notice(&mut self, notice: &AlertNotice) -> Result<(), StoreError> {
        Ok(super::alerts::record_notice(self.conn, notice)?)
    }
    fn sweep_leases(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        Ok(delivery::release_expired_leases(self.conn, now_ms)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::MappingTable;
    use crate::stage::{IngestBatch, RequestReceipt};
    use std::time::Duration;

    fn batch(request: usize, size: usize, table: &MappingTable) -> IngestBatch {
        let now = chrono::Utc::now().timestamp_millis();
        let messages = (0..size)
            .map(|position| {
                let id = format!("m-{request}-{position}");
                let raw = format!(
                    r#"{{"type":"track","event":"Order Completed","messageId":"{id}","userId":"u-{}","properties":{{"order_id":"{id}","revenue":12.5,"currency":"EUR","note":"{}"}}}}"#,
                    request % 50,
                    "x".repeat(600)
                );
                crate::stage::message_record(
                    position,
                    bytes::Bytes::from(raw),
                    &crate::stage::MessageContext {
                        implied_type: None,
                        environment: "production",
                        mapping: table,
                        received_at_ms: now,
                        limits: &Default::default(),
                        default_country: None,
                    },
                )
            })
            .collect();
        IngestBatch {
            receipt: RequestReceipt {
                request_id: format!("req_{request:08}"),
                received_at_ms: now,
                environment: "production".into(),
                path: "/segment/events".into(),
                remote_addr: None,
                user_agent: None,
                auth_scheme: "tracklayer",
                body_shape: "array",
                body_bytes: 0,
                body_sha256: [0; 32],
            },
            messages,
            dedup_since_ms: now - 48 * 3_600_000,
            replay_guard: None,
        }
    }

    /// Under sustained load the writer never pauses, so a WAL that is only checkpointed in the
    /// background is never restarted and grows without bound (hundreds of MB a second at full
    /// ingest rate). The writer must fold it back once it passes its limit.
    #[test]
    fn the_wal_stays_bounded_under_sustained_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let limit: u64 = 1 << 20;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (writer, thread) = spawn_with_wal_limit(
            &path,
            WriterOptions::default(),
            Vec::new(),
            Default::default(),
            limit,
        )
        .unwrap();
        let table = Arc::new(MappingTable::default());
        let wal_path = super::super::wal::wal_path(&path);
        let largest_wal = runtime.block_on(async {
            // Several clients at once, so there is always a queued request: the writer is
            // never idle between commits, as at full load.
            let clients: Vec<_> = (0..8)
                .map(|client| {
                    let writer = writer.clone();
                    let table = table.clone();
                    tokio::spawn(async move {
                        for n in 0..60 {
                            let request = client * 1000 + n;
                            writer.ingest(batch(request, 20, &table)).await.unwrap();
                        }
                    })
                })
                .collect();
            let mut largest = 0;
            let watch = async {
                loop {
                    let len = std::fs::metadata(&wal_path).map_or(0, |m| m.len());
                    largest = largest.max(len);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            tokio::select! {
                _ = join_all(clients) => {}
                _ = watch => {}
            }
            largest
        });
        drop(writer);
        thread.join();
        let written = 8 * 60 * 20;
        let conn = Connection::open(&path).unwrap();
        let stored: i64 = conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, written, "every message became an event");
        assert!(
            largest_wal < 8 * limit,
            "the WAL reached {largest_wal} bytes with a limit of {limit}"
        );
    }

    async fn join_all(handles: Vec<tokio::task::JoinHandle<()>>) {
        for handle in handles {
            handle.await.unwrap();
        }
    }
}
