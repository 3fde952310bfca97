//! Stable event ids and the classification of collisions.
//!
//! The event_id is a pure function of environment, canonical name and the row's dedup key
//! (order_id for orders, else the Segment messageId), so a Segment retry, a replay, a re-batched
//! delivery or the same order sent twice all produce the same id, and every destination can use
//! it as its idempotency key.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::mapping::DedupKey;

/// `ev_<canonical>_<24 hex>`: readable in a diff, fixed length whatever the order id looks like.
/// Returns the event_id, a description of its basis, and the raw key it derives from.
/// The event ids an order would have been given, for each (environment, canonical name): what
/// a search by order_id looks up (the id is a digest, so it cannot be searched by prefix).
pub fn order_event_ids(pairs: &[(String, String)], order_id: &str) -> Vec<String> {
    pairs
        .iter()
        .map(|(environment, canonical)| {
            event_id(
                environment,
                canonical,
                DedupKey::OrderId,
                Some(order_id),
                "",
            )
            .0
        })
        .collect()
}

pub fn event_id(
    environment: &str,
    canonical: &str,
    dedup_key: DedupKey,
    order_id: Option<&str>,
    message_id: &str,
) -> (String, String, String) {
    let (material, basis, key) = match (dedup_key, order_id) {
        (DedupKey::OrderId, Some(order)) => (
            format!("{environment}\u{1f}{canonical}\u{1f}order\u{1f}{order}"),
            format!("{canonical} + order_id {order}"),
            order,
        ),
        _ => (
            format!("{environment}\u{1f}{canonical}\u{1f}message\u{1f}{message_id}"),
            format!("{canonical} + messageId {message_id}"),
            message_id,
        ),
    };
    let digest = Sha256::digest(material.as_bytes());
    (
        format!("ev_{canonical}_{}", &hex::encode(digest)[..24]),
        basis,
        key.to_string(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollisionKind {
    /// The same messageId with the same canonical payload: Segment retried.
    SegmentRetry,
    /// The same order under another messageId, same payload: the order was sent twice.
    DuplicateOrder,
    /// The same event_id with a different canonical payload: someone must look.
    ConflictingPayload,
}

impl CollisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CollisionKind::SegmentRetry => "segment_retry",
            CollisionKind::DuplicateOrder => "duplicate_order",
            CollisionKind::ConflictingPayload => "conflicting_payload",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            CollisionKind::SegmentRetry => {
                "Segment delivered the same messageId again (a retry); the first arrival won"
            }
            CollisionKind::DuplicateOrder => {
                "the same order arrived under another messageId; both collapse onto one event_id (messageId + order_id is the dedup foundation)"
            }
            CollisionKind::ConflictingPayload => {
                "the same event_id arrived with a different payload (value, items or time differ); the first arrival won, the second is kept for review"
            }
        }
    }
}

/// Classify a second arrival of an event_id against the first.
pub fn classify(
    first_message_id: &str,
    first_fingerprint: &[u8],
    message_id: &str,
    fingerprint: &[u8],
) -> CollisionKind {
    if first_fingerprint != fingerprint {
        CollisionKind::ConflictingPayload
    } else if first_message_id == message_id {
        CollisionKind::SegmentRetry
    } else {
        CollisionKind::DuplicateOrder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_collapse_on_order_id_and_others_on_message_id() {
        let a = event_id(
            "production",
            "purchase",
            DedupKey::OrderId,
            Some("ORD-1"),
            "m-1",
        );
        let b = event_id(
            "production",
            "purchase",
            DedupKey::OrderId,
            Some("ORD-1"),
            "m-2",
        );
        assert_eq!(a.0, b.0);
        assert_eq!(a.2, "ORD-1");
        assert!(a.0.starts_with("ev_purchase_") && a.0.len() == "ev_purchase_".len() + 24);
        assert_eq!(a.1, "purchase + order_id ORD-1");
        let staging = event_id(
            "staging",
            "purchase",
            DedupKey::OrderId,
            Some("ORD-1"),
            "m-1",
        );
        assert_ne!(a.0, staging.0, "environments never collide");
        let refund = event_id(
            "production",
            "refund",
            DedupKey::OrderId,
            Some("ORD-1"),
            "m-1",
        );
        assert_ne!(a.0, refund.0, "the refund of an order is its own event");
        let no_order = event_id("production", "purchase", DedupKey::OrderId, None, "m-1");
        assert_eq!(no_order.1, "purchase + messageId m-1");
        let view1 = event_id(
            "production",
            "view_content",
            DedupKey::MessageId,
            Some("ORD-1"),
            "m-1",
        );
        let view2 = event_id(
            "production",
            "view_content",
            DedupKey::MessageId,
            Some("ORD-1"),
            "m-2",
        );
        assert_ne!(view1.0, view2.0);
    }

    #[test]
    fn collision_kinds() {
        assert_eq!(classify("m", b"x", "m", b"x"), CollisionKind::SegmentRetry);
        assert_eq!(
            classify("m", b"x", "n", b"x"),
            CollisionKind::DuplicateOrder
        );
        assert_eq!(
            classify("m", b"x", "m", b"y"),
            CollisionKind::ConflictingPayload
        );
        assert_eq!(
            classify("m", b"x", "n", b"y"),
            CollisionKind::ConflictingPayload
        );
    }
}
