//! The canonical event: what every destination builds its payload from, with the provenance of
//! each field so the raw-vs-canonical diff can explain itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a canonical field came from: the raw path it was read from and the transform applied.
/// The event-time source when a message carries no usable time of its own.
pub const RECEIPT_TIME: &str = "TrackLayer receipt time";

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
    /// Values destinations asked for by raw path (`properties.ga_client_id`), keyed by path.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub captured: BTreeMap<String, String>,
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
    /// The consent categories the message carried (`context.consent.categoryPreferences`, a
    /// category not `true` counts as false); None when it carried none. Platforms that take
    /// consent signals (Google's adUserData / adPersonalization, GA4) read it per category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<BTreeMap<String, bool>>,
    /// Sent by a controlled test (`context.tracklayer.test`): platforms with a validation
    /// endpoint (GA4's debug endpoint, Google's validateOnly) check it there instead of
    /// recording it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test_send: bool,
    /// For a refund: the order it refunds, as TrackLayer recorded it. Filled in by the stateful
    /// stage; platforms that adjust a conversion (Google) need the original value and time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunds: Option<RefundedOrder>,
}

/// The purchase a refund refers to (same environment and order_id), as first recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundedOrder {
    pub event_id: String,
    pub order_id: String,
    /// The purchase's value and currency, when it had them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    pub event_time: String,
    pub event_time_ms: i64,
    /// Destinations the purchase was routed to (`ready`): an adjustment is sent only where
    /// the conversion went, because an unmatched adjustment would create a new conversion.
    pub routed_to: Vec<String>,
}

impl RefundedOrder {
    /// The order's value after a refund of `refunded` (None: the whole order): never below 0.
    pub fn remaining_value(&self, refunded: Option<f64>) -> f64 {
        match (self.value, refunded) {
            (Some(original), Some(amount)) => {
                ((original - amount) * 100.0).round().max(0.0) / 100.0
            }
            _ => 0.0,
        }
    }
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
            .is_some_and(|p| p.source != RECEIPT_TIME)
            .then_some(self.event_time_ms);
        // Borrowed, so fingerprinting never deep-copies the properties. Field order and
        // serialization are those of the JSON object stored fingerprints were made from.
        #[derive(Serialize)]
        struct Essence<'a> {
            name: &'a str,
            event_time_ms: Option<i64>,
            properties: &'a Map<String, Value>,
        }
        let essence = Essence {
            name: &self.name,
            event_time_ms: sent_time,
            properties: &self.properties,
        };
        let text = serde_json::to_vec(&essence).unwrap_or_default();
        Sha256::digest(&text).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn purchase() -> CanonicalEvent {
        serde_json::from_str(
            r#"{"event_id":"ev_purchase_9b3b83ec4428d0ab2efcf23a","event_id_basis":"purchase + order_id ORD-1",
                "dedup_key":"ORD-1","name":"purchase","segment_event":"Order Completed","mapping_version":1,
                "message_id":"m-1","environment":"production","event_time":"2026-04-23T10:15:30.000Z",
                "event_time_ms":1776939330000,
                "properties":{"order_id":"ORD-1","items":[{"item_id":"SKU-481","price":89.95,"quantity":1}],
                    "value":129.95,"currency":"EUR","note":"caf\u00e9 \"quoted\""},
                "user":{"profile_id":1,"user_id":"cust_34982"},"context":{},
                "provenance":{"event_time":{"source":"timestamp","transform":"preserved"}}}"#,
        )
        .expect("a canonical event")
    }

    /// Fingerprints are stored with events and compared with later arrivals, so the borrowed
    /// serialization must hash exactly what the original `json!` object did.
    #[test]
    fn fingerprint_matches_the_stored_format() {
        let event = purchase();
        let reference = serde_json::json!({
            "name": event.name,
            "event_time_ms": Some(event.event_time_ms),
            "properties": event.properties,
        });
        let expected: [u8; 32] = Sha256::digest(reference.to_string().as_bytes()).into();
        assert_eq!(event.payload_fingerprint(), expected);

        let mut receipt_time = purchase();
        receipt_time.provenance.insert(
            "event_time".into(),
            serde_json::from_str(r#"{"source":"TrackLayer receipt time","transform":"filled in"}"#)
                .expect("provenance"),
        );
        let reference = serde_json::json!({
            "name": event.name,
            "event_time_ms": Option::<i64>::None,
            "properties": event.properties,
        });
        let expected: [u8; 32] = Sha256::digest(reference.to_string().as_bytes()).into();
        assert_eq!(receipt_time.payload_fingerprint(), expected);
        assert_ne!(
            receipt_time.payload_fingerprint(),
            event.payload_fingerprint()
        );
    }
}
