//! The delivery queue's records, the same for every store: what a claim hands a worker, what a
//! worker reports back.

use std::sync::Arc;

use serde::Serialize;

use crate::destinations::{ProfileSnapshot, Subject};
use crate::pipeline::CanonicalEvent;
use crate::store::codec::Packed;
use crate::store::handoff::LeasedDelivery;

/// One HTTP request as sent (credentials redacted) and what came back. The texts are compressed
/// by the worker that sent the request, not by the single writer.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub started_at_ms: i64,
    pub latency_ms: Option<i64>,
    pub item_count: usize,
    pub url: Option<String>,
    pub headers: Option<Packed>,
    pub body: Option<Packed>,
    pub status_code: Option<u16>,
    pub response_body: Option<Packed>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    Retry,
    Dead,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ItemResult {
    pub delivery_id: i64,
    pub attempt: i64,
    pub outcome: AttemptOutcome,
    pub reason: Option<String>,
    pub next_attempt_ms: Option<i64>,
    /// Send it alone next time (its batch failed as a whole).
    pub solo: bool,
    /// This failure does not count toward the retry schedule (e.g. batch bisection).
    pub free_retry: bool,
}

impl ItemResult {
    fn of(delivery_id: i64, attempt: i64, outcome: AttemptOutcome, reason: Option<String>) -> Self {
        ItemResult {
            delivery_id,
            attempt,
            outcome,
            reason,
            next_attempt_ms: None,
            solo: false,
            free_retry: false,
        }
    }

    /// The platform took it (`note`: what it said, when worth keeping).
    pub fn delivered(item: &LeasedDelivery, note: Option<String>) -> Self {
        Self::of(item.id, item.attempt, AttemptOutcome::Delivered, note)
    }

    /// It will never succeed as sent: dead now, with why.
    pub fn dead(delivery_id: i64, attempt: i64, reason: String) -> Self {
        Self::of(delivery_id, attempt, AttemptOutcome::Dead, Some(reason))
    }

    /// Try again at `at_ms`, counting a failure toward the retry schedule.
    pub fn retry(item: &LeasedDelivery, reason: String, at_ms: i64) -> Self {
        ItemResult {
            next_attempt_ms: Some(at_ms),
            ..Self::of(item.id, item.attempt, AttemptOutcome::Retry, Some(reason))
        }
    }

    /// Send it again at `at_ms` without counting a failure (it did not fit a request, or a
    /// request was refused for another item); `solo` sends it alone next time.
    pub fn again(item: &LeasedDelivery, reason: String, at_ms: i64, solo: bool) -> Self {
        ItemResult {
            solo,
            free_retry: true,
            ..Self::retry(item, reason, at_ms)
        }
    }
}

/// What an outcome makes of its delivery row: the one rule every store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange<'a> {
    /// `delivered`, `pending` (sent again at `next_attempt_ms`) or `dead`.
    pub status: &'static str,
    /// Added to the row's failures: the retry schedule counts these, not attempts (a batch
    /// split to find a bad item, or an item that did not fit, is no failure of its own).
    pub failures_added: i32,
    /// Kept on the row for diagnostics; a delivery that went through clears the last error.
    pub error: Option<&'a str>,
}

impl ItemResult {
    pub fn status_change(&self) -> StatusChange<'_> {
        let (status, failures_added) = match self.outcome {
            AttemptOutcome::Delivered => ("delivered", 0),
            AttemptOutcome::Retry => ("pending", i32::from(!self.free_retry)),
            AttemptOutcome::Dead => ("dead", 1),
        };
        let error = match self.outcome {
            AttemptOutcome::Delivered => None,
            _ => self.reason.as_deref(),
        };
        StatusChange {
            status,
            failures_added,
            error,
        }
    }
}

/// What a worker reports after a request (or after refusing items without sending).
#[derive(Debug, Clone)]
pub struct Completion {
    pub destination: String,
    pub request: RequestRef,
    pub items: Vec<ItemResult>,
    pub at_ms: i64,
}

/// The request that carried a completion's items.
#[derive(Debug, Clone)]
pub enum RequestRef {
    /// Nothing was sent (refused while building, or an unreadable row).
    None,
    /// Record it with the outcomes.
    New(RequestRecord),
    /// Recorded already (the outcomes of a large request are recorded in pieces).
    Recorded { row: i64, status_code: Option<u16> },
}

/// A claimed delivery as stored. Parsing its subject (the canonical event's JSON) is left to the
/// worker, off the single writer thread.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub event_id: String,
    /// This attempt's number (1 for the first).
    pub attempt: i64,
    /// Failed attempts since the last re-queue (the retry schedule step).
    pub failures: i64,
    pub event_time_ms: i64,
    /// Send alone: a batch it was in was refused whole.
    pub solo: bool,
    pub stored: StoredSubject,
}

impl ClaimedDelivery {
    /// Parse the stored subject. An unreadable one is a permanent failure of this delivery,
    /// with the reason, never a silent skip (it would be claimed again forever).
    pub fn into_leased(self) -> Result<LeasedDelivery, (i64, i64, String)> {
        let ClaimedDelivery {
            id,
            event_id,
            attempt,
            failures,
            event_time_ms,
            solo,
            stored,
        } = self;
        let subject = match stored {
            StoredSubject::Event {
                canonical: Some(text),
                destination_event,
                consent_source,
            } => serde_json::from_str::<CanonicalEvent>(&text)
                .map(|event| Subject::Event {
                    event: Arc::new(event),
                    destination_event,
                    consent_source,
                })
                .map_err(|e| format!("the stored canonical event cannot be read: {e}")),
            StoredSubject::Event {
                canonical: None, ..
            } => Err("the canonical event was deleted (retention) before it was sent".to_string()),
            StoredSubject::Profile {
                snapshot: Some(text),
            } => serde_json::from_str::<ProfileSnapshot>(&text)
                .map(Subject::Profile)
                .map_err(|e| format!("the stored profile snapshot cannot be read: {e}")),
            StoredSubject::Profile { snapshot: None } => {
                Err("the delivery has no profile snapshot".to_string())
            }
        };
        match subject {
            Ok(subject) => Ok(LeasedDelivery {
                id,
                event_id,
                attempt,
                failures,
                event_time_ms,
                solo,
                subject,
            }),
            Err(reason) => Err((id, attempt, reason)),
        }
    }
}

#[derive(Debug, Clone)]
pub enum StoredSubject {
    Event {
        /// The canonical event as stored (JSON), or None when its event row is gone.
        canonical: Option<String>,
        destination_event: String,
        consent_source: String,
    },
    Profile {
        snapshot: Option<String>,
    },
}

/// What one claim returned.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    pub items: Vec<ClaimedDelivery>,
    /// When the next pending delivery of this destination falls due, if any.
    pub next_due_ms: Option<i64>,
    /// A pause recorded in the store (an operator's, or the fleet's breaker): nothing is
    /// claimed, and the worker stops taking hand-offs until it ends.
    pub paused_until_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(outcome: AttemptOutcome, reason: Option<&str>, free_retry: bool) -> ItemResult {
        ItemResult {
            free_retry,
            ..ItemResult::of(7, 3, outcome, reason.map(str::to_string))
        }
    }

    #[test]
    fn each_outcome_changes_its_row_once_the_same_way() {
        let delivered = outcome(AttemptOutcome::Delivered, Some("events_received 1"), false);
        assert_eq!(
            delivered.status_change(),
            StatusChange {
                status: "delivered",
                failures_added: 0,
                error: None
            }
        );
        let retry = outcome(AttemptOutcome::Retry, Some("HTTP 503"), false);
        assert_eq!(
            retry.status_change(),
            StatusChange {
                status: "pending",
                failures_added: 1,
                error: Some("HTTP 503")
            }
        );
        // Bisection and items that did not fit are sent again without counting a failure.
        let again = outcome(AttemptOutcome::Retry, Some("batch refused"), true);
        assert_eq!(again.status_change().failures_added, 0);
        assert_eq!(again.status_change().status, "pending");
        let dead = ItemResult::dead(7, 3, "HTTP 400 invalid".into());
        assert_eq!(
            dead.status_change(),
            StatusChange {
                status: "dead",
                failures_added: 1,
                error: Some("HTTP 400 invalid")
            }
        );
    }
}
