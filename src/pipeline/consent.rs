//! Consent per destination, with Segment's semantics (reference/segment-and-peers.md §2.5):
//! - no `context.consent` object, or an empty one → not enforced;
//! - `categoryPreferences: {}` → every category is false;
//! - a category missing from the preferences counts as false;
//! - a destination that needs several categories needs all of them.
//!
//! An event without consent falls back to the profile's stored consent (from identify or the
//! "Segment Consent Preference Updated" event).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentVerdict {
    pub allowed: bool,
    /// `event`, `profile` or `none`.
    pub source: String,
    pub reason: String,
}

/// What the event carried: `None` when there is no consent object (or an empty one).
pub fn event_consent(body: &Map<String, Value>) -> Option<&Map<String, Value>> {
    let consent = body.get("context")?.get("consent")?.as_object()?;
    if consent.is_empty() {
        return None;
    }
    // A consent object without categoryPreferences carries nothing to enforce.
    consent.get("categoryPreferences")?.as_object()
}

/// The categories of a `categoryPreferences` object: `true` is granted, anything else (false, a
/// string, null) is not, as Segment reads them.
pub fn categories(prefs: &Map<String, Value>) -> std::collections::BTreeMap<String, bool> {
    prefs
        .iter()
        .map(|(category, value)| (category.clone(), value == &Value::Bool(true)))
        .collect()
}

pub fn evaluate(
    required: &[String],
    event: Option<&Map<String, Value>>,
    profile: Option<(&Map<String, Value>, &str)>,
) -> ConsentVerdict {
    if required.is_empty() {
        return ConsentVerdict {
            allowed: true,
            source: "none".into(),
            reason: "the destination needs no consent category".into(),
        };
    }
    let (prefs, source, place) = match (event, profile) {
        (Some(prefs), _) => (
            prefs,
            "event",
            "context.consent.categoryPreferences".to_string(),
        ),
        (None, Some((prefs, learned_from))) => (
            prefs,
            "profile",
            format!("the profile's consent (from {learned_from})"),
        ),
        (None, None) => {
            return ConsentVerdict {
                allowed: true,
                source: "none".into(),
                reason: "no consent on the event or the profile: not enforced".into(),
            }
        }
    };
    let mut denied = Vec::new();
    for category in required {
        match prefs.get(category) {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => denied.push(format!("{category} is false")),
            _ => denied.push(format!("{category} is missing (counts as false)")),
        }
    }
    if denied.is_empty() {
        ConsentVerdict {
            allowed: true,
            source: source.into(),
            reason: format!("{} granted in {place}", required.join(" + ")),
        }
    } else {
        ConsentVerdict {
            allowed: false,
            source: source.into(),
            reason: format!("blocked: {} in {place}", denied.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prefs(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }
    fn req(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn segment_semantics() {
        let body = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert!(event_consent(&body(json!({}))).is_none());
        assert!(event_consent(&body(json!({"context": {"consent": {}}}))).is_none());
        assert_eq!(
            event_consent(&body(
                json!({"context": {"consent": {"categoryPreferences": {}}}})
            )),
            Some(&Map::new())
        );

        let empty = Map::new();
        let v = evaluate(&req(&["Advertising"]), Some(&empty), None);
        assert!(!v.allowed);
        assert_eq!(v.reason, "blocked: Advertising is missing (counts as false) in context.consent.categoryPreferences");

        let p = prefs(json!({"Advertising": true, "Analytics": false}));
        assert!(evaluate(&req(&["Advertising"]), Some(&p), None).allowed);
        let both = evaluate(&req(&["Advertising", "Analytics"]), Some(&p), None);
        assert!(!both.allowed, "several categories need all of them");
        assert_eq!(
            both.reason,
            "blocked: Analytics is false in context.consent.categoryPreferences"
        );

        assert!(evaluate(&req(&["Advertising"]), None, None).allowed);
        assert!(evaluate(&[], Some(&empty), None).allowed);
    }

    #[test]
    fn falls_back_to_profile_consent() {
        let stored = prefs(json!({"Advertising": false}));
        let v = evaluate(
            &req(&["Advertising"]),
            None,
            Some((&stored, "identify m-1")),
        );
        assert!(!v.allowed);
        assert_eq!(v.source, "profile");
        assert_eq!(
            v.reason,
            "blocked: Advertising is false in the profile's consent (from identify m-1)"
        );
        // The event's own consent wins over the profile's.
        let event = prefs(json!({"Advertising": true}));
        assert!(
            evaluate(
                &req(&["Advertising"]),
                Some(&event),
                Some((&stored, "identify m-1"))
            )
            .allowed
        );
    }
}
