//! The mapping preview, pure: each stored raw message through the stateless stages twice, with
//! the table in force and with a draft, and what would change, counted as the messages stream
//! past (nothing of them is kept but counts and a few examples). Nothing is written or sent.
//!
//! Each message is judged alone: identity enrichment from stored profiles and dedup against
//! stored events are not applied, on either side, so a difference is the draft's own.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::destinations::{self, Destination, Subject};
use crate::pipeline::{self, Draft, MappingTable, RouteTarget, RouteVerdict};
use crate::segment::{validate_message, MessageLimits};

/// Examples kept per group and per destination.
const EXAMPLES: usize = 3;
/// Field differences shown for a destination's example.
const DIFF_LINES: usize = 20;

/// What a message becomes under one table: a canonical name, or `unmapped`.
fn becomes(draft: &Draft) -> Option<String> {
    match draft {
        Draft::Mapped(event, _) => Some(event.name.clone()),
        Draft::Unmapped { .. } => Some("unmapped".into()),
        Draft::IdentityOnly => None,
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Group {
    pub segment_event: String,
    pub before: String,
    pub after: String,
    pub count: u64,
    pub example_message_ids: Vec<String>,
    /// Why the draft's event would not reach a destination, for the group's messages whose
    /// result changes: each destination's route verdict, how many, and one reason.
    pub not_sent: Vec<NotSent>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NotSent {
    pub destination: String,
    pub verdict: String,
    pub count: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DestinationChange {
    pub name: String,
    /// Messages whose payload to this destination would differ (sent, not sent, or changed).
    pub payloads_changed: u64,
    pub examples: Vec<PayloadExample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PayloadExample {
    pub message_id: String,
    /// `path: before → after` for each field that differs (names, values, identifiers).
    pub diff: Vec<String>,
}

/// The whole answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PreviewReport {
    pub replayed: u64,
    /// Stored messages that no longer validate (they are counted, not judged).
    pub invalid: u64,
    /// Messages whose canonical result differs between the tables.
    pub changed: u64,
    pub groups: Vec<Group>,
    pub destinations: Vec<DestinationChange>,
    pub before_version: u32,
    pub after_version: u32,
    /// What the preview did and did not evaluate, for whoever reads the numbers.
    pub note: &'static str,
}

pub const NOTE: &str = "each stored message is run through the stateless stages with the table in force and with the draft; identity enrichment from stored profiles and dedup against stored events are not applied (on either side), so every difference is the draft's own. Nothing is written or sent.";

/// The running preview.
pub struct Preview<'a> {
    before: &'a MappingTable,
    after: &'a MappingTable,
    targets: &'a [RouteTarget],
    destinations: &'a [Destination],
    limits: MessageLimits,
    groups: BTreeMap<(String, String, String), Group>,
    changes: BTreeMap<String, DestinationChange>,
    replayed: u64,
    invalid: u64,
    changed: u64,
}

impl<'a> Preview<'a> {
    pub fn new(
        before: &'a MappingTable,
        after: &'a MappingTable,
        targets: &'a [RouteTarget],
        destinations: &'a [Destination],
    ) -> Preview<'a> {
        Preview {
            before,
            after,
            targets,
            destinations,
            limits: MessageLimits::default(),
            groups: BTreeMap::new(),
            changes: destinations
                .iter()
                .map(|d| {
                    (
                        d.name.clone(),
                        DestinationChange {
                            name: d.name.clone(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            replayed: 0,
            invalid: 0,
            changed: 0,
        }
    }

    /// One stored message.
    pub fn add(&mut self, raw: &[u8], environment: &str, received_at_ms: i64) {
        self.replayed += 1;
        let valid = match validate_message(raw, None, &self.limits) {
            Ok(valid) => valid,
            Err(_) => {
                self.invalid += 1;
                return;
            }
        };
        let before = pipeline::draft(&valid, environment, self.before, received_at_ms);
        let after = pipeline::draft(&valid, environment, self.after, received_at_ms);
        let (Some(was), Some(will)) = (becomes(&before), becomes(&after)) else {
            return;
        };
        let segment_event = valid.event.clone().unwrap_or_default();
        let message_id = valid.message_id.clone();
        let key = (segment_event.clone(), was.clone(), will.clone());
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            segment_event,
            before: was,
            after: will,
            ..Default::default()
        });
        group.count += 1;
        if group.example_message_ids.len() < EXAMPLES {
            group.example_message_ids.push(message_id.clone());
        }
        if same_result(&before, &after) {
            // Nothing a destination is sent can differ: no payload is built (most messages).
            return;
        }
        let consent = pipeline::consent::event_consent(&valid.body).cloned();
        let (before_sent, _) = self.payloads(&before, consent.as_ref());
        let (after_sent, unrouted) = self.payloads(&after, consent.as_ref());
        let Some(group) = self.groups.get_mut(&key) else {
            return;
        };
        for decision in unrouted {
            let verdict = decision.verdict.as_str().to_string();
            match group
                .not_sent
                .iter_mut()
                .find(|n| n.destination == decision.destination && n.verdict == verdict)
            {
                Some(seen) => seen.count += 1,
                None => group.not_sent.push(NotSent {
                    destination: decision.destination.clone(),
                    verdict,
                    count: 1,
                    reason: decision.reason.clone(),
                }),
            }
        }
        if before_sent == after_sent {
            return;
        }
        self.changed += 1;
        for d in self.destinations {
            let (was, will) = (before_sent.get(&d.name), after_sent.get(&d.name));
            if was == will {
                continue;
            }
            let Some(change) = self.changes.get_mut(&d.name) else {
                continue;
            };
            change.payloads_changed += 1;
            if change.examples.is_empty() {
                change.examples.push(PayloadExample {
                    message_id: message_id.clone(),
                    diff: field_diff(was, will),
                });
            }
        }
    }

    /// What each destination would be sent for this draft (its payload), and the routes it
    /// would not take, with why.
    fn payloads(
        &self,
        draft: &Draft,
        consent: Option<&serde_json::Map<String, Value>>,
    ) -> (BTreeMap<String, Value>, Vec<pipeline::RouteDecision>) {
        let Draft::Mapped(event, row) = draft else {
            return (BTreeMap::new(), Vec::new());
        };
        let mut event = (**event).clone();
        // The version differs between the tables by design; what is sent is the question.
        event.mapping_version = 0;
        let event = std::sync::Arc::new(event);
        let mut decisions = pipeline::route(&event, row, self.targets, consent, None);
        let unrouted: Vec<pipeline::RouteDecision> = decisions
            .iter()
            .filter(|d| {
                d.verdict != RouteVerdict::Ready && d.verdict != RouteVerdict::OtherEnvironment
            })
            .cloned()
            .collect();
        decisions.retain(|d| d.verdict == RouteVerdict::Ready);
        let mut out = BTreeMap::new();
        for decision in decisions
            .iter()
            .filter(|d| d.verdict == RouteVerdict::Ready)
        {
            let Some(dest) = self
                .destinations
                .iter()
                .find(|d| d.name == decision.destination)
            else {
                continue;
            };
            let subject = Subject::Event {
                event: event.clone(),
                destination_event: decision.destination_event.clone(),
                consent_source: decision.consent.source.clone(),
            };
            // A fixed clock: the two sides must differ only by what the tables make of them.
            let built = destinations::build(dest, &[subject], 0);
            let body = built
                .request
                .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
                .unwrap_or_else(|| {
                    Value::String(
                        built
                            .rejected
                            .first()
                            .map(|(_, why)| format!("not sent: {why}"))
                            .unwrap_or_default(),
                    )
                });
            out.insert(decision.destination.clone(), body);
        }
        (out, unrouted)
    }

    pub fn finish(self) -> PreviewReport {
        let mut groups: Vec<Group> = self.groups.into_values().collect();
        // What changes first, then the biggest.
        groups.sort_by(|a, b| {
            (a.before == a.after, std::cmp::Reverse(a.count))
                .cmp(&(b.before == b.after, std::cmp::Reverse(b.count)))
        });
        PreviewReport {
            replayed: self.replayed,
            invalid: self.invalid,
            changed: self.changed,
            groups,
            destinations: self.changes.into_values().collect(),
            before_version: self.before.version,
            after_version: self.after.version,
            note: NOTE,
        }
    }
}

/// Whether the two tables make the same of a message: the same canonical event (whatever their
/// version numbers) under the same row, or unmapped under both.
fn same_result(before: &Draft, after: &Draft) -> bool {
    match (before, after) {
        (Draft::Mapped(a, row_a), Draft::Mapped(b, row_b)) => {
            row_a == row_b && {
                let mut b = (**b).clone();
                b.mapping_version = a.mapping_version;
                **a == b
            }
        }
        (Draft::Unmapped { .. }, Draft::Unmapped { .. }) => true,
        _ => false,
    }
}

/// `path: before → after` for each leaf that differs between two payloads.
fn field_diff(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    let mut left = BTreeMap::new();
    let mut right = BTreeMap::new();
    if let Some(v) = before {
        flatten("", v, &mut left);
    }
    if let Some(v) = after {
        flatten("", v, &mut right);
    }
    let mut out = Vec::new();
    match (before, after) {
        (None, Some(_)) => out.push("(not sent before; sent with the draft)".to_string()),
        (Some(_), None) => out.push("(sent before; not sent with the draft)".to_string()),
        _ => {}
    }
    let keys: std::collections::BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    for key in keys {
        let (l, r) = (left.get(key), right.get(key));
        if l != r && out.len() < DIFF_LINES {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "—".into());
            out.push(format!("{key}: {} → {}", show(l), show(r)));
        }
    }
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}
