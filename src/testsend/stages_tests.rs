//! Each stage of the walk over traces as a store gives them back: what the engineer following
//! a test send reads, and where the walk stops.

use serde_json::json;

use super::*;
use crate::store::{
    StoredAttempt, StoredCollision, StoredDelivery, StoredHttpRequest, StoredProfile, StoredRoute,
    StoredUnmapped,
};

fn accepted() -> SendResult {
    SendResult {
        status: 200,
        reply: json!({"request_id": "req_1", "accepted": 1}),
    }
}

fn arrival(message: serde_json::Value, status: &str) -> StoredMessage {
    StoredMessage {
        row_id: 7,
        request_id: "req_1".into(),
        position: 0,
        received_at_ms: 1_776_939_330_000,
        environment: "production".into(),
        message_id: message["messageId"].as_str().map(str::to_string),
        message_type: message["type"].as_str().map(str::to_string),
        event: message["event"].as_str().map(str::to_string),
        user_id: message["userId"].as_str().map(str::to_string),
        anonymous_id: message["anonymousId"].as_str().map(str::to_string),
        status: status.into(),
        reason: None,
        duplicate_of: None,
        raw_sha256: String::new(),
        raw: message.to_string().into_bytes(),
        raw_stored: true,
        raw_bytes: None,
    }
}

fn order_completed() -> serde_json::Value {
    json!({"type": "track", "event": "Order Completed", "messageId": "tl_test_1_4", "userId": "tl_test_user",
           "properties": {"order_id": "TEST-1", "revenue": 89.95, "currency": "EUR"}})
}

fn route(destination: &str, verdict: &str, reason: &str) -> StoredRoute {
    StoredRoute {
        destination: destination.into(),
        kind: "meta_capi".into(),
        destination_event: "Purchase".into(),
        verdict: verdict.into(),
        reason: reason.into(),
        consent_source: "message".into(),
        consent_allowed: verdict == "ready",
        consent_reason: reason.into(),
    }
}

fn purchase_event(email: Option<&str>, routes: Vec<StoredRoute>) -> StoredEvent {
    let canonical = serde_json::from_value(json!({
        "event_id": "ev_purchase_1", "event_id_basis": "purchase + order_id TEST-1",
        "dedup_key": "TEST-1", "name": "purchase", "segment_event": "Order Completed",
        "mapping_version": 3, "message_id": "tl_test_1_4", "environment": "production",
        "event_time": "2026-04-23T10:15:30.000Z", "event_time_ms": 1_776_939_330_000i64,
        "properties": {"order_id": "TEST-1", "value": 89.95, "currency": "EUR"},
        "user": {"profile_id": 1, "user_id": email.map(|_| "tl_test_user"), "email": email},
        "context": {},
        "provenance": {"properties.value": {"source": "properties.revenue", "transform": "renamed"}}
    }))
    .expect("a canonical event");
    StoredEvent {
        row_id: 1,
        event_id: "ev_purchase_1".into(),
        message_row: 7,
        message_id: "tl_test_1_4".into(),
        replay: false,
        created_at_ms: 1_776_939_330_000,
        canonical,
        routes,
    }
}

fn profile() -> StoredProfile {
    StoredProfile {
        id: 1,
        user_id: Some("tl_test_user".into()),
        traits: json!({}),
        trait_sources: json!({}),
        consent: None,
        consent_source: None,
        identities: vec![("user_id".into(), "tl_test_user".into())],
        first_seen_ms: 0,
        last_seen_ms: 0,
        merged_into: None,
        changes: Vec::new(),
    }
}

fn delivery(status: &str, attempts: i64, body: Option<&str>) -> StoredDelivery {
    StoredDelivery {
        id: 1,
        event_id: "ev_purchase_1".into(),
        message_row: 7,
        destination: "meta".into(),
        kind: "meta_capi".into(),
        destination_event: "Purchase".into(),
        status: status.into(),
        attempts,
        next_attempt_ms: 0,
        last_status_code: (attempts > 0).then_some(if status == "dead" { 400 } else { 200 }),
        last_error: (status == "dead").then(|| "Meta refused: Invalid parameter".into()),
        created_at_ms: 0,
        updated_at_ms: 0,
        history: body
            .map(|b| StoredAttempt {
                attempt: 1,
                at_ms: 0,
                outcome: status.into(),
                reason: None,
                next_attempt_ms: None,
                request: Some(StoredHttpRequest {
                    id: 1,
                    started_at_ms: 0,
                    latency_ms: Some(40),
                    item_count: 1,
                    url: None,
                    headers: None,
                    body: Some(b.into()),
                    status_code: Some(200),
                    response_body: None,
                    error: None,
                }),
            })
            .into_iter()
            .collect(),
    }
}

fn trace(message: serde_json::Value, event: Option<StoredEvent>) -> MessageTrace {
    MessageTrace {
        arrivals: vec![arrival(message, "accepted")],
        outcomes: vec![Some("mapped".into())],
        events: event.into_iter().collect(),
        collisions: Vec::new(),
        unmapped: None,
        profile: Some(profile()),
        identity_changes: Vec::new(),
        deliveries: Vec::new(),
    }
}

fn names_and_verdicts(stages: &[Stage]) -> Vec<(&'static str, Verdict)> {
    stages.iter().map(|s| (s.name, s.verdict)).collect()
}

fn plan() -> TestPlan {
    TestPlan::new([("meta".to_string(), Some(true))].into(), Vec::new(), false)
}

#[test]
fn a_delivered_purchase_passes_every_stage_with_what_each_did() {
    let mut t = trace(
        order_completed(),
        Some(purchase_event(
            Some("test.user@example.com"),
            vec![route("meta", "ready", "consent given")],
        )),
    );
    t.deliveries.push(delivery(
        "delivered",
        1,
        Some(r#"{"data":[{"event_name":"Purchase"}]}"#),
    ));
    let stages = stages(&accepted(), Some(&t), &plan());
    assert_eq!(
        names_and_verdicts(&stages),
        [
            ("authenticated", Verdict::Pass),
            ("parsed", Verdict::Pass),
            ("mapped", Verdict::Pass),
            ("transformed", Verdict::Pass),
            ("identity", Verdict::Pass),
            ("dedup", Verdict::Pass),
            ("consent", Verdict::Pass),
            ("payload", Verdict::Pass),
            ("reply", Verdict::Pass),
        ]
    );
    assert_eq!(
        stages[2].detail,
        ["Order Completed → purchase (mapping table v3)"]
    );
    assert!(stages[5].detail[0].contains("purchase + order_id TEST-1"));
    assert!(
        stages[7].detail[0].starts_with("meta as Purchase [test mode]"),
        "{:?}",
        stages[7].detail
    );
    assert!(
        stages[7].detail[0].contains("match quality"),
        "{:?}",
        stages[7].detail
    );
    assert_eq!(stages[8].detail, ["meta: delivered HTTP 200 (attempt 1)"]);
    assert!(settled(&stages) && !failed(&stages));
}

#[test]
fn a_refused_post_stops_at_authenticated_with_the_fix() {
    let refused = SendResult {
        status: 401,
        reply: json!({"message": "bad signature"}),
    };
    let stages = stages(&refused, None, &plan());
    assert_eq!(
        names_and_verdicts(&stages),
        [("authenticated", Verdict::Fail)]
    );
    assert_eq!(stages[0].detail, ["HTTP 401: bad signature"]);
    assert_eq!(stages[0].fix.as_deref(), Some(FIX_401));
    let too_big = SendResult {
        status: 413,
        reply: json!({"message": "body too large"}),
    };
    let stages = super::stages(&too_big, None, &plan());
    assert!(stages[0]
        .fix
        .as_deref()
        .is_some_and(|f| f.contains("batch_size")));
}

#[test]
fn a_forgotten_persons_call_stops_at_suppressed_instead_of_waiting() {
    let suppressed = SendResult {
        status: 200,
        reply: json!({"request_id": "req_1", "accepted": 0, "suppressed": 1}),
    };
    let stages = stages(&suppressed, None, &plan());
    assert_eq!(
        names_and_verdicts(&stages),
        [
            ("authenticated", Verdict::Pass),
            ("suppressed", Verdict::Fail)
        ]
    );
    assert!(stages[1].detail[0].contains("forgotten"));
    assert!(settled(&stages) && failed(&stages));
}

#[test]
fn a_call_not_stored_yet_waits_at_parsed() {
    let stages = stages(&accepted(), None, &plan());
    assert_eq!(
        names_and_verdicts(&stages),
        [("authenticated", Verdict::Pass), ("parsed", Verdict::Wait)]
    );
    assert!(!settled(&stages));
}

#[test]
fn an_invalid_call_stops_at_parsed_naming_the_field() {
    let mut t = trace(json!({"type": "track", "messageId": "m"}), None);
    t.arrivals[0].status = "invalid".into();
    t.arrivals[0].reason = Some("track: `event` is missing".into());
    let stages = stages(&accepted(), Some(&t), &plan());
    assert_eq!(
        stages.last().map(|s| (s.name, s.verdict)),
        Some(("parsed", Verdict::Fail))
    );
    assert_eq!(
        stages[1].fix.as_deref(),
        Some("fix the call at the source: track: `event` is missing")
    );
}

#[test]
fn an_unmapped_name_stops_at_mapped_with_the_near_miss() {
    let mut t = trace(
        json!({"type": "track", "event": "Order Complete", "messageId": "m"}),
        None,
    );
    t.unmapped = Some(StoredUnmapped {
        segment_event: "Order Complete".into(),
        mapping_version: 3,
        suggestion: Some("Order Completed".into()),
        reason: "no mapping row for `Order Complete`".into(),
    });
    let stages = stages(&accepted(), Some(&t), &plan());
    assert_eq!(
        stages.last().map(|s| (s.name, s.verdict)),
        Some(("mapped", Verdict::Fail))
    );
    let fix = stages[2].fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains("`Order Complete` (did you mean `Order Completed`?)"),
        "{fix}"
    );
}

#[test]
fn a_required_field_missing_stops_at_transformed() {
    let mut event = purchase_event(Some("a@example.com"), vec![route("meta", "ready", "ok")]);
    event.canonical.missing_required = vec!["currency".into()];
    let t = trace(order_completed(), Some(event));
    let stages = stages(&accepted(), Some(&t), &plan());
    assert_eq!(
        stages.last().map(|s| (s.name, s.verdict)),
        Some(("transformed", Verdict::Fail))
    );
    assert_eq!(
        stages[3].fix.as_deref(),
        Some("send currency from the source: the mapping row for `Order Completed` requires it")
    );
    // What the transforms did is shown, field by field.
    assert!(
        stages[3]
            .detail
            .iter()
            .any(|l| l.starts_with("properties.value = 89.95 ← properties.revenue")),
        "{:?}",
        stages[3].detail
    );
}

#[test]
fn a_purchase_without_email_phone_or_user_id_warns_at_identity_and_goes_on() {
    let t = trace(
        order_completed(),
        Some(purchase_event(None, vec![route("meta", "ready", "ok")])),
    );
    let stages = stages(&accepted(), Some(&t), &plan());
    let identity = stages
        .iter()
        .find(|s| s.name == "identity")
        .expect("identity stage");
    assert_eq!(identity.verdict, Verdict::Warn);
    assert_eq!(identity.fix.as_deref(), Some(FIX_IDENTITY));
    assert!(
        stages.iter().any(|s| s.name == "consent"),
        "a warning is no stop"
    );
}

#[test]
fn an_order_sent_again_stops_at_dedup_naming_the_first_message() {
    let mut t = trace(order_completed(), None);
    t.collisions.push(StoredCollision {
        id: 1,
        event_id: "ev_purchase_1".into(),
        kind: "order".into(),
        winner_event_row: 1,
        winner_message_row: 3,
        winner_message_id: Some("tl_test_0_4".into()),
        message_row: 7,
        message_id: Some("tl_test_1_4".into()),
        detected_at_ms: 0,
        canonical: json!({"name": "purchase", "properties": {"order_id": "TEST-1"}}),
    });
    let stages = stages(&accepted(), Some(&t), &plan());
    // Mapped says what it became, dedup says onto what it collapsed, and the walk stops.
    assert_eq!(
        stages[2].detail,
        ["Order Completed → purchase (collapsed onto an earlier event; see dedup)"]
    );
    assert_eq!(
        stages.last().map(|s| (s.name, s.verdict)),
        Some(("dedup", Verdict::Fail))
    );
    // No transformed stage: the collision has no canonical event of its own.
    assert_eq!(stages[4].name, "dedup");
    assert!(stages[4].detail[0].contains("first sent as messageId tl_test_0_4"));
    assert!(stages[4]
        .fix
        .as_deref()
        .is_some_and(|f| f.contains("order_id TEST-1 already produced event_id ev_purchase_1")));
}

#[test]
fn a_conversion_no_destination_may_receive_stops_at_consent() {
    let blocked = trace(
        order_completed(),
        Some(purchase_event(
            Some("a@example.com"),
            vec![route("meta", "blocked_consent", "Advertising not granted")],
        )),
    );
    let stages = stages(&accepted(), Some(&blocked), &plan());
    assert_eq!(
        stages.last().map(|s| (s.name, s.verdict)),
        Some(("consent", Verdict::Fail))
    );
    assert_eq!(
        stages[6].detail,
        ["meta: blocked_consent — Advertising not granted"]
    );
    assert!(stages[6]
        .fix
        .as_deref()
        .is_some_and(|f| f.contains("categoryPreferences")));

    let nowhere = trace(
        order_completed(),
        Some(purchase_event(Some("a@example.com"), Vec::new())),
    );
    let stages = super::stages(&accepted(), Some(&nowhere), &plan());
    assert_eq!(
        stages.last().map(|s| (s.name, s.verdict)),
        Some(("consent", Verdict::Fail))
    );
    assert_eq!(stages[6].detail, ["no destinations configured"]);

    // Left out on purpose (no test mode) is neither a failure nor a warning.
    let skipped = trace(
        order_completed(),
        Some(purchase_event(
            Some("a@example.com"),
            vec![route("meta", "skipped_test", "no test mode")],
        )),
    );
    let stages = super::stages(&accepted(), Some(&skipped), &plan());
    assert_eq!(
        stages
            .iter()
            .find(|s| s.name == "consent")
            .map(|s| s.verdict),
        Some(Verdict::Pass)
    );
    assert_eq!(
        stages.last().map(|s| (s.name, s.verdict)),
        Some(("payload", Verdict::Skip))
    );
}

#[test]
fn a_queued_delivery_waits_at_payload_and_a_dead_one_fails_with_the_replay() {
    let mut t = trace(
        order_completed(),
        Some(purchase_event(
            Some("a@example.com"),
            vec![route("meta", "ready", "ok")],
        )),
    );
    t.deliveries.push(delivery("pending", 0, None));
    let stages = stages(&accepted(), Some(&t), &plan());
    let payload = stages
        .iter()
        .find(|s| s.name == "payload")
        .expect("payload stage");
    assert_eq!(payload.verdict, Verdict::Wait);
    assert!(payload.detail[0].ends_with("queued: the payload is built at the first attempt"));
    assert!(!settled(&stages));

    t.deliveries[0] = delivery("dead", 1, Some(r#"{"data":[]}"#));
    let stages = super::stages(&accepted(), Some(&t), &plan());
    let reply = stages.last().expect("a reply stage");
    assert_eq!((reply.name, reply.verdict), ("reply", Verdict::Fail));
    assert_eq!(
        reply.detail,
        ["meta: dead HTTP 400: Meta refused: Invalid parameter"]
    );
    assert!(reply
        .fix
        .as_deref()
        .is_some_and(|f| f.ends_with("`tracklayer replay --destination meta`")));
}

#[test]
fn an_identify_is_never_a_conversion_and_lists_where_profiles_go() {
    let identify = json!({"type": "identify", "messageId": "tl_test_1_1", "userId": "tl_test_user",
                          "traits": {"email": "test.user@example.com"}});
    let t = trace(identify, None);
    let plan = TestPlan::new(
        [("klaviyo".to_string(), None)].into(),
        vec!["klaviyo".into()],
        false,
    );
    let stages = stages(&accepted(), Some(&t), &plan);
    let verdict = |name: &str| stages.iter().find(|s| s.name == name).map(|s| s.verdict);
    assert_eq!(verdict("mapped"), Some(Verdict::Skip));
    assert_eq!(
        verdict("transformed"),
        None,
        "an identify has no transforms"
    );
    assert_eq!(verdict("dedup"), Some(Verdict::Skip));
    let consent = stages
        .iter()
        .find(|s| s.name == "consent")
        .expect("consent stage");
    assert_eq!(consent.verdict, Verdict::Skip);
    assert_eq!(
        consent.detail,
        ["klaviyo: takes profiles; skipped: no test mode, would be a live event"]
    );
    assert_eq!(
        stages.last().map(|s| (s.name, s.verdict)),
        Some(("payload", Verdict::Skip))
    );
}
