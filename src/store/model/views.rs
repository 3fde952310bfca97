//! The dashboard's rows, the same for every store.

use serde::Serialize;

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
    /// The fleet node that received it (PostgreSQL; `None` on the single-node SQLite store).
    pub node: Option<String>,
    /// The stored row it was read from: what the dashboard anchors a selection to.
    pub source: StreamSource,
    /// The page that starts with this row (set when pages are merged).
    pub cursor: StreamCursor,
}

/// A refused request as stored: everything known about who sent it and why it was refused.
/// Bodies of refused requests are never kept (they are unauthenticated).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectionDetail {
    pub id: i64,
    pub received_at_ms: i64,
    pub path: String,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub account_header: Option<String>,
    pub environment_header: Option<String>,
    pub content_type: Option<String>,
    pub body_bytes: Option<i64>,
    pub status_code: i64,
    pub reason_code: String,
    pub reason: String,
}

pub(crate) const REJECTION_COLUMNS: &str = "id, received_at_ms, path, remote_addr, user_agent, \
     account_header, environment_header, content_type, body_bytes, status_code, reason_code, reason";

/// What a search across the whole history found first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SearchHit {
    /// A message to open, and the key that matched it (`messageId`, `event_id`, …).
    Message {
        message_id: String,
        matched: &'static str,
    },
    /// A profile: userId, anonymousId, email or phone (hashed the way it is stored).
    Profile { query: String },
}

/// How many of the newest events name the (environment, canonical name) pairs an order id
/// search tries: event ids are derived from the order id, so a search recomputes them.
pub const ORDER_SEARCH_RECENT_EVENTS: i64 = 5_000;

/// Where a stream row is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum StreamSource {
    Message(i64),
    Refusal(i64),
}

/// Where a page of the stream starts: every message with `id <= message` and every refused
/// request with `id <= refusal`, newest first. Keyset pagination on the two primary keys, so a
/// page deep in history costs what the first one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamCursor {
    pub message: i64,
    pub refusal: i64,
}

impl StreamCursor {
    pub const NEWEST: StreamCursor = StreamCursor {
        message: i64::MAX,
        refusal: i64::MAX,
    };
}

impl Default for StreamCursor {
    fn default() -> Self {
        StreamCursor::NEWEST
    }
}

/// The id ranges the stream spans, for "1,204 of 767,310". Ids are dense on SQLite (a row id
/// is the next after the largest, and retention removes the oldest), so counting by id
/// arithmetic is exact there and costs nothing; on PostgreSQL a rolled-back insert leaves a gap
/// in the sequence, so the figures are close, not exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StreamExtent {
    /// (oldest, newest) message id; `None` when there is none.
    pub messages: Option<(i64, i64)>,
    pub refusals: Option<(i64, i64)>,
}

impl StreamExtent {
    pub fn total(&self) -> i64 {
        let span = |r: Option<(i64, i64)>| r.map_or(0, |(lo, hi)| hi - lo + 1);
        span(self.messages) + span(self.refusals)
    }

    /// 1 for the newest row: how many rows are at least as new as the page starting at `at`.
    pub fn position(&self, at: StreamCursor) -> i64 {
        let newer = |r: Option<(i64, i64)>, bound: i64| {
            r.map_or(0, |(lo, hi)| (hi - bound.clamp(lo - 1, hi)).max(0))
        };
        newer(self.messages, at.message) + newer(self.refusals, at.refusal) + 1
    }

    /// Rows newer than the page starting at `top` (what arrived while a view was paused).
    pub fn newer_than(&self, top: StreamCursor) -> i64 {
        self.position(top) - 1
    }

    /// Just below the oldest row: where a walk towards newer rows starts for the oldest page.
    pub fn below_oldest(&self) -> StreamCursor {
        StreamCursor {
            message: self.messages.map_or(0, |(lo, _)| lo - 1),
            refusal: self.refusals.map_or(0, |(lo, _)| lo - 1),
        }
    }
}

/// The lists paged by one id besides the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagedTable {
    Attempts,
    Collisions,
}

impl PagedTable {
    pub fn name(self) -> &'static str {
        match self {
            PagedTable::Attempts => "delivery_attempts",
            PagedTable::Collisions => "collisions",
        }
    }
}

/// The top of the page `n` rows newer: the last of the `ids` found above the current top,
/// or the newest page (`i64::MAX`) when fewer than `n` are newer.
pub fn newer_top(ids: &[i64], n: usize) -> i64 {
    match ids.last() {
        Some(last) if ids.len() >= n => *last,
        _ => i64::MAX,
    }
}

fn id_of(row: &StreamRow) -> (bool, i64) {
    match row.source {
        StreamSource::Message(id) => (true, id),
        StreamSource::Refusal(id) => (false, id),
    }
}

/// One page of the stream, from the newest messages and refusals at or below `top` (each list
/// newest first, in id order): merged by arrival time while each list keeps its own id order,
/// so every row's cursor starts a page that holds exactly it and what is older.
pub fn merge_older(
    messages: Vec<StreamRow>,
    refusals: Vec<StreamRow>,
    top: StreamCursor,
    limit: usize,
) -> Vec<StreamRow> {
    let mut messages = messages.into_iter().peekable();
    let mut refusals = refusals.into_iter().peekable();
    let mut bound = top;
    let mut page = Vec::with_capacity(limit);
    while page.len() < limit {
        let take_message = match (messages.peek(), refusals.peek()) {
            (Some(m), Some(r)) => m.received_at_ms >= r.received_at_ms,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let mut row = if take_message {
            messages.next()
        } else {
            refusals.next()
        }
        .expect("peeked above");
        row.cursor = bound;
        match id_of(&row) {
            (true, id) => bound.message = id - 1,
            (false, id) => bound.refusal = id - 1,
        }
        page.push(row);
    }
    page
}

/// The cursor `n` rows newer than the page starting at `from`, given the rows just newer than
/// it (each list oldest first, in id order). Fewer than `n` newer rows: the newest page.
pub fn step_newer(
    messages: &[StreamRow],
    refusals: &[StreamRow],
    from: StreamCursor,
    n: usize,
) -> StreamCursor {
    let (mut m, mut r) = (messages.iter().peekable(), refusals.iter().peekable());
    let mut cursor = from;
    for _ in 0..n {
        let take_message = match (m.peek(), r.peek()) {
            (Some(a), Some(b)) => a.received_at_ms <= b.received_at_ms,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return StreamCursor::NEWEST,
        };
        let row = if take_message { m.next() } else { r.next() }.expect("peeked above");
        match id_of(row) {
            (true, id) => cursor.message = id,
            (false, id) => cursor.refusal = id,
        }
    }
    cursor
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRow {
    pub attempt_row: i64,
    /// The delivery it was an attempt of (what "retry now" acts on).
    pub delivery_id: i64,
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
    /// The fleet node that made the attempt (`None` on SQLite).
    pub node: Option<String>,
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

/// A destination's queue right now. Each figure reads a partial index of live rows or a running
/// total, so this stays cheap with a million deliveries waiting.
pub use super::destinations::*;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub pending: i64,
    pub in_flight: i64,
    pub dead: i64,
    pub delivered: i64,
    /// When the longest-waiting pending delivery was created.
    pub oldest_pending_ms: Option<i64>,
}

/// A node of the fleet as it last reported itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetNode {
    pub node_id: String,
    pub hostname: String,
    pub started_at_ms: i64,
    pub last_seen_ms: i64,
    pub version: String,
}

/// A node as people name it: host and process id (the start time only keeps ids unique).
pub fn node_label(node_id: &str) -> &str {
    match node_id.rsplit_once(':') {
        Some((head, tail)) if head.contains(':') && tail.chars().all(|c| c.is_ascii_digit()) => {
            head
        }
        _ => node_id,
    }
}

impl FleetNode {
    /// A node silent for longer than this is presumed gone (its heartbeat is every few seconds).
    pub const SILENT_AFTER_MS: i64 = 30_000;

    pub fn silent(&self, now_ms: i64) -> bool {
        now_ms - self.last_seen_ms > Self::SILENT_AFTER_MS
    }
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

/// What a profile search means: a profile number (`#12` or `12`), then the identifiers the text
/// could be, in the order they are tried.
pub fn profile_search(query: &str) -> (Option<i64>, Vec<(&'static str, String)>) {
    let q = query.trim();
    if q.is_empty() {
        return (None, Vec::new());
    }
    let mut candidates = vec![("user_id", q.to_string()), ("anonymous_id", q.to_string())];
    if let Some(email) = crate::pipeline::identifier::normal_email(q) {
        candidates.push(("email", email));
    }
    // Without the workspace's country here: an international number, or its digits.
    if let Some(phone) = crate::pipeline::identifier::normal_phone(q, None) {
        candidates.push(("phone", phone));
    }
    (q.trim_start_matches('#').parse::<i64>().ok(), candidates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::trace::DestinationPause;

    fn row(source: StreamSource, at: i64) -> StreamRow {
        StreamRow {
            received_at_ms: at,
            environment: "production".into(),
            status: "accepted".into(),
            outcome: None,
            message_type: None,
            event: None,
            message_id: None,
            reason: None,
            node: None,
            source,
            cursor: StreamCursor::NEWEST,
        }
    }

    /// Messages 1..=6 and refusals 1..=3, interleaved in time; message 4 was committed after
    /// message 5 arrived (ids follow commits, not arrival), which must not break the paging.
    fn history() -> (Vec<StreamRow>, Vec<StreamRow>) {
        use StreamSource::*;
        let messages = [(1, 100), (2, 200), (3, 300), (4, 550), (5, 500), (6, 700)]
            .map(|(id, at)| row(Message(id), at));
        let refusals = [(1, 150), (2, 450), (3, 650)].map(|(id, at)| row(Refusal(id), at));
        (messages.to_vec(), refusals.to_vec())
    }

    fn older(top: StreamCursor, limit: usize) -> Vec<StreamRow> {
        let (m, r) = history();
        let m = m
            .into_iter()
            .rev()
            .filter(|x| id_of(x).1 <= top.message)
            .collect();
        let r = r
            .into_iter()
            .rev()
            .filter(|x| id_of(x).1 <= top.refusal)
            .collect();
        merge_older(m, r, top, limit)
    }

    fn newer(from: StreamCursor, n: usize) -> StreamCursor {
        let (m, r) = history();
        let m: Vec<_> = m
            .into_iter()
            .filter(|x| id_of(x).1 > from.message)
            .collect();
        let r: Vec<_> = r
            .into_iter()
            .filter(|x| id_of(x).1 > from.refusal)
            .collect();
        step_newer(&m, &r, from, n)
    }

    #[test]
    fn pages_chain_without_gaps_or_repeats_in_both_directions() {
        let top = StreamCursor {
            message: 6,
            refusal: 3,
        };
        let all: Vec<StreamSource> = older(top, 100).iter().map(|r| r.source).collect();
        assert_eq!(all.len(), 9);
        // Walk down three rows at a time: every page starts where the last one ended.
        let mut walked = Vec::new();
        let mut cursor = top;
        loop {
            let page = older(cursor, 3);
            if page.is_empty() {
                break;
            }
            walked.extend(page.iter().map(|r| r.source));
            let last = page.last().unwrap();
            cursor = older(last.cursor, 2).get(1).map_or(
                StreamCursor {
                    message: 0,
                    refusal: 0,
                },
                |r| r.cursor,
            );
        }
        assert_eq!(walked, all);
        // Each row's cursor starts a page with exactly it and what follows it.
        let page = older(top, 100);
        for (i, r) in page.iter().enumerate() {
            let from_here: Vec<StreamSource> =
                older(r.cursor, 100).iter().map(|x| x.source).collect();
            assert_eq!(from_here, all[i..].to_vec(), "row {i}");
        }
        // Walking up from the oldest row reaches each row's own cursor, then the newest.
        let extent = StreamExtent {
            messages: Some((1, 6)),
            refusals: Some((1, 3)),
        };
        for (i, r) in page.iter().enumerate().rev() {
            let steps = page.len() - i;
            assert_eq!(newer(extent.below_oldest(), steps), r.cursor, "{steps} up");
            assert_eq!(extent.position(r.cursor), i as i64 + 1);
        }
        assert_eq!(newer(extent.below_oldest(), 10), StreamCursor::NEWEST);
        assert_eq!(extent.total(), 9);
        assert_eq!(extent.newer_than(page[4].cursor), 4);
    }

    #[test]
    fn health_names_the_worst_state_before_any_percentage() {
        let mut d = DestinationStats::default();
        assert_eq!(d.health(), "idle");
        d.last_1h.requests = 100;
        d.last_1h.succeeded = 95;
        assert_eq!(d.health(), "ok");
        d.retrying = 492;
        assert_eq!(d.health(), "retry");
        d.last_5m.requests = 10;
        d.last_5m.succeeded = 2;
        assert_eq!(d.health(), "failing");
        // 95 % over the hour, but paused with 492 queued: paused is what matters.
        d.paused = Some(DestinationPause {
            until_ms: 1,
            reason: "8 of the last 8 requests failed".into(),
            since_ms: 0,
        });
        assert_eq!(d.health(), "paused");
    }
}
