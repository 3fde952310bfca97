//! The delivery engine: one worker per destination leases due deliveries from the durable
//! queue, builds the request (pure), sends it (the only reqwest client of the pipeline),
//! classifies the answer (pure) and records every attempt. Workers are independent, so a slow
//! or failing destination never delays the others.

pub mod policy;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::destinations::{self, Destination, HttpResponse, Outcome, Settings, Subject};
use crate::store::codec::Packed;
use crate::store::delivery::{
    AttemptOutcome, Claim, Completion, ItemResult, RequestRecord, RequestRef,
};
use crate::store::handoff::{HandOffReceiver, HandOffs};
use crate::store::warehouse::WarehouseSink;
use crate::store::LeasedDelivery;
use crate::store::StoreWriter;
use policy::{Breaker, BreakerChange};

/// How much of a response body an attempt keeps.
const RESPONSE_EXCERPT: usize = 4096;
/// How much of a request body an attempt keeps (a 1000-event batch can be large).
const REQUEST_EXCERPT: usize = 64 * 1024;
/// The longest a worker sleeps before looking at the queue again on its own.
const IDLE_POLL: Duration = Duration::from_millis(1000);
/// How soon a pause recorded in the store (from the dashboard, or the fleet's) takes effect.
const STORED_PAUSE_CHECK: Duration = Duration::from_millis(1000);
/// The most deliveries one claim takes (a 1,000-event request, twice, for two at once), and the
/// fewest it asks for.
const MAX_CLAIM: usize = 4000;
const MIN_CLAIM: usize = 64;
/// The most one claim job asks the writer for: it rides in a group with ingest commits, so it
/// must stay small (a few milliseconds).
const MAX_CLAIM_PER_JOB: usize = 250;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

fn random_u64() -> u64 {
    getrandom::u64().unwrap_or(0)
}

/// The shared HTTP client: no redirects (a 3xx is a failure for webhooks and APIs alike).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("TrackLayer/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}

/// Per-request timeout: Meta recommends short ones; others get more room.
fn request_timeout(dest: &Destination) -> Duration {
    match dest.settings {
        Settings::Meta(_) => Duration::from_secs(5),
        _ => Duration::from_secs(15),
    }
}

/// The delivery workers, on a runtime of their own whose threads yield the CPU to ingest: an
/// acknowledgement Segment is waiting for comes before draining a backlog, at the processor as
/// at the writer. When ingest is idle, delivery has every core.
pub struct DeliveryWorkers {
    runtime: Option<tokio::runtime::Runtime>,
    workers: JoinSet<()>,
}

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
        for dest in destinations {
            let (outcomes, outcomes_rx) = mpsc::channel(OUTCOME_QUEUE);
            workers.spawn_on(
                record_outcomes(writer.clone(), outcomes_rx),
                runtime.handle(),
            );
            let worker = Worker {
                dest: Arc::new(dest.clone()),
                writer: writer.clone(),
                client: client.clone(),
                breaker: Arc::new(Mutex::new(Breaker::new(pause_base(dest)))),
                outcomes,
                ops: ops.clone(),
            };
            // New deliveries come straight from the commit, up to a claim's worth at a time.
            let handoff = handoffs.register(&dest.name, worker.claim_size(), worker.lease_ms());
            workers.spawn_on(worker.run(handoff), runtime.handle());
        }
        Ok(DeliveryWorkers {
            runtime: Some(runtime),
            workers,
        })
    }

    /// Stop every worker. Deliveries in flight keep their leases: they go out again, with the
    /// same event_id, once those run out.
    pub async fn stop(mut self) {
        self.workers.abort_all();
        while self.workers.join_next().await.is_some() {}
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

/// A claim on its way back from the writer, with how many it asked for.
type ClaimInFlight = tokio::task::JoinHandle<Result<(Claim, usize), crate::store::WriteError>>;

/// Outcomes per writer job: small enough to share a group with ingest commits.
const OUTCOMES_PER_JOB: usize = 250;

/// Outcomes waiting to be recorded per destination; a full queue slows that destination's
/// sending, never ingest.
const OUTCOME_QUEUE: usize = 256;

/// Records outcomes as they come, many requests' worth per writer job: a request's slot is free
/// again as soon as its answer is in, not after the commit that records it. (If the process dies
/// first, the leases run out and the same event_ids are sent again.) The outcomes of one large
/// request go in pieces, so no single writer job is long enough to hold up ingest.
async fn record_outcomes(writer: StoreWriter, mut outcomes: mpsc::Receiver<Completion>) {
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
        if let Err(e) = writer.complete(small).await {
            tracing::error!(%destination, error = %e, "could not record delivery outcomes; their leases will expire and they are sent again");
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

fn pause_base(dest: &Destination) -> Duration {
    // Short schedules (tests, the demo) pause briefly too.
    let first = dest.retry_schedule.first().copied().unwrap_or(5);
    Duration::from_secs(first.clamp(1, 30))
}

#[derive(Clone)]
struct Worker {
    dest: Arc<Destination>,
    writer: StoreWriter,
    client: reqwest::Client,
    breaker: Arc<Mutex<Breaker>>,
    /// Outcomes on their way to the store (see `record_outcomes`).
    outcomes: mpsc::Sender<Completion>,
    /// Metrics and alert signals.
    ops: Arc<crate::ops::Ops>,
}

impl Worker {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        match self.breaker.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Deliveries claimed per round trip to the writer: two rounds of full requests (at least
    /// MIN_CLAIM), so the next requests are ready while the current ones are out and a
    /// one-event-per-request destination does not wait on a commit per event.
    fn claim_size(&self) -> usize {
        (self.dest.batch_size * self.dest.concurrency.max(1) * 2).clamp(MIN_CLAIM, MAX_CLAIM)
    }

    /// Long enough for every claimed item to be sent even if each request runs to its timeout,
    /// plus a margin.
    fn lease_ms(&self) -> i64 {
        let rounds =
            self.claim_size()
                .div_ceil(self.dest.batch_size * self.dest.concurrency.max(1)) as i64;
        rounds * request_timeout(&self.dest).as_millis() as i64 + 30_000
    }

    /// Start claiming more deliveries, unless a claim is already under way. Runs beside the
    /// requests in flight, so a one-event-per-request destination never stalls on the writer.
    fn claim_ahead(&self, wanted: usize) -> ClaimInFlight {
        let worker = self.clone();
        tokio::spawn(async move {
            let limit = wanted.clamp(1, MAX_CLAIM_PER_JOB);
            worker
                .writer
                .claim(&worker.dest.name, now_ms(), limit, worker.lease_ms())
                .await
                .map(|claim| (claim, limit))
        })
    }

    /// Take a finished claim into the buffer (unreadable rows are recorded as dead). Returns when
    /// the next pending delivery falls due, if known, and whether the claim came back full;
    /// Err when the writer has stopped.
    async fn absorb(
        &self,
        claim: ClaimInFlight,
        buffer: &mut VecDeque<LeasedDelivery>,
    ) -> Result<(Option<i64>, bool, Option<i64>), ()> {
        let Ok(Ok((claim, asked))) = claim.await else {
            return Err(()); // the writer stopped: shutting down
        };
        let full = claim.items.len() >= asked;
        let mut unreadable = Vec::new();
        for claimed in claim.items {
            match claimed.into_leased() {
                Ok(item) => buffer.push_back(item),
                Err((id, attempt, reason)) => unreadable.push(ItemResult {
                    delivery_id: id,
                    attempt,
                    outcome: AttemptOutcome::Dead,
                    reason: Some(reason),
                    next_attempt_ms: None,
                    solo: false,
                    free_retry: false,
                }),
            }
        }
        if !unreadable.is_empty() {
            self.record(None, unreadable, now_ms()).await;
        }
        Ok((claim.next_due_ms, full, claim.paused_until_ms))
    }

    /// The next request's items: up to a batch, a solo item alone, one item for a probe.
    fn next_items(
        &self,
        buffer: &mut VecDeque<LeasedDelivery>,
        probing: bool,
    ) -> Vec<LeasedDelivery> {
        let limit = if probing { 1 } else { self.dest.batch_size };
        let mut items = Vec::with_capacity(limit.min(buffer.len()));
        if buffer.front().is_some_and(|item| item.solo) {
            items.extend(buffer.pop_front());
            return items;
        }
        while items.len() < limit && buffer.front().is_some_and(|item| !item.solo) {
            items.extend(buffer.pop_front());
        }
        items
    }

    async fn run(self, mut handoff: HandOffReceiver) {
        let concurrency = self.dest.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut buffer: VecDeque<LeasedDelivery> = VecDeque::new();
        let mut claim: Option<ClaimInFlight> = None;
        let signal = handoff.pending_signal();
        // When a claim may find something: the queue's next due time as of the last claim, and
        // whether that claim came back full (more is waiting).
        let mut next_due: Option<i64> = None;
        let mut more_waiting = false;
        // A pause recorded in the store (an operator's from the dashboard, the fleet's): seen
        // at claims, which run at least every STORED_PAUSE_CHECK even while hand-offs flow.
        let mut stored_pause: Option<i64> = None;
        let mut last_claim_ms = 0i64;
        // Opened on first use, off the async threads (connecting can block).
        let sink: Arc<Mutex<Option<Box<dyn WarehouseSink>>>> = Arc::new(Mutex::new(None));
        loop {
            let now = now_ms();
            let (paused, probing) = {
                let b = self.breaker();
                (b.is_paused(now), b.probing(now))
            };
            let held = stored_pause.is_some_and(|until| until > now);
            handoff.set_accepting(!paused && !probing && !held);
            buffer.extend(handoff.take_handed());
            if held {
                if let Some(in_flight) = claim.take() {
                    // Its items join the buffer and go back in line below.
                    if self.absorb(in_flight, &mut buffer).await.is_err() {
                        return;
                    }
                }
                // Back in line, unsent: claims give nothing while the pause lasts.
                if !buffer.is_empty() {
                    let ids = buffer.drain(..).map(|item| item.id).collect();
                    self.writer.release(ids, now).await;
                }
                tokio::time::sleep(STORED_PAUSE_CHECK).await;
                // Look again: resumed, or still paused.
                last_claim_ms = now_ms();
                let Ok(found) = self.absorb(self.claim_ahead(1), &mut buffer).await else {
                    return;
                };
                (next_due, more_waiting, stored_pause) = found;
                continue;
            }
            let idle = slots.available_permits() == concurrency;
            if paused || (probing && !idle) {
                if let Some(in_flight) = claim.take() {
                    let Ok(found) = self.absorb(in_flight, &mut buffer).await else {
                        return;
                    };
                    (next_due, more_waiting, stored_pause) = found;
                }
            }
            if paused {
                let until = self.breaker().paused_until_ms().unwrap_or(now);
                // What was claimed goes back in line for after the pause, so its lease does not
                // run out while it waits here.
                if !buffer.is_empty() {
                    let ids = buffer.drain(..).map(|item| item.id).collect();
                    self.writer.release(ids, until).await;
                }
                tokio::time::sleep(Duration::from_millis((until - now).clamp(10, 60_000) as u64))
                    .await;
                next_due = Some(until);
                continue;
            }
            if probing && !idle {
                // A request is out; the probe waits for its verdict.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if claim.as_ref().is_some_and(|c| c.is_finished()) {
                if let Some(done) = claim.take() {
                    let Ok(found) = self.absorb(done, &mut buffer).await else {
                        return;
                    };
                    (next_due, more_waiting, stored_pause) = found;
                }
            }
            let wanted = if probing { 1 } else { self.claim_size() };
            let pause_check_due = now - last_claim_ms >= STORED_PAUSE_CHECK.as_millis() as i64;
            let worth_claiming = handoff.take_left_pending()
                || more_waiting
                || probing
                || next_due.is_some_and(|due| due <= now);
            let room = buffer.len() < wanted.div_ceil(2) && worth_claiming;
            if claim.is_none() && (room || pause_check_due) {
                last_claim_ms = now;
                claim = Some(self.claim_ahead(wanted.saturating_sub(buffer.len()).max(1)));
            }
            if buffer.is_empty() {
                if let Some(in_flight) = claim.take() {
                    let Ok(found) = self.absorb(in_flight, &mut buffer).await else {
                        return;
                    };
                    (next_due, more_waiting, stored_pause) = found;
                    continue;
                }
                // Nothing to send: wait for a hand-off, news of pending deliveries, or the next
                // due time (at most IDLE_POLL, so rows queued by another process are found too).
                let wait = next_due
                    .map(|due| (due - now_ms()).clamp(5, IDLE_POLL.as_millis() as i64) as u64)
                    .map_or(IDLE_POLL, Duration::from_millis);
                tokio::select! {
                    handed = handoff.recv_handed() => buffer.extend(handed),
                    _ = signal.wait() => more_waiting = true,
                    _ = tokio::time::sleep(wait) => more_waiting = true,
                }
                continue;
            }
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let items = self.next_items(&mut buffer, probing);
            let worker = self.clone();
            if let Settings::Warehouse(_) = &self.dest.settings {
                let sink = sink.clone();
                tokio::spawn(async move {
                    worker.deliver_to_warehouse(items, sink).await;
                    drop(permit);
                });
            } else {
                tokio::spawn(async move {
                    worker.deliver(items).await;
                    drop(permit);
                });
            }
        }
    }

    /// Record what became of some deliveries (and the request that carried them, if any).
    /// `at_ms` is the instant the outcomes were decided (retry delays count from it).
    async fn record(&self, request: Option<RequestRecord>, mut items: Vec<ItemResult>, at_ms: i64) {
        // Reasons quote platform answers, which may quote what was sent.
        for item in &mut items {
            if let Some(reason) = &item.reason {
                item.reason = Some(self.dest.redact(reason));
            }
        }
        let request_seen = request.as_ref().map(|r| {
            let ok = crate::store::views::request_succeeded(
                r.status_code.map(i64::from),
                r.error.as_deref(),
            );
            let reason = (!ok).then(|| {
                r.error.clone().unwrap_or_else(|| {
                    items
                        .iter()
                        .find_map(|i| i.reason.clone())
                        .unwrap_or_else(|| format!("HTTP {}", r.status_code.unwrap_or_default()))
                })
            });
            (r.latency_ms, ok, reason)
        });
        self.ops
            .delivered(&self.dest.name, at_ms, request_seen, &items);
        let completion = Completion {
            destination: self.dest.name.clone(),
            request: request.map_or(RequestRef::None, RequestRef::New),
            items,
            at_ms,
        };
        if self.outcomes.send(completion).await.is_err() {
            tracing::error!(destination = %self.dest.name, "outcomes are no longer recorded (shutting down); leases will expire and the deliveries are sent again");
        }
    }

    /// The verdict for an item that failed: retry on schedule, or give up.
    fn retry_or_dead(
        &self,
        item: &LeasedDelivery,
        reason: String,
        after: Option<Duration>,
        now: i64,
    ) -> ItemResult {
        let failures = item.failures + 1;
        match policy::next_delay(&self.dest.retry_schedule, failures, after, random_u64()) {
            Some(delay) => ItemResult {
                delivery_id: item.id,
                attempt: item.attempt,
                outcome: AttemptOutcome::Retry,
                reason: Some(reason),
                next_attempt_ms: Some(now + delay.as_millis() as i64),
                solo: false,
                free_retry: false,
            },
            None => ItemResult {
                delivery_id: item.id,
                attempt: item.attempt,
                outcome: AttemptOutcome::Dead,
                reason: Some(format!(
                    "gave up after {} failed attempts (retry_schedule exhausted); last: {reason}",
                    failures
                )),
                next_attempt_ms: None,
                solo: false,
                free_retry: false,
            },
        }
    }

    fn dead(item: &LeasedDelivery, reason: String) -> ItemResult {
        ItemResult {
            delivery_id: item.id,
            attempt: item.attempt,
            outcome: AttemptOutcome::Dead,
            reason: Some(reason),
            next_attempt_ms: None,
            solo: false,
            free_retry: false,
        }
    }

    /// Items too old for the platform dead-letter before anything is sent.
    fn split_expired(
        &self,
        items: Vec<LeasedDelivery>,
        now: i64,
    ) -> (Vec<LeasedDelivery>, Vec<ItemResult>) {
        let Some(max_age) = self.dest.max_age else {
            return (items, Vec::new());
        };
        let mut fresh = Vec::with_capacity(items.len());
        let mut expired = Vec::new();
        for item in items {
            let age = now - item.event_time_ms;
            if age > max_age.as_millis() as i64 {
                expired.push(Self::dead(
                    &item,
                    format!(
                        "the event is {} days old; {} accepts events up to {} days old",
                        age / 86_400_000,
                        self.dest.kind.as_str(),
                        max_age.as_secs() / 86_400
                    ),
                ));
            } else {
                fresh.push(item);
            }
        }
        (fresh, expired)
    }

    async fn deliver(&self, items: Vec<LeasedDelivery>) {
        let started = now_ms();
        let (items, mut results) = self.split_expired(items, started);
        let subjects: Vec<Subject> = items.iter().map(|i| i.subject.clone()).collect();
        let built = destinations::build(&self.dest, &subjects, started / 1000);
        for (index, reason) in &built.rejected {
            results.push(Self::dead(&items[*index], format!("not sent: {reason}")));
        }
        // Items that did not fit this request go back at once, without counting as a failure.
        for index in &built.deferred {
            results.push(ItemResult {
                delivery_id: items[*index].id,
                attempt: items[*index].attempt,
                outcome: AttemptOutcome::Retry,
                reason: Some("did not fit this request; sent in the next one".into()),
                next_attempt_ms: Some(started),
                solo: false,
                free_retry: true,
            });
        }
        let mut record = None;
        let mut decided_at = started;
        if let Some(request) = built.request {
            let included: Vec<&LeasedDelivery> =
                built.included.iter().map(|i| &items[*i]).collect();
            let (response, rec) = self.send(&request, included.len(), started).await;
            record = Some(rec);
            let now = now_ms();
            decided_at = now;
            let outcomes = match &response {
                Ok(resp) => destinations::classify(&self.dest, included.len(), resp),
                Err(reason) => vec![Outcome::retry(reason.clone()); included.len()],
            };
            let request_ok =
                response.is_ok() && !outcomes.iter().all(|o| matches!(o, Outcome::Retry { .. }));
            // A batch refused whole for one bad event (Meta, TikTok): send each alone next, so
            // the good ones go through and the bad one is named.
            let whole_batch_refused = included.len() > 1
                && outcomes
                    .iter()
                    .all(|o| matches!(o, Outcome::Permanent { .. }))
                && outcomes.windows(2).all(|w| w[0] == w[1]);
            for (item, outcome) in included.iter().zip(outcomes) {
                results.push(match outcome {
                    Outcome::Delivered { note } => ItemResult {
                        delivery_id: item.id,
                        attempt: item.attempt,
                        outcome: AttemptOutcome::Delivered,
                        reason: note,
                        next_attempt_ms: None,
                        solo: false,
                        free_retry: false,
                    },
                    Outcome::Retry { reason, after } => {
                        self.retry_or_dead(item, reason, after, now)
                    }
                    Outcome::Permanent { reason } if whole_batch_refused => ItemResult {
                        delivery_id: item.id,
                        attempt: item.attempt,
                        outcome: AttemptOutcome::Retry,
                        reason: Some(format!(
                            "{reason} (the whole batch was refused; resending each event alone)"
                        )),
                        next_attempt_ms: Some(now),
                        solo: true,
                        free_retry: true,
                    },
                    Outcome::Permanent { reason } => Self::dead(item, reason),
                });
            }
            let change = self.breaker().record(request_ok, now);
            self.report_breaker(change, now).await;
        }
        self.record(record, results, decided_at).await;
    }

    async fn report_breaker(&self, change: Option<BreakerChange>, now: i64) {
        match change {
            Some(BreakerChange::Paused { until_ms, reason }) => {
                tracing::warn!(destination = %self.dest.name, %reason, "destination paused");
                self.writer
                    .set_destination_state(&self.dest.name, Some(until_ms), Some(reason), now)
                    .await;
            }
            Some(BreakerChange::Resumed) => {
                tracing::info!(destination = %self.dest.name, "destination resumed after a successful probe");
                self.writer
                    .set_destination_state(&self.dest.name, None, None, now)
                    .await;
            }
            None => {}
        }
    }

    /// Send one request; returns the response (or why there is none) and the attempt record.
    async fn send(
        &self,
        request: &destinations::HttpRequest,
        item_count: usize,
        started_ms: i64,
    ) -> (Result<HttpResponse, String>, RequestRecord) {
        let mut builder = self
            .client
            .post(&request.url)
            .timeout(request_timeout(&self.dest))
            .body(request.body.clone());
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        let clock = Instant::now();
        let result = builder.send().await;
        // Everything kept of a request passes through the destination's redaction: a platform
        // may echo a credential, and transport errors can quote the URL.
        let redact = |text: &str| self.dest.redact(text);
        let mut record = RequestRecord {
            started_at_ms: started_ms,
            latency_ms: None,
            item_count,
            url: Some(redact(&request.redacted_url())),
            headers: serde_json::to_string(&request.redacted_headers())
                .ok()
                .map(|h| Packed::text(&redact(&h))),
            body: Some(Packed::text(&redact(&truncate(
                &String::from_utf8_lossy(&request.body),
                REQUEST_EXCERPT,
            )))),
            ..RequestRecord::default()
        };
        let response = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let body = response.text().await.unwrap_or_default();
                record.status_code = Some(status);
                record.response_body =
                    Some(Packed::text(&redact(&truncate(&body, RESPONSE_EXCERPT))));
                Ok(HttpResponse {
                    status,
                    retry_after,
                    body,
                })
            }
            Err(e) => {
                let endpoint = url::Url::parse(&request.url)
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_default();
                let reason = if e.is_timeout() {
                    format!(
                        "no answer from {endpoint} within {} s (timeout)",
                        request_timeout(&self.dest).as_secs()
                    )
                } else if e.is_connect() {
                    format!("could not connect to {endpoint} (refused or unreachable)")
                } else {
                    // Without the URL: it is in the request record, redacted.
                    format!("request to {endpoint} failed: {}", e.without_url())
                };
                let reason = redact(&reason);
                record.error = Some(reason.clone());
                Err(reason)
            }
        };
        record.latency_ms = Some(clock.elapsed().as_millis() as i64);
        (response, record)
    }

    async fn deliver_to_warehouse(
        &self,
        items: Vec<LeasedDelivery>,
        sink: Arc<Mutex<Option<Box<dyn WarehouseSink>>>>,
    ) {
        let started = now_ms();
        let clock = Instant::now();
        let outcome: Result<usize, String> = match &self.dest.settings {
            Settings::Warehouse(target) => {
                let target = target.clone();
                let events: Vec<crate::pipeline::CanonicalEvent> = items
                    .iter()
                    .filter_map(|i| match &i.subject {
                        Subject::Event { event, .. } => Some((**event).clone()),
                        Subject::Profile(_) => None,
                    })
                    .collect();
                tokio::task::spawn_blocking(move || {
                    let refs: Vec<&crate::pipeline::CanonicalEvent> = events.iter().collect();
                    let Ok(mut sink) = sink.lock() else {
                        return Err("the warehouse writer panicked".to_string());
                    };
                    if sink.is_none() {
                        *sink = Some(crate::store::warehouse::open(&target)?);
                    }
                    match sink.as_mut() {
                        Some(open) => open.write(&refs),
                        None => Err("the warehouse could not be opened".to_string()),
                    }
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
            _ => Err("not a warehouse destination".to_string()),
        };
        let now = now_ms();
        let record = RequestRecord {
            started_at_ms: started,
            latency_ms: Some(clock.elapsed().as_millis() as i64),
            item_count: items.len(),
            url: match &self.dest.settings {
                Settings::Warehouse(target) => Some(target.describe()),
                _ => None,
            },
            error: outcome.as_ref().err().map(|e| self.dest.redact(e)),
            response_body: outcome
                .as_ref()
                .ok()
                .map(|n| Packed::text(&format!("{n} new row(s)"))),
            ..RequestRecord::default()
        };
        let results = items
            .iter()
            .map(|item| match &outcome {
                Ok(_) => ItemResult {
                    delivery_id: item.id,
                    attempt: item.attempt,
                    outcome: AttemptOutcome::Delivered,
                    reason: None,
                    next_attempt_ms: None,
                    solo: false,
                    free_retry: false,
                },
                Err(e) => self.retry_or_dead(
                    item,
                    format!("warehouse write failed: {}", self.dest.redact(e)),
                    None,
                    now,
                ),
            })
            .collect();
        let change = self.breaker().record(outcome.is_ok(), now);
        self.report_breaker(change, now).await;
        self.record(Some(record), results, now).await;
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from these APIs and treated as 60 s).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    match v.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) if !v.is_empty() => Some(Duration::from_secs(60)),
        Err(_) => None,
    }
}
