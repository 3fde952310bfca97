//! SQLite's side of the writer (`store::writer`): one connection, groups applied in one
//! transaction, the WAL folded in on its own thread.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::delivery;
use super::ingest::{insert_batch, insert_rejections, reused_signature};
use super::open_for_writing;
use super::pipeline::IdentityCache;
use super::wal::{spawn_checkpointer, WalFold, WAL_LIMIT_BYTES};
use crate::pipeline::RouteTarget;
use crate::store::error::StoreError;
use crate::store::handoff::{HandOffPlan, HandOffs};
use crate::store::writer::{
    GroupWriter, IngestJob, Item, Job, JobOutput, JobResult, StoreWriter, WriterOptions,
    WriterState, WriterThread,
};

/// The writer's SQLite connection and what it keeps between groups.
pub(crate) struct SqliteGroups {
    conn: Connection,
    wal: WalFold,
    /// Profiles known to this single writer, so known users cost no identity queries.
    cache: RefCell<IdentityCache>,
    stop: Arc<AtomicBool>,
    checkpointer: Option<JoinHandle<()>>,
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
    let wal = WalFold::new(&conn, path, wal_limit_bytes)?;
    let stop = Arc::new(AtomicBool::new(false));
    let checkpointer = spawn_checkpointer(path, stop.clone())?;
    let backend = SqliteGroups {
        conn,
        wal,
        cache: RefCell::new(IdentityCache::default()),
        stop,
        checkpointer: Some(checkpointer),
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
        let conn = &self.conn;
        let tx = conn.unchecked_transaction()?;
        let now_ms = crate::store::error::now_ms();
        let mut results = Vec::with_capacity(items.len());
        let (mut ingest_time, mut delivery_time) = (Duration::ZERO, Duration::ZERO);
        for item in items {
            let started = Instant::now();
            results.push(match item {
                Item::Ingest(IngestJob(batch, _)) => {
                    let output = match reused_signature(&tx, batch)? {
                        Some(reason) => JobOutput::Refused(reason),
                        None => JobOutput::Stored(insert_batch(
                            &tx,
                            batch,
                            &state.targets,
                            state.default_country.as_deref(),
                            &self.cache,
                            &state.handoff,
                        )?),
                    };
                    ingest_time += started.elapsed();
                    output
                }
                Item::Work(job) => {
                    let output = apply_work(&tx, job, now_ms, &state.handoff.borrow())?;
                    delivery_time += started.elapsed();
                    output
                }
            });
        }
        tx.commit()?;
        state.committed(ingest_time, delivery_time);
        Ok(results)
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

fn apply_work(conn: &Connection, job: &Job, now_ms: i64, handoff: &HandOffPlan) -> JobResult {
    Ok(match job {
        Job::Rejections(batch) => {
            insert_rejections(conn, batch)?;
            JobOutput::Done
        }
        Job::Claim(r, _) => JobOutput::Claimed(delivery::claim(
            conn,
            &r.destination,
            r.now_ms,
            r.limit,
            r.lease_ms,
        )?),
        Job::Complete(completions, _) => {
            for c in completions {
                delivery::complete(conn, c)?;
            }
            JobOutput::Done
        }
        Job::RecordRequest(destination, request, _) => {
            JobOutput::Row(delivery::record_request(conn, destination, request)?)
        }
        Job::Release {
            ids,
            next_attempt_ms,
        } => {
            delivery::release(conn, ids, *next_attempt_ms, now_ms)?;
            JobOutput::Done
        }
        Job::Prune {
            cutoff_ms,
            bodies_cutoff_ms,
            ..
        } => {
            let mut changed = super::retention::prune(conn, *cutoff_ms)?;
            if let Some(cutoff) = bodies_cutoff_ms {
                changed += super::retention::clear_request_bodies(conn, *cutoff)?;
            }
            JobOutput::Pruned(changed)
        }
        Job::DestinationState {
            destination,
            paused_until_ms,
            reason,
            at_ms,
        } => {
            delivery::set_destination_state(
                conn,
                destination,
                *paused_until_ms,
                reason.as_deref(),
                *at_ms,
            )?;
            JobOutput::Done
        }
        Job::Probe(_) => {
            conn.prepare_cached(
                "INSERT INTO local_settings (key, value) VALUES ('readiness_probe', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([now_ms.to_string()])?;
            JobOutput::Done
        }
        Job::Alert(change, _) => JobOutput::Alert(super::alerts::record(conn, change)?),
        Job::AlertNotice(notice) => {
            super::alerts::record_notice(conn, notice)?;
            JobOutput::Done
        }
        Job::SweepLeases => {
            let released = delivery::release_expired_leases(conn, now_ms)?;
            if released > 0 {
                handoff.flag_all();
                tracing::info!(
                    deliveries = released,
                    "expired delivery leases put back in line"
                );
            }
            JobOutput::Done
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::MappingTable;
    use crate::store::records::IngestBatch;
    use crate::store::RequestReceipt;

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
                crate::ingest::message_record(
                    position,
                    bytes::Bytes::from(raw),
                    &crate::ingest::MessageContext {
                        implied_type: None,
                        environment: "production",
                        mapping: table,
                        received_at_ms: now,
                        limits: &Default::default(),
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
