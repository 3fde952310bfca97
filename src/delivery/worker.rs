//! One worker per destination: claims due deliveries (or takes them straight from the commit),
//! keeps the destination's requests in flight within its concurrency, and respects pauses
//! (the breaker's, an operator's, the fleet's).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};

use super::policy::{Breaker, BreakerChange};
use super::{
    now_ms, request_timeout, ClaimInFlight, IDLE_POLL, MAX_CLAIM, MAX_CLAIM_PER_JOB, MIN_CLAIM,
    STORED_PAUSE_CHECK, STORE_RETRY,
};
use crate::destinations::{Destination, Settings};
use crate::store::delivery::{Completion, ItemResult, RequestRecord, RequestRef};
use crate::store::handoff::HandOffReceiver;
use crate::store::warehouse::WarehouseSink;
use crate::store::LeasedDelivery;
use crate::store::StoreWriter;
use crate::store::WriteError;

pub(super) fn pause_base(dest: &Destination) -> Duration {
    // Short schedules (tests, the demo) pause briefly too.
    let first = dest.retry_schedule.first().copied().unwrap_or(5);
    Duration::from_secs(first.clamp(1, 30))
}

#[derive(Clone)]
pub(super) struct Worker {
    pub(super) dest: Arc<Destination>,
    pub(super) writer: StoreWriter,
    pub(super) client: reqwest::Client,
    pub(super) breaker: Arc<Mutex<Breaker>>,
    /// Outcomes on their way to the store (see `record_outcomes`).
    pub(super) outcomes: mpsc::Sender<Completion>,
    /// Metrics and alert signals.
    pub(super) ops: Arc<crate::ops::Ops>,
    /// Access tokens, for a destination that refreshes its own.
    pub(super) tokens: Option<Arc<super::token::TokenSource>>,
}

impl Worker {
    pub(super) fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        match self.breaker.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Deliveries claimed per round trip to the writer: two rounds of full requests (at least
    /// MIN_CLAIM), so the next requests are ready while the current ones are out and a
    /// one-event-per-request destination does not wait on a commit per event.
    pub(super) fn claim_size(&self) -> usize {
        (self.dest.batch_size * self.dest.concurrency.max(1) * 2).clamp(MIN_CLAIM, MAX_CLAIM)
    }

    /// Long enough for every claimed item to be sent even if each request runs to its timeout,
    /// plus a margin.
    pub(super) fn lease_ms(&self) -> i64 {
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
    /// the next pending delivery falls due, if known, whether more is waiting, and a pause
    /// recorded in the store; Err only when the writer has stopped (shutting down). A claim the
    /// store failed (the database went away) is reported for readiness and tried again after a
    /// moment: the worker outlives its database.
    async fn absorb(
        &self,
        claim: ClaimInFlight,
        buffer: &mut VecDeque<LeasedDelivery>,
    ) -> Result<(Option<i64>, bool, Option<i64>), ()> {
        let (claim, asked) = match claim.await {
            Ok(Ok(claimed)) => claimed,
            Ok(Err(WriteError::Stopped)) | Err(_) => return Err(()),
            Ok(Err(e)) => {
                let reason = e.to_string();
                self.ops
                    .delivery_store_failed(&self.dest.name, now_ms(), &reason);
                if let Some(left_out) = crate::throttle::allow("delivery claim failed") {
                    tracing::error!(destination = %self.dest.name, error = %reason, left_out, "cannot claim deliveries; trying again every second");
                }
                tokio::time::sleep(STORE_RETRY).await;
                return Ok((None, true, None));
            }
        };
        self.ops.delivery_store_ok(&self.dest.name);
        let full = claim.items.len() >= asked;
        let mut unreadable = Vec::new();
        for claimed in claim.items {
            match claimed.into_leased() {
                Ok(item) => buffer.push_back(item),
                Err((id, attempt, reason)) => {
                    unreadable.push(ItemResult::dead(id, attempt, reason))
                }
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
        let limit = if probing {
            1
        } else {
            self.dest.items_per_request(buffer.len())
        };
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

    /// Sleep `for_`, or less if the node starts stopping.
    async fn nap(for_: Duration, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(for_) => {}
            _ = stop.changed() => {}
        }
    }

    pub(super) async fn run(self, mut handoff: HandOffReceiver, mut stop: watch::Receiver<bool>) {
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
            if *stop.borrow() {
                break;
            }
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
                Self::nap(STORED_PAUSE_CHECK, &mut stop).await;
                if *stop.borrow() {
                    break;
                }
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
                Self::nap(
                    Duration::from_millis((until - now).clamp(10, 60_000) as u64),
                    &mut stop,
                )
                .await;
                next_due = Some(until);
                continue;
            }
            if probing && !idle {
                // A request is out; the probe waits for its verdict.
                Self::nap(Duration::from_millis(50), &mut stop).await;
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
                    _ = stop.changed() => {}
                }
                continue;
            }
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = stop.changed() => continue,
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
        // Stopping: nothing new is taken; what this node claimed and has not sent goes back in
        // line at once, for another node (or the next start) instead of waiting out its lease;
        // requests already out finish, and their answers are recorded.
        handoff.set_accepting(false);
        buffer.extend(handoff.take_handed());
        if let Some(in_flight) = claim.take() {
            let _ = self.absorb(in_flight, &mut buffer).await;
        }
        if !buffer.is_empty() {
            let ids: Vec<i64> = buffer.drain(..).map(|item| item.id).collect();
            tracing::info!(destination = %self.dest.name, deliveries = ids.len(), "stopping: claimed deliveries given back unsent");
            self.writer.release(ids, now_ms()).await;
        }
        let answers = request_timeout(&self.dest) + Duration::from_secs(2);
        if tokio::time::timeout(answers, slots.acquire_many(concurrency as u32))
            .await
            .is_err()
        {
            tracing::warn!(destination = %self.dest.name, "stopping: requests still out after their timeout; their leases expire instead");
        }
    }

    /// Record what became of some deliveries (and the request that carried them, if any).
    /// `at_ms` is the instant the outcomes were decided (retry delays count from it).
    pub(super) async fn record(
        &self,
        request: Option<RequestRecord>,
        mut items: Vec<ItemResult>,
        at_ms: i64,
    ) {
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

    pub(super) async fn report_breaker(&self, change: Option<BreakerChange>, now: i64) {
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
}
