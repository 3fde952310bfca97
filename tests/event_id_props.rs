//! Property: an event's event_id depends only on the event, never on how Segment delivered it.
//! The same messages sent once in one batch, or re-batched differently with retries mixed in,
//! give every messageId the same event_id, and each order ends up as exactly one event.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    Order(u8),
    Lead,
    View,
}

fn message(index: usize, kind: &Kind) -> String {
    let id = format!("m-{index}");
    match kind {
        // Same order → same payload, so repeats are duplicate orders, not conflicts.
        Kind::Order(n) => format!(
            r#"{{"type":"track","event":"Order Completed","messageId":"{id}","userId":"u-{n}","timestamp":"2026-04-23T10:00:00Z","properties":{{"order_id":"ORD-{n}","revenue":{},"currency":"EUR"}}}}"#,
            10 + *n as u32
        ),
        Kind::Lead => format!(
            r#"{{"type":"track","event":"Lead Submitted","messageId":"{id}","anonymousId":"a-{index}","properties":{{}}}}"#
        ),
        Kind::View => format!(
            r#"{{"type":"track","event":"Product Viewed","messageId":"{id}","anonymousId":"a-{index}","properties":{{"product_id":"P-{index}","price":3}}}}"#
        ),
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (0u8..3).prop_map(Kind::Order),
        Just(Kind::Lead),
        Just(Kind::View)
    ]
}

/// Messages, and a delivery plan for them: batches of message indexes (repeats are Segment
/// retries), sent as bare arrays or as `{"batch": [...]}`.
fn scenario() -> impl Strategy<Value = (Vec<Kind>, Vec<Vec<usize>>, bool)> {
    prop::collection::vec(kind(), 1..10).prop_flat_map(|kinds| {
        let count = kinds.len();
        (
            Just(kinds),
            prop::collection::vec(prop::collection::vec(0..count, 1..5), 1..8),
            any::<bool>(),
        )
    })
}

async fn event_ids(
    messages: &[String],
    plan: &[Vec<usize>],
    batch_object: bool,
) -> (BTreeMap<String, String>, usize) {
    let server = TestServer::start().await;
    let url = server.url("/segment/events");
    for batch in plan {
        let elements: Vec<&str> = batch.iter().map(|i| messages[*i].as_str()).collect();
        let body = if batch_object {
            format!(r#"{{"batch":[{}]}}"#, elements.join(","))
        } else {
            format!("[{}]", elements.join(","))
        };
        let response = signed(&client(), &url, "production", PRODUCTION_SECRET, &body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let reader = server.reader();
    let mut ids = BTreeMap::new();
    let mut events = std::collections::BTreeSet::new();
    for i in 0..messages.len() {
        let id = format!("m-{i}");
        if let Some(trace) = reader.trace(&id).unwrap() {
            let json = tracklayer::inspect::to_json(&trace);
            let event_id = json["dedup"]["event_id"].as_str().unwrap().to_string();
            for e in &trace.events {
                events.insert(e.row_id);
            }
            ids.insert(id, event_id);
        }
    }
    server.stop().await;
    (ids, events.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn event_id_is_stable_under_retries_and_rebatching((kinds, mut plan, batch_object) in scenario()) {
        let messages: Vec<String> = kinds.iter().enumerate().map(|(i, k)| message(i, k)).collect();
        let count = messages.len();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // Every message at least once, last batch in reverse order.
        plan.push((0..count).rev().collect());

        let (once, events_once) = runtime.block_on(event_ids(&messages, &[(0..count).collect()], false));
        let (rebatched, events_rebatched) = runtime.block_on(event_ids(&messages, &plan, batch_object));
        prop_assert_eq!(&once, &rebatched);
        prop_assert_eq!(once.len(), count);
        // One event per order and per other message, however it was delivered.
        let distinct_orders: std::collections::BTreeSet<u8> =
            kinds.iter().filter_map(|k| match k { Kind::Order(n) => Some(*n), _ => None }).collect();
        let others = kinds.iter().filter(|k| !matches!(k, Kind::Order(_))).count();
        prop_assert_eq!(events_once, distinct_orders.len() + others);
        prop_assert_eq!(events_rebatched, distinct_orders.len() + others);
    }
}
