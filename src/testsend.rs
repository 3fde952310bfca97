//! The controlled test send of the brief: one identify and the track calls of one test user,
//! each sent through the real signed ingest, then walked stage by stage — authenticated, parsed,
//! mapped, transformed, identity, dedup, consent, payload, the destination's reply — stopping at
//! the first failed stage with the fix in the words of the brief's troubleshooting section.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::pipeline::diff::{self, DiffKind};
use crate::store::MessageTrace;

/// One call of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub label: String,
    pub message: Value,
}

/// The test user a scenario is built for (editable before sending).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestUser {
    pub user_id: String,
    pub anonymous_id: String,
    pub email: String,
    pub phone: String,
}

impl Default for TestUser {
    fn default() -> TestUser {
        TestUser {
            user_id: "tl_test_user".into(),
            anonymous_id: "tl_test_anon".into(),
            email: "test.user@example.com".into(),
            phone: "+31612345678".into(),
        }
    }
}

/// The scenario names `--scenario` accepts.
pub const SCENARIO_STEPS: [&str; 5] = [
    "identify",
    "product_added",
    "checkout_started",
    "order_completed",
    "lead_submitted",
];

/// Build the calls: identify, Product Added, Checkout Started, Order Completed, Lead Submitted.
/// `run_id` makes messageIds and the order id unique per run, so a rerun is not a duplicate.
pub fn scenario(user: &TestUser, run_id: &str, only: &[String], skip: &[String]) -> Vec<Step> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let context = json!({
        "ip": "203.0.113.42",
        "userAgent": "Mozilla/5.0 (TrackLayer controlled test)",
        "page": {"url": "https://shop.example/checkout/thank-you?gclid=TeSt_GcLiD"},
        "consent": {"categoryPreferences": {"Advertising": true, "Analytics": true, "Marketing": true, "DataSharing": true}},
        "tracklayer": {"test": true, "skip": skip},
    });
    let order = format!("TEST-{run_id}");
    let product = json!({"product_id": "SKU-481", "sku": "SKU-481", "name": "Test Sock", "price": 89.95, "quantity": 1});
    let base = |n: usize, kind: &str| {
        json!({
            "type": kind,
            "messageId": format!("tl_test_{run_id}_{n}"),
            "userId": user.user_id,
            "anonymousId": user.anonymous_id,
            "timestamp": now,
            "context": context,
        })
    };
    let mut steps = Vec::new();
    let mut identify = base(1, "identify");
    identify["traits"] =
        json!({"email": user.email, "phone": user.phone, "firstName": "Test", "lastName": "User"});
    steps.push((
        "identify",
        Step {
            label: "identify".into(),
            message: identify,
        },
    ));
    let track = |n: usize, event: &str, props: Value| {
        let mut m = base(n, "track");
        m["event"] = json!(event);
        m["properties"] = props;
        Step {
            label: event.into(),
            message: m,
        }
    };
    steps.push((
        "product_added",
        track(
            2,
            "Product Added",
            json!({"product_id": "SKU-481", "price": 89.95, "quantity": 1, "currency": "EUR"}),
        ),
    ));
    steps.push((
        "checkout_started",
        track(
            3,
            "Checkout Started",
            json!({"order_id": order, "value": 89.95, "currency": "EUR", "products": [product]}),
        ),
    ));
    steps.push((
        "order_completed",
        track(
            4,
            "Order Completed",
            json!({"order_id": order, "revenue": 89.95, "currency": "EUR", "products": [product]}),
        ),
    ));
    steps.push((
        "lead_submitted",
        track(5, "Lead Submitted", json!({"form": "tracklayer-test"})),
    ));
    steps
        .into_iter()
        .filter(|(key, _)| only.is_empty() || only.iter().any(|o| o == key))
        .map(|(_, step)| step)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// Worth knowing, not a stop (a consent block, thin identity).
    Warn,
    /// Not applicable (an identify has no payload per destination).
    Skip,
    /// Not finished yet (a delivery still retrying).
    Wait,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: Vec<String>,
    /// What to do about a failure, in the brief's words.
    pub fix: Option<String>,
}

fn stage(name: &'static str, verdict: Verdict, detail: Vec<String>) -> Stage {
    Stage {
        name,
        verdict,
        detail,
        fix: None,
    }
}

/// What came back from posting one call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendResult {
    pub status: u16,
    pub reply: Value,
}

pub const FIX_401: &str = "401 unauthorized: confirm the account header, environment header, timestamp, and signature secret match the TrackLayer endpoint. Rotate the secret if it was copied into a client-visible setting.";
pub const FIX_IDENTITY: &str = "missing user identity: forward userId, anonymousId, email, phone, and traits when available. TrackLayer can merge identity over time, but downstream platforms need enough fields for matching.";

/// The stages of one call, from the ingest reply and the stored trace (None until stored).
/// Stages after the first failure are not produced: the walk stops there.
pub fn stages(
    sent: &SendResult,
    trace: Option<&MessageTrace>,
    test_modes: &BTreeMap<String, Option<bool>>,
) -> Vec<Stage> {
    let mut out = Vec::new();
    let message = sent
        .reply
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("");
    // 1. authenticated
    match sent.status {
        200..=299 => out.push(stage(
            "authenticated",
            Verdict::Pass,
            vec![format!(
                "HTTP {} from TrackLayer, request {}",
                sent.status,
                sent.reply["request_id"].as_str().unwrap_or("?")
            )],
        )),
        401 => {
            let mut s = stage(
                "authenticated",
                Verdict::Fail,
                vec![format!("HTTP 401: {message}")],
            );
            s.fix = Some(FIX_401.into());
            out.push(s);
            return out;
        }
        status => {
            let mut s = stage(
                "authenticated",
                Verdict::Fail,
                vec![format!("HTTP {status}: {message}")],
            );
            s.fix = Some(match status {
                415 => "send Content-Type: application/json".into(),
                413 => "the body is over server.max_body_bytes: lower the webhook's batch_size".into(),
                400 => "the body is not a Segment message, array or {\"batch\": [...]}: check the webhook's data mapping (leave it at the whole event)".into(),
                _ => "TrackLayer did not store the call: retry, and check `tracklayer serve` logs".into(),
            });
            out.push(s);
            return out;
        }
    }
    let Some(trace) = trace else {
        out.push(stage(
            "parsed",
            Verdict::Wait,
            vec!["not stored yet".into()],
        ));
        return out;
    };
    let first = &trace.arrivals[0];
    // 2. parsed
    if first.status == "invalid" {
        let mut s = stage(
            "parsed",
            Verdict::Fail,
            vec![first.reason.clone().unwrap_or_default()],
        );
        s.fix = Some(format!(
            "fix the call at the source: {}",
            first.reason.clone().unwrap_or_default()
        ));
        out.push(s);
        return out;
    }
    out.push(stage(
        "parsed",
        Verdict::Pass,
        vec![format!(
            "valid {} call, messageId {} stored",
            first.message_type.as_deref().unwrap_or("?"),
            first.message_id.as_deref().unwrap_or("?")
        )],
    ));
    // 3. mapped
    let event = trace.events.first();
    let is_track = first.message_type.as_deref() == Some("track");
    if let Some(u) = &trace.unmapped {
        let mut s = stage("mapped", Verdict::Fail, vec![u.reason.clone()]);
        let suggestion = u
            .suggestion
            .as_ref()
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        s.fix = Some(format!(
            "events accepted but unmapped: add the Segment event name to the mapping table exactly as delivered: `{}`{suggestion}. Segment event names are case-sensitive, and small naming drift can bypass canonical routing.",
            u.segment_event
        ));
        out.push(s);
        return out;
    }
    match event {
        Some(e) => out.push(stage(
            "mapped",
            Verdict::Pass,
            vec![format!(
                "{} → {} (mapping table v{})",
                e.canonical.segment_event, e.canonical.name, e.canonical.mapping_version
            )],
        )),
        None if first.event.as_deref() == Some(crate::pipeline::identity::CONSENT_EVENT) => out
            .push(stage(
                "mapped",
                Verdict::Skip,
                vec!["stores consent on the profile; not a conversion".into()],
            )),
        None if is_track => {
            // It collided: the canonical event is the one it collapsed onto (see dedup).
            let name = trace
                .collisions
                .iter()
                .find_map(|c| c.canonical.get("name").and_then(Value::as_str))
                .unwrap_or("?");
            out.push(stage(
                "mapped",
                Verdict::Pass,
                vec![format!(
                    "{} → {name} (collapsed onto an earlier event; see dedup)",
                    first.event.as_deref().unwrap_or("?")
                )],
            ))
        }
        None => out.push(stage(
            "mapped",
            Verdict::Skip,
            vec!["identify: updates the profile and identity graph; never a conversion".into()],
        )),
    }
    // 4. transformed
    if let Some(e) = event {
        let raw: Value = serde_json::from_slice(&first.raw).unwrap_or(Value::Null);
        let lines: Vec<String> = diff::diff(&raw, &e.canonical)
            .into_iter()
            .filter(|l| l.field.starts_with("properties.") && l.kind != DiffKind::Unused)
            .map(|l| {
                format!(
                    "{} = {} ← {} ({})",
                    l.field,
                    l.canonical.map(|v| v.to_string()).unwrap_or_default(),
                    l.source,
                    l.transform
                )
            })
            .collect();
        if !e.canonical.missing_required.is_empty() {
            let mut s = stage("transformed", Verdict::Fail, lines);
            s.fix = Some(format!(
                "send {} from the source: the mapping row for `{}` requires it",
                e.canonical.missing_required.join(", "),
                e.canonical.segment_event
            ));
            out.push(s);
            return out;
        }
        out.push(stage("transformed", Verdict::Pass, lines));
    }
    // 5. identity
    match &trace.profile {
        Some(p) => {
            let mut detail = vec![format!("profile {} {}", p.id, p.identities_line())];
            detail.extend(
                trace
                    .identity_changes
                    .iter()
                    .map(|c| format!("{}: {}", c.kind, c.detail)),
            );
            let thin = event.is_some_and(|e| {
                e.canonical.user.email.is_none()
                    && e.canonical.user.phone.is_none()
                    && e.canonical.user.user_id.is_none()
            });
            let mut s = stage(
                "identity",
                if thin { Verdict::Warn } else { Verdict::Pass },
                detail,
            );
            if thin {
                s.fix = Some(FIX_IDENTITY.into());
            }
            out.push(s);
        }
        None => {
            let mut s = stage("identity", Verdict::Warn, vec!["no profile".into()]);
            s.fix = Some(FIX_IDENTITY.into());
            out.push(s);
        }
    }
    // 6. dedup
    let own: Vec<i64> = trace.arrivals.iter().map(|a| a.row_id).collect();
    if let Some(c) = trace
        .collisions
        .iter()
        .find(|c| own.contains(&c.message_row))
    {
        let order = c
            .canonical
            .pointer("/properties/order_id")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let mut s = stage(
            "dedup",
            Verdict::Fail,
            vec![format!(
                "{}: collapsed onto {} (first sent as messageId {})",
                c.kind,
                c.event_id,
                c.winner_message_id.as_deref().unwrap_or("?")
            )],
        );
        s.fix = Some(format!(
            "duplicate purchases: use Segment messageId plus order_id as the dedup foundation. order_id {order} already produced event_id {}; send each new order with its own order_id (retries and downstream sends reuse the same event_id on purpose).",
            c.event_id
        ));
        out.push(s);
        return out;
    }
    if let Some(e) = event {
        out.push(stage(
            "dedup",
            Verdict::Pass,
            vec![format!(
                "event_id {} ({}), first arrival",
                e.event_id, e.canonical.event_id_basis
            )],
        ));
    } else {
        out.push(stage(
            "dedup",
            Verdict::Skip,
            vec!["no canonical event".into()],
        ));
    }
    // 7. consent per destination
    let routes = event.map(|e| e.routes.clone()).unwrap_or_default();
    if event.is_some() {
        let blocked = routes
            .iter()
            .any(|r| r.verdict != "ready" && r.verdict != "skipped_test");
        let detail = routes
            .iter()
            .map(|r| format!("{}: {} — {}", r.destination, r.verdict, r.reason))
            .collect::<Vec<_>>();
        let detail = if detail.is_empty() {
            vec!["no destinations configured".into()]
        } else {
            detail
        };
        out.push(stage(
            "consent",
            if blocked {
                Verdict::Warn
            } else {
                Verdict::Pass
            },
            detail,
        ));
    } else {
        let detail = trace
            .deliveries
            .iter()
            .map(|d| format!("{}: profile update queued", d.destination))
            .collect::<Vec<_>>();
        out.push(stage(
            "consent",
            Verdict::Skip,
            if detail.is_empty() {
                vec!["identify: no destination takes profiles".into()]
            } else {
                detail
            },
        ));
    }
    // 8. payload per destination
    let mut payload = Vec::new();
    for d in &trace.deliveries {
        let test = match test_modes.get(&d.destination).copied().flatten() {
            Some(true) => "test mode",
            Some(false) => "LIVE (test mode off)",
            None => "no test mode",
        };
        let body = d
            .history
            .iter()
            .rev()
            .find_map(|a| a.request.as_ref())
            .and_then(|r| r.body.clone());
        payload.push(format!(
            "{} as {} [{test}]: {}",
            d.destination,
            d.destination_event,
            body.map(|b| crate::destinations::excerpt(&b))
                .unwrap_or_else(|| "not built yet".into())
        ));
    }
    if payload.is_empty() {
        out.push(stage(
            "payload",
            Verdict::Skip,
            vec!["nothing to deliver".into()],
        ));
        return out;
    }
    out.push(stage("payload", Verdict::Pass, payload));
    // 9. the destinations' replies
    let mut replies = Vec::new();
    let mut verdict = Verdict::Pass;
    let mut fix = None;
    for d in &trace.deliveries {
        let status = d
            .last_status_code
            .map(|c| format!("HTTP {c}"))
            .unwrap_or_default();
        match d.status.as_str() {
            "delivered" => replies.push(format!(
                "{}: delivered {status} (attempt {})",
                d.destination, d.attempts
            )),
            "dead" => {
                verdict = Verdict::Fail;
                replies.push(format!(
                    "{}: DEAD {status}: {}",
                    d.destination,
                    d.last_error.clone().unwrap_or_default()
                ));
                fix.get_or_insert_with(|| format!("{} refused the event: {} — fix the cause, then `tracklayer replay --destination {}`", d.destination, d.last_error.clone().unwrap_or_default(), d.destination));
            }
            _ => {
                if verdict == Verdict::Pass {
                    verdict = Verdict::Wait;
                }
                replies.push(format!(
                    "{}: {} {status} {}",
                    d.destination,
                    d.status,
                    d.last_error.clone().unwrap_or_default()
                ));
            }
        }
    }
    let mut s = stage("reply", verdict, replies);
    s.fix = fix;
    out.push(s);
    out
}

/// The stage list is final when nothing is still waiting.
pub fn settled(stages: &[Stage]) -> bool {
    stages.iter().all(|s| s.verdict != Verdict::Wait)
}

pub fn failed(stages: &[Stage]) -> bool {
    stages.iter().any(|s| s.verdict == Verdict::Fail)
}
