//! What the stateful stage needs from a store for a group, as keys to load and the state
//! loaded for them: the store answers each kind of key in a set-based read.

use std::collections::{BTreeSet, HashMap};

use super::input::{lookup_keys, message_identifiers, IngestBatch};
use crate::pipeline::identity::{Identifier, Profile};
use crate::pipeline::{privacy, refund, CanonicalEvent, Draft};

/// Everything a group's messages could touch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Keys {
    /// (environment, messageId) of every message, and of element 0 of signature-guarded batches.
    pub message_ids: Vec<(String, String)>,
    /// Every identifier the group's observations name (an alias's previousId in both roles).
    pub identifiers: Vec<Identifier>,
    /// The event_ids mapped messages would get.
    pub event_ids: Vec<String>,
    /// Purchases the group's refunds refer to (by event_id).
    pub purchases: Vec<String>,
    /// Environments whose replay windows matter.
    pub environments: Vec<String>,
    /// The oldest dedup window start among the group: rows older than it cannot matter.
    pub since_ms: i64,
    /// The group's clock: pauses and replay windows are read as of now.
    pub now_ms: i64,
    /// Destinations the group may create deliveries for (their fleet pause is read).
    pub destinations: Vec<String>,
    /// The keyed hashes of every identifier the group's messages name (the suppression list
    /// is read for them).
    pub suppression: Vec<Vec<u8>>,
}

impl Keys {
    /// The keys of a group of requests, each kind deduplicated.
    pub fn of(
        batches: &[&IngestBatch],
        destinations: &[String],
        suppressor: Option<&privacy::Suppressor>,
        now_ms: i64,
    ) -> Keys {
        let mut message_ids = BTreeSet::new();
        let mut identifiers = BTreeSet::new();
        let mut event_ids = BTreeSet::new();
        let mut purchases = BTreeSet::new();
        let mut environments = BTreeSet::new();
        let mut since_ms = i64::MAX;
        let mut suppression = BTreeSet::new();
        for batch in batches {
            let environment = &batch.receipt.environment;
            environments.insert(environment.clone());
            since_ms = since_ms.min(batch.dedup_since_ms);
            if let Some(id) = batch
                .replay_guard
                .as_ref()
                .and_then(|g| g.element0_message_id.clone())
            {
                message_ids.insert((environment.clone(), id));
            }
            for message in &batch.messages {
                if let Some(id) = &message.message_id {
                    message_ids.insert((environment.clone(), id.clone()));
                }
                // Only while someone is suppressed: hashing every identifier costs the writer.
                if let Some(suppressor) = suppressor {
                    for id in message_identifiers(message) {
                        suppression.insert(suppressor.hash(&id));
                    }
                }
                let Some(input) = &message.pipeline else {
                    continue;
                };
                identifiers.extend(lookup_keys(&input.observation));
                if let Draft::Mapped(event, _) = &input.draft {
                    event_ids.insert(event.event_id.clone());
                    purchases.extend(refund::purchase_event_id(event));
                }
            }
        }
        Keys {
            message_ids: message_ids.into_iter().collect(),
            identifiers: identifiers.into_iter().collect(),
            event_ids: event_ids.into_iter().collect(),
            purchases: purchases.into_iter().collect(),
            environments: environments.into_iter().collect(),
            since_ms: if since_ms == i64::MAX {
                now_ms
            } else {
                since_ms
            },
            now_ms,
            destinations: destinations.to_vec(),
            suppression: suppression.into_iter().collect(),
        }
    }
}

/// The accepted message holding a messageId (within the window it was loaded for).
#[derive(Debug, Clone, PartialEq)]
pub struct PriorMessage {
    pub row: i64,
    pub raw_sha256: Vec<u8>,
    pub first_seen_ms: i64,
    /// The request that carried it, and that request's whole-body digest.
    pub request_id: String,
    pub request_sha256: Option<Vec<u8>>,
}

/// The event holding an event_id (the winner of any collision).
#[derive(Debug, Clone, PartialEq)]
pub struct PriorEvent {
    pub row: i64,
    pub message_row: i64,
    pub message_id: String,
    pub fingerprint: Vec<u8>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayWindow {
    pub environment: String,
    pub starts_ms: i64,
    pub ends_ms: i64,
}

/// A purchase a refund refers to, with the destinations it was routed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    pub event: CanonicalEvent,
    pub routed_to: Vec<String>,
}

/// What a store loaded for a group's keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub messages: HashMap<(String, String), PriorMessage>,
    /// Which profile owns each identifier that is known.
    pub owners: HashMap<Identifier, i64>,
    /// Those profiles, whole (with all their identifiers).
    pub profiles: HashMap<i64, Profile>,
    pub events: HashMap<String, PriorEvent>,
    pub purchases: HashMap<String, Purchase>,
    pub replay_windows: Vec<ReplayWindow>,
    /// Destinations the fleet has paused now: their new deliveries are not handed over.
    pub paused: Vec<String>,
    /// Each loaded profile's version, where a store keeps one (a fleet writes a profile only if
    /// it is still the version it loaded).
    pub versions: HashMap<i64, i64>,
    /// Suppressed hashes among the keys', with the forget request that suppressed each.
    pub suppressed: HashMap<Vec<u8>, i64>,
}

impl Snapshot {
    pub fn replay_open(&self, environment: &str, at_ms: i64) -> bool {
        self.replay_windows
            .iter()
            .any(|w| w.environment == environment && w.starts_ms <= at_ms && w.ends_ms > at_ms)
    }
}
