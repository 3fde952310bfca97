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

/// The test user a scenario is built for (editable before sending). Only the identifiers it
/// has are sent: a user given by email alone is a guest without a userId, not `tl_test_user`
/// with another email.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestUser {
    pub user_id: Option<String>,
    pub anonymous_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl Default for TestUser {
    fn default() -> TestUser {
        TestUser {
            user_id: Some("tl_test_user".into()),
            anonymous_id: "tl_test_anon".into(),
            email: Some("test.user@example.com".into()),
            phone: Some("+31612345678".into()),
        }
    }
}

impl TestUser {
    /// The user named by `userId`, `email` or both (words with `@` are the email). Its
    /// anonymousId is derived from them, so two test users never share a device and merge.
    pub fn named(user_id: Option<&str>, email: Option<&str>) -> Option<TestUser> {
        let user_id = user_id.map(str::trim).filter(|u| !u.is_empty());
        let email = email.map(str::trim).filter(|e| !e.is_empty());
        if user_id.is_none() && email.is_none() {
            return None;
        }
        use sha2::Digest;
        let seed = format!("{}\n{}", user_id.unwrap_or(""), email.unwrap_or(""));
        let digest = sha2::Sha256::digest(seed.as_bytes());
        Some(TestUser {
            user_id: user_id.map(str::to_string),
            anonymous_id: format!("tl_test_anon_{}", &hex::encode(digest)[..12]),
            email: email.map(str::to_string),
            phone: None,
        })
    }

    /// From the dashboard's prompt: a userId, an email, or both separated by a space.
    pub fn parse(input: &str) -> Option<TestUser> {
        let mut user_id = None;
        let mut email = None;
        for word in input.split_whitespace() {
            if word.contains('@') {
                email = Some(word);
            } else {
                user_id = Some(word);
            }
        }
        TestUser::named(user_id, email)
    }

    /// `userId <email>` as the prompt takes it back.
    pub fn label(&self) -> String {
        [self.user_id.as_deref(), self.email.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How the destinations take a controlled test: each one's test mode (`None`: the platform has
/// none), which take identify calls as profile updates, and which this run leaves out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TestPlan {
    pub modes: BTreeMap<String, Option<bool>>,
    pub profile_destinations: Vec<String>,
    /// Left out of the run (`context.tracklayer.skip`): by default every destination that
    /// would receive the test as a live event.
    pub skip: Vec<String>,
}

impl TestPlan {
    /// `include_live`: also send to destinations without a test mode or with it off (asked
    /// for explicitly, and confirmed, by the caller).
    pub fn new(
        modes: BTreeMap<String, Option<bool>>,
        profile_destinations: Vec<String>,
        include_live: bool,
    ) -> TestPlan {
        let skip = if include_live {
            Vec::new()
        } else {
            modes
                .iter()
                .filter(|(_, mode)| **mode != Some(true))
                .map(|(name, _)| name.clone())
                .collect()
        };
        TestPlan {
            modes,
            profile_destinations,
            skip,
        }
    }

    /// Destinations that receive this run as a live event (test mode off or none).
    pub fn live(&self) -> Vec<&str> {
        self.modes
            .iter()
            .filter(|(name, mode)| **mode != Some(true) && !self.skip.contains(name))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// `describe` in a few words, for a narrow column.
    pub fn describe_short(&self, name: &str) -> &'static str {
        let mode = self.modes.get(name).copied().flatten();
        match (mode, self.skip.iter().any(|s| s == name)) {
            (Some(true), _) => "test mode",
            (Some(false), true) => "skipped (test mode off)",
            (Some(false), false) => "LIVE (test mode off)",
            (None, true) => "skipped (no test mode)",
            (None, false) => "LIVE (no test mode)",
        }
    }

    /// How an event sent to `name` lands there.
    pub fn mode(&self, name: &str) -> &'static str {
        match self.modes.get(name).copied().flatten() {
            Some(true) => "test mode",
            Some(false) => "LIVE: test mode off",
            None => "LIVE: no test mode",
        }
    }

    /// How `name` takes this run, in the words the CLI and the dashboard both use.
    pub fn describe(&self, name: &str) -> String {
        let mode = self.modes.get(name).copied().flatten();
        let skipped = self.skip.iter().any(|s| s == name);
        match (mode, skipped) {
            (Some(true), _) => "test mode".into(),
            (Some(false), true) => "skipped: test mode off, would be a live event".into(),
            (Some(false), false) => "LIVE: test mode off, receives the test events".into(),
            (None, true) => "skipped: no test mode, would be a live event".into(),
            (None, false) => "LIVE: no test mode, receives the test events".into(),
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
        let mut m = json!({
            "type": kind,
            "messageId": format!("tl_test_{run_id}_{n}"),
            "anonymousId": user.anonymous_id,
            "timestamp": now,
            "context": context,
        });
        if let Some(user_id) = &user.user_id {
            m["userId"] = json!(user_id);
        }
        m
    };
    let mut steps = Vec::new();
    let mut identify = base(1, "identify");
    let mut traits = json!({"firstName": "Test", "lastName": "User"});
    if let Some(email) = &user.email {
        traits["email"] = json!(email);
    }
    if let Some(phone) = &user.phone {
        traits["phone"] = json!(phone);
    }
    identify["traits"] = traits;
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

/// A message from the engineer's own file, made ready for one test run: a fresh messageId per
/// run (`keep_ids` keeps the file's, to test a Segment retry on purpose), so a file re-sent
/// after a fix is graded as the new call it is and not as a retry of the old one; and marked as
/// a test that leaves out `skip`.
pub fn file_step(
    mut message: Value,
    run_id: &str,
    n: usize,
    keep_ids: bool,
    skip: &[String],
) -> Step {
    let label = message
        .get("event")
        .or_else(|| message.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("message")
        .to_string();
    if let Some(object) = message.as_object_mut() {
        if !keep_ids {
            let base = object
                .get("messageId")
                .and_then(Value::as_str)
                .unwrap_or("tl_test")
                .to_string();
            object.insert("messageId".into(), json!(format!("{base}~{run_id}_{n}")));
        }
        let context = object.entry("context").or_insert_with(|| json!({}));
        if let Some(context) = context.as_object_mut() {
            context.insert("tracklayer".into(), json!({"test": true, "skip": skip}));
        }
    }
    Step { label, message }
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
pub fn stages(sent: &SendResult, trace: Option<&MessageTrace>, plan: &TestPlan) -> Vec<Stage> {
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
                "collision {}: collapsed onto {} (first sent as messageId {})",
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
        // Left out on purpose (no test mode; the platform takes no such event) is no warning.
        let blocked = routes
            .iter()
            .any(|r| !["ready", "skipped_test", "unsupported"].contains(&r.verdict.as_str()));
        let detail = routes
            .iter()
            .map(|r| format!("{}: {} — {}", r.destination, r.verdict, r.reason))
            .collect::<Vec<_>>();
        let detail = if detail.is_empty() {
            vec!["no destinations configured".into()]
        } else {
            detail
        };
        // A conversion that no destination takes has not been tested end to end, whatever
        // the stages before it said: the walk stops here and says why.
        let reaches = routes.iter().any(|r| r.verdict == "ready");
        let left_out_on_purpose = !routes.is_empty()
            && routes
                .iter()
                .all(|r| ["skipped_test", "unsupported"].contains(&r.verdict.as_str()));
        if !reaches && !left_out_on_purpose {
            let mut s = stage("consent", Verdict::Fail, detail);
            s.fix = Some(if routes.is_empty() {
                "no destination is configured for this environment: nothing was delivered".into()
            } else {
                "no destination may receive this event, so nothing was delivered: send the consent categories the destinations need (context.consent.categoryPreferences), or check each destination's consent and environments".into()
            });
            out.push(s);
            return out;
        }
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
        out.push(stage("consent", Verdict::Skip, profile_routes(trace, plan)));
    }
    // 8. payload per destination: built at the first attempt, so a queued one is waited for.
    let mut payload = Vec::new();
    let mut verdict = Verdict::Pass;
    for d in &trace.deliveries {
        let body = d
            .history
            .iter()
            .rev()
            .find_map(|a| a.request.as_ref())
            .and_then(|r| r.body.clone());
        let shown = match body {
            Some(b) => crate::destinations::excerpt(&b),
            None if d.attempts > 0 && d.kind == "warehouse" => {
                "a row in the warehouse table".into()
            }
            None if d.attempts > 0 => "no request recorded (see the reply)".into(),
            None => {
                verdict = Verdict::Wait;
                "queued: the payload is built at the first attempt".into()
            }
        };
        let quality = crate::inspect::delivery_quality(trace, d)
            .map(|q| {
                format!(
                    " · match quality {:.1}/10{}",
                    q.score,
                    if q.missing.is_empty() {
                        String::new()
                    } else {
                        format!(" (missing {})", q.missing.join(", "))
                    }
                )
            })
            .unwrap_or_default();
        payload.push(format!(
            "{} as {} [{}]{quality}: {shown}",
            d.destination,
            d.destination_event,
            plan.mode(&d.destination)
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
    out.push(stage("payload", verdict, payload));
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
                    "{}: dead {status}: {}",
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

/// Where an identify goes: the destinations that take profiles, each queued, left out of the
/// test run, or not routed for this environment or consent.
fn profile_routes(trace: &MessageTrace, plan: &TestPlan) -> Vec<String> {
    if plan.profile_destinations.is_empty() {
        return vec!["identify: no destination takes profiles".into()];
    }
    plan.profile_destinations
        .iter()
        .map(|name| {
            if trace.deliveries.iter().any(|d| &d.destination == name) {
                format!("{name}: profile update queued")
            } else if plan.skip.contains(name) {
                format!("{name}: takes profiles; {}", plan.describe(name))
            } else {
                format!("{name}: takes profiles; not routed (its environments or consent)")
            }
        })
        .collect()
}

/// The stage list is final when nothing is still waiting.
pub fn settled(stages: &[Stage]) -> bool {
    stages.iter().all(|s| s.verdict != Verdict::Wait)
}

pub fn failed(stages: &[Stage]) -> bool {
    stages.iter().any(|s| s.verdict == Verdict::Fail)
}
