//! `tracklayer inspect`: one message's trace, stage by stage, as JSON or as text for a terminal.

use serde_json::{json, Map, Value};

use crate::pipeline::diff::{self, DiffKind};
use crate::store::{MessageTrace, StoredMessage};

pub use crate::segment::format_ms;

/// `text` made safe to print on a terminal: control characters (ESC, CR, LF, BEL, C1) and
/// bidirectional overrides come out as visible escapes (`\e`, `\r`, `\u{202e}`), never
/// interpreted. Message fields come from end users' browsers and reach the on-call engineer's
/// terminal through `inspect` and the dashboard.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\x1b' => out.push_str("\\e"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

pub fn raw_json(message: &StoredMessage) -> Value {
    serde_json::from_slice(&message.raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&message.raw).into_owned()))
}

/// The status of a traced message, as DESIGN §7 names them.
pub fn status(trace: &MessageTrace) -> &'static str {
    let first = &trace.arrivals[0];
    if first.status == "invalid" {
        return "invalid";
    }
    match trace.outcomes.first().and_then(|o| o.as_deref()) {
        Some("mapped") | Some("replayed") => "mapped",
        Some("unmapped") => "unmapped",
        Some("identify") => "identify",
        // The dashboard's word for an event_id seen before; "duplicate" is a repeated messageId.
        Some("collision") => "collision",
        _ => "accepted",
    }
}

pub fn to_json(trace: &MessageTrace) -> Value {
    let first = &trace.arrivals[0];
    let raw = raw_json(first);
    let event = trace.events.first();
    let canonical = event.map(|e| serde_json::to_value(&e.canonical).unwrap_or_default());
    let diff = event
        .map(|e| serde_json::to_value(diff::diff(&raw, &e.canonical)).unwrap_or_default())
        .unwrap_or(Value::Array(Vec::new()));
    // The collision this message's own arrivals caused (if it lost), else the first it won.
    let own_rows: Vec<i64> = trace.arrivals.iter().map(|a| a.row_id).collect();
    let lost = trace
        .collisions
        .iter()
        .find(|c| own_rows.contains(&c.message_row));
    let mut consent = Map::new();
    let routes = event.map(|e| e.routes.clone()).unwrap_or_default();
    for r in &routes {
        consent.insert(
            r.destination.clone(),
            json!({"allowed": r.consent_allowed, "source": r.consent_source, "reason": r.consent_reason}),
        );
    }
    json!({
        "message_id": first.message_id,
        "type": first.message_type,
        "event": first.event,
        "status": status(trace),
        "reason": first.reason,
        "environment": first.environment,
        "received_at": format_ms(first.received_at_ms),
        "request_id": first.request_id,
        "raw": raw,
        "canonical": canonical,
        "diff": diff,
        "unmapped": trace.unmapped,
        "profile_id": trace.profile.as_ref().map(|p| p.id),
        "profile": trace.profile,
        "identity_changes": trace.identity_changes,
        "dedup": {
            "event_id": event.map(|e| e.event_id.clone()).or_else(|| lost.map(|c| c.event_id.clone())),
            "collision_kind": lost.map(|c| c.kind.clone()),
            "winner_message_id": lost.and_then(|c| c.winner_message_id.clone()),
            "collisions": trace.collisions,
        },
        "consent": consent,
        "routes": routes,
        "deliveries": trace.deliveries.iter().map(|d| json!({
            "destination": d.destination,
            "kind": d.kind,
            "destination_event": d.destination_event,
            "event_id": d.event_id,
            "status": d.status,
            "attempts": d.attempts,
            "last_status_code": d.last_status_code,
            "last_error": d.last_error,
            "next_attempt_at": (d.status == "pending").then(|| format_ms(d.next_attempt_ms)),
            "match_quality": delivery_quality(trace, d),
            "request_body": d.history.iter().rev().find_map(|a| a.request.as_ref()).and_then(|r| r.body.as_deref()).map(|b| serde_json::from_str::<Value>(b).unwrap_or(Value::String(b.to_string()))),
            "history": d.history,
        })).collect::<Vec<_>>(),
        "arrivals": trace.arrivals.iter().zip(&trace.outcomes).map(|(m, outcome)| json!({
            "message_id": m.message_id,
            "status": m.status,
            "outcome": outcome,
            "reason": m.reason,
            "received_at": format_ms(m.received_at_ms),
            "request_id": m.request_id,
            "position": m.position,
            "raw_sha256": m.raw_sha256,
            "raw": raw_json(m),
        })).collect::<Vec<_>>(),
    })
}

/// The match quality of a delivery: what its canonical event gave the platform to match on.
/// `None` for a profile delivery or a destination that matches no person.
pub fn delivery_quality(
    trace: &MessageTrace,
    d: &crate::store::StoredDelivery,
) -> Option<crate::destinations::match_quality::MatchQuality> {
    let event = trace.events.iter().find(|e| e.event_id == d.event_id)?;
    crate::destinations::match_quality::score(&d.kind, &event.canonical)
}

fn show(value: &Option<Value>) -> String {
    match value {
        None => "—".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(Value::Array(items)) => format!("[{} item(s)]", items.len()),
        Some(v) => v.to_string(),
    }
}

/// Multi-line text with each line made terminal-safe (its own line breaks kept).
fn terminal_safe_lines(text: &str) -> String {
    text.lines()
        .map(|l| terminal_safe(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A terminal rendering: one numbered line per stage, then the diff and the raw message.
pub fn to_text(trace: &MessageTrace) -> String {
    to_text_styled(trace, &|_, text| text.to_string())
}

/// [`to_text`] with the words of the shared vocabulary (statuses, outcomes, verdicts) passed
/// through `style(word, text)`, e.g. to colour them on a terminal. Styling comes after
/// message text is made terminal-safe, so a message can never inject its own escapes.
pub fn to_text_styled(trace: &MessageTrace, style: &dyn Fn(&str, &str) -> String) -> String {
    let mut out = Vec::new();
    // (line, word): the first occurrence of `word` on that line is styled at the end.
    let mut styled: Vec<(usize, String)> = Vec::new();
    let first = &trace.arrivals[0];
    let status = status(trace);
    styled.push((out.len(), status.to_string()));
    out.push(format!(
        "messageId {}  {} {}  {}",
        first.message_id.as_deref().unwrap_or("(none)"),
        first.message_type.as_deref().unwrap_or("?"),
        first
            .event
            .as_deref()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default(),
        status
    ));
    out.push(format!(
        " 1 received     {}  env={}  request {}  position {}  ({} arrival{})",
        format_ms(first.received_at_ms),
        first.environment,
        first.request_id,
        first.position,
        trace.arrivals.len(),
        if trace.arrivals.len() == 1 { "" } else { "s" }
    ));
    if first.status == "invalid" {
        styled.push((out.len(), "invalid".into()));
        out.push(format!(
            " 2 parsed       invalid: {}",
            first.reason.as_deref().unwrap_or("")
        ));
    } else {
        out.push(" 2 parsed       valid Segment call".into());
    }
    if let Some(u) = &trace.unmapped {
        styled.push((out.len(), "unmapped".into()));
        out.push(format!(" 3 mapped       unmapped: {}", u.reason));
    }
    if let Some(event) = trace.events.first() {
        let c = &event.canonical;
        out.push(format!(
            " 3 mapped       {} → {} (mapping v{})",
            c.segment_event, c.name, c.mapping_version
        ));
        out.push(format!(
            " 4 transformed  {} propert{}, event time {} ({})",
            c.properties.len(),
            if c.properties.len() == 1 { "y" } else { "ies" },
            c.event_time,
            c.provenance
                .get("event_time")
                .map(|p| p.source.as_str())
                .unwrap_or("?")
        ));
        let raw = raw_json(first);
        for line in diff::diff(&raw, c) {
            let mark = match line.kind {
                DiffKind::Kept => "=",
                DiffKind::Transformed => "~",
                DiffKind::Added => "+",
                DiffKind::Unused => "-",
            };
            out.push(format!(
                "      {mark} {:<28} {:<24} ← {} ({})",
                line.field,
                show(&line.canonical),
                line.source,
                line.transform
            ));
        }
        for m in &c.missing_required {
            out.push(format!("      ! missing required property {m}"));
        }
        for p in &c.problems {
            out.push(format!("      ! {p}"));
        }
    }
    match &trace.profile {
        Some(p) => {
            out.push(format!(
                " 5 identity     profile {}{}: {}",
                p.id,
                p.user_id
                    .as_deref()
                    .map(|u| format!(" (userId {u})"))
                    .unwrap_or_default(),
                p.identities_line()
            ));
            for change in &trace.identity_changes {
                out.push(format!("      {}: {}", change.kind, change.detail));
            }
        }
        None => out.push(" 5 identity     no profile".into()),
    }
    let own_rows: Vec<i64> = trace.arrivals.iter().map(|a| a.row_id).collect();
    if let (Some(e), true) = (trace.events.first(), trace.collisions.is_empty()) {
        out.push(format!(
            " 6 dedup        event_id {} ({}): first arrival{}",
            e.event_id,
            e.canonical.event_id_basis,
            if e.replay {
                ", let through by a replay window"
            } else {
                ""
            }
        ));
    }
    for c in &trace.collisions {
        let role = if own_rows.contains(&c.message_row) {
            format!(
                "collapsed onto {} (first sent as messageId {})",
                c.event_id,
                c.winner_message_id.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "won over messageId {} for {}",
                c.message_id.as_deref().unwrap_or("?"),
                c.event_id
            )
        };
        styled.push((out.len(), "collision".into()));
        out.push(format!(" 6 dedup        collision {}: {role}", c.kind));
    }
    if let Some(e) = trace.events.first() {
        if e.routes.is_empty() {
            out.push(" 7 routes       no destinations configured".into());
        }
        for r in &e.routes {
            styled.push((out.len(), r.verdict.clone()));
            out.push(format!(
                " 7 route        {:<12} {:<18} as {:<20} {}",
                r.destination, r.verdict, r.destination_event, r.reason
            ));
        }
    }
    for d in &trace.deliveries {
        styled.push((out.len(), d.status.clone()));
        out.push(format!(
            " 8 delivery     {:<12} {:<10} attempt {}  {}{}",
            d.destination,
            d.status,
            d.attempts,
            d.last_status_code
                .map(|c| format!("HTTP {c}  "))
                .unwrap_or_default(),
            d.last_error.as_deref().unwrap_or("")
        ));
        if let Some(q) = delivery_quality(trace, d) {
            out.push(format!(
                "      match quality {:.1}/10 · sent {} · missing {}",
                q.score,
                if q.identifiers.is_empty() {
                    "nothing to match on".to_string()
                } else {
                    q.identifiers.join(", ")
                },
                if q.missing.is_empty() {
                    "nothing".to_string()
                } else {
                    q.missing.join(", ")
                }
            ));
        }
        for a in &d.history {
            out.push(format!(
                "      #{} {} {}{}",
                a.attempt,
                a.outcome,
                a.request
                    .as_ref()
                    .map(|r| format!(
                        "HTTP {} in {} ms ",
                        r.status_code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "—".into()),
                        r.latency_ms.unwrap_or_default()
                    ))
                    .unwrap_or_default(),
                a.reason.as_deref().unwrap_or("")
            ));
        }
    }
    // Every line so far may carry message text; JSON below escapes control characters itself.
    let mut out: Vec<String> = out
        .iter()
        .map(|line| terminal_safe(line).into_owned())
        .collect();
    out.push(" raw:".into());
    let pretty = serde_json::to_string_pretty(&raw_json(first)).unwrap_or_default();
    out.push(terminal_safe_lines(&indent(&pretty, "   ")));
    for (i, arrival) in trace.arrivals.iter().enumerate().skip(1) {
        styled.push((out.len(), arrival.status.clone()));
        out.push(format!(
            " arrival #{}: {} {} request {}{}",
            i + 1,
            arrival.status,
            format_ms(arrival.received_at_ms),
            arrival.request_id,
            arrival
                .reason
                .as_deref()
                .map(|r| format!(" — {}", terminal_safe(r)))
                .unwrap_or_default()
        ));
    }
    for (line, word) in styled {
        // The header's status comes last, after the message's own id and event name.
        let found = if line == 0 {
            out[line].rfind(word.as_str())
        } else {
            out[line].find(word.as_str())
        };
        if let Some(at) = found {
            let end = at + word.len();
            out[line] = format!(
                "{}{}{}",
                &out[line][..at],
                style(&word, &word),
                &out[line][end..]
            );
        }
    }
    out.join("\n")
}

/// A stored message's bytes for JSON output: verbatim when they are JSON (so `1.10` stays
/// `1.10` and big integers stay exact), else as a string.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum StoredBytes {
    Json(Box<serde_json::value::RawValue>),
    Text(String),
}

impl StoredBytes {
    fn of(message: &StoredMessage) -> StoredBytes {
        match String::from_utf8(message.raw.clone()) {
            Ok(text) => match serde_json::value::RawValue::from_string(text) {
                Ok(raw) => StoredBytes::Json(raw),
                Err(_) => StoredBytes::Text(String::from_utf8_lossy(&message.raw).into_owned()),
            },
            Err(_) => StoredBytes::Text(String::from_utf8_lossy(&message.raw).into_owned()),
        }
    }
}

#[derive(serde::Serialize)]
struct ExactArrival {
    #[serde(flatten)]
    fields: Map<String, Value>,
    raw: StoredBytes,
}

#[derive(serde::Serialize)]
pub struct ExactTrace {
    #[serde(flatten)]
    fields: Map<String, Value>,
    raw: StoredBytes,
    arrivals: Vec<ExactArrival>,
}

/// What `inspect --json` prints: [`to_json`], with every `raw` the stored bytes embedded as
/// raw JSON rather than re-parsed.
pub fn to_json_exact(trace: &MessageTrace) -> ExactTrace {
    let mut fields = match to_json(trace) {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    fields.remove("raw");
    let arrivals = match fields.remove("arrivals") {
        Some(Value::Array(arrivals)) => arrivals,
        _ => Vec::new(),
    };
    ExactTrace {
        fields,
        raw: StoredBytes::of(&trace.arrivals[0]),
        arrivals: arrivals
            .into_iter()
            .zip(&trace.arrivals)
            .map(|(arrival, stored)| {
                let mut fields = match arrival {
                    Value::Object(fields) => fields,
                    _ => Map::new(),
                };
                fields.remove("raw");
                ExactArrival {
                    fields,
                    raw: StoredBytes::of(stored),
                }
            })
            .collect(),
    }
}
