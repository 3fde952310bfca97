//! One request's life: build it (pure), send it, classify the answer (pure), and turn each
//! item's outcome into what the queue records.

use std::time::Duration;

use super::held::Held;
use super::worker::Worker;
use super::{now_ms, policy, random_u64, sender};
use crate::destinations::{self, Outcome, Subject};
use crate::store::delivery::ItemResult;
use crate::store::LeasedDelivery;

impl Worker {
    /// The verdict for an item that failed: retry on schedule, or give up.
    pub(super) fn retry_or_dead(
        &self,
        item: &LeasedDelivery,
        reason: String,
        after: Option<Duration>,
        now: i64,
    ) -> ItemResult {
        let failures = item.failures + 1;
        match policy::next_delay(&self.dest.retry_schedule, failures, after, random_u64()) {
            Some(delay) => ItemResult::retry(item, reason, now + delay.as_millis() as i64),
            None => ItemResult::dead(
                item.id,
                item.attempt,
                format!(
                    "gave up after {failures} failed attempts (retry_schedule exhausted); last: {reason}"
                ),
            ),
        }
    }

    /// The next request, built from items of one lane (pure: nothing is sent or written).
    /// Items too old for the platform and items it can never take are settled here; what does
    /// not fit this request (a size limit, a second row for one order) comes back to wait in
    /// the worker for the next one.
    pub(super) fn prepare(&self, taken: Vec<Held>, now: i64) -> (Prepared, Vec<Held>) {
        let endpoint = taken.first().map_or("", |h| h.lane.endpoint);
        let mut held: Vec<Option<Held>> = taken.into_iter().map(Some).collect();
        let mut settled = Vec::new();
        let mut candidates: Vec<usize> = Vec::with_capacity(held.len());
        for (index, slot) in held.iter_mut().enumerate() {
            let Some(h) = slot.as_ref() else { continue };
            match self.expired(&h.item, now) {
                Some(reason) => {
                    settled.push(ItemResult::dead(h.item.id, h.item.attempt, reason));
                    *slot = None;
                }
                None => candidates.push(index),
            }
        }
        let mut built = self.build(&held, &candidates, now);
        if built.request.is_none() && built.rejected.is_empty() && candidates.len() > 1 {
            // Nothing of them could share a request: the first goes alone.
            candidates.truncate(1);
            built = self.build(&held, &candidates, now);
        }
        for (at, reason) in &built.rejected {
            if let Some(h) = held[candidates[*at]].take() {
                settled.push(ItemResult::dead(
                    h.item.id,
                    h.item.attempt,
                    format!("not sent: {reason}"),
                ));
            }
        }
        let included: Vec<LeasedDelivery> = built
            .included
            .iter()
            .filter_map(|at| held[candidates[*at]].take().map(|h| h.item))
            .collect();
        if built.request.is_none() && !included.is_empty() {
            unreachable!("a destination's build includes items only in a request");
        }
        let deferred: Vec<Held> = held.into_iter().flatten().collect();
        (
            Prepared {
                request: built.request,
                included,
                settled,
                endpoint,
                started_ms: now,
            },
            deferred,
        )
    }

    fn build(&self, held: &[Option<Held>], candidates: &[usize], now: i64) -> destinations::Built {
        let subjects: Vec<Subject> = candidates
            .iter()
            .filter_map(|i| held[*i].as_ref().map(|h| h.item.subject.clone()))
            .collect();
        destinations::build(&self.dest, &subjects, now / 1000)
    }

    /// Why an item is too old for the platform, if it is (it dead-letters before anything is
    /// sent).
    fn expired(&self, item: &LeasedDelivery, now: i64) -> Option<String> {
        let max_age = self.dest.max_age?;
        let age_ms = now - item.event_time_ms;
        (age_ms > max_age.as_millis() as i64).then(|| {
            format!(
                "the event is {} old; {} accepts events up to {} old",
                age_words(age_ms / 1000),
                self.dest.kind.as_str(),
                age_words(max_age.as_secs() as i64)
            )
        })
    }

    /// Send a prepared request, classify the answer and record every item's outcome: one
    /// attempt row per item the request carried (or that was settled without one).
    pub(super) async fn deliver(&self, prepared: Prepared) {
        let Prepared {
            request,
            included,
            mut settled,
            endpoint,
            started_ms,
        } = prepared;
        let Some(mut request) = request else {
            self.record(None, settled, started_ms).await;
            return;
        };
        let token = match self.authorize(&mut request).await {
            Ok(token) => token,
            Err(e) => {
                // Nothing went out: each item waits for the next attempt, or dies when only
                // the operator can fix the credentials.
                let now = now_ms();
                settled.extend(included.iter().map(|item| {
                    if e.permanent {
                        ItemResult::dead(item.id, item.attempt, e.reason.clone())
                    } else {
                        self.retry_or_dead(item, e.reason.clone(), None, now)
                    }
                }));
                let change = self.breaker().record(false, now);
                self.report_breaker(change, now).await;
                self.record(None, settled, now).await;
                return;
            }
        };
        let (response, record) = sender::send(
            &self.client,
            &self.dest,
            &request,
            included.len(),
            started_ms,
        )
        .await;
        let now = now_ms();
        if let Some(wait) = response.as_ref().ok().and_then(|r| r.asks_to_wait()) {
            // The rest of this endpoint's items wait in the worker instead of meeting the same
            // answer, one attempt each.
            self.holds().hold(endpoint, now + wait.as_millis() as i64);
        }
        let included: Vec<&LeasedDelivery> = included.iter().collect();
        let outcomes = match (&response, &token) {
            // A token TrackLayer exchanged for and the platform refused (revoked early, or
            // the clocks disagree): the next attempt exchanges for a new one.
            (Ok(resp), Some(token)) if resp.status == 401 => {
                if let Some(tokens) = &self.tokens {
                    tokens.refused(token).await;
                }
                vec![
                    Outcome::retry(format!(
                        "{} refused the access token (HTTP 401); the next attempt uses a new one",
                        self.dest.kind.as_str()
                    ));
                    included.len()
                ]
            }
            (Ok(resp), _) => destinations::classify(&self.dest, included.len(), resp),
            (Err(reason), _) => vec![Outcome::retry(reason.clone()); included.len()],
        };
        let request_ok = response.is_ok()
            && !outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Retry { .. } | Outcome::Resend { .. }));
        let decided = verdicts(self, &included, outcomes, now);
        self.observe_match_quality(&included, &decided, now);
        settled.extend(decided);
        let change = self.breaker().record(request_ok, now);
        self.report_breaker(change, now).await;
        self.record(Some(record), settled, now).await;
    }
}

/// A request ready to go, and what was settled while building it.
pub(super) struct Prepared {
    pub request: Option<destinations::HttpRequest>,
    /// The items the request carries, in its order.
    pub included: Vec<LeasedDelivery>,
    pub settled: Vec<ItemResult>,
    /// The lane's endpoint, which a platform's "wait" holds back.
    pub endpoint: &'static str,
    pub started_ms: i64,
}

impl Worker {
    /// Add the access token of a destination that refreshes its own (None for the others).
    async fn authorize(
        &self,
        request: &mut destinations::HttpRequest,
    ) -> Result<Option<String>, destinations::google::oauth::TokenError> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let token = tokens.bearer(&self.client, &self.dest).await?;
        request
            .headers
            .push(("Authorization".into(), format!("Bearer {token}")));
        Ok(Some(token))
    }

    /// The match quality of each event the platform took (the metric and the alert's signal).
    fn observe_match_quality(
        &self,
        included: &[&LeasedDelivery],
        decided: &[ItemResult],
        at_ms: i64,
    ) {
        let kind = self.dest.kind.as_str();
        for (item, result) in included.iter().zip(decided) {
            if result.outcome != crate::store::model::delivery::AttemptOutcome::Delivered {
                continue;
            }
            if let Subject::Event { event, .. } = &item.subject {
                if let Some(q) = crate::destinations::match_quality::score(kind, event) {
                    self.ops.match_quality(&self.dest.name, at_ms, q.score);
                }
            }
        }
    }
}

/// Each included item's outcome as the queue records it.
fn verdicts(
    worker: &Worker,
    included: &[&LeasedDelivery],
    outcomes: Vec<Outcome>,
    now: i64,
) -> Vec<ItemResult> {
    // A batch refused whole for one bad event that the platform does not name (Meta, TikTok):
    // send each alone next, so the good ones go through and the bad one is named.
    let whole_batch_refused = included.len() > 1
        && outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Permanent { .. }))
        && outcomes.windows(2).all(|w| w[0] == w[1]);
    included
        .iter()
        .zip(outcomes)
        .map(|(item, outcome)| match outcome {
            Outcome::Delivered { note } => ItemResult::delivered(item, note),
            Outcome::Retry { reason, after } => worker.retry_or_dead(item, reason, after, now),
            Outcome::Resend { reason } => ItemResult::again(item, reason, now, false),
            Outcome::Permanent { reason } if whole_batch_refused => ItemResult::again(
                item,
                format!("{reason} (the whole batch was refused; resending each event alone)"),
                now,
                true,
            ),
            Outcome::Permanent { reason } | Outcome::Misconfigured { reason } => {
                ItemResult::dead(item.id, item.attempt, reason)
            }
        })
        .collect()
}

/// `3 days`, `71 hours`, `40 minutes`: an age in the unit a reader would use.
fn age_words(secs: i64) -> String {
    match secs {
        s if s >= 3 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 3 * 3600 => format!("{} hours", s / 3600),
        s => format!("{} minutes", s / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::age_words;

    #[test]
    fn ages_read_in_a_sensible_unit() {
        assert_eq!(age_words(8 * 86_400 + 5), "8 days");
        assert_eq!(age_words(72 * 3600), "3 days");
        assert_eq!(age_words(73 * 3600 - 1), "3 days");
        assert_eq!(age_words(71 * 3600), "71 hours");
        assert_eq!(age_words(40 * 60), "40 minutes");
    }
}
