//! A refund refers to a purchase: the platforms that adjust a conversion (Google restates it)
//! need the purchase as it was recorded. Finding it is a lookup by the purchase's event_id,
//! which derives from the environment and the order_id as every purchase's does.

use serde_json::Value;

use super::canonical::{CanonicalEvent, RefundedOrder};
use super::dedup;
use super::mapping::DedupKey;

/// The event_id the refunded purchase was stored under, for a refund that names its order.
pub fn purchase_event_id(refund: &CanonicalEvent) -> Option<String> {
    if refund.name != "refund" {
        return None;
    }
    let order = refund.properties.get("order_id").and_then(Value::as_str)?;
    let (event_id, _, _) = dedup::event_id(
        &refund.environment,
        "purchase",
        DedupKey::OrderId,
        Some(order),
        "",
    );
    Some(event_id)
}

/// What a refund keeps of its purchase: value, currency, time, and where it went.
pub fn refunded_order(purchase: &CanonicalEvent, routed_to: Vec<String>) -> RefundedOrder {
    RefundedOrder {
        event_id: purchase.event_id.clone(),
        order_id: purchase
            .properties
            .get("order_id")
            .and_then(Value::as_str)
            .unwrap_or(&purchase.dedup_key)
            .to_string(),
        value: purchase.properties.get("value").and_then(Value::as_f64),
        currency: purchase
            .properties
            .get("currency")
            .and_then(Value::as_str)
            .map(str::to_string),
        event_time: purchase.event_time.clone(),
        event_time_ms: purchase.event_time_ms,
        routed_to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::fixture;

    #[test]
    fn a_refund_finds_its_purchase_by_order() {
        let purchase = fixture::purchase();
        let (purchase_id, _, _) = dedup::event_id(
            &purchase.environment,
            "purchase",
            DedupKey::OrderId,
            Some("ORD-10042"),
            "msg-10042",
        );
        let mut refund = fixture::purchase();
        refund.name = "refund".into();
        assert_eq!(purchase_event_id(&refund), Some(purchase_id));
        assert_eq!(purchase_event_id(&purchase), None, "only refunds look back");
        let order = refunded_order(&purchase, vec!["google".into()]);
        assert_eq!(order.order_id, "ORD-10042");
        assert_eq!(order.value, Some(129.98));
        assert_eq!(order.remaining_value(Some(29.98)), 100.0);
        assert_eq!(order.remaining_value(Some(500.0)), 0.0);
        assert_eq!(order.remaining_value(None), 0.0);
    }
}
