//! One request's life: build it (pure), send it, classify the answer (pure), and turn each
//! item's outcome into what the queue records.

use std::time::Duration;

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
            let age_ms = now - item.event_time_ms;
            if age_ms > max_age.as_millis() as i64 {
                expired.push(ItemResult::dead(
                    item.id,
                    item.attempt,
                    format!(
                        "the event is {} old; {} accepts events up to {} old",
                        age_words(age_ms / 1000),
                        self.dest.kind.as_str(),
                        age_words(max_age.as_secs() as i64)
                    ),
                ));
            } else {
                fresh.push(item);
            }
        }
        (fresh, expired)
    }

    pub(super) async fn deliver(&self, items: Vec<LeasedDelivery>) {
        let started = now_ms();
        let (items, mut results) = self.split_expired(items, started);
        let subjects: Vec<Subject> = items.iter().map(|i| i.subject.clone()).collect();
        let built = destinations::build(&self.dest, &subjects, started / 1000);
        for (index, reason) in &built.rejected {
            let item = &items[*index];
            results.push(ItemResult::dead(
                item.id,
                item.attempt,
                format!("not sent: {reason}"),
            ));
        }
        // Items that did not fit this request go back at once, without counting as a failure.
        for index in &built.deferred {
            results.push(ItemResult::again(
                &items[*index],
                "did not fit this request; sent in the next one".into(),
                started,
                false,
            ));
        }
        let mut record = None;
        let mut decided_at = started;
        if let Some(mut request) = built.request {
            let included: Vec<&LeasedDelivery> =
                built.included.iter().map(|i| &items[*i]).collect();
            let token = match self.authorize(&mut request).await {
                Ok(token) => token,
                Err(e) => {
                    // Nothing went out: each item waits for the next attempt, or dies when only
                    // the operator can fix the credentials.
                    let now = now_ms();
                    results.extend(included.iter().map(|item| {
                        if e.permanent {
                            ItemResult::dead(item.id, item.attempt, e.reason.clone())
                        } else {
                            self.retry_or_dead(item, e.reason.clone(), None, now)
                        }
                    }));
                    let change = self.breaker().record(false, now);
                    self.report_breaker(change, now).await;
                    self.record(None, results, now).await;
                    return;
                }
            };
            let (response, rec) =
                sender::send(&self.client, &self.dest, &request, included.len(), started).await;
            record = Some(rec);
            let now = now_ms();
            decided_at = now;
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
            results.extend(decided);
            let change = self.breaker().record(request_ok, now);
            self.report_breaker(change, now).await;
        }
        self.record(record, results, decided_at).await;
    }
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
