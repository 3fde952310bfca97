//! Routing: for each destination, whether a canonical event goes there and, when not, why —
//! the controlled test's leave-outs, environments, what the platform cannot take, what it is
//! set up for, consent, then required properties, in that order.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::canonical::CanonicalEvent;
use super::consent;
use super::mapping::MappingRow;

/// A destination as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTarget {
    pub name: String,
    pub kind: String,
    pub environments: Vec<String>,
    pub consent: Vec<String>,
    /// Canonical names the destination can send, when restricted (Google Ads: the events with
    /// a conversion action).
    pub supported_events: Option<Vec<String>>,
    /// Whether identify calls go there as profile updates (Klaviyo profile-import).
    pub takes_profiles: bool,
    /// Canonical names the platform cannot take, with why (Meta counts a "Refund" as a new
    /// conversion; it has no way to subtract one).
    pub unsupported: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteVerdict {
    /// Deliver it.
    Ready,
    /// Consent does not allow this destination.
    BlockedConsent,
    /// The destination does not serve this environment (staging never reaches production).
    OtherEnvironment,
    /// A required property is missing.
    MissingRequired,
    /// The destination is not set up for this event (e.g. no Google conversion action).
    NotConfigured,
    /// Left out of a controlled test send (the destination has no test mode).
    SkippedTest,
    /// The platform has no way to take this event (refunds on Meta and TikTok).
    Unsupported,
}

impl RouteVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteVerdict::Ready => "ready",
            RouteVerdict::BlockedConsent => "blocked_consent",
            RouteVerdict::OtherEnvironment => "other_environment",
            RouteVerdict::MissingRequired => "missing_required",
            RouteVerdict::NotConfigured => "not_configured",
            RouteVerdict::SkippedTest => "skipped_test",
            RouteVerdict::Unsupported => "unsupported",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDecision {
    pub destination: String,
    pub kind: String,
    /// The event's name at this destination (`Purchase`, `Placed Order`, …).
    pub destination_event: String,
    pub verdict: RouteVerdict,
    pub reason: String,
    pub consent: consent::ConsentVerdict,
}

/// Decide, for each destination, whether this event goes there and why (not).
pub fn route(
    event: &CanonicalEvent,
    row: &MappingRow,
    targets: &[RouteTarget],
    event_consent: Option<&Map<String, Value>>,
    profile_consent: Option<(&Map<String, Value>, &str)>,
) -> Vec<RouteDecision> {
    targets
        .iter()
        .map(|target| {
            let mut required = target.consent.clone();
            for category in &row.consent {
                if !required.contains(category) {
                    required.push(category.clone());
                }
            }
            let consent = consent::evaluate(&required, event_consent, profile_consent);
            let (verdict, reason) =
                if event.skip_destinations.contains(&target.name) {
                    (
                        RouteVerdict::SkippedTest,
                        format!(
                            "skipped in the controlled test: {} has no test mode",
                            target.name
                        ),
                    )
                } else if !target.environments.is_empty()
                    && !target.environments.contains(&event.environment)
                {
                    (
                        RouteVerdict::OtherEnvironment,
                        format!(
                            "{} serves {} only; this event came from {}",
                            target.name,
                            target.environments.join(", "),
                            event.environment
                        ),
                    )
                } else if let Some((_, why)) = target
                    .unsupported
                    .iter()
                    .find(|(name, _)| name == &event.name)
                {
                    (
                        RouteVerdict::Unsupported,
                        format!("not sent to {}: {why}", target.name),
                    )
                } else if let Some(names) = target
                    .supported_events
                    .as_ref()
                    .filter(|names| !names.contains(&event.name))
                {
                    (
                        RouteVerdict::NotConfigured,
                        format!(
                            "{} sends only {} (conversion_actions); `{}` is not among them",
                            target.name,
                            names.join(", "),
                            event.name
                        ),
                    )
                } else if !consent.allowed {
                    (RouteVerdict::BlockedConsent, consent.reason.clone())
                } else if !event.missing_required.is_empty() {
                    (
                        RouteVerdict::MissingRequired,
                        format!(
                        "missing required propert{} {} (mapping row `{}`); send {} from the source",
                        if event.missing_required.len() == 1 { "y" } else { "ies" },
                        event.missing_required.join(", "),
                        row.segment,
                        event
                            .missing_required
                            .iter()
                            .map(|k| source_name_of(k))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    )
                } else {
                    (RouteVerdict::Ready, format!("ready: {}", consent.reason))
                };
            RouteDecision {
                destination: target.name.clone(),
                kind: target.kind.clone(),
                destination_event: row.destination_name(&target.name, &target.kind).to_string(),
                verdict,
                reason,
                consent,
            }
        })
        .collect()
}

/// The Segment property that feeds a canonical one, for error messages.
fn source_name_of(canonical: &str) -> &str {
    match canonical {
        "value" => "properties.revenue (or total / value)",
        "order_id" => "properties.order_id",
        "currency" => "properties.currency",
        "items" => "properties.products",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn purchase(environment: &str, missing: &[&str], skip: &[&str]) -> CanonicalEvent {
        serde_json::from_value(json!({
            "event_id": "ev_1", "event_id_basis": "purchase + order_id ORD-1", "dedup_key": "ORD-1",
            "name": "purchase", "segment_event": "Order Completed", "mapping_version": 1,
            "message_id": "m-1", "environment": environment,
            "event_time": "2026-04-23T10:15:30.000Z", "event_time_ms": 1_776_939_330_000i64,
            "properties": {"order_id": "ORD-1", "value": 39.95},
            "user": {"profile_id": 1}, "context": {}, "provenance": {},
            "missing_required": missing, "skip_destinations": skip
        }))
        .expect("a canonical event")
    }

    fn order_completed() -> MappingRow {
        super::super::mapping::default_rows()
            .into_iter()
            .find(|r| r.segment == "Order Completed")
            .expect("Order Completed is in the default table")
    }

    fn target(name: &str, kind: &str) -> RouteTarget {
        RouteTarget {
            name: name.into(),
            kind: kind.into(),
            environments: Vec::new(),
            consent: vec!["Advertising".into()],
            supported_events: None,
            takes_profiles: false,
            unsupported: Vec::new(),
        }
    }

    fn prefs(advertising: bool) -> Map<String, Value> {
        json!({"Advertising": advertising})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    fn one(event: &CanonicalEvent, target: RouteTarget, consent: Option<bool>) -> RouteDecision {
        let prefs = consent.map(prefs);
        route(event, &order_completed(), &[target], prefs.as_ref(), None)
            .pop()
            .expect("one decision per target")
    }

    #[test]
    fn a_purchase_with_consent_is_ready_under_the_destinations_own_name() {
        let d = one(
            &purchase("production", &[], &[]),
            target("meta", "meta_capi"),
            Some(true),
        );
        assert_eq!(d.verdict, RouteVerdict::Ready);
        assert_eq!(d.destination_event, "Purchase");
        assert!(d.reason.starts_with("ready: "), "{}", d.reason);
    }

    #[test]
    fn each_reason_not_to_send_is_named_and_the_first_one_wins() {
        let event = purchase("production", &[], &[]);
        let denied = one(&event, target("meta", "meta_capi"), Some(false));
        assert_eq!(denied.verdict, RouteVerdict::BlockedConsent);
        assert!(
            denied.reason.contains("Advertising is false"),
            "{}",
            denied.reason
        );

        let mut staging_only = target("meta", "meta_capi");
        staging_only.environments = vec!["staging".into()];
        let other = one(&event, staging_only, Some(false));
        assert_eq!(
            other.verdict,
            RouteVerdict::OtherEnvironment,
            "before consent"
        );
        assert_eq!(
            other.reason,
            "meta serves staging only; this event came from production"
        );

        let mut google = target("google", "google_ads");
        google.supported_events = Some(vec!["sign_up".into()]);
        let not_set_up = one(&event, google, Some(true));
        assert_eq!(not_set_up.verdict, RouteVerdict::NotConfigured);
        assert!(not_set_up.reason.contains("`purchase` is not among them"));

        let mut tiktok = target("tiktok", "tiktok");
        tiktok.unsupported = vec![("purchase".into(), "no such event".into())];
        let unsupported = one(&event, tiktok, Some(false));
        assert_eq!(unsupported.verdict, RouteVerdict::Unsupported);
        assert_eq!(unsupported.reason, "not sent to tiktok: no such event");

        let test = purchase("production", &[], &["meta"]);
        let skipped = one(&test, target("meta", "meta_capi"), Some(false));
        assert_eq!(
            skipped.verdict,
            RouteVerdict::SkippedTest,
            "before everything"
        );
    }

    #[test]
    fn a_missing_required_property_names_what_to_send_from_the_source() {
        let event = purchase("production", &["value", "currency"], &[]);
        let d = one(&event, target("meta", "meta_capi"), Some(true));
        assert_eq!(d.verdict, RouteVerdict::MissingRequired);
        assert!(
            d.reason.starts_with("missing required properties value, currency (mapping row `Order Completed`); send properties.revenue (or total / value), properties.currency"),
            "{}",
            d.reason
        );
        // Consent is decided first: a refused one is not asked for its properties.
        let refused = one(&event, target("meta", "meta_capi"), Some(false));
        assert_eq!(refused.verdict, RouteVerdict::BlockedConsent);
    }

    #[test]
    fn the_mapping_rows_consent_adds_to_the_destinations() {
        let mut row = order_completed();
        row.consent = vec!["Analytics".into()];
        let mut webhook = target("hook", "webhook");
        webhook.consent = Vec::new();
        let event = purchase("production", &[], &[]);
        let prefs = json!({"Analytics": false}).as_object().cloned();
        let d = route(&event, &row, &[webhook], prefs.as_ref(), None)
            .pop()
            .expect("one decision");
        assert_eq!(d.verdict, RouteVerdict::BlockedConsent);
        assert!(d.reason.contains("Analytics is false"), "{}", d.reason);
    }
}
