//! The single writer: a dedicated thread that owns the write connection and group-commits.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, Notify};

use super::delivery::{self, Completion, Lease};
use super::pipeline::{self as stateful, IdentityCache, PipelineContext};
use super::records::{IngestBatch, MessageOutcome, RejectedRequest, StoredOutcome};
use super::{open_for_writing, StoreError};
use crate::pipeline::RouteTarget;

/// Upper bound on jobs per transaction, so one commit never holds the lock for long.
const MAX_JOBS_PER_COMMIT: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Back-pressure: the writer's queue is full. Answer 503 with Retry-After.
    #[error("the database writer is busy; retry shortly")]
    QueueFull,
    /// The writer has stopped (shutdown or a fatal database error).
    #[error("the database writer has stopped")]
    Stopped,
    #[error("the write failed: {0}")]
    Failed(String),
}

type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

struct LeaseRequest {
    destination: String,
    now_ms: i64,
    limit: usize,
    lease_ms: i64,
}

enum Job {
    /// The batch comes back with the answer, so freeing it happens on the request's task.
    Ingest(
        Box<IngestBatch>,
        Reply<(Vec<StoredOutcome>, Box<IngestBatch>)>,
    ),
    Rejection(Box<RejectedRequest>),
    Lease(LeaseRequest, Reply<Lease>),
    Complete(Box<Completion>, Reply<()>),
    Prune(i64, Reply<usize>),
    DestinationState {
        destination: String,
        paused_until_ms: Option<i64>,
        reason: Option<String>,
        at_ms: i64,
    },
}

/// What a job produced, answered after its commit.
enum JobOutput {
    Stored(Vec<StoredOutcome>),
    Leased(Lease),
    Pruned(usize),
    Done,
}

/// A cheap, cloneable handle for sending work to the writer thread.
#[derive(Clone)]
pub struct StoreWriter {
    jobs: mpsc::Sender<Job>,
    /// Woken after a commit that may have created deliveries.
    deliveries: Arc<Notify>,
}

/// Joins the writer thread: it finishes every queued job once all handles are dropped.
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the database writer thread panicked");
        }
    }
}

/// Past this size the writer folds the WAL back into the database itself (see `WalFold`). Each
/// fold stalls the writer (~40 ms at the benchmark's full load, about once a second), so it
/// should be rare.
const WAL_LIMIT_BYTES: u64 = 256 << 20;

/// How often the checkpointer copies the WAL into the database file. (Checkpointing every 10 ms
/// under load, to leave less for `WalFold`, measured worse: p99 ack latency 7 → 12 ms.)
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Checkpoints run on their own connection and thread: with SQLite's automatic checkpoints the
/// writer itself would stop every ~1000 pages to copy and fsync the database file, and every
/// request waiting for that commit would see the stall. PASSIVE never blocks the writer.
fn spawn_checkpointer(path: &Path, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>, StoreError> {
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

impl StoreWriter {
    /// Open the database (running migrations) and start the writer thread.
    /// `targets` are the destinations events are routed to (consent and environment checks).
    pub fn spawn(
        path: &Path,
        queue_capacity: usize,
        targets: Vec<RouteTarget>,
    ) -> Result<(StoreWriter, WriterThread), StoreError> {
        Self::spawn_with_wal_limit(path, queue_capacity, targets, WAL_LIMIT_BYTES)
    }

    fn spawn_with_wal_limit(
        path: &Path,
        queue_capacity: usize,
        targets: Vec<RouteTarget>,
        wal_limit_bytes: u64,
    ) -> Result<(StoreWriter, WriterThread), StoreError> {
        let conn = open_for_writing(path)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let wal = WalFold::new(&conn, path, wal_limit_bytes)?;
        let stop = Arc::new(AtomicBool::new(false));
        let checkpointer = spawn_checkpointer(path, stop.clone())?;
        let (tx, rx) = mpsc::channel(queue_capacity);
        let notify = Arc::new(Notify::new());
        let wake = notify.clone();
        let handle = std::thread::Builder::new()
            .name("tracklayer-writer".into())
            .spawn(move || {
                run(&conn, rx, &targets, &wake, wal);
                stop.store(true, Ordering::Release);
                checkpointer.thread().unpark();
                let _ = checkpointer.join();
                // Leave a compact database behind: fold the WAL in and truncate it.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "final checkpoint failed; the WAL is replayed at next start");
                }
            })
            .map_err(|source| StoreError::Thread { source })?;
        Ok((
            StoreWriter {
                jobs: tx,
                deliveries: notify,
            },
            WriterThread(handle),
        ))
    }

    /// Signalled when new deliveries may be waiting (delivery workers wait on it).
    pub fn deliveries_notifier(&self) -> Arc<Notify> {
        self.deliveries.clone()
    }

    /// Lease due deliveries of a destination (waits for queue room: this is not client-facing).
    pub async fn lease(
        &self,
        destination: &str,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Lease, WriteError> {
        let (reply, answer) = oneshot::channel();
        let request = LeaseRequest {
            destination: destination.to_string(),
            now_ms,
            limit,
            lease_ms,
        };
        self.jobs
            .send(Job::Lease(request, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Delete one chunk of rows older than `cutoff_ms` (see `store::retention`).
    pub async fn prune(&self, cutoff_ms: i64) -> Result<usize, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Prune(cutoff_ms, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Record a request's attempts and move each delivery on.
    pub async fn complete(&self, completion: Completion) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Complete(Box::new(completion), reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Record that a destination paused itself (or resumed, with `None`).
    pub async fn set_destination_state(
        &self,
        destination: &str,
        paused_until_ms: Option<i64>,
        reason: Option<String>,
        at_ms: i64,
    ) {
        let job = Job::DestinationState {
            destination: destination.to_string(),
            paused_until_ms,
            reason,
            at_ms,
        };
        if self.jobs.send(job).await.is_err() {
            tracing::warn!("writer stopped; destination state not recorded");
        }
    }

    /// Store a request's messages; resolves after the commit that holds all of them.
    pub async fn ingest(&self, batch: IngestBatch) -> Result<Vec<StoredOutcome>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job::Ingest(Box::new(batch), reply))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => WriteError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => WriteError::Stopped,
            })?;
        let (outcomes, _batch) = answer.await.map_err(|_| WriteError::Stopped)??;
        Ok(outcomes)
    }

    /// Record a refused request. Best effort: under a flood of bad requests, dropping some
    /// rejection rows is better than letting them crowd out real traffic.
    pub fn record_rejection(&self, rejection: RejectedRequest) {
        if self
            .jobs
            .try_send(Job::Rejection(Box::new(rejection)))
            .is_err()
        {
            tracing::warn!("writer queue full; a rejection was not recorded");
        }
    }
}

/// Keeps the WAL from growing without bound. The background checkpointer copies frames into the
/// database but cannot restart the log: SQLite starts it over only when a write begins with every
/// frame already copied, which never happens while the writer commits back to back (measured:
/// hundreds of MB a second at full ingest rate). So once the file passes its limit, the writer
/// copies the remainder itself between two groups; its next commit starts the log over and
/// `journal_size_limit` truncates the file back to the limit.
struct WalFold {
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
    fn new(conn: &Connection, db_path: &Path, limit: u64) -> Result<WalFold, rusqlite::Error> {
        conn.pragma_update(None, "journal_size_limit", limit as i64)?;
        Ok(WalFold {
            path: wal_path(db_path),
            limit,
            retry_at: None,
        })
    }

    fn after_commit(&mut self, conn: &Connection) {
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
fn wal_path(db_path: &Path) -> PathBuf {
    let mut path = db_path.as_os_str().to_owned();
    path.push("-wal");
    PathBuf::from(path)
}

fn run(
    conn: &Connection,
    mut rx: mpsc::Receiver<Job>,
    targets: &[RouteTarget],
    wake: &Notify,
    mut wal: WalFold,
) {
    let cache = RefCell::new(IdentityCache::default());
    let mut jobs = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let ingested = jobs.iter().any(|j| matches!(j, Job::Ingest(..)));
        commit_group(conn, &mut jobs, targets, &cache);
        if ingested && !targets.is_empty() {
            wake.notify_waiters();
        }
        wal.after_commit(conn);
    }
}

type JobResult = Result<JobOutput, rusqlite::Error>;

/// Apply every queued job in one transaction and answer each after the commit. If anything
/// fails, the group is rolled back and each job is retried in a transaction of its own, so one
/// bad job cannot fail the others (and no job is acknowledged without its own commit).
fn commit_group(
    conn: &Connection,
    jobs: &mut Vec<Job>,
    targets: &[RouteTarget],
    cache: &RefCell<IdentityCache>,
) {
    let results: Vec<JobResult> = match apply_jobs(conn, jobs, targets, cache) {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) => {
            // The rollback undid writes the cache already saw.
            cache.borrow_mut().clear();
            tracing::warn!(error = %e, jobs = jobs.len(), "group commit failed; retrying jobs one by one");
            jobs.iter()
                .map(|job| {
                    let one = apply_jobs(conn, std::slice::from_ref(job), targets, cache);
                    if one.is_err() {
                        cache.borrow_mut().clear();
                    }
                    one.map(|mut one| one.pop().unwrap_or(JobOutput::Done))
                })
                .collect()
        }
    };
    for (job, result) in jobs.drain(..).zip(results) {
        let failed = |e: &rusqlite::Error| WriteError::Failed(e.to_string());
        match (job, result) {
            (Job::Ingest(batch, reply), Ok(JobOutput::Stored(outcomes))) => {
                let _ = reply.send(Ok((outcomes, batch)));
            }
            (Job::Ingest(_, reply), Err(e)) => {
                let _ = reply.send(Err(failed(&e)));
            }
            (Job::Lease(_, reply), Ok(JobOutput::Leased(lease))) => {
                let _ = reply.send(Ok(lease));
            }
            (Job::Lease(_, reply), Err(e)) => {
                let _ = reply.send(Err(failed(&e)));
            }
            (Job::Prune(_, reply), Ok(JobOutput::Pruned(n))) => {
                let _ = reply.send(Ok(n));
            }
            (Job::Prune(_, reply), Err(e)) => {
                let _ = reply.send(Err(failed(&e)));
            }
            (Job::Complete(_, reply), result) => {
                let _ = reply.send(result.map(|_| ()).map_err(|e| failed(&e)));
            }
            (Job::Rejection(_), Err(e)) => {
                tracing::error!(error = %e, "could not record a rejected request");
            }
            (Job::DestinationState { .. }, Err(e)) => {
                tracing::error!(error = %e, "could not record a destination's state");
            }
            _ => {}
        }
    }
}

fn apply_jobs(
    conn: &Connection,
    jobs: &[Job],
    targets: &[RouteTarget],
    cache: &RefCell<IdentityCache>,
) -> Result<Vec<JobOutput>, rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        results.push(match job {
            Job::Ingest(batch, _) => JobOutput::Stored(insert_batch(&tx, batch, targets, cache)?),
            Job::Rejection(rejection) => {
                insert_rejection(&tx, rejection)?;
                JobOutput::Done
            }
            Job::Lease(r, _) => JobOutput::Leased(delivery::lease(
                &tx,
                &r.destination,
                r.now_ms,
                r.limit,
                r.lease_ms,
            )?),
            Job::Complete(c, _) => {
                delivery::complete(&tx, c)?;
                JobOutput::Done
            }
            Job::Prune(cutoff_ms, _) => {
                JobOutput::Pruned(super::retention::prune(&tx, *cutoff_ms)?)
            }
            Job::DestinationState {
                destination,
                paused_until_ms,
                reason,
                at_ms,
            } => {
                delivery::set_destination_state(
                    &tx,
                    destination,
                    *paused_until_ms,
                    reason.as_deref(),
                    *at_ms,
                )?;
                JobOutput::Done
            }
        });
    }
    tx.commit()?;
    Ok(results)
}

/// What becomes of one message, decided before it is inserted.
enum Verdict<'a> {
    Invalid(&'a str),
    Duplicate {
        original_row_id: i64,
        same_payload: bool,
    },
    Accepted,
}

fn insert_batch(
    conn: &Connection,
    batch: &IngestBatch,
    targets: &[RouteTarget],
    cache: &RefCell<IdentityCache>,
) -> Result<Vec<StoredOutcome>, rusqlite::Error> {
    let ctx = PipelineContext {
        targets,
        cache,
        environment: &batch.receipt.environment,
        received_at_ms: batch.receipt.received_at_ms,
        dedup_since_ms: batch.dedup_since_ms,
    };
    let receipt = &batch.receipt;
    conn.prepare_cached(
        "INSERT INTO requests (request_id, received_at_ms, environment, path, remote_addr,
             user_agent, auth_scheme, body_shape, body_bytes, message_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        receipt.request_id,
        receipt.received_at_ms,
        receipt.environment,
        receipt.path,
        receipt.remote_addr,
        receipt.user_agent,
        receipt.auth_scheme,
        receipt.body_shape,
        receipt.body_bytes as i64,
        batch.messages.len() as i64,
    ])?;

    let mut find_original = conn.prepare_cached(
        "SELECT id, raw_sha256 FROM messages
         WHERE message_id = ?2 AND environment = ?1 AND status = 'accepted'
           AND received_at_ms >= ?3
         ORDER BY id LIMIT 1",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO messages (id, request_id, position, received_at_ms, environment, message_id,
             type, event, user_id, anonymous_id, status, reason, duplicate_of, raw_sha256, raw, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;

    let first_row: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM messages")?
        .query_row([], |r| r.get(0))?;
    let mut outcomes = Vec::with_capacity(batch.messages.len());
    for (row_id, message) in (first_row..).zip(&batch.messages) {
        let verdict = match (&message.invalid_reason, &message.message_id) {
            (Some(reason), _) => Verdict::Invalid(reason),
            (None, None) => Verdict::Invalid("messageId is missing"),
            (None, Some(message_id)) => find_original
                .query_row(
                    params![receipt.environment, message_id, batch.dedup_since_ms],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
                )
                .optional()?
                .map_or(Verdict::Accepted, |(original_row_id, digest)| {
                    Verdict::Duplicate {
                        original_row_id,
                        same_payload: digest == message.raw_sha256,
                    }
                }),
        };
        let (status, reason, duplicate_of, raw): (&str, Option<&str>, Option<i64>, Option<&[u8]>) =
            match &verdict {
                Verdict::Invalid(reason) => ("invalid", Some(reason), None, Some(&message.raw)),
                // Identical bytes are not stored twice; a different payload is kept whole.
                Verdict::Duplicate {
                    original_row_id,
                    same_payload: true,
                } => (
                    "duplicate",
                    Some("messageId already accepted with identical bytes (a Segment retry)"),
                    Some(*original_row_id),
                    None,
                ),
                Verdict::Duplicate {
                    original_row_id,
                    same_payload: false,
                } => (
                    "duplicate",
                    Some("messageId already accepted with a different payload"),
                    Some(*original_row_id),
                    Some(&message.raw),
                ),
                Verdict::Accepted => ("accepted", None, None, Some(&message.raw)),
            };
        // The row id is assigned here (this thread is the only writer), so the pipeline can
        // reference the message and its outcome goes into the same INSERT.
        let pipeline = match (&verdict, &message.pipeline) {
            (Verdict::Invalid(_), _) | (_, None) => None,
            (Verdict::Duplicate { .. }, Some(input)) => {
                Some(stateful::apply(conn, &ctx, row_id, input, true)?)
            }
            (Verdict::Accepted, Some(input)) => {
                Some(stateful::apply(conn, &ctx, row_id, input, false)?)
            }
        };
        insert.execute(params![
            row_id,
            receipt.request_id,
            message.position as i64,
            receipt.received_at_ms,
            receipt.environment,
            message.message_id,
            message.message_type,
            message.event,
            message.user_id,
            message.anonymous_id,
            status,
            reason,
            duplicate_of,
            &message.raw_sha256[..],
            raw,
            pipeline.as_ref().map(|p| p.label()),
        ])?;
        let message = match verdict {
            Verdict::Invalid(_) => MessageOutcome::Invalid { row_id },
            Verdict::Duplicate {
                original_row_id,
                same_payload,
            } => MessageOutcome::Duplicate {
                row_id,
                original_row_id,
                same_payload,
            },
            Verdict::Accepted => MessageOutcome::Accepted { row_id },
        };
        outcomes.push(StoredOutcome { message, pipeline });
    }
    Ok(outcomes)
}

fn insert_rejection(conn: &Connection, r: &RejectedRequest) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO rejections (received_at_ms, path, remote_addr, user_agent, account_header,
             environment_header, content_type, body_bytes, status_code, reason_code, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        r.received_at_ms,
        r.path,
        r.remote_addr,
        r.user_agent,
        r.account_header,
        r.environment_header,
        r.content_type,
        r.body_bytes.map(|b| b as i64),
        r.status_code,
        r.reason_code,
        r.reason,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::MappingTable;
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
                    None,
                    "production",
                    table,
                    now,
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
            },
            messages,
            dedup_since_ms: now - 48 * 3_600_000,
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
        let (writer, thread) =
            StoreWriter::spawn_with_wal_limit(&path, 1024, Vec::new(), limit).unwrap();
        let table = Arc::new(MappingTable::default());
        let wal_path = wal_path(&path);
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
