//! The rows a group's decisions write: every table's new rows (and the profiles in their final
//! state), ready for a store to write set-based. Ids of messages, events, profiles and
//! deliveries are decided here (from ids the store reserved); other rows take theirs on insert.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::input::{IngestBatch, MessageRecord, StoredOutcome};
use crate::destinations::Subject;
use crate::pipeline::dedup::CollisionKind;
use crate::pipeline::identity::Profile;
use crate::pipeline::{CanonicalEvent, RouteDecision};

/// One message's row.
#[derive(Debug, Clone)]
pub struct MessageInsert<'a> {
    pub id: i64,
    pub batch: &'a IngestBatch,
    pub record: &'a MessageRecord,
    pub status: &'static str,
    pub reason: Option<&'a str>,
    pub duplicate_of: Option<i64>,
    /// None for a duplicate with identical bytes: they are not stored twice.
    pub raw: Option<&'a [u8]>,
    /// What the pipeline made of it (`mapped`, `identify`, …).
    pub outcome: Option<&'static str>,
}

/// A track whose name is not in the mapping table.
#[derive(Debug, Clone)]
pub struct UnmappedInsert<'a> {
    pub message_row: i64,
    pub environment: &'a str,
    pub segment_event: &'a str,
    pub mapping_version: u32,
    pub suggestion: Option<String>,
    pub reason: &'a str,
    pub received_at_ms: i64,
}

/// A profile as it stands after the group: `new` ones are inserted, the others updated.
#[derive(Debug, Clone)]
pub struct ProfileWrite {
    pub profile: Profile,
    pub new: bool,
    /// Folded into another profile by a later message of the group.
    pub merged_into: Option<i64>,
}

impl ProfileWrite {
    pub fn id(&self) -> i64 {
        self.profile.id.unwrap_or_default()
    }
    pub fn traits_json(&self) -> String {
        serde_json::Value::Object(self.profile.traits.clone()).to_string()
    }
    pub fn trait_sources_json(&self) -> String {
        serde_json::to_string(&self.profile.trait_sources).unwrap_or_else(|_| "{}".into())
    }
    pub fn consent_json(&self) -> Option<String> {
        self.profile
            .consent
            .clone()
            .map(|c| serde_json::Value::Object(c).to_string())
    }
}

/// An identifier's owner after the group (an upsert: its first sighting is kept).
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityUpsert {
    pub kind: &'static str,
    pub value: String,
    pub profile_id: i64,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentityChange {
    pub at_ms: i64,
    pub message_row: i64,
    /// `created`, `merged` or `conflict`.
    pub kind: &'static str,
    pub profile_id: i64,
    pub other_profile_id: Option<i64>,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct EventInsert {
    pub id: i64,
    pub event: Arc<CanonicalEvent>,
    pub message_row: i64,
    pub fingerprint: [u8; 32],
    /// The canonical event as JSON (the store compresses it).
    pub canonical: String,
    /// Let through by a replay window despite an earlier event with its id.
    pub replay: bool,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct RouteInsert {
    pub event_row: i64,
    pub decision: RouteDecision,
}

/// A delivery to create; its status comes from the hand-off (in flight, or pending).
#[derive(Debug, Clone)]
pub struct DeliveryInsert {
    pub id: i64,
    pub event_row: Option<i64>,
    pub event_id: String,
    pub message_row: i64,
    pub destination: String,
    pub kind: String,
    pub destination_event: String,
    pub consent_source: String,
    /// The profile snapshot (JSON) of a profile delivery.
    pub snapshot: Option<String>,
    pub event_time_ms: i64,
    pub created_at_ms: i64,
    /// What the worker sends, handed over with the row when the worker has room.
    pub subject: Subject,
}

#[derive(Debug, Clone)]
pub struct CollisionInsert {
    pub event_id: String,
    pub kind: CollisionKind,
    pub winner_event_row: i64,
    pub winner_message_row: i64,
    pub message_row: i64,
    /// The arrival that collapsed, as JSON.
    pub canonical: String,
    pub detected_at_ms: i64,
}

/// A messageId newly accepted (a fleet claims it in `message_ids`).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageClaim {
    pub environment: String,
    pub message_id: String,
    pub row: i64,
    pub first_seen_ms: i64,
}

/// An event_id newly taken (a fleet claims it in `event_ids`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventClaim {
    pub event_id: String,
    pub row: i64,
    pub created_at_ms: i64,
}

/// What became of one request of the group.
#[derive(Debug, Clone, PartialEq)]
pub enum JobDecision {
    Stored(Vec<StoredOutcome>),
    /// Refused inside the transaction (a re-used signature): nothing of it is written.
    Refused(String),
}

/// Everything a group writes.
#[derive(Debug, Default)]
pub struct Decision<'a> {
    /// Per request of the group, in order.
    pub jobs: Vec<JobDecision>,
    /// The requests stored (their receipts).
    pub requests: Vec<&'a IngestBatch>,
    pub messages: Vec<MessageInsert<'a>>,
    pub message_claims: Vec<MessageClaim>,
    pub unmapped: Vec<UnmappedInsert<'a>>,
    /// Profiles in their final state, by id.
    pub profiles: Vec<ProfileWrite>,
    /// (merged, into), in the order they happened: the merged profile's identifiers move.
    pub merges: Vec<(i64, i64)>,
    pub identities: Vec<IdentityUpsert>,
    pub identity_changes: Vec<IdentityChange>,
    pub events: Vec<EventInsert>,
    pub event_claims: Vec<EventClaim>,
    pub routes: Vec<RouteInsert>,
    pub deliveries: Vec<DeliveryInsert>,
    pub collisions: Vec<CollisionInsert>,
    /// Ids taken of each kind: messages, events, profiles, deliveries.
    pub ids_used: [usize; 4],
    /// Messages refused by the suppression list, per forget request row.
    pub suppressed: BTreeMap<i64, usize>,
}

impl Decision<'_> {
    /// Rows written, roughly: what a benchmark divides by.
    pub fn row_count(&self) -> usize {
        self.requests.len()
            + self.messages.len()
            + self.unmapped.len()
            + self.profiles.len()
            + self.identities.len()
            + self.identity_changes.len()
            + self.events.len()
            + self.routes.len()
            + self.deliveries.len()
            + self.collisions.len()
    }
}
