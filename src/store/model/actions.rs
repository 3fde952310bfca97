//! What an operator can do from the dashboard, the same on every store. Each action is
//! performed and recorded (who, when, what it touched) in one transaction.

use serde::Serialize;

/// The far future, for a pause that lasts until someone resumes.
pub const UNTIL_RESUMED_MS: i64 = i64::MAX / 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OperatorAction {
    /// Send one delivery at the next claim (pending or dead).
    RetryNow {
        delivery_id: i64,
        /// What people know it by: the event's name there, the destination, the ids.
        what: DeliveryName,
    },
    /// Put a destination's dead letters back in the queue: all, or those that died at or
    /// after `since_ms` (after an outage, the ones it caused).
    ReplayDead {
        destination: String,
        since_ms: Option<i64>,
    },
    /// Stop claiming a destination's deliveries until resumed.
    Pause {
        destination: String,
    },
    Resume {
        destination: String,
    },
    /// Let repeated event_ids of an environment through for a while (a Segment Replay).
    AllowReplay {
        environment: String,
        minutes: i64,
    },
    /// A draft mapping table put in force (the file the nodes reload).
    ActivateMapping {
        version: u32,
        file: String,
    },
}

/// A delivery as a person names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryName {
    pub destination: String,
    pub destination_event: String,
    pub event_id: String,
    pub message_id: Option<String>,
}

impl std::fmt::Display for DeliveryName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to {} (event_id {}{})",
            self.destination_event,
            self.destination,
            self.event_id,
            self.message_id
                .as_deref()
                .map(|m| format!(", messageId {m}"))
                .unwrap_or_default()
        )
    }
}

impl OperatorAction {
    pub fn name(&self) -> &'static str {
        match self {
            OperatorAction::RetryNow { .. } => "retry_now",
            OperatorAction::ReplayDead { .. } => "replay_dead",
            OperatorAction::Pause { .. } => "pause",
            OperatorAction::Resume { .. } => "resume",
            OperatorAction::AllowReplay { .. } => "allow_replay",
            OperatorAction::ActivateMapping { .. } => "activate_mapping",
        }
    }

    pub fn target(&self) -> String {
        match self {
            OperatorAction::RetryNow { what, .. } => what.to_string(),
            OperatorAction::ReplayDead { destination, .. }
            | OperatorAction::Pause { destination }
            | OperatorAction::Resume { destination } => destination.clone(),
            OperatorAction::AllowReplay { environment, .. } => environment.clone(),
            OperatorAction::ActivateMapping { file, .. } => file.clone(),
        }
    }

    /// The question the dashboard asks before doing it.
    pub fn question(&self) -> String {
        match self {
            OperatorAction::RetryNow { what, .. } => {
                format!("send {what} again now?")
            }
            OperatorAction::ReplayDead {
                destination,
                since_ms: None,
            } => format!(
                "put every dead delivery of {destination} back in the queue (they keep their event_id)?"
            ),
            OperatorAction::ReplayDead {
                destination,
                since_ms: Some(since),
            } => format!(
                "put the deliveries of {destination} that died since {} back in the queue (they keep their event_id)?",
                clock(*since)
            ),
            OperatorAction::Pause { destination } => {
                format!("pause {destination}: nothing is sent until you resume it?")
            }
            OperatorAction::Resume { destination } => format!("resume {destination}?"),
            OperatorAction::AllowReplay {
                environment,
                minutes,
            } => format!(
                "let repeated event_ids of {environment} through for {minutes} minutes (a Segment Replay)?"
            ),
            OperatorAction::ActivateMapping { version, file } => {
                format!("put mapping version {version} in force ({file})?")
            }
        }
    }

    /// What it did, for the record and the status line.
    pub fn done(&self, affected: i64) -> String {
        match self {
            OperatorAction::RetryNow { what, .. } if affected == 0 => {
                format!("{what} was not waiting (already delivered or in flight): nothing to retry")
            }
            OperatorAction::RetryNow { what, .. } => {
                format!("{what} is sent at the next claim")
            }
            OperatorAction::ReplayDead {
                destination,
                since_ms,
            } => format!(
                "{affected} dead deliver{} of {destination}{} re-queued",
                if affected == 1 { "y" } else { "ies" },
                since_ms
                    .map(|s| format!(" (died since {})", clock(s)))
                    .unwrap_or_default()
            ),
            OperatorAction::Pause { destination } => {
                format!("{destination} paused until resumed")
            }
            OperatorAction::Resume { destination } => format!("{destination} resumed"),
            OperatorAction::AllowReplay {
                environment,
                minutes,
            } => format!("replay window open for {environment} for {minutes} minutes"),
            OperatorAction::ActivateMapping { version, file } => format!(
                "mapping version {version} written to {file}: running nodes reload it as the table in force"
            ),
        }
    }
}

/// `HH:MM` UTC, as the dashboard's clock shows it.
fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M UTC").to_string())
        .unwrap_or_default()
}

/// An action as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorRecord {
    pub at_ms: i64,
    pub who: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub affected: i64,
}
