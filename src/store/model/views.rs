//! The dashboard's rows, the same for every store.

use serde::Serialize;

use super::trace::DestinationPause;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamRow {
    pub received_at_ms: i64,
    pub environment: String,
    /// accepted | duplicate | invalid | rejected
    pub status: String,
    /// mapped | unmapped | identify | collision | replayed (for stored messages)
    pub outcome: Option<String>,
    pub message_type: Option<String>,
    pub event: Option<String>,
    pub message_id: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRow {
    pub attempt_row: i64,
    pub at_ms: i64,
    pub destination: String,
    pub destination_event: String,
    pub event_id: String,
    pub message_id: Option<String>,
    pub attempt: i64,
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub reason: Option<String>,
    pub next_attempt_ms: Option<i64>,
    pub request_row: Option<i64>,
    /// The delivery's status now (an attempt that was retried may since have succeeded).
    pub delivery_status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnmappedGroup {
    pub segment_event: String,
    pub count: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub environments: String,
    pub suggestion: Option<String>,
    pub reason: String,
    pub example_message_id: Option<String>,
}

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
    /// Recent failure reasons, grouped, most frequent first.
    pub error_kinds: Vec<(String, i64)>,
    pub coverage: Coverage,
}

impl DestinationStats {
    pub fn queue_depth(&self) -> i64 {
        self.retrying + self.in_flight
    }
}

/// A destination's queue right now. Each figure reads a partial index of live rows or a running
/// total, so this stays cheap with a million deliveries waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub pending: i64,
    pub in_flight: i64,
    pub dead: i64,
    pub delivered: i64,
    /// When the longest-waiting pending delivery was created.
    pub oldest_pending_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileEvent {
    pub event_id: String,
    pub name: String,
    pub message_id: String,
    pub event_time_ms: i64,
}

/// What a demo run (or any database) amounts to, for the headless summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DemoSummary {
    pub received: i64,
    pub accepted: i64,
    pub rejected: i64,
    pub invalid: i64,
    pub mapped: i64,
    pub unmapped: i64,
    pub identify: i64,
    pub duplicates: i64,
    pub collisions: i64,
    pub consent_blocked: i64,
    pub delivered: i64,
    pub retried: i64,
    pub dead_lettered: i64,
    pub pending: i64,
}

impl DemoSummary {
    /// Every category the demo is meant to show happened at least once.
    pub fn complete(&self) -> bool {
        [
            self.accepted,
            self.mapped,
            self.unmapped,
            self.duplicates + self.collisions,
            self.consent_blocked,
            self.delivered,
            self.retried,
            self.dead_lettered,
        ]
        .iter()
        .all(|n| *n > 0)
    }
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "messages received   {:>7}", self.received)?;
        writeln!(f, "  accepted          {:>7}", self.accepted)?;
        writeln!(f, "  invalid           {:>7}", self.invalid)?;
        writeln!(
            f,
            "  requests rejected {:>7}  (401: bad signature)",
            self.rejected
        )?;
        writeln!(f, "pipeline")?;
        writeln!(f, "  mapped            {:>7}", self.mapped)?;
        writeln!(f, "  unmapped          {:>7}", self.unmapped)?;
        writeln!(f, "  identify          {:>7}", self.identify)?;
        writeln!(
            f,
            "  duplicates        {:>7}  (same messageId again)",
            self.duplicates
        )?;
        writeln!(
            f,
            "  collisions        {:>7}  (retries, duplicate orders, conflicts)",
            self.collisions
        )?;
        writeln!(
            f,
            "  consent-blocked   {:>7}  (event × destination)",
            self.consent_blocked
        )?;
        writeln!(f, "deliveries")?;
        writeln!(f, "  delivered         {:>7}", self.delivered)?;
        writeln!(
            f,
            "  retried           {:>7}  (attempts that will be retried)",
            self.retried
        )?;
        writeln!(f, "  dead-lettered     {:>7}", self.dead_lettered)?;
        write!(f, "  still pending     {:>7}", self.pending)
    }
}
