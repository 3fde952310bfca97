//! What the destinations pane reads of each destination: queue, request windows, failures,
//! identifier coverage, match quality and the last hour per minute, and the pure functions
//! that summarise them from a store's rows.

use serde::Serialize;

use super::trace::DestinationPause;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowStats {
    pub requests: i64,
    pub succeeded: i64,
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

impl WindowStats {
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.succeeded as f64 / self.requests as f64)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Coverage {
    pub events: i64,
    pub email: i64,
    pub phone: i64,
    pub external_id: i64,
    pub ip_and_user_agent: i64,
    pub click_ids: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DestinationStats {
    pub destination: String,
    pub delivered: i64,
    pub retrying: i64,
    pub in_flight: i64,
    pub dead: i64,
    pub blocked_consent: i64,
    pub paused: Option<DestinationPause>,
    pub last_5m: WindowStats,
    pub last_1h: WindowStats,
    pub last_error: Option<(i64, String)>,
    /// The fleet node whose attempt failed last (`None` on SQLite).
    pub last_error_node: Option<String>,
    /// Deliveries held right now, by the node holding the lease (fleet only).
    pub in_flight_by_node: Vec<(String, i64)>,
    /// Recent failure reasons, grouped, most frequent first.
    pub error_kinds: Vec<(String, i64)>,
    pub coverage: Coverage,
    /// Match quality of its recent deliveries (events only), and what they lacked most.
    pub match_quality: MatchSummary,
    /// Attempts of the last hour per minute, oldest first: delivered, retried, dead.
    pub per_minute: MinuteCounts,
}

/// A destination's match quality over its recent deliveries: averages over 5 minutes and an
/// hour, and the identifier its events lacked most often.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MatchSummary {
    sum_5m: f64,
    pub events_5m: usize,
    sum_1h: f64,
    pub events_1h: usize,
    missing: std::collections::BTreeMap<&'static str, usize>,
}

impl MatchSummary {
    /// Count one delivery of a `kind` destination created at `created_at_ms`, of the event in
    /// `canonical_json`. Kinds that match no person are not counted.
    pub fn add(&mut self, kind: &str, created_at_ms: i64, canonical_json: &str, now_ms: i64) {
        if created_at_ms < now_ms - 3_600_000 {
            return;
        }
        let Ok(event) = serde_json::from_str::<crate::pipeline::CanonicalEvent>(canonical_json)
        else {
            return;
        };
        let Some(q) = crate::destinations::match_quality::score(kind, &event) else {
            return;
        };
        self.sum_1h += q.score;
        self.events_1h += 1;
        if created_at_ms >= now_ms - 5 * 60_000 {
            self.sum_5m += q.score;
            self.events_5m += 1;
        }
        if let Some(first) = q.missing.first() {
            *self.missing.entry(first).or_default() += 1;
        }
    }

    pub fn average_5m(&self) -> Option<f64> {
        (self.events_5m > 0).then(|| self.sum_5m / self.events_5m as f64)
    }

    pub fn average_1h(&self) -> Option<f64> {
        (self.events_1h > 0).then(|| self.sum_1h / self.events_1h as f64)
    }

    /// The identifier most often the heaviest one missing, and in how many of the hour's events.
    pub fn most_missing(&self) -> Option<(&'static str, usize)> {
        self.missing
            .iter()
            .max_by_key(|(name, n)| (**n, std::cmp::Reverse(**name)))
            .map(|(name, n)| (*name, *n))
    }
}

/// Attempt outcomes per minute over the last hour (index 59 is the current minute).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteCounts {
    pub delivered: Vec<u64>,
    pub retried: Vec<u64>,
    pub dead: Vec<u64>,
}

impl Default for MinuteCounts {
    fn default() -> Self {
        MinuteCounts {
            delivered: vec![0; MINUTES],
            retried: vec![0; MINUTES],
            dead: vec![0; MINUTES],
        }
    }
}

/// Minutes the chart covers.
pub const MINUTES: usize = 60;

impl MinuteCounts {
    /// The first instant the chart covers, for the minute `now_ms` is in (the last bucket).
    pub fn start_ms(now_ms: i64) -> i64 {
        (now_ms - now_ms.rem_euclid(60_000)) - (MINUTES as i64 - 1) * 60_000
    }

    pub fn total(&self) -> (u64, u64, u64) {
        (
            self.delivered.iter().sum(),
            self.retried.iter().sum(),
            self.dead.iter().sum(),
        )
    }
}

impl DestinationStats {
    pub fn queue_depth(&self) -> i64 {
        self.retrying + self.in_flight
    }

    /// One word for its health, worst first, so "paused" or "failing" is read before any
    /// percentage: `paused`, `failing` (most requests of the last 5 minutes failed), `dead`
    /// (deliveries dead-lettered in the last hour, as the dead_letters alert counts them),
    /// `retry` (deliveries waiting for another try), `ok`, or `idle` (nothing sent in the
    /// last hour).
    pub fn health(&self) -> &'static str {
        if self.paused.is_some() {
            "paused"
        } else if self.last_5m.success_rate().is_some_and(|r| r < 0.5) {
            "failing"
        } else if self.per_minute.total().2 > 0 {
            "dead"
        } else if self.retrying > 0 {
            "retry"
        } else if self.last_1h.requests == 0 && self.queue_depth() == 0 {
            "idle"
        } else {
            "ok"
        }
    }
}

/// Upper bounds (ms) of the latency buckets a minute keeps; the last bucket is open.
pub const LATENCY_BOUNDS_MS: [i64; 7] = [10, 50, 100, 250, 500, 1_000, 5_000];
/// Buckets a minute keeps: one per bound, and one past the last.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The start of the minute `at_ms` falls in.
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(60_000)
}

fn latency_bucket(ms: i64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|bound| ms <= *bound)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// What one minute of a destination adds up to: requests sent (and how many succeeded, with
/// their latencies by bucket) and the outcome of every delivery attempt. The writer adds to it
/// as outcomes are recorded, so the dashboard's windows are time, however much traffic fell in
/// them: an outage 50 minutes ago is in the last hour whatever came after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinuteTally {
    pub minute_ms: i64,
    pub requests: i64,
    pub succeeded: i64,
    pub latency: [i64; LATENCY_BUCKETS],
    pub delivered: i64,
    pub retried: i64,
    pub dead: i64,
}

impl MinuteTally {
    /// One request, in the minute it was sent.
    pub fn request(started_at_ms: i64, latency_ms: Option<i64>, succeeded: bool) -> MinuteTally {
        let mut latency = [0; LATENCY_BUCKETS];
        if let Some(ms) = latency_ms {
            latency[latency_bucket(ms)] = 1;
        }
        MinuteTally {
            minute_ms: minute_of(started_at_ms),
            requests: 1,
            succeeded: i64::from(succeeded),
            latency,
            ..MinuteTally::default()
        }
    }

    /// The outcomes of one completion's attempts, in the minute they were decided.
    pub fn outcomes<'a>(
        at_ms: i64,
        outcomes: impl IntoIterator<Item = &'a super::delivery::AttemptOutcome>,
    ) -> MinuteTally {
        use super::delivery::AttemptOutcome;
        let mut tally = MinuteTally {
            minute_ms: minute_of(at_ms),
            ..MinuteTally::default()
        };
        for outcome in outcomes {
            match outcome {
                AttemptOutcome::Delivered => tally.delivered += 1,
                AttemptOutcome::Retry => tally.retried += 1,
                AttemptOutcome::Dead => tally.dead += 1,
            }
        }
        tally
    }
}

/// A failure's kind (for grouping) and reason, in the minute it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteError {
    pub minute_ms: i64,
    pub kind: String,
    /// Attempts of this kind in the completion.
    pub count: i64,
    pub at_ms: i64,
    pub reason: String,
}

impl MinuteError {
    /// The failures of one completion: each attempt that did not deliver, grouped by kind
    /// (the last reason of each kind kept).
    pub fn of_completion(completion: &super::delivery::Completion) -> Vec<MinuteError> {
        let mut out: Vec<MinuteError> = Vec::new();
        for item in &completion.items {
            if item.outcome == super::delivery::AttemptOutcome::Delivered {
                continue;
            }
            let reason = item.reason.clone().unwrap_or_default();
            let kind = error_kind(&reason);
            match out.iter_mut().find(|e| e.kind == kind) {
                Some(seen) => {
                    seen.reason = reason;
                    seen.count += 1;
                }
                None => out.push(MinuteError {
                    minute_ms: minute_of(completion.at_ms),
                    kind,
                    count: 1,
                    at_ms: completion.at_ms,
                    reason,
                }),
            }
        }
        out
    }
}

/// What a writer group adds to the destinations' minutes, gathered before it is written: one
/// upsert per destination and minute instead of one per outcome, and written in key order, so
/// two fleet writers adding to the same minutes never wait on each other in a circle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinuteRollup {
    pub tallies: std::collections::BTreeMap<(String, i64), MinuteTally>,
    /// (destination, minute, kind) → the kind's count, its last failure's time and reason.
    pub errors: std::collections::BTreeMap<(String, i64, String), (i64, i64, String)>,
}

impl MinuteRollup {
    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty() && self.errors.is_empty()
    }

    fn add(&mut self, destination: &str, t: MinuteTally) {
        let sum = self
            .tallies
            .entry((destination.to_string(), t.minute_ms))
            .or_insert_with(|| MinuteTally {
                minute_ms: t.minute_ms,
                ..MinuteTally::default()
            });
        sum.requests += t.requests;
        sum.succeeded += t.succeeded;
        for (s, n) in sum.latency.iter_mut().zip(t.latency) {
            *s += n;
        }
        sum.delivered += t.delivered;
        sum.retried += t.retried;
        sum.dead += t.dead;
    }

    /// A request sent.
    pub fn add_request(&mut self, destination: &str, r: &super::delivery::RequestRecord) {
        self.add(
            destination,
            MinuteTally::request(
                r.started_at_ms,
                r.latency_ms,
                request_succeeded(r.status_code.map(i64::from), r.error.as_deref()),
            ),
        );
    }

    /// A completion's outcomes and failures (its request, when it brings a new one).
    pub fn add_completion(&mut self, c: &super::delivery::Completion) {
        if let super::delivery::RequestRef::New(r) = &c.request {
            self.add_request(&c.destination, r);
        }
        if c.items.is_empty() {
            return;
        }
        self.add(
            &c.destination,
            MinuteTally::outcomes(c.at_ms, c.items.iter().map(|i| &i.outcome)),
        );
        for e in MinuteError::of_completion(c) {
            let slot = self
                .errors
                .entry((c.destination.clone(), e.minute_ms, e.kind))
                .or_insert((0, e.at_ms, String::new()));
            slot.0 += e.count;
            if e.at_ms >= slot.1 {
                slot.1 = e.at_ms;
                slot.2 = e.reason;
            }
        }
    }
}

/// The windows, chart and error kinds of a destination from its minutes (of the last hour)
/// and the failures of its last hour (kind, count, last at, last reason).
pub fn summarise_minutes(
    stats: &mut DestinationStats,
    minutes: &[MinuteTally],
    errors: &[(String, i64, i64, String)],
    now_ms: i64,
) {
    let now_minute = minute_of(now_ms);
    let window_of = |span: i64| {
        let since = now_minute - (span - 1) * 60_000;
        let mut w = WindowStats::default();
        let mut latency = [0i64; LATENCY_BUCKETS];
        for m in minutes
            .iter()
            .filter(|m| m.minute_ms >= since && m.minute_ms <= now_minute)
        {
            w.requests += m.requests;
            w.succeeded += m.succeeded;
            for (sum, n) in latency.iter_mut().zip(m.latency) {
                *sum += n;
            }
        }
        w.p50_ms = bucket_percentile(&latency, 0.5);
        w.p95_ms = bucket_percentile(&latency, 0.95);
        w
    };
    stats.last_5m = window_of(5);
    stats.last_1h = window_of(MINUTES as i64);
    let start = MinuteCounts::start_ms(now_ms);
    let mut per_minute = MinuteCounts::default();
    for m in minutes {
        let Ok(i) = usize::try_from((m.minute_ms - start) / 60_000) else {
            continue;
        };
        if m.minute_ms < start || i >= MINUTES {
            continue;
        }
        per_minute.delivered[i] += m.delivered.max(0) as u64;
        per_minute.retried[i] += m.retried.max(0) as u64;
        per_minute.dead[i] += m.dead.max(0) as u64;
    }
    stats.per_minute = per_minute;
    let mut kinds: Vec<(String, i64)> = errors.iter().map(|(k, n, _, _)| (k.clone(), *n)).collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    kinds.truncate(5);
    stats.error_kinds = kinds;
    if let Some((_, _, at, reason)) = errors.iter().max_by_key(|(_, _, at, _)| *at) {
        if stats
            .last_error
            .as_ref()
            .is_none_or(|(seen, _)| *at >= *seen)
        {
            stats.last_error = Some((*at, reason.clone()));
        }
    }
}

/// A latency percentile from bucket counts: the upper bound of the bucket it falls in (the
/// open last bucket reads as its lower bound).
fn bucket_percentile(buckets: &[i64; LATENCY_BUCKETS], p: f64) -> Option<i64> {
    let total: i64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * p).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(
                LATENCY_BOUNDS_MS
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1]),
            );
        }
    }
    None
}

/// Whether a stored request succeeded: no transport error and a 2xx (or no status at all).
pub fn request_succeeded(status: Option<i64>, error: Option<&str>) -> bool {
    error.is_none() && status.is_none_or(|c| (200..300).contains(&c))
}

/// The kind of a failure reason, for grouping: "Meta error 100/2804003: …" → "Meta error
/// 100/2804003". A delivery that gave up is of the kind of its last failure.
fn error_kind(reason: &str) -> String {
    let last = reason
        .split_once("; last: ")
        .map_or(reason, |(_, last)| last);
    let head = last.split(':').next().unwrap_or(last).trim();
    head.chars().take(60).collect()
}

impl Coverage {
    /// Count which identifiers one canonical event (its JSON text) carries.
    pub fn add(&mut self, canonical_json: &str) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(canonical_json) else {
            return;
        };
        let has = |path: &str| event.pointer(path).is_some_and(|v| !v.is_null());
        self.events += 1;
        self.email += i64::from(has("/user/email"));
        self.phone += i64::from(has("/user/phone"));
        self.external_id += i64::from(has("/user/user_id"));
        self.ip_and_user_agent += i64::from(has("/context/ip") && has("/context/user_agent"));
        self.click_ids += i64::from(
            event
                .pointer("/context/click_ids")
                .and_then(serde_json::Value::as_object)
                .is_some_and(|m| !m.is_empty()),
        );
    }
}

#[cfg(test)]
mod minute_tests {
    use super::*;
    use crate::store::model::delivery::{AttemptOutcome, Completion, ItemResult, RequestRef};

    const NOW: i64 = 1_780_000_000_000 + 30_000;

    fn minute(ago: i64) -> i64 {
        minute_of(NOW) - ago * 60_000
    }

    #[test]
    fn a_window_is_its_minutes_however_much_came_after() {
        // Fifty minutes ago an outage (every request failed, one delivery dead); since then a
        // minute of heavy traffic after another.
        let mut minutes = vec![MinuteTally {
            minute_ms: minute(50),
            requests: 40,
            succeeded: 0,
            retried: 40,
            dead: 1,
            ..MinuteTally::default()
        }];
        for ago in 0..50 {
            let mut busy = MinuteTally::request(minute(ago), Some(40), true);
            busy.requests = 20_000;
            busy.succeeded = 20_000;
            busy.latency[1] = 20_000;
            busy.delivered = 20_000;
            minutes.push(busy);
        }
        // And one from before the hour, left out.
        minutes.push(MinuteTally {
            minute_ms: minute(61),
            requests: 99,
            dead: 99,
            ..MinuteTally::default()
        });
        let errors = vec![(
            "HTTP 503".to_string(),
            40,
            minute(50) + 5_000,
            "HTTP 503: Service Unavailable".to_string(),
        )];
        let mut stats = DestinationStats::default();
        summarise_minutes(&mut stats, &minutes, &errors, NOW);
        assert_eq!(stats.last_1h.requests, 1_000_040);
        assert_eq!(stats.last_1h.succeeded, 1_000_000);
        assert_eq!(stats.last_5m.requests, 100_000);
        assert_eq!(stats.last_5m.p95_ms, Some(50), "≤ 50 ms bucket");
        assert_eq!(stats.per_minute.total(), (1_000_000, 40, 1));
        assert_eq!(
            stats.per_minute.dead[59 - 50],
            1,
            "the dead letter in its minute"
        );
        assert_eq!(stats.error_kinds, vec![("HTTP 503".to_string(), 40)]);
        assert_eq!(
            stats.last_error,
            Some((
                minute(50) + 5_000,
                "HTTP 503: Service Unavailable".to_string()
            ))
        );
    }

    #[test]
    fn a_delivery_that_gave_up_is_of_its_last_failures_kind() {
        assert_eq!(
            error_kind("gave up after 2 failed attempts (retry_schedule exhausted); last: the webhook answered HTTP 503: busy"),
            "the webhook answered HTTP 503"
        );
        assert_eq!(
            error_kind("Meta error 100/2804003: bad"),
            "Meta error 100/2804003"
        );
    }

    #[test]
    fn latency_percentiles_read_the_bucket_they_fall_in() {
        let mut buckets = [0i64; LATENCY_BUCKETS];
        assert_eq!(bucket_percentile(&buckets, 0.5), None);
        buckets[0] = 50;
        buckets[3] = 45;
        buckets[7] = 5;
        assert_eq!(bucket_percentile(&buckets, 0.5), Some(10));
        assert_eq!(bucket_percentile(&buckets, 0.95), Some(250));
        assert_eq!(
            bucket_percentile(&buckets, 0.99),
            Some(5_000),
            "the open bucket"
        );
    }

    #[test]
    fn a_completion_adds_its_outcomes_and_groups_its_failures() {
        let item = |id, outcome, reason: Option<&str>| ItemResult {
            delivery_id: id,
            attempt: 1,
            outcome,
            reason: reason.map(str::to_string),
            next_attempt_ms: None,
            solo: false,
            free_retry: false,
        };
        let c = Completion {
            destination: "meta".into(),
            request: RequestRef::None,
            items: vec![
                item(1, AttemptOutcome::Delivered, None),
                item(2, AttemptOutcome::Retry, Some("HTTP 503: busy")),
                item(3, AttemptOutcome::Retry, Some("HTTP 503: still busy")),
                item(4, AttemptOutcome::Dead, Some("Meta error 100: bad pixel")),
            ],
            at_ms: NOW,
        };
        let t = MinuteTally::outcomes(c.at_ms, c.items.iter().map(|i| &i.outcome));
        assert_eq!(
            (t.minute_ms, t.delivered, t.retried, t.dead),
            (minute(0), 1, 2, 1)
        );
        let errors = MinuteError::of_completion(&c);
        let kinds: Vec<(&str, i64, &str)> = errors
            .iter()
            .map(|e| (e.kind.as_str(), e.count, e.reason.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("HTTP 503", 2, "HTTP 503: still busy"),
                ("Meta error 100", 1, "Meta error 100: bad pixel")
            ]
        );
        let r = MinuteTally::request(NOW - 1, Some(700), false);
        assert_eq!((r.requests, r.succeeded, r.latency[5]), (1, 0, 1));
    }
}
