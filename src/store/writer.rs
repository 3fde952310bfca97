//! The writer: a dedicated thread that owns the store's write connection and group-commits.
//!
//! Two queues feed it. Ingest requests (a client waits on each) come first: every group takes
//! all of them that are waiting, and at most a bounded amount of delivery bookkeeping (claims,
//! outcomes, pauses, retention), so an acknowledgement never waits behind more than one group's
//! worth of it, however large a backlog the workers are draining. The store (`GroupWriter`)
//! applies each group in one transaction.

mod share;

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::pipeline::RouteTarget;
use crate::stage::{IngestBatch, RejectionBatch, StoredOutcome};
use crate::store::error::StoreError;
use crate::store::handoff::{HandOffPlan, HandOffs};
use crate::store::model::alerts::{AlertChange, AlertNotice, AlertWrite};
use crate::store::model::delivery::{Claim, Completion, RequestRecord};
use share::TimeShare;

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
    /// Observes how long each group commit took (seconds), for `/metrics`.
    pub commit_seconds: Option<prometheus::Histogram>,
    /// Writers taking groups at once (PostgreSQL: `storage.writers`; SQLite has one).
    pub writers: usize,
    /// A fleet node silent this long is taken for dead: the others release its leases.
    pub node_timeout_ms: i64,
    /// Set by the store when its writer starts (the key lives in the database).
    pub suppression_key: Vec<u8>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            queue_capacity: 4096,
            delivery_share: DEFAULT_DELIVERY_SHARE,
            default_country: None,
            commit_seconds: None,
            writers: 1,
            node_timeout_ms: crate::config::DEFAULT_NODE_TIMEOUT_SECS as i64 * 1000,
            suppression_key: Vec::new(),
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

pub(crate) struct ClaimRequest {
    pub destination: String,
    pub now_ms: i64,
    pub limit: usize,
    pub lease_ms: i64,
    pub token: ClaimToken,
}

/// What marks the rows of one claim, so the claim can be asked again after its answer was lost
/// (PostgreSQL committed it, then the connection went before the reply arrived): a claim asked
/// again with the same token returns what the first one took, not only new rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken {
    pub value: i64,
    /// This token was used by a claim that failed: look for what it may have taken.
    pub retried: bool,
}

impl ClaimToken {
    pub fn fresh() -> ClaimToken {
        ClaimToken {
            value: getrandom::u64().map_or(0, |v| (v >> 1) as i64),
            retried: false,
        }
    }

    /// The same token, for asking again after a failure.
    pub fn again(self) -> ClaimToken {
        ClaimToken {
            retried: true,
            ..self
        }
    }
}

/// One request's messages; the batch comes back with the answer, so freeing it happens on the
/// request's task.
pub(crate) struct IngestJob(
    pub Box<IngestBatch>,
    pub Reply<(Vec<StoredOutcome>, Box<IngestBatch>)>,
);

/// Everything that is not ingest: delivery bookkeeping, retention, records of refusals.
pub(crate) enum Job {
    Rejections(Box<RejectionBatch>),
    Claim(ClaimRequest, Reply<Claim>),
    Complete(Vec<Completion>, Reply<()>),
    RecordRequest(String, Box<RequestRecord>, Reply<i64>),
    Release {
        ids: Vec<i64>,
        next_attempt_ms: i64,
    },
    /// Extend the leases of deliveries a worker still holds.
    Renew {
        ids: Vec<i64>,
        until_ms: i64,
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
    /// Readiness: a small write, committed, proves the store accepts writes.
    Probe(Reply<()>),
    /// An alert fires or resolves (at most one open per rule and subject).
    Alert(Box<AlertChange>, Reply<AlertWrite>),
    /// What became of an alert's notifications.
    AlertNotice(Box<AlertNotice>),
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
            Job::Release { ids, .. } | Job::Renew { ids, .. } => ids.len().max(1),
            Job::Rejections(batch) => batch.counts.len() + batch.examples.len(),
            _ => 1,
        }
    }
}

/// What a job produced, answered after its commit.
pub(crate) enum JobOutput {
    Stored(Vec<StoredOutcome>),
    /// An ingest request refused inside the transaction (nothing of it was written).
    Refused(String),
    Row(i64),
    Claimed(Claim),
    Pruned(usize),
    Alert(AlertWrite),
    Done,
}

/// A cheap, cloneable handle for sending work to the writer thread.
#[derive(Clone)]
pub struct StoreWriter {
    ingest: mpsc::Sender<IngestJob>,
    work: mpsc::Sender<Job>,
}

/// Joins the writer threads: they finish every queued job once all handles are dropped.
pub struct WriterThread(Vec<JoinHandle<()>>);

impl WriterThread {
    pub fn join(self) {
        for handle in self.0 {
            if handle.join().is_err() {
                tracing::error!("the database writer thread panicked");
            }
        }
    }
}

impl StoreWriter {
    /// Start the writer thread over a store's `backend`, which applies each group of jobs.
    pub(crate) fn start<B: GroupWriter>(
        backend: B,
        options: WriterOptions,
        targets: Vec<RouteTarget>,
        handoffs: Arc<HandOffs>,
    ) -> Result<(StoreWriter, WriterThread), StoreError> {
        Self::start_many(vec![backend], options, targets, handoffs)
    }

    /// Start a writer thread per backend, all taking groups from the same queues: a store that
    /// takes concurrent writers (PostgreSQL) commits one group while the next is applied on
    /// another connection. Each group is still one transaction; the store resolves races
    /// between its writers as between the nodes of a fleet.
    pub(crate) fn start_many<B: GroupWriter>(
        backends: Vec<B>,
        options: WriterOptions,
        targets: Vec<RouteTarget>,
        handoffs: Arc<HandOffs>,
    ) -> Result<(StoreWriter, WriterThread), StoreError> {
        let (ingest_tx, ingest_rx) = mpsc::channel(options.queue_capacity);
        let (work_tx, work_rx) = mpsc::channel(WORK_QUEUE_CAPACITY);
        let queues = Arc::new(std::sync::Mutex::new(Queues {
            ingest: ingest_rx,
            work: work_rx,
            ingest_open: true,
            work_open: true,
            next_sweep: Instant::now(),
        }));
        let mut handles = Vec::with_capacity(backends.len());
        for (n, mut backend) in backends.into_iter().enumerate() {
            let queues = queues.clone();
            let (targets, handoffs, options) = (targets.clone(), handoffs.clone(), options.clone());
            let name = if n == 0 {
                "tracklayer-writer".to_string()
            } else {
                format!("tracklayer-writer-{n}")
            };
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let state = WriterState {
                        targets,
                        default_country: options.default_country,
                        suppressor: crate::pipeline::privacy::Suppressor::new(
                            &options.suppression_key,
                        ),
                        handoff: RefCell::new(HandOffPlan::new(handoffs)),
                        share: RefCell::new(TimeShare::new(options.delivery_share)),
                        commit_seconds: options.commit_seconds,
                    };
                    run(&mut backend, &queues, &state);
                    backend.finish();
                })
                .map_err(|source| StoreError::Thread { source })?;
            handles.push(handle);
        }
        Ok((
            StoreWriter {
                ingest: ingest_tx,
                work: work_tx,
            },
            WriterThread(handles),
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
        token: ClaimToken,
    ) -> Result<Claim, WriteError> {
        let request = ClaimRequest {
            destination: destination.to_string(),
            now_ms,
            limit,
            lease_ms,
            token,
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

    /// Keep the deliveries a worker holds its own until `until_ms`.
    pub async fn renew(&self, ids: Vec<i64>, until_ms: i64) {
        if self.work.send(Job::Renew { ids, until_ms }).await.is_err() {
            tracing::warn!("writer stopped; held deliveries wait for their lease to expire");
        }
    }

    /// Readiness: commit a small write. Fails when the store does not accept writes (a full
    /// disk, a read-only file, PostgreSQL gone) or the writer has stopped.
    pub async fn probe(&self) -> Result<(), WriteError> {
        self.call(Job::Probe).await
    }

    /// Store an alert firing or resolving; says whether it took effect and should be notified.
    pub async fn record_alert(&self, change: AlertChange) -> Result<AlertWrite, WriteError> {
        self.call(|reply| Job::Alert(Box::new(change), reply)).await
    }

    /// Record what became of an alert's notifications (best effort: logged when it fails).
    pub async fn record_alert_notice(&self, notice: AlertNotice) {
        if self
            .work
            .send(Job::AlertNotice(Box::new(notice)))
            .await
            .is_err()
        {
            tracing::warn!("writer stopped; alert notice not recorded");
        }
    }

    /// Ingest requests waiting for the writer now.
    pub fn queue_depth(&self) -> usize {
        self.ingest.max_capacity() - self.ingest.capacity()
    }

    /// Whether the writer thread is still taking work.
    pub fn is_running(&self) -> bool {
        !self.ingest.is_closed() && !self.work.is_closed()
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
        if !self.ingest_open || !share.ingest_recently() || share.delivery_may_run(Instant::now()) {
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
        } else if !share.delivery_may_run(Instant::now()) {
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

/// What the writer keeps between groups, whatever the store.
pub(crate) struct WriterState {
    pub targets: Vec<RouteTarget>,
    pub default_country: Option<String>,
    /// The suppression list's keyed hash (the store's own key, read at start).
    pub suppressor: crate::pipeline::privacy::Suppressor,
    pub handoff: RefCell<HandOffPlan>,
    share: RefCell<TimeShare>,
    commit_seconds: Option<prometheus::Histogram>,
}

impl WriterState {
    /// After a commit: the time it took per kind of job, and its deliveries to their workers.
    pub fn committed(&self, ingest: Duration, delivery: Duration) {
        self.share.borrow_mut().add(ingest, delivery);
        self.handoff.borrow_mut().send();
    }

    /// After a rollback: nothing is handed over.
    fn rolled_back(&self) {
        self.handoff.borrow_mut().discard();
    }
}

/// A store's side of the writer: apply one group of jobs in one transaction. The writer thread
/// (queues, grouping, ingest first, answering after the commit, retrying a failed group job by
/// job) is the same for every store.
pub(crate) trait GroupWriter: Send + 'static {
    /// Apply `items` in one transaction, in order, and commit; then call `state.committed`.
    /// Nothing of a failed call may stay written.
    fn apply(
        &mut self,
        items: &[Item<'_>],
        state: &WriterState,
    ) -> Result<Vec<JobOutput>, StoreError>;
    /// The transaction rolled back: forget what it taught (caches).
    fn rolled_back(&mut self) {}
    /// After each committed group.
    fn after_commit(&mut self) {}
    /// The writer stops: every queued job is done.
    fn finish(&mut self) {}
}

fn run<B: GroupWriter>(backend: &mut B, queues: &std::sync::Mutex<Queues>, state: &WriterState) {
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
        // One writer gathers a group at a time; the others apply theirs meanwhile.
        let next = match queues.lock() {
            Ok(mut queues) => queues.next_group(&runtime, &state.share.borrow()),
            Err(poisoned) => poisoned
                .into_inner()
                .next_group(&runtime, &state.share.borrow()),
        };
        let Some(mut group) = next else { break };
        let started = Instant::now();
        commit_group(backend, &mut group, state);
        backend.after_commit();
        let took = started.elapsed();
        if let Some(histogram) = &state.commit_seconds {
            histogram.observe(took.as_secs_f64());
        }
        state.share.borrow_mut().group_done(took, Instant::now());
    }
}

pub(crate) type JobResult = Result<JobOutput, StoreError>;

/// A group's jobs in the order they are applied: ingest first.
pub(crate) enum Item<'a> {
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
fn commit_group<B: GroupWriter>(backend: &mut B, group: &mut Group, state: &WriterState) {
    let items: Vec<Item<'_>> = group.items().collect();
    let results: Vec<JobResult> = match backend.apply(&items, state) {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) => {
            state.rolled_back();
            backend.rolled_back();
            if let Some(left_out) = crate::throttle::allow("group commit failed") {
                tracing::warn!(error = %e, jobs = group.len(), left_out, "group commit failed; retrying jobs one by one");
            }
            items
                .iter()
                .map(|item| {
                    let one = backend.apply(std::slice::from_ref(item), state);
                    if one.is_err() {
                        state.rolled_back();
                        backend.rolled_back();
                    }
                    one.map(|mut one| one.pop().unwrap_or(JobOutput::Done))
                })
                .collect()
        }
    };
    drop(items);
    let mut results = results.into_iter();
    let failed = |e: &StoreError| WriteError::Failed(e.to_string());
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
            (Job::Probe(reply), result) => {
                let _ = reply.send(result.map(|_| ()).map_err(|e| failed(&e)));
            }
            (Job::Alert(_, reply), Ok(JobOutput::Alert(write))) => {
                let _ = reply.send(Ok(write));
            }
            (Job::Alert(_, reply), Err(e)) => {
                let _ = reply.send(Err(failed(&e)));
            }
            (Job::Complete(_, reply), result) => {
                let _ = reply.send(result.map(|_| ()).map_err(|e| failed(&e)));
            }
            (Job::Rejections(_), Err(e)) => {
                tracing::error!(error = %e, "could not record refused requests");
            }
            (Job::AlertNotice(_), Err(e)) => {
                tracing::warn!(error = %e, "could not record what became of an alert's notifications");
            }
            (Job::DestinationState { .. }, Err(e)) => {
                tracing::error!(error = %e, "could not record a destination's state");
            }
            (Job::Renew { .. }, Err(e)) => {
                tracing::warn!(error = %e, "could not extend the leases of held deliveries; if they run out, the deliveries are claimed again (the platform dedups on event_id)");
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
