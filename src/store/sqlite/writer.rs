//! The single writer: a dedicated thread that owns the write connection and group-commits.
//!
//! Two queues feed it. Ingest requests (a client waits on each) come first: every group takes
//! all of them that are waiting, and at most a bounded amount of delivery bookkeeping (claims,
//! outcomes, pauses, retention), so an acknowledgement never waits behind more than one group's
//! worth of it, however large a backlog the workers are draining.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::delivery;
use super::ingest::{insert_batch, insert_rejections, reused_signature};
use super::open_for_writing;
use super::pipeline::IdentityCache;
use super::wal::{spawn_checkpointer, WalFold, WAL_LIMIT_BYTES};
use crate::pipeline::RouteTarget;
use crate::store::error::StoreError;
use crate::store::handoff::{HandOffPlan, HandOffs};
use crate::store::model::delivery::{Claim, Completion, RequestRecord};
use crate::store::records::{IngestBatch, RejectionBatch, StoredOutcome};

/// Upper bound on ingest requests per transaction, so one commit never holds the lock for long.
const MAX_INGEST_JOBS_PER_GROUP: usize = 1024;
/// Delivery rows (claimed or completed) a group may carry when ingest requests share it, and
/// when it has the writer to itself.
const DELIVERY_ROWS_WITH_INGEST: usize = 250;
const DELIVERY_ROWS_ALONE: usize = 1000;
pub use crate::config::DEFAULT_DELIVERY_SHARE;

/// How the writer runs.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Ingest requests that may wait for the writer before callers get `QueueFull`.
    pub queue_capacity: usize,
    /// Delivery bookkeeping's share of the writer's time while ingest is waiting.
    pub delivery_share: f64,
    /// `[workspace] default_country`: the region for phones written without a country code.
    pub default_country: Option<String>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            queue_capacity: 4096,
            delivery_share: DEFAULT_DELIVERY_SHARE,
            default_country: None,
        }
    }
}
/// How often expired delivery leases (a crashed or stopped worker) are put back in line.
const LEASE_SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// Bookkeeping jobs that may wait for the writer; senders wait for room (not client-facing).
const WORK_QUEUE_CAPACITY: usize = 1024;

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
    /// Refused as a re-used signature (nothing was stored): answer 401 with the reason.
    #[error("{0}")]
    ReusedSignature(String),
}

type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

struct ClaimRequest {
    destination: String,
    now_ms: i64,
    limit: usize,
    lease_ms: i64,
}

/// One request's messages; the batch comes back with the answer, so freeing it happens on the
/// request's task.
struct IngestJob(
    Box<IngestBatch>,
    Reply<(Vec<StoredOutcome>, Box<IngestBatch>)>,
);

/// Everything that is not ingest: delivery bookkeeping, retention, records of refusals.
enum Job {
    Rejections(Box<RejectionBatch>),
    Claim(ClaimRequest, Reply<Claim>),
    Complete(Vec<Completion>, Reply<()>),
    RecordRequest(String, Box<RequestRecord>, Reply<i64>),
    Release {
        ids: Vec<i64>,
        next_attempt_ms: i64,
    },
    Prune {
        cutoff_ms: i64,
        bodies_cutoff_ms: Option<i64>,
        reply: Reply<usize>,
    },
    DestinationState {
        destination: String,
        paused_until_ms: Option<i64>,
        reason: Option<String>,
        at_ms: i64,
    },
    /// Internal: put expired leases back in line.
    SweepLeases,
}

impl Job {
    /// Rows this job writes, roughly: what the per-group delivery budget counts.
    fn weight(&self) -> usize {
        match self {
            Job::Claim(request, _) => request.limit.max(1),
            Job::Complete(completions, _) => completions
                .iter()
                .map(|c| c.items.len())
                .sum::<usize>()
                .max(1),
            Job::Release { ids, .. } => ids.len().max(1),
            Job::Rejections(batch) => batch.counts.len() + batch.examples.len(),
            _ => 1,
        }
    }
}

/// What a job produced, answered after its commit.
enum JobOutput {
    Stored(Vec<StoredOutcome>),
    /// An ingest request refused inside the transaction (nothing of it was written).
    Refused(String),
    Row(i64),
    Claimed(Claim),
    Pruned(usize),
    Done,
}

/// A cheap, cloneable handle for sending work to the writer thread.
#[derive(Clone)]
pub struct StoreWriter {
    ingest: mpsc::Sender<IngestJob>,
    work: mpsc::Sender<Job>,
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

impl StoreWriter {
    /// Open the database (running migrations) and start the writer thread.
    /// `targets` are the destinations events are routed to (consent and environment checks).
    /// `handoffs` are the delivery workers that take new deliveries straight from a commit.
    pub fn spawn(
        path: &Path,
        options: WriterOptions,
        targets: Vec<RouteTarget>,
        handoffs: Arc<HandOffs>,
    ) -> Result<(StoreWriter, WriterThread), StoreError> {
        Self::spawn_with_wal_limit(path, options, targets, handoffs, WAL_LIMIT_BYTES)
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
        let (ingest_tx, ingest_rx) = mpsc::channel(options.queue_capacity);
        let (work_tx, work_rx) = mpsc::channel(WORK_QUEUE_CAPACITY);
        let handle = std::thread::Builder::new()
            .name("tracklayer-writer".into())
            .spawn(move || {
                let queues = Queues {
                    ingest: ingest_rx,
                    work: work_rx,
                    ingest_open: true,
                    work_open: true,
                    next_sweep: Instant::now(),
                };
                let state = WriterState {
                    targets,
                    default_country: options.default_country,
                    cache: RefCell::new(IdentityCache::default()),
                    handoff: RefCell::new(HandOffPlan::new(handoffs)),
                    share: RefCell::new(TimeShare::new(options.delivery_share)),
                };
                run(&conn, queues, &state, wal);
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
                ingest: ingest_tx,
                work: work_tx,
            },
            WriterThread(handle),
        ))
    }

    async fn call<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.work
            .send(job(reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Claim up to `limit` due deliveries of a destination, leased for `lease_ms`.
    pub async fn claim(
        &self,
        destination: &str,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Claim, WriteError> {
        let request = ClaimRequest {
            destination: destination.to_string(),
            now_ms,
            limit,
            lease_ms,
        };
        self.call(|reply| Job::Claim(request, reply)).await
    }

    /// Delete one chunk of rows older than `cutoff_ms`, and clear one chunk of request bodies
    /// older than `bodies_cutoff_ms` (see `store::retention`). Returns how many rows changed.
    pub async fn prune(
        &self,
        cutoff_ms: i64,
        bodies_cutoff_ms: Option<i64>,
    ) -> Result<usize, WriteError> {
        self.call(|reply| Job::Prune {
            cutoff_ms,
            bodies_cutoff_ms,
            reply,
        })
        .await
    }

    /// Record requests' attempts and move each delivery on.
    pub async fn complete(&self, completions: Vec<Completion>) -> Result<(), WriteError> {
        self.call(|reply| Job::Complete(completions, reply)).await
    }

    /// Record one request as sent (its outcomes follow in pieces); returns its row.
    pub async fn record_request(
        &self,
        destination: &str,
        request: RequestRecord,
    ) -> Result<i64, WriteError> {
        let destination = destination.to_string();
        self.call(|reply| Job::RecordRequest(destination, Box::new(request), reply))
            .await
    }

    /// Give claimed deliveries back unsent, due again at `next_attempt_ms`.
    pub async fn release(&self, ids: Vec<i64>, next_attempt_ms: i64) {
        let job = Job::Release {
            ids,
            next_attempt_ms,
        };
        if self.work.send(job).await.is_err() {
            tracing::warn!("writer stopped; claimed deliveries wait for their lease to expire");
        }
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
        if self.work.send(job).await.is_err() {
            tracing::warn!("writer stopped; destination state not recorded");
        }
    }

    /// Store a request's messages; resolves after the commit that holds all of them.
    pub async fn ingest(&self, batch: IngestBatch) -> Result<Vec<StoredOutcome>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.ingest
            .try_send(IngestJob(Box::new(batch), reply))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => WriteError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => WriteError::Stopped,
            })?;
        let (outcomes, _batch) = answer.await.map_err(|_| WriteError::Stopped)??;
        Ok(outcomes)
    }

    /// Record the refusals counted since the last call (the ingest side flushes every few
    /// seconds, so a flood of bad requests is a few rows, not one per request).
    pub async fn record_rejections(&self, batch: RejectionBatch) {
        if self
            .work
            .send(Job::Rejections(Box::new(batch)))
            .await
            .is_err()
        {
            tracing::warn!("writer stopped; refusal counts not recorded");
        }
    }
}

/// How long the writer waits for the next ingest request, when delivery work has had its
/// share, before it lets that work run anyway.
const INGEST_GRACE: Duration = Duration::from_millis(10);

struct Queues {
    ingest: mpsc::Receiver<IngestJob>,
    work: mpsc::Receiver<Job>,
    ingest_open: bool,
    work_open: bool,
    next_sweep: Instant,
}

/// Recent writer time spent applying each kind of job, halved every second.
struct TimeShare {
    ingest: Duration,
    delivery: Duration,
    /// Time spent in groups (applying and committing) since `since`.
    busy: Duration,
    since: Instant,
    delivery_share: f64,
}

/// Above this fraction of its time busy, the writer is saturated and delivery work is held to
/// its share; below it, delivery may use the writer's idle time freely.
const SATURATED: f64 = 0.85;

impl TimeShare {
    fn new(delivery_share: f64) -> TimeShare {
        TimeShare {
            ingest: Duration::ZERO,
            delivery: Duration::ZERO,
            busy: Duration::ZERO,
            since: Instant::now(),
            delivery_share,
        }
    }

    fn add(&mut self, ingest: Duration, delivery: Duration) {
        self.ingest += ingest;
        self.delivery += delivery;
    }

    /// A group took `busy` (apply and commit). Every second the window halves, so what counts
    /// is the last second or two.
    fn group_done(&mut self, busy: Duration) {
        self.busy += busy;
        let window = self.since.elapsed();
        if window >= Duration::from_secs(2) {
            self.ingest /= 2;
            self.delivery /= 2;
            self.busy /= 2;
            self.since += window / 2;
        }
    }

    /// Whether ingest has kept the writer busy lately (its clients then come back at once:
    /// Segment, like any HTTP client, waits for each answer before the next request).
    fn ingest_recently(&self) -> bool {
        self.ingest > Duration::from_millis(20)
    }

    fn saturated(&self) -> bool {
        self.busy.as_secs_f64() >= SATURATED * self.since.elapsed().as_secs_f64()
    }

    /// Whether delivery work may run now: freely while the writer has time to spare, within
    /// its share once ingest keeps it saturated.
    fn delivery_may_run(&self) -> bool {
        !self.saturated()
            || self.delivery.as_secs_f64()
                <= self.delivery_share * (self.ingest + self.delivery).as_secs_f64()
    }
}

/// The next group of jobs to commit together.
#[derive(Default)]
struct Group {
    ingest: Vec<IngestJob>,
    work: Vec<Job>,
}

impl Queues {
    /// While ingest is busy and delivery work has had its share, wait a moment for the next
    /// ingest request rather than start on delivery work.
    fn ingest_soon(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        share: &TimeShare,
    ) -> Option<IngestJob> {
        if !self.ingest_open || !share.ingest_recently() || share.delivery_may_run() {
            return None;
        }
        let ingest = &mut self.ingest;
        runtime
            .block_on(async { tokio::time::timeout(INGEST_GRACE, ingest.recv()).await })
            .ok()
            .flatten()
    }

    /// Wait for the next group: every waiting ingest request first, then delivery work up to
    /// the budget. `None` once both queues are closed and empty (shutdown).
    fn next_group(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        share: &TimeShare,
    ) -> Option<Group> {
        let mut group = Group::default();
        if Instant::now() >= self.next_sweep {
            self.next_sweep = Instant::now() + LEASE_SWEEP_INTERVAL;
            group.work.push(Job::SweepLeases);
        } else if let Ok(job) = self.ingest.try_recv() {
            // Under load there is always work waiting: no need to park.
            group.ingest.push(job);
        } else if let Some(job) = self.ingest_soon(runtime, share) {
            group.ingest.push(job);
        } else if let Ok(job) = self.work.try_recv() {
            group.work.push(job);
        } else {
            let sweep_at = tokio::time::Instant::from_std(self.next_sweep);
            let first = runtime.block_on(async {
                loop {
                    if !self.ingest_open && !self.work_open {
                        return None;
                    }
                    tokio::select! {
                        biased;
                        job = self.ingest.recv(), if self.ingest_open => match job {
                            Some(job) => return Some(Ok(job)),
                            None => self.ingest_open = false,
                        },
                        job = self.work.recv(), if self.work_open => match job {
                            Some(job) => return Some(Err(job)),
                            None => self.work_open = false,
                        },
                        _ = tokio::time::sleep_until(sweep_at) => return Some(Err(Job::SweepLeases)),
                    }
                }
            })?;
            match first {
                Ok(job) => group.ingest.push(job),
                Err(Job::SweepLeases) => {
                    self.next_sweep = Instant::now() + LEASE_SWEEP_INTERVAL;
                    group.work.push(Job::SweepLeases);
                }
                Err(job) => group.work.push(job),
            }
        }
        while group.ingest.len() < MAX_INGEST_JOBS_PER_GROUP {
            match self.ingest.try_recv() {
                Ok(job) => group.ingest.push(job),
                Err(_) => break,
            }
        }
        let budget = if !share.ingest_recently() {
            DELIVERY_ROWS_ALONE
        } else if !share.delivery_may_run() {
            0
        } else {
            // Even when no ingest request is waiting at this instant: its clients are between
            // requests (each waits for its answer) and the next ones are about to arrive.
            DELIVERY_ROWS_WITH_INGEST
        };
        let mut used: usize = group.work.iter().map(Job::weight).sum();
        while used < budget {
            match self.work.try_recv() {
                Ok(job) => {
                    used += job.weight();
                    group.work.push(job);
                }
                Err(_) => break,
            }
        }
        Some(group)
    }
}

/// What the writer keeps between groups.
struct WriterState {
    targets: Vec<RouteTarget>,
    default_country: Option<String>,
    cache: RefCell<IdentityCache>,
    handoff: RefCell<HandOffPlan>,
    share: RefCell<TimeShare>,
}

impl WriterState {
    /// After a rollback: the cache saw writes that are gone, and nothing is handed over.
    fn rolled_back(&self) {
        self.cache.borrow_mut().clear();
        self.handoff.borrow_mut().discard();
    }
}

fn run(conn: &Connection, mut queues: Queues, state: &WriterState, mut wal: WalFold) {
    // The writer's own small runtime only waits on the two queues and the sweep timer; every
    // database call stays synchronous on this thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "the database writer cannot start");
            return;
        }
    };
    loop {
        let next = queues.next_group(&runtime, &state.share.borrow());
        let Some(mut group) = next else { break };
        let started = Instant::now();
        commit_group(conn, &mut group, state);
        wal.after_commit(conn);
        state.share.borrow_mut().group_done(started.elapsed());
    }
}

type JobResult = Result<JobOutput, rusqlite::Error>;

/// A group's jobs in the order they are applied: ingest first.
enum Item<'a> {
    Ingest(&'a IngestJob),
    Work(&'a Job),
}

impl Group {
    fn items(&self) -> impl Iterator<Item = Item<'_>> {
        self.ingest
            .iter()
            .map(Item::Ingest)
            .chain(self.work.iter().map(Item::Work))
    }

    fn len(&self) -> usize {
        self.ingest.len() + self.work.len()
    }
}

/// Apply every job of the group in one transaction and answer each after the commit. If anything
/// fails, the group is rolled back and each job is retried in a transaction of its own, so one
/// bad job cannot fail the others (and no job is acknowledged without its own commit).
fn commit_group(conn: &Connection, group: &mut Group, state: &WriterState) {
    let items: Vec<Item<'_>> = group.items().collect();
    let results: Vec<JobResult> = match apply(conn, &items, state) {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) => {
            state.rolled_back();
            tracing::warn!(error = %e, jobs = group.len(), "group commit failed; retrying jobs one by one");
            items
                .iter()
                .map(|item| {
                    let one = apply(conn, std::slice::from_ref(item), state);
                    if one.is_err() {
                        state.rolled_back();
                    }
                    one.map(|mut one| one.pop().unwrap_or(JobOutput::Done))
                })
                .collect()
        }
    };
    drop(items);
    let mut results = results.into_iter();
    let failed = |e: &rusqlite::Error| WriteError::Failed(e.to_string());
    for (IngestJob(batch, reply), result) in group.ingest.drain(..).zip(results.by_ref()) {
        let _ = reply.send(match result {
            Ok(JobOutput::Stored(outcomes)) => Ok((outcomes, batch)),
            Ok(JobOutput::Refused(reason)) => Err(WriteError::ReusedSignature(reason)),
            Ok(_) => Err(WriteError::Failed("unexpected writer output".into())),
            Err(e) => Err(failed(&e)),
        });
    }
    for (job, result) in group.work.drain(..).zip(results) {
        match (job, result) {
            (Job::Claim(_, reply), Ok(JobOutput::Claimed(claim))) => {
                let _ = reply.send(Ok(claim));
            }
            (Job::Claim(_, reply), Err(e)) => {
                let _ = reply.send(Err(failed(&e)));
            }
            (Job::Prune { reply, .. }, Ok(JobOutput::Pruned(n))) => {
                let _ = reply.send(Ok(n));
            }
            (Job::Prune { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(failed(&e)));
            }
            (Job::RecordRequest(_, _, reply), Ok(JobOutput::Row(row))) => {
                let _ = reply.send(Ok(row));
            }
            (Job::RecordRequest(_, _, reply), Err(e)) => {
                let _ = reply.send(Err(failed(&e)));
            }
            (Job::Complete(_, reply), result) => {
                let _ = reply.send(result.map(|_| ()).map_err(|e| failed(&e)));
            }
            (Job::Rejections(_), Err(e)) => {
                tracing::error!(error = %e, "could not record refused requests");
            }
            (Job::DestinationState { .. }, Err(e)) => {
                tracing::error!(error = %e, "could not record a destination's state");
            }
            (Job::Release { .. }, Err(e)) => {
                tracing::warn!(error = %e, "could not give claimed deliveries back; their leases expire instead");
            }
            (Job::SweepLeases, Err(e)) => {
                tracing::warn!(error = %e, "could not release expired leases; retrying");
            }
            _ => {}
        }
    }
}

/// One transaction over `items`; on commit, its deliveries go to their workers.
fn apply(
    conn: &Connection,
    items: &[Item<'_>],
    state: &WriterState,
) -> Result<Vec<JobOutput>, rusqlite::Error> {
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
                        &state.cache,
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
    state.share.borrow_mut().add(ingest_time, delivery_time);
    state.handoff.borrow_mut().send();
    Ok(results)
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
        let (writer, thread) = StoreWriter::spawn_with_wal_limit(
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
