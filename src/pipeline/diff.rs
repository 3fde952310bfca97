//! Raw vs canonical: one line per field, saying where each canonical value came from, and which
//! raw properties nothing used. Pure, shared by `inspect` and the dashboard.

use serde::Serialize;
use serde_json::{Map, Value};

use super::canonical::CanonicalEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Same value under the same name.
    Kept,
    /// Renamed or converted (revenue → value, "$39.95" → 39.95).
    Transformed,
    /// Not in the raw message's properties: defaulted, derived or learned from the profile.
    Added,
    /// A raw property no canonical field uses.
    Unused,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffLine {
    pub kind: DiffKind,
    /// Canonical path (`properties.value`), or the raw path for an unused property.
    pub field: String,
    pub canonical: Option<Value>,
    pub source: String,
    pub raw: Option<Value>,
    pub transform: String,
}

/// Look up a dotted path (`properties.revenue`, `context.page.url`) in a raw message.
pub fn lookup<'a>(raw: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(raw, |value, key| value.as_object()?.get(key))
}

fn canonical_value(event: &CanonicalEvent, path: &str) -> Option<Value> {
    let value = serde_json::to_value(event).ok()?;
    lookup(&value, path).cloned()
}

pub fn diff(raw: &Value, event: &CanonicalEvent) -> Vec<DiffLine> {
    let mut lines: Vec<DiffLine> = event
        .provenance
        .iter()
        .map(|(field, provenance)| {
            let raw_value = lookup(raw, &provenance.source).cloned();
            let canonical = canonical_value(event, field);
            let same_name = field == &provenance.source;
            let kind = match (&raw_value, same_name && raw_value == canonical) {
                (None, _) => DiffKind::Added,
                (Some(_), true) => DiffKind::Kept,
                (Some(_), false) if provenance.transform == "copied" && raw_value == canonical => {
                    DiffKind::Kept
                }
                (Some(_), false) => DiffKind::Transformed,
            };
            DiffLine {
                kind,
                field: field.clone(),
                canonical,
                source: provenance.source.clone(),
                raw: raw_value,
                transform: provenance.transform.clone(),
            }
        })
        .collect();
    // Raw properties that nothing read: worth a glance when a field "disappears".
    let used: Vec<&str> = event
        .provenance
        .values()
        .map(|p| p.source.as_str())
        .collect();
    let empty = Map::new();
    let properties = raw
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (key, value) in properties {
        let path = format!("properties.{key}");
        if !used.iter().any(|u| *u == path) {
            lines.push(DiffLine {
                kind: DiffKind::Unused,
                field: path.clone(),
                canonical: None,
                source: path,
                raw: Some(value.clone()),
                transform: "not mapped".into(),
            });
        }
    }
    lines
}
