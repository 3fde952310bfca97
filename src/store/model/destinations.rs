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

    /// Counts from (minute index since [`Self::start_ms`], outcome, attempts) rows.
    pub fn from_rows(rows: impl IntoIterator<Item = (i64, String, i64)>) -> MinuteCounts {
        let mut counts = MinuteCounts::default();
        for (minute, outcome, n) in rows {
            let Ok(i) = usize::try_from(minute) else {
                continue;
            };
            if i >= MINUTES {
                continue;
            }
            let bucket = match outcome.as_str() {
                "delivered" => &mut counts.delivered,
                "retry" => &mut counts.retried,
                "dead" => &mut counts.dead,
                _ => continue,
            };
            bucket[i] += n.max(0) as u64;
        }
        counts
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
    /// percentage: `paused`, `failing` (most requests of the last 5 minutes failed), `retry`
    /// (deliveries waiting for another try), `ok`, or `idle` (nothing sent in the last hour).
    pub fn health(&self) -> &'static str {
        if self.paused.is_some() {
            "paused"
        } else if self.last_5m.success_rate().is_some_and(|r| r < 0.5) {
            "failing"
        } else if self.retrying > 0 {
            "retry"
        } else if self.last_1h.requests == 0 && self.queue_depth() == 0 {
            "idle"
        } else {
            "ok"
        }
    }
}

/// Success and latency of the requests (started at, latency, succeeded) since `since_ms`.
pub fn window(rows: &[(i64, Option<i64>, bool)], since_ms: i64) -> WindowStats {
    let mut latencies: Vec<i64> = Vec::new();
    let mut stats = WindowStats::default();
    for (_, latency, ok) in rows.iter().filter(|(at, _, _)| *at >= since_ms) {
        stats.requests += 1;
        stats.succeeded += i64::from(*ok);
        if let Some(l) = latency {
            latencies.push(*l);
        }
    }
    latencies.sort_unstable();
    stats.p50_ms = percentile(&latencies, 0.5);
    stats.p95_ms = percentile(&latencies, 0.95);
    stats
}

/// Whether a stored request succeeded: no transport error and a 2xx (or no status at all).
pub fn request_succeeded(status: Option<i64>, error: Option<&str>) -> bool {
    error.is_none() && status.is_none_or(|c| (200..300).contains(&c))
}

/// The kind of a failure reason, for grouping: "Meta error 100/2804003: …" → "Meta error 100/2804003".
fn error_kind(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason).trim();
    head.chars().take(60).collect()
}

/// Fill in the last error and the five most frequent kinds from recent failures (newest first).
pub fn summarise_failures(
    stats: &mut DestinationStats,
    failures: &[(i64, Option<String>, Option<String>)],
) {
    let mut kinds: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for (at, reason, node) in failures {
        let reason = reason.clone().unwrap_or_default();
        if stats.last_error.is_none() {
            stats.last_error = Some((*at, reason.clone()));
            stats.last_error_node = node.clone();
        }
        *kinds.entry(error_kind(&reason)).or_default() += 1;
    }
    let mut kinds: Vec<(String, i64)> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    kinds.truncate(5);
    stats.error_kinds = kinds;
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

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(idx).copied()
}

#[cfg(test)]
mod minute_tests {
    use super::*;

    #[test]
    fn attempts_land_in_their_minute_and_others_are_left_out() {
        let now = 1_780_000_000_000 + 30_000;
        let start = MinuteCounts::start_ms(now);
        assert_eq!((now - start) / 60_000, 59, "now is in the last minute");
        let m = MinuteCounts::from_rows([
            (59, "delivered".to_string(), 3),
            (0, "retry".to_string(), 2),
            (58, "dead".to_string(), 1),
            (60, "delivered".to_string(), 9),
            (-1, "delivered".to_string(), 9),
            (10, "in_flight".to_string(), 9),
        ]);
        assert_eq!(m.total(), (3, 2, 1));
        assert_eq!(m.delivered[59], 3);
        assert_eq!(m.retried[0], 2);
    }
}
