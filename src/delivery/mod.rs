//! The delivery engine: one worker per destination leases due deliveries from the durable
//! queue, builds the request (pure), sends it (the only reqwest client of the pipeline),
//! classifies the answer (pure) and records every attempt. Workers are independent, so a slow
//! or failing destination never delays the others.

mod held;
pub mod policy;
mod request;
pub mod sender;
mod token;
mod warehouse;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::destinations::Destination;
use crate::store::delivery::{Claim, Completion, RequestRef};
use crate::store::handoff::HandOffs;
use crate::store::StoreWriter;
use policy::Breaker;
pub use sender::{http_client, parse_retry_after, request_timeout};
use worker::{pause_base, Worker};
/// The longest a worker sleeps before looking at the queue again on its own.
const IDLE_POLL: Duration = Duration::from_millis(1000);
/// How long a worker waits before asking a failing store again (a claim, outcomes).
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How soon a pause recorded in the store (from the dashboard, or the fleet's) takes effect.
const STORED_PAUSE_CHECK: Duration = Duration::from_millis(1000);
/// The most deliveries one claim takes (a 1,000-event request, twice, for two at once), and the
/// fewest it asks for.
const MAX_CLAIM: usize = 4000;
const MIN_CLAIM: usize = 64;
/// The most one claim job asks the writer for: it rides in a group with ingest commits, so it
/// must stay small (a few milliseconds).
const MAX_CLAIM_PER_JOB: usize = 250;

pub use crate::store::now_ms;

fn random_u64() -> u64 {
    getrandom::u64().unwrap_or(0)
}

/// The delivery workers, on a runtime of their own whose threads yield the CPU to ingest: an
/// acknowledgement Segment is waiting for comes before draining a backlog, at the processor as
/// at the writer. When ingest is idle, delivery has every core.
pub struct DeliveryWorkers {
    runtime: Option<tokio::runtime::Runtime>,
    workers: JoinSet<()>,
    /// Their outcome recorders: they finish once every worker and request is done.
    recorders: JoinSet<()>,
    stop: watch::Sender<bool>,
}

/// How long stopping waits for workers to give back what they hold and for the requests out to
/// be answered (the longest request timeout is 15 s).
const STOP_GRACE: Duration = Duration::from_secs(20);

impl DeliveryWorkers {
    /// Start a worker per destination.
    pub fn start(
        destinations: &[Destination],
        writer: &StoreWriter,
        handoffs: &HandOffs,
        ops: &Arc<crate::ops::Ops>,
    ) -> std::io::Result<DeliveryWorkers> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("tracklayer-delivery")
            .on_thread_start(yield_to_ingest)
            .enable_all()
            .build()?;
        let client = http_client();
        let mut workers = JoinSet::new();
        let mut recorders = JoinSet::new();
        let (stop, stopping) = watch::channel(false);
        for dest in destinations {
            let (outcomes, outcomes_rx) = mpsc::channel(OUTCOME_QUEUE);
            recorders.spawn_on(
                record_outcomes(writer.clone(), outcomes_rx, ops.clone()),
                runtime.handle(),
            );
            let worker = Worker {
                dest: Arc::new(dest.clone()),
                writer: writer.clone(),
                client: client.clone(),
                breaker: Arc::new(Mutex::new(Breaker::new(pause_base(dest)))),
                outcomes,
                ops: ops.clone(),
                tokens: token::TokenSource::for_destination(dest).map(Arc::new),
                holds: Arc::default(),
            };
            // New deliveries come straight from the commit, up to a claim's worth at a time.
            let handoff = handoffs.register(&dest.name, worker.claim_size(), worker.lease_ms());
            workers.spawn_on(worker.run(handoff, stopping.clone()), runtime.handle());
        }
        Ok(DeliveryWorkers {
            runtime: Some(runtime),
            workers,
            recorders,
            stop,
        })
    }

    /// Stop every worker: what each claimed and has not sent goes back in line at once, the
    /// requests already out are answered (or time out) and recorded. The writer must still run.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let graceful = async {
            while self.workers.join_next().await.is_some() {}
            while self.recorders.join_next().await.is_some() {}
        };
        if tokio::time::timeout(STOP_GRACE, graceful).await.is_err() {
            tracing::warn!(
                "delivery workers did not finish in time; what they hold waits for its lease"
            );
            self.workers.abort_all();
            self.recorders.abort_all();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for DeliveryWorkers {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lower the calling thread's scheduling priority (nice +10), so the kernel runs ingest first
/// when both want the CPU.
pub fn yield_to_ingest() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with `who = 0` changes only the calling thread's nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// A claim on its way back from the writer, with how many it asked for and when.
type ClaimInFlight = tokio::task::JoinHandle<Result<(Claim, usize, i64), crate::store::WriteError>>;

/// Outcomes per writer job: small enough to share a group with ingest commits.
const OUTCOMES_PER_JOB: usize = 250;

/// Outcomes waiting to be recorded per destination; a full queue slows that destination's
/// sending, never ingest.
const OUTCOME_QUEUE: usize = 256;

/// Records outcomes as they come, many requests' worth per writer job: a request's slot is free
/// again as soon as its answer is in, not after the commit that records it. (If the process dies
/// first, the leases run out and the same event_ids are sent again.) The outcomes of one large
/// request go in pieces, so no single writer job is long enough to hold up ingest.
async fn record_outcomes(
    writer: StoreWriter,
    mut outcomes: mpsc::Receiver<Completion>,
    ops: Arc<crate::ops::Ops>,
) {
    while let Some(first) = outcomes.recv().await {
        let mut batch = vec![first];
        let mut items = batch[0].items.len();
        while items < OUTCOMES_PER_JOB {
            match outcomes.try_recv() {
                Ok(next) => {
                    items += next.items.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let destination = batch[0].destination.clone();
        let mut small = Vec::with_capacity(batch.len());
        for completion in batch {
            if completion.items.len() <= OUTCOMES_PER_JOB {
                small.push(completion);
                continue;
            }
            if let Err(e) = record_in_pieces(&writer, completion).await {
                tracing::error!(%destination, error = %e, "could not record delivery outcomes; their leases will expire and they are sent again");
            }
        }
        if small.is_empty() {
            continue;
        }
        // A store that fails (the database went away) is asked again until it takes them, so an
        // answer is not lost and sent again; meanwhile this destination's sending waits on the
        // full queue, and readiness says why.
        loop {
            match writer.complete(small.clone()).await {
                Ok(()) => {
                    ops.delivery_store_ok(&destination);
                    break;
                }
                Err(crate::store::WriteError::Stopped) => {
                    tracing::error!(%destination, "outcomes are no longer recorded (the writer stopped); their leases expire and they are sent again");
                    break;
                }
                Err(e) => {
                    ops.delivery_store_failed(&destination, now_ms(), &e.to_string());
                    if let Some(left_out) = crate::throttle::allow("delivery outcomes failed") {
                        tracing::error!(%destination, error = %e, left_out, "cannot record delivery outcomes; trying again every second");
                    }
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
    }
}

/// The request first, then its items a piece at a time.
async fn record_in_pieces(
    writer: &StoreWriter,
    completion: Completion,
) -> Result<(), crate::store::WriteError> {
    let Completion {
        destination,
        request,
        items,
        at_ms,
    } = completion;
    let request = match request {
        RequestRef::New(record) => RequestRef::Recorded {
            status_code: record.status_code,
            row: writer.record_request(&destination, record).await?,
        },
        other => other,
    };
    for piece in items.chunks(OUTCOMES_PER_JOB) {
        writer
            .complete(vec![Completion {
                destination: destination.clone(),
                request: request.clone(),
                items: piece.to_vec(),
                at_ms,
            }])
            .await?;
    }
    Ok(())
}
