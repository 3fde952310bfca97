//! Alerts as stored, the same on every store.

use serde::Serialize;

/// An alert starting or ending, as the evaluator decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub rule: String,
    pub subject: String,
    /// True: it fires; false: it resolves.
    pub firing: bool,
    pub at_ms: i64,
    /// JSON: what made it fire (or what it looks like now it resolved).
    pub evidence: String,
    pub node_id: Option<String>,
    /// A firing of the same rule and subject that was notified after this instant keeps this
    /// one quiet (flapping is not paged twice within the cooldown).
    pub cooldown_since_ms: i64,
}

/// What storing a change did: whether it took effect (another evaluation, perhaps on another
/// node, may have made it first) and whether a person should hear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertWrite {
    pub changed: bool,
    pub notify: bool,
    /// For a resolve: when the alert started.
    pub started_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAlert {
    pub id: i64,
    pub rule: String,
    pub subject: String,
    pub state: String,
    pub started_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub evidence: serde_json::Value,
    pub notified: bool,
    pub node_id: Option<String>,
    /// What became of its notifications, once tried.
    pub notice: Option<String>,
}

impl StoredAlert {
    /// The state a stored alert has until its condition no longer holds (then `resolved`).
    pub const FIRING: &'static str = "firing";

    pub fn is_firing(&self) -> bool {
        self.state == Self::FIRING
    }
}

/// The outcome of notifying about one alert, to be stored on its row.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertNotice {
    pub rule: String,
    pub subject: String,
    pub started_at_ms: i64,
    pub notice: String,
}
