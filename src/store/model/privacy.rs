//! The records of forgetting a person, the same for every store: whose rows to delete, what a
//! request recorded (the audit, without personal data), and the deletions forwarded to
//! platforms.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::pipeline::identity::{IdKind, Identifier};

/// Everything that names one person: their profile, the profiles merged into it, and every
/// identifier those profiles hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonKeys {
    pub profile_ids: Vec<i64>,
    pub identifiers: Vec<Identifier>,
    /// The message rows of their profiles' events and identity changes, ascending (read once,
    /// so each range of the walk does not look them up again).
    pub message_rows: Vec<i64>,
}

impl PersonKeys {
    /// Their known message rows in `from..to`.
    pub fn rows_in(&self, from: i64, to: i64) -> &[i64] {
        let start = self.message_rows.partition_point(|r| *r < from);
        let end = self.message_rows.partition_point(|r| *r < to);
        &self.message_rows[start..end]
    }

    pub fn values(&self, kind: IdKind) -> Vec<String> {
        self.identifiers
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Take in another profile of the same person (one an earlier forget's audit names).
    pub fn absorb(&mut self, other: PersonKeys) {
        for (mine, theirs) in [
            (&mut self.profile_ids, other.profile_ids),
            (&mut self.message_rows, other.message_rows),
        ] {
            mine.extend(theirs);
            mine.sort_unstable();
            mine.dedup();
        }
        self.identifiers.extend(other.identifiers);
        self.identifiers.sort();
        self.identifiers.dedup();
    }
}

/// An audit row to create.
#[derive(Debug, Clone)]
pub struct NewPrivacyRequest {
    pub request_id: String,
    /// `forget` or `undo`.
    pub action: &'static str,
    pub who: String,
    pub environment: String,
    pub received_at_ms: i64,
    /// JSON `[{"kind", "hash"}]`: keyed hashes, never the values.
    pub identifiers: String,
    pub status: &'static str,
}

/// An identifier to suppress, as its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub hash: Vec<u8>,
    pub kind: &'static str,
}

/// Rows deleted, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Deleted(pub BTreeMap<String, i64>);

impl Deleted {
    pub fn add(&mut self, table: &str, rows: i64) {
        if rows > 0 {
            *self.0.entry(table.to_string()).or_default() += rows;
        }
    }

    pub fn merge(&mut self, other: &Deleted) {
        for (table, rows) in &other.0 {
            self.add(table, *rows);
        }
    }

    pub fn total(&self) -> i64 {
        self.0.values().sum()
    }
}

/// What one range of messages gave up.
#[derive(Debug, Clone, Default)]
pub struct ChunkDeleted {
    pub deleted: Deleted,
    /// The event_ids of the person's events (the warehouse's rows are keyed by them).
    pub event_ids: Vec<String>,
}

pub use crate::destinations::privacy::NewForward;

/// A forward due to be sent (leased to the caller).
#[derive(Debug, Clone)]
pub struct DueForward {
    pub id: i64,
    pub destination: String,
    pub kind: String,
    pub payload: String,
    /// This attempt's number (1 for the first).
    pub attempt: i64,
}

/// What became of a forward's attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardResult {
    pub id: i64,
    /// `delivered`, `pending` (again at `next_attempt_ms`) or `dead`.
    pub status: &'static str,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub next_attempt_ms: i64,
}

/// A forward as the audit shows it (never its payload).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardRecord {
    pub destination: String,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub status_code: Option<i64>,
    pub last_error: Option<String>,
    pub updated_at_ms: i64,
}

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyRecord {
    pub request_id: String,
    pub action: String,
    pub who: String,
    pub environment: String,
    pub received_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// `[{"kind", "hash"}]` as stored.
    pub identifiers: serde_json::Value,
    pub status: String,
    pub deleted: serde_json::Value,
    pub suppressed_messages: i64,
    pub last_suppressed_ms: Option<i64>,
    pub forwards: Vec<ForwardRecord>,
}
