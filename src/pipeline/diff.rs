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

pub fn diff(raw: &Value, event: &CanonicalEvent) -> Vec<DiffLine> {
    // Serialized once: every provenance entry looks its field up in it.
    let serialized = serde_json::to_value(event).unwrap_or(Value::Null);
    let mut lines: Vec<DiffLine> = event
        .provenance
        .iter()
        .map(|(field, provenance)| {
            let raw_value = lookup(raw, &provenance.source).cloned();
            let canonical = lookup(&serialized, field).cloned();
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line<'a>(lines: &'a [DiffLine], field: &str) -> &'a DiffLine {
        lines
            .iter()
            .find(|l| l.field == field)
            .unwrap_or_else(|| panic!("no line for {field}: {lines:#?}"))
    }

    #[test]
    fn each_canonical_field_says_where_it_came_from_and_unused_properties_are_listed() {
        let raw = json!({"type": "track", "event": "Order Completed",
            "properties": {"order_id": "ORD-1", "revenue": "$39.95", "coupon": "SPRING", "currency": "EUR"}});
        let event: CanonicalEvent = serde_json::from_value(json!({
            "event_id": "ev_1", "event_id_basis": "purchase + order_id ORD-1", "dedup_key": "ORD-1",
            "name": "purchase", "segment_event": "Order Completed", "mapping_version": 1,
            "message_id": "m-1", "environment": "production",
            "event_time": "2026-04-23T10:15:30.000Z", "event_time_ms": 1_776_939_330_000i64,
            "properties": {"order_id": "ORD-1", "value": 39.95, "currency": "EUR", "content_type": "product"},
            "user": {"profile_id": 1}, "context": {},
            "provenance": {
                "properties.order_id": {"source": "properties.order_id", "transform": "copied"},
                "properties.value": {"source": "properties.revenue", "transform": "parsed a price string"},
                "properties.currency": {"source": "properties.currency", "transform": "copied"},
                "properties.content_type": {"source": "mapping default", "transform": "defaulted"}
            }
        }))
        .expect("a canonical event");
        let lines = diff(&raw, &event);
        assert_eq!(line(&lines, "properties.order_id").kind, DiffKind::Kept);
        let value = line(&lines, "properties.value");
        assert_eq!(value.kind, DiffKind::Transformed);
        assert_eq!(value.raw, Some(json!("$39.95")));
        assert_eq!(value.canonical, Some(json!(39.95)));
        assert_eq!(value.source, "properties.revenue");
        let defaulted = line(&lines, "properties.content_type");
        assert_eq!(defaulted.kind, DiffKind::Added);
        assert_eq!(defaulted.raw, None);
        assert_eq!(defaulted.canonical, Some(json!("product")));
        // The coupon went nowhere: shown as unused, the revenue (read) is not.
        let unused: Vec<&str> = lines
            .iter()
            .filter(|l| l.kind == DiffKind::Unused)
            .map(|l| l.field.as_str())
            .collect();
        assert_eq!(unused, ["properties.coupon"]);
    }

    #[test]
    fn a_dotted_path_is_looked_up_through_objects_only() {
        let raw = json!({"context": {"page": {"url": "https://shop.example"}}, "list": [1]});
        assert_eq!(
            lookup(&raw, "context.page.url"),
            Some(&json!("https://shop.example"))
        );
        assert_eq!(lookup(&raw, "context.page.missing"), None);
        assert_eq!(lookup(&raw, "list.0"), None);
    }
}
