//! One worker per destination: claims due deliveries (or takes them straight from the commit),
//! keeps the destination's requests in flight within its concurrency, and respects pauses
//! (the breaker's, an operator's, the fleet's).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};

use super::held::{self, Held, Holds};
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
use crate::store::{ClaimToken, WriteError};

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
    /// Endpoints the platform asked to leave alone for a while (429, spent rate limits).
    pub(super) holds: Arc<Mutex<Holds>>,
}

/// A platform's "wait" up to this long is waited out in the worker, holding what it claimed;
/// a longer one gives the waiting items back to the queue, due when it ends.
const HOLD_IN_WORKER_MS: i64 = 60_000;

impl Worker {
    pub(super) fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        match self.breaker.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(super) fn holds(&self) -> std::sync::MutexGuard<'_, Holds> {
        match self.holds.lock() {
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

    /// A lease: two requests' time out and a margin. A worker holding an item past half of it
    /// renews it, so a lease ends early only for a node that stopped working.
    pub(super) fn lease_ms(&self) -> i64 {
        2 * request_timeout(&self.dest).as_millis() as i64 + 60_000
    }

    /// Start claiming more deliveries, unless a claim is already under way. Runs beside the
    /// requests in flight, so a one-event-per-request destination never stalls on the writer.
    fn claim_ahead(&self, wanted: usize, token: ClaimToken) -> ClaimInFlight {
        let worker = self.clone();
        tokio::spawn(async move {
            let limit = wanted.clamp(1, MAX_CLAIM_PER_JOB);
            let now = now_ms();
            worker
                .writer
                .claim(&worker.dest.name, now, limit, worker.lease_ms(), token)
                .await
                .map(|claim| (claim, limit, now))
        })
    }

    /// An item taken into the worker: its lane, and its lease as of `leased_at_ms`.
    fn held(&self, item: LeasedDelivery, leased_at_ms: i64) -> Held {
        Held {
            lane: self.dest.lane(&item.subject),
            lease_until_ms: leased_at_ms + self.lease_ms(),
            item,
        }
    }

    /// Take a finished claim into the buffer (unreadable rows are recorded as dead). Returns when
    /// the next pending delivery falls due, if known, whether more is waiting, and a pause
    /// recorded in the store; Err only when the writer has stopped (shutting down). A claim the
    /// store failed (the database went away) is reported for readiness and asked again after a
    /// moment with the same token, so what it may have taken before its answer was lost comes
    /// back with it: the worker outlives its database.
    async fn absorb(
        &self,
        claim: ClaimInFlight,
        buffer: &mut VecDeque<Held>,
        token: &mut ClaimToken,
    ) -> Result<(Option<i64>, bool, Option<i64>), ()> {
        let (claim, asked, claimed_at) = match claim.await {
            Ok(Ok(claimed)) => claimed,
            Ok(Err(WriteError::Stopped)) | Err(_) => return Err(()),
            Ok(Err(e)) => {
                let reason = e.to_string();
                self.ops
                    .delivery_store_failed(&self.dest.name, now_ms(), &reason);
                if let Some(left_out) = crate::throttle::allow("delivery claim failed") {
                    tracing::error!(destination = %self.dest.name, error = %reason, left_out, "cannot claim deliveries; trying again every second");
                }
                *token = token.again();
                tokio::time::sleep(STORE_RETRY).await;
                return Ok((None, true, None));
            }
        };
        *token = ClaimToken::fresh();
        self.ops.delivery_store_ok(&self.dest.name);
        let full = claim.items.len() >= asked;
        let mut unreadable = Vec::new();
        for claimed in claim.items {
            match claimed.into_leased() {
                Ok(item) => buffer.push_back(self.held(item, claimed_at)),
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

    /// Sleep `for_`, or less if the node starts stopping.
    async fn nap(for_: Duration, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(for_) => {}
            _ = stop.changed() => {}
        }
    }

    /// Give held items back to the queue unsent, due at `at_ms` (nothing is counted).
    async fn give_back(&self, items: impl IntoIterator<Item = Held>, at_ms: i64) {
        let ids: Vec<i64> = items.into_iter().map(|h| h.item.id).collect();
        if !ids.is_empty() {
            self.writer.release(ids, at_ms).await;
        }
    }

    /// Extend the leases of what the worker has held for more than half a lease.
    async fn renew_leases(&self, buffer: &mut VecDeque<Held>, now: i64) {
        let lease = self.lease_ms();
        let ids = held::renew(buffer, now + lease / 2, now + lease);
        if !ids.is_empty() {
            self.writer.renew(ids, now + lease).await;
        }
    }

    pub(super) async fn run(self, mut handoff: HandOffReceiver, mut stop: watch::Receiver<bool>) {
        let concurrency = self.dest.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut buffer: VecDeque<Held> = VecDeque::new();
        let mut claim: Option<ClaimInFlight> = None;
        let mut token = ClaimToken::fresh();
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
            // A full worker takes no more hand-offs: what it holds stays bounded, and the rest
            // waits in the queue for a claim.
            let full = buffer.len() >= self.claim_size();
            handoff.set_accepting(!paused && !probing && !held && !full);
            for item in handoff.take_handed() {
                buffer.push_back(self.held(item, now));
            }
            if held {
                if let Some(in_flight) = claim.take() {
                    // Its items join the buffer and go back in line below.
                    if self
                        .absorb(in_flight, &mut buffer, &mut token)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // Back in line, unsent: claims give nothing while the pause lasts.
                self.give_back(buffer.drain(..), now).await;
                Self::nap(STORED_PAUSE_CHECK, &mut stop).await;
                if *stop.borrow() {
                    break;
                }
                // Look again: resumed, or still paused.
                last_claim_ms = now_ms();
                let look = self.claim_ahead(1, token);
                let Ok(found) = self.absorb(look, &mut buffer, &mut token).await else {
                    return;
                };
                (next_due, more_waiting, stored_pause) = found;
                continue;
            }
            let idle = slots.available_permits() == concurrency;
            if paused || (probing && !idle) {
                if let Some(in_flight) = claim.take() {
                    let Ok(found) = self.absorb(in_flight, &mut buffer, &mut token).await else {
                        return;
                    };
                    (next_due, more_waiting, stored_pause) = found;
                }
            }
            if paused {
                let until = self.breaker().paused_until_ms().unwrap_or(now);
                // What was claimed goes back in line for after the pause, so its lease does not
                // run out while it waits here.
                self.give_back(buffer.drain(..), until).await;
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
                    let Ok(found) = self.absorb(done, &mut buffer, &mut token).await else {
                        return;
                    };
                    (next_due, more_waiting, stored_pause) = found;
                }
            }
            self.renew_leases(&mut buffer, now).await;
            let wanted = if probing { 1 } else { self.claim_size() };
            let pause_check_due = now - last_claim_ms >= STORED_PAUSE_CHECK.as_millis() as i64;
            let worth_claiming = handoff.take_left_pending()
                || more_waiting
                || probing
                || next_due.is_some_and(|due| due <= now);
            let room = buffer.len() < wanted.div_ceil(2) && worth_claiming;
            if claim.is_none() && (room || pause_check_due) {
                last_claim_ms = now;
                claim = Some(self.claim_ahead(wanted.saturating_sub(buffer.len()).max(1), token));
            }
            if buffer.is_empty() {
                if let Some(in_flight) = claim.take() {
                    let Ok(found) = self.absorb(in_flight, &mut buffer, &mut token).await else {
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
                    handed = handoff.recv_handed() => {
                        let now = now_ms();
                        for item in handed {
                            buffer.push_back(self.held(item, now));
                        }
                    }
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
            let now = now_ms();
            let limit = self.dest.items_per_request(buffer.len());
            let taken = held::take_request(&mut buffer, limit, probing, &self.holds(), now);
            if taken.is_empty() {
                // Everything held waits for an endpoint the platform asked to leave alone.
                drop(permit);
                let free = self.holds().next_free_ms(now).unwrap_or(now + 50);
                if free - now > HOLD_IN_WORKER_MS {
                    self.give_back(buffer.drain(..), free).await;
                }
                let wait = (free - now).clamp(5, IDLE_POLL.as_millis() as i64) as u64;
                Self::nap(Duration::from_millis(wait), &mut stop).await;
                continue;
            }
            let worker = self.clone();
            if let Settings::Warehouse(_) = &self.dest.settings {
                let sink = sink.clone();
                let items = taken.into_iter().map(|h| h.item).collect();
                tokio::spawn(async move {
                    worker.deliver_to_warehouse(items, sink).await;
                    drop(permit);
                });
                continue;
            }
            let (prepared, deferred) = self.prepare(taken, now);
            // What did not fit waits at the front of the line, in the worker: no row for it.
            for item in deferred.into_iter().rev() {
                buffer.push_front(item);
            }
            tokio::spawn(async move {
                worker.deliver(prepared).await;
                drop(permit);
            });
        }
        // Stopping: nothing new is taken; what this node claimed and has not sent goes back in
        // line at once, for another node (or the next start) instead of waiting out its lease;
        // requests already out finish, and their answers are recorded.
        handoff.set_accepting(false);
        let now = now_ms();
        for item in handoff.take_handed() {
            buffer.push_back(self.held(item, now));
        }
        if let Some(in_flight) = claim.take() {
            let _ = self.absorb(in_flight, &mut buffer, &mut token).await;
        }
        if !buffer.is_empty() {
            tracing::info!(destination = %self.dest.name, deliveries = buffer.len(), "stopping: claimed deliveries given back unsent");
            self.give_back(buffer.drain(..), now_ms()).await;
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
