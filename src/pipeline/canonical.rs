//! The canonical event: what every destination builds its payload from, with the provenance of
//! each field so the raw-vs-canonical diff can explain itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a canonical field came from: the raw path it was read from and the transform applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// e.g. `properties.revenue`, `context.page.url`, `profile 12 (identify seg_test_480)`.
    pub source: String,
    /// e.g. `revenue → value (parsed "$39.95")`, `copied`, `default (no currency sent)`.
    pub transform: String,
}

impl Provenance {
    pub fn new(source: impl Into<String>, transform: impl Into<String>) -> Provenance {
        Provenance {
            source: source.into(),
            transform: transform.into(),
        }
    }
}

/// Who did it: identifiers from the message, enriched from the profile by the identity stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanonicalUser {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// Where it happened: device and click identifiers used for matching.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanonicalContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// gclid, gbraid, wbraid, fbc, fbp, ttclid, ttp.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub click_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalEvent {
    pub event_id: String,
    /// How the event_id was derived, e.g. `order_id ORD-10492` or `messageId seg_test_481`.
    pub event_id_basis: String,
    /// The raw key the event_id derives from (the order_id, or the messageId). Platforms that
    /// dedup against a browser pixel (Meta, TikTok) and Klaviyo's unique_id use it as is, so
    /// the pixel can send the same value.
    pub dedup_key: String,
    pub name: String,
    pub segment_event: String,
    pub mapping_version: u32,
    pub message_id: String,
    pub environment: String,
    /// RFC 3339, milliseconds, UTC.
    pub event_time: String,
    pub event_time_ms: i64,
    pub properties: Map<String, Value>,
    pub user: CanonicalUser,
    pub context: CanonicalContext,
    /// Keyed by canonical path: `properties.value`, `user.email`, `context.click_ids.gclid`, …
    pub provenance: BTreeMap<String, Provenance>,
    /// Required properties (from the mapping row) that are missing: the event cannot be
    /// delivered until the source sends them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_required: Vec<String>,
    /// Values that could not be used, with the reason (e.g. an invalid currency code).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Destinations a controlled test send asked to skip (they have no test mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_destinations: Vec<String>,
}

impl CanonicalEvent {
    /// The part of the event that must match for two arrivals to be "the same": a differing
    /// payload under one event_id is a conflicting duplicate. Receipt-specific fields (messageId,
    /// provenance, profile) are left out, so a Segment retry or a re-sent order compares equal.
    pub fn payload_fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        // A time TrackLayer filled in from its own clock differs on every arrival; only a time
        // the source sent says something about the event.
        let sent_time = self
            .provenance
            .get("event_time")
            .is_some_and(|p| p.source != super::transform::RECEIPT_TIME)
            .then_some(self.event_time_ms);
        let essence = serde_json::json!({
            "name": self.name,
            "event_time_ms": sent_time,
            "properties": self.properties,
        });
        Sha256::digest(essence.to_string().as_bytes()).into()
    }
}
