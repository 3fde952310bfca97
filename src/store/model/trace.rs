//! What a store gives back about stored messages, events, profiles and deliveries: the trace
//! of one message (`inspect`, the diff pane) and its parts.

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredMessage {
    pub row_id: i64,
    pub request_id: String,
    pub position: i64,
    pub received_at_ms: i64,
    pub environment: String,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub event: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub duplicate_of: Option<i64>,
    pub raw_sha256: String,
    /// The raw bytes; for an identical duplicate, the original's bytes.
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// False for an identical duplicate, whose bytes are stored only once (on the original).
    pub raw_stored: bool,
    /// The message's full size when `raw` holds only its first bytes (an oversized invalid one).
    pub raw_bytes: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRequest {
    pub request_id: String,
    pub received_at_ms: i64,
    pub environment: String,
    pub path: String,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub auth_scheme: String,
    pub body_shape: String,
    pub body_bytes: i64,
    pub message_count: i64,
}

/// Refusals of one kind from one peer, summed over minutes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RejectionTally {
    pub environment: String,
    pub reason_code: String,
    pub peer: String,
    pub status_code: i64,
    pub count: i64,
    pub last_minute_ms: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRejection {
    pub received_at_ms: i64,
    pub path: String,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub account_header: Option<String>,
    pub environment_header: Option<String>,
    pub content_type: Option<String>,
    pub body_bytes: Option<i64>,
    pub status_code: u16,
    pub reason_code: String,
    pub reason: String,
}

/// A canonical event as stored, with its routes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredEvent {
    pub row_id: i64,
    pub event_id: String,
    pub message_row: i64,
    pub message_id: String,
    pub replay: bool,
    pub created_at_ms: i64,
    pub canonical: crate::pipeline::CanonicalEvent,
    pub routes: Vec<StoredRoute>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRoute {
    pub destination: String,
    pub kind: String,
    pub destination_event: String,
    pub verdict: String,
    pub reason: String,
    pub consent_source: String,
    pub consent_allowed: bool,
    pub consent_reason: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredCollision {
    pub id: i64,
    pub event_id: String,
    pub kind: String,
    pub winner_event_row: i64,
    pub winner_message_row: i64,
    pub winner_message_id: Option<String>,
    pub message_row: i64,
    pub message_id: Option<String>,
    pub detected_at_ms: i64,
    /// The later arrival's canonical event.
    pub canonical: serde_json::Value,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredUnmapped {
    pub segment_event: String,
    pub mapping_version: i64,
    pub suggestion: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredIdentityChange {
    pub at_ms: i64,
    pub message_row: i64,
    pub kind: String,
    pub profile_id: i64,
    pub other_profile_id: Option<i64>,
    pub detail: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredProfile {
    pub id: i64,
    pub user_id: Option<String>,
    pub traits: serde_json::Value,
    pub trait_sources: serde_json::Value,
    pub consent: Option<serde_json::Value>,
    pub consent_source: Option<String>,
    pub identities: Vec<(String, String)>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub merged_into: Option<i64>,
    pub changes: Vec<StoredIdentityChange>,
}

impl StoredProfile {
    /// `kind=value, …`, the one-line form the trace views print.
    pub fn identities_line(&self) -> String {
        let pairs: Vec<String> = self
            .identities
            .iter()
            .map(|(kind, value)| format!("{kind}={value}"))
            .collect();
        pairs.join(", ")
    }
}

/// Everything stored about one message, stage by stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageTrace {
    /// Every arrival of the messageId (or the one message), oldest first.
    pub arrivals: Vec<StoredMessage>,
    /// The outcome recorded for each arrival (same order).
    pub outcomes: Vec<Option<String>>,
    pub events: Vec<StoredEvent>,
    /// Collisions this message took part in, as winner or as later arrival.
    pub collisions: Vec<StoredCollision>,
    pub unmapped: Option<StoredUnmapped>,
    pub profile: Option<StoredProfile>,
    pub identity_changes: Vec<StoredIdentityChange>,
    pub deliveries: Vec<StoredDelivery>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DestinationPause {
    pub until_ms: i64,
    pub reason: String,
    pub since_ms: i64,
}

impl DestinationPause {
    /// True until the pause ends. After it, the row stays until a probe answers (the breaker
    /// is half-open), but the destination no longer holds back: it is not paused.
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.until_ms > now_ms
    }
}

/// One HTTP request a delivery took part in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredHttpRequest {
    pub id: i64,
    pub started_at_ms: i64,
    pub latency_ms: Option<i64>,
    pub item_count: i64,
    pub url: Option<String>,
    pub headers: Option<serde_json::Value>,
    pub body: Option<String>,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredAttempt {
    pub attempt: i64,
    pub at_ms: i64,
    pub outcome: String,
    pub reason: Option<String>,
    pub next_attempt_ms: Option<i64>,
    pub request: Option<StoredHttpRequest>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredDelivery {
    pub id: i64,
    pub event_id: String,
    pub message_row: i64,
    pub destination: String,
    pub kind: String,
    pub destination_event: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub history: Vec<StoredAttempt>,
}

/// How a trace looks a profile up.
pub enum ProfileKey<'a> {
    Id(i64),
    Identifier(&'static str, &'a str),
}

/// The live profile a trace shows: the one its events or identity changes name, else the one
/// its first arrival's userId or anonymousId belongs to, followed through merges (a merged
/// profile points at the one it was folded into).
pub fn live_profile<E>(
    events: &[StoredEvent],
    identity_changes: &[StoredIdentityChange],
    first: &StoredMessage,
    mut lookup: impl FnMut(ProfileKey<'_>) -> Result<Option<StoredProfile>, E>,
) -> Result<Option<StoredProfile>, E> {
    let profile_id = events
        .iter()
        .find_map(|e| e.canonical.user.profile_id)
        .or_else(|| identity_changes.first().map(|c| c.profile_id));
    let mut profile = match profile_id {
        Some(id) => lookup(ProfileKey::Id(id))?,
        None => match (&first.user_id, &first.anonymous_id) {
            (Some(u), _) => lookup(ProfileKey::Identifier("user_id", u))?,
            (None, Some(a)) => lookup(ProfileKey::Identifier("anonymous_id", a))?,
            _ => None,
        },
    };
    for _ in 0..8 {
        match profile.as_ref().and_then(|p| p.merged_into) {
            Some(next) => profile = lookup(ProfileKey::Id(next))?,
            None => break,
        }
    }
    Ok(profile)
}
