//! The walk of one sent call, stage by stage, from the ingest reply and the stored trace: one
//! function per stage, each pure over what was stored, so each is tested without a server. The
//! walk stops at the first failed stage; that stage carries the fix.

use serde::Serialize;
use serde_json::Value;

use super::TestPlan;
use crate::pipeline::diff::{self, DiffKind};
use crate::store::{MessageTrace, StoredEvent, StoredMessage};

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

impl Stage {
    fn with_fix(mut self, fix: impl Into<String>) -> Stage {
        self.fix = Some(fix.into());
        self
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

/// What every stage after `authenticated` reads: the stored call, its first arrival and its
/// canonical event (none for an identify, an unmapped name or a collision).
struct Walk<'a> {
    trace: &'a MessageTrace,
    first: &'a StoredMessage,
    event: Option<&'a StoredEvent>,
    plan: &'a TestPlan,
}

/// The stages of one call, from the ingest reply and the stored trace (None until stored).
/// Stages after the first failure are not produced: the walk stops there.
pub fn stages(sent: &SendResult, trace: Option<&MessageTrace>, plan: &TestPlan) -> Vec<Stage> {
    let mut out = vec![authenticated(sent)];
    if out[0].verdict == Verdict::Fail {
        return out;
    }
    // A forgotten person's call is answered and then kept nowhere: there is no trace to wait for.
    if sent.reply["suppressed"].as_u64().is_some_and(|n| n > 0) {
        out.push(
            stage(
                "suppressed",
                Verdict::Fail,
                vec!["not stored and sent nowhere: the call names a person who was forgotten (a forget suppresses every identifier of theirs)".into()],
            )
            .with_fix("test with another user (u sets the test user), or lift the suppression with `tracklayer forget --undo` if the forget was a mistake"),
        );
        return out;
    }
    let Some((trace, first)) = trace.and_then(|t| t.arrivals.first().map(|first| (t, first)))
    else {
        out.push(stage(
            "parsed",
            Verdict::Wait,
            vec!["not stored yet".into()],
        ));
        return out;
    };
    let walk = Walk {
        trace,
        first,
        event: trace.events.first(),
        plan,
    };
    let walked: [fn(&Walk) -> Option<Stage>; 8] = [
        parsed,
        mapped,
        transformed,
        identity,
        dedup,
        consent,
        payload,
        reply,
    ];
    for next in walked {
        if let Some(s) = next(&walk) {
            let stop = s.verdict == Verdict::Fail;
            out.push(s);
            if stop {
                break;
            }
        }
    }
    out
}

/// TrackLayer's answer to the post.
fn authenticated(sent: &SendResult) -> Stage {
    let message = sent
        .reply
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("");
    match sent.status {
        200..=299 => stage(
            "authenticated",
            Verdict::Pass,
            vec![format!(
                "HTTP {} from TrackLayer, request {}",
                sent.status,
                sent.reply["request_id"].as_str().unwrap_or("?")
            )],
        ),
        401 => stage(
            "authenticated",
            Verdict::Fail,
            vec![format!("HTTP 401: {message}")],
        )
        .with_fix(FIX_401),
        status => stage(
            "authenticated",
            Verdict::Fail,
            vec![format!("HTTP {status}: {message}")],
        )
        .with_fix(match status {
            415 => "send Content-Type: application/json",
            413 => "the body is over server.max_body_bytes: lower the webhook's batch_size",
            400 => "the body is not a Segment message, array or {\"batch\": [...]}: check the webhook's data mapping (leave it at the whole event)",
            _ => "TrackLayer did not store the call: retry, and check `tracklayer serve` logs",
        }),
    }
}

/// Stored as a valid Segment call, or refused with why.
fn parsed(w: &Walk) -> Option<Stage> {
    let first = w.first;
    if first.status == "invalid" {
        let reason = first.reason.clone().unwrap_or_default();
        return Some(
            stage("parsed", Verdict::Fail, vec![reason.clone()])
                .with_fix(format!("fix the call at the source: {reason}")),
        );
    }
    Some(stage(
        "parsed",
        Verdict::Pass,
        vec![format!(
            "valid {} call, messageId {} stored",
            first.message_type.as_deref().unwrap_or("?"),
            first.message_id.as_deref().unwrap_or("?")
        )],
    ))
}

/// The Segment name through the mapping table.
fn mapped(w: &Walk) -> Option<Stage> {
    if let Some(u) = &w.trace.unmapped {
        let suggestion = u
            .suggestion
            .as_ref()
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Some(stage("mapped", Verdict::Fail, vec![u.reason.clone()]).with_fix(format!(
            "events accepted but unmapped: add the Segment event name to the mapping table exactly as delivered: `{}`{suggestion}. Segment event names are case-sensitive, and small naming drift can bypass canonical routing.",
            u.segment_event
        )));
    }
    let first = w.first;
    Some(match w.event {
        Some(e) => stage(
            "mapped",
            Verdict::Pass,
            vec![format!(
                "{} → {} (mapping table v{})",
                e.canonical.segment_event, e.canonical.name, e.canonical.mapping_version
            )],
        ),
        None if first.event.as_deref() == Some(crate::pipeline::identity::CONSENT_EVENT) => stage(
            "mapped",
            Verdict::Skip,
            vec!["stores consent on the profile; not a conversion".into()],
        ),
        None if first.message_type.as_deref() == Some("track") => {
            // It collided: the canonical event is the one it collapsed onto (see dedup).
            let name = w
                .trace
                .collisions
                .iter()
                .find_map(|c| c.canonical.get("name").and_then(Value::as_str))
                .unwrap_or("?");
            stage(
                "mapped",
                Verdict::Pass,
                vec![format!(
                    "{} → {name} (collapsed onto an earlier event; see dedup)",
                    first.event.as_deref().unwrap_or("?")
                )],
            )
        }
        None => stage(
            "mapped",
            Verdict::Skip,
            vec!["identify: updates the profile and identity graph; never a conversion".into()],
        ),
    })
}

/// The property transforms, field by field; a required field missing fails it.
fn transformed(w: &Walk) -> Option<Stage> {
    let e = w.event?;
    let raw: Value = serde_json::from_slice(&w.first.raw).unwrap_or(Value::Null);
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
        return Some(stage("transformed", Verdict::Fail, lines).with_fix(format!(
            "send {} from the source: the mapping row for `{}` requires it",
            e.canonical.missing_required.join(", "),
            e.canonical.segment_event
        )));
    }
    Some(stage("transformed", Verdict::Pass, lines))
}

/// The profile the call landed on; a conversion without email, phone or userId warns.
fn identity(w: &Walk) -> Option<Stage> {
    let Some(p) = &w.trace.profile else {
        return Some(
            stage("identity", Verdict::Warn, vec!["no profile".into()]).with_fix(FIX_IDENTITY),
        );
    };
    let mut detail = vec![format!("profile {} {}", p.id, p.identities_line())];
    detail.extend(
        w.trace
            .identity_changes
            .iter()
            .map(|c| format!("{}: {}", c.kind, c.detail)),
    );
    let thin = w.event.is_some_and(|e| {
        e.canonical.user.email.is_none()
            && e.canonical.user.phone.is_none()
            && e.canonical.user.user_id.is_none()
    });
    Some(if thin {
        stage("identity", Verdict::Warn, detail).with_fix(FIX_IDENTITY)
    } else {
        stage("identity", Verdict::Pass, detail)
    })
}

/// A first arrival, or a collision onto an earlier event_id (which fails the walk: a test
/// order that collapsed reaches no platform as a new conversion).
fn dedup(w: &Walk) -> Option<Stage> {
    let own: Vec<i64> = w.trace.arrivals.iter().map(|a| a.row_id).collect();
    if let Some(c) = w
        .trace
        .collisions
        .iter()
        .find(|c| own.contains(&c.message_row))
    {
        let order = c
            .canonical
            .pointer("/properties/order_id")
            .and_then(Value::as_str)
            .unwrap_or("?");
        return Some(stage(
            "dedup",
            Verdict::Fail,
            vec![format!(
                "collision {}: collapsed onto {} (first sent as messageId {})",
                c.kind,
                c.event_id,
                c.winner_message_id.as_deref().unwrap_or("?")
            )],
        ).with_fix(format!(
            "duplicate purchases: use Segment messageId plus order_id as the dedup foundation. order_id {order} already produced event_id {}; send each new order with its own order_id (retries and downstream sends reuse the same event_id on purpose).",
            c.event_id
        )));
    }
    Some(match w.event {
        Some(e) => stage(
            "dedup",
            Verdict::Pass,
            vec![format!(
                "event_id {} ({}), first arrival",
                e.event_id, e.canonical.event_id_basis
            )],
        ),
        None => stage("dedup", Verdict::Skip, vec!["no canonical event".into()]),
    })
}

/// Consent and routing per destination. A conversion that no destination takes has not
/// been tested end to end, whatever the stages before it said: the walk stops here and says why.
fn consent(w: &Walk) -> Option<Stage> {
    let Some(event) = w.event else {
        return Some(stage(
            "consent",
            Verdict::Skip,
            profile_routes(w.trace, w.plan),
        ));
    };
    let routes = &event.routes;
    // Left out on purpose (no test mode; the platform takes no such event) is no warning.
    let on_purpose = |verdict: &str| ["skipped_test", "unsupported"].contains(&verdict);
    let blocked = routes
        .iter()
        .any(|r| r.verdict != "ready" && !on_purpose(&r.verdict));
    let mut detail: Vec<String> = routes
        .iter()
        .map(|r| format!("{}: {} — {}", r.destination, r.verdict, r.reason))
        .collect();
    if detail.is_empty() {
        detail.push("no destinations configured".into());
    }
    let reaches = routes.iter().any(|r| r.verdict == "ready");
    let left_out_on_purpose = !routes.is_empty() && routes.iter().all(|r| on_purpose(&r.verdict));
    if !reaches && !left_out_on_purpose {
        return Some(stage("consent", Verdict::Fail, detail).with_fix(if routes.is_empty() {
            "no destination is configured for this environment: nothing was delivered"
        } else {
            "no destination may receive this event, so nothing was delivered: send the consent categories the destinations need (context.consent.categoryPreferences), or check each destination's consent and environments"
        }));
    }
    let verdict = if blocked {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    Some(stage("consent", verdict, detail))
}

/// The payload per destination, with its match quality: built at the first attempt, so a
/// queued one is waited for.
fn payload(w: &Walk) -> Option<Stage> {
    if w.trace.deliveries.is_empty() {
        return Some(stage(
            "payload",
            Verdict::Skip,
            vec!["nothing to deliver".into()],
        ));
    }
    let mut verdict = Verdict::Pass;
    let mut lines = Vec::new();
    for d in &w.trace.deliveries {
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
        let quality = crate::inspect::delivery_quality(w.trace, d)
            .map(|q| {
                let missing = if q.missing.is_empty() {
                    String::new()
                } else {
                    format!(" (missing {})", q.missing.join(", "))
                };
                format!(" · match quality {:.1}/10{missing}", q.score)
            })
            .unwrap_or_default();
        lines.push(format!(
            "{} as {} [{}]{quality}: {shown}",
            d.destination,
            d.destination_event,
            w.plan.mode(&d.destination)
        ));
    }
    Some(stage("payload", verdict, lines))
}

/// The destinations' replies: delivered, dead (fails, with the replay to run once fixed),
/// or still on their way.
fn reply(w: &Walk) -> Option<Stage> {
    if w.trace.deliveries.is_empty() {
        return None;
    }
    let mut replies = Vec::new();
    let mut verdict = Verdict::Pass;
    let mut fix = None;
    for d in &w.trace.deliveries {
        let status = d
            .last_status_code
            .map(|c| format!("HTTP {c}"))
            .unwrap_or_default();
        let error = d.last_error.clone().unwrap_or_default();
        match d.status.as_str() {
            "delivered" => replies.push(format!(
                "{}: delivered {status} (attempt {})",
                d.destination, d.attempts
            )),
            "dead" => {
                verdict = Verdict::Fail;
                replies.push(format!("{}: dead {status}: {error}", d.destination));
                fix.get_or_insert_with(|| {
                    format!(
                        "{} refused the event: {error} — fix the cause, then `tracklayer replay --destination {}`",
                        d.destination, d.destination
                    )
                });
            }
            _ => {
                if verdict == Verdict::Pass {
                    verdict = Verdict::Wait;
                }
                replies.push(format!("{}: {} {status} {error}", d.destination, d.status));
            }
        }
    }
    let mut s = stage("reply", verdict, replies);
    s.fix = fix;
    Some(s)
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

#[cfg(test)]
#[path = "stages_tests.rs"]
mod tests;
