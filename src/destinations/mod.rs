//! Destinations: for each platform a pure payload builder (canonical event → HTTP request) and
//! a pure response classifier (HTTP response → delivered / retry / permanent, per item). The one
//! sender that does IO lives in `crate::delivery`.

pub mod ga4;
pub mod google;
pub mod hashing;
mod http;
pub mod klaviyo;
pub mod match_quality;
pub mod meta;
pub mod privacy;
pub mod settings;
pub mod setup;
pub mod tiktok;
pub mod webhook;

pub use http::{classify_status, excerpt, Built, HttpRequest, HttpResponse, Outcome};
pub use settings::{SettingsError, SettingsReader};
pub use setup::Setup;

#[cfg(test)]
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(test)]
use crate::config::Needs;
#[cfg(test)]
use crate::config::{DestinationConfig, EnvVars};
use crate::config::{DestinationKind, Secret};
use crate::pipeline::CanonicalEvent;

/// A destination ready to deliver: its kind-specific settings resolved and validated.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub kind: DestinationKind,
    /// Scheme and host the requests go to (the real API unless `endpoint` overrides it).
    pub base_url: String,
    pub retry_schedule: Vec<u64>,
    /// Items per request (1 where the API takes one event per call).
    pub batch_size: usize,
    /// Requests in flight at once for this destination.
    pub concurrency: usize,
    /// Events older than this are refused by the platform; they dead-letter with that reason.
    pub max_age: Option<Duration>,
    /// The most of any answer that is read (`max_response_bytes`); the rest is never read.
    pub max_response_bytes: usize,
    pub settings: Settings,
}

#[derive(Debug, Clone)]
pub enum Settings {
    Meta(meta::MetaSettings),
    GoogleAds(google::GoogleSettings),
    Ga4(ga4::Ga4Settings),
    Klaviyo(klaviyo::KlaviyoSettings),
    Tiktok(tiktok::TiktokSettings),
    Warehouse(WarehouseTarget),
    Webhook(webhook::WebhookSettings),
}

/// Where the warehouse destination writes its table.
#[derive(Debug, Clone)]
pub enum WarehouseTarget {
    /// An SQLite file (`path`).
    Sqlite { path: std::path::PathBuf },
    /// A PostgreSQL database (`url`, a secret) and schema.
    Postgres { url: Secret, schema: String },
}

impl WarehouseTarget {
    /// Where the rows go, for request records and messages: never the password.
    pub fn describe(&self) -> String {
        match self {
            WarehouseTarget::Sqlite { path } => {
                format!("sqlite://{}#tracklayer_events", path.display())
            }
            WarehouseTarget::Postgres { url, schema } => {
                let place = url::Url::parse(url.expose())
                    .map(|u| {
                        format!(
                            "{}:{}{}",
                            u.host_str().unwrap_or("localhost"),
                            u.port().unwrap_or(5432),
                            u.path()
                        )
                    })
                    .unwrap_or_else(|_| "(unreadable url)".into());
                format!("postgres://{place}#{schema}.tracklayer_events")
            }
        }
    }
}

impl Destination {
    /// Whether a controlled test reaches this destination in the platform's test mode
    /// (Meta/TikTok test_event_code, Google validateOnly, GA4's debug endpoint); None when the
    /// platform has no test mode. The Data Manager API and GA4 validate test events whatever the
    /// destination's own setting, so a test never records a conversion there.
    pub fn test_mode(&self) -> Option<bool> {
        match &self.settings {
            Settings::Meta(s) => Some(s.test_event_code.is_some()),
            Settings::Tiktok(s) => Some(s.test_event_code.is_some()),
            Settings::GoogleAds(s) => Some(match s.api {
                google::GoogleApi::DataManager => true,
                google::GoogleApi::AdsApi(_) => s.validate_only,
            }),
            Settings::Ga4(_) => Some(true),
            _ => None,
        }
    }

    /// Every credential of this destination, as it appears in requests.
    fn credentials(&self) -> Vec<String> {
        let exposed =
            |secrets: &[&Secret]| secrets.iter().map(|s| s.expose().to_string()).collect();
        match &self.settings {
            Settings::Meta(s) => exposed(&[&s.access_token]),
            Settings::GoogleAds(s) => {
                let mut secrets = s.auth.secrets();
                if let google::GoogleApi::AdsApi(legacy) = &s.api {
                    secrets.push(&legacy.developer_token);
                }
                exposed(&secrets)
            }
            Settings::Klaviyo(s) => exposed(&[&s.api_key]),
            Settings::Ga4(s) => exposed(&[&s.api_secret]),
            Settings::Tiktok(s) => exposed(&[&s.access_token]),
            Settings::Webhook(s) => exposed(&[&s.secret]),
            // The URL, and its password alone, as either could appear in a connection error.
            Settings::Warehouse(WarehouseTarget::Postgres { url, .. }) => {
                let password = url::Url::parse(url.expose())
                    .ok()
                    .and_then(|u| u.password().map(str::to_string));
                std::iter::once(url.expose().to_string())
                    .chain(password)
                    .collect()
            }
            Settings::Warehouse(WarehouseTarget::Sqlite { .. }) => Vec::new(),
        }
    }

    /// `text` with every credential of this destination replaced: what may be stored, logged or
    /// shown of anything that touched a request (an error can quote its URL, a platform its
    /// input).
    pub fn redact(&self, text: &str) -> String {
        let mut redacted = text.to_string();
        for credential in self.credentials() {
            // Short values would match ordinary text; real tokens are long.
            if credential.len() >= 6 && redacted.contains(credential.as_str()) {
                redacted = redacted.replace(credential.as_str(), "REDACTED");
            }
        }
        redacted
    }

    /// Canonical names this destination can send, when it is restricted (Google Ads sends only
    /// the events that have a conversion action).
    pub fn supported_events(&self) -> Option<Vec<String>> {
        match &self.settings {
            Settings::GoogleAds(s) => Some(s.supported_events()),
            _ => None,
        }
    }

    /// How many of `waiting` deliveries the next request takes: the batch size, except where a
    /// platform's batch API is only worth it with a queue behind it (Klaviyo sends one event a
    /// request until `bulk_threshold` wait, then bulk jobs).
    pub fn items_per_request(&self, waiting: usize) -> usize {
        match &self.settings {
            Settings::Klaviyo(s) if !s.bulk_for(waiting) => 1,
            _ => self.batch_size,
        }
    }

    /// Which requests an item may share: a worker puts only items of one lane in a request,
    /// so what it claimed is sent without being handed back for not fitting. A controlled
    /// test's events never share a request with live ones; GA4 takes one client's events a
    /// request; Klaviyo takes profiles and events at different endpoints (whose rate limits
    /// are separate, so a limit holds back only its `endpoint`).
    pub fn lane(&self, item: &Subject) -> Lane {
        let test = matches!(item, Subject::Event { event, .. } if event.test_send);
        match &self.settings {
            Settings::Ga4(s) => Lane {
                endpoint: if test { "debug" } else { "collect" },
                group: ga4::client_group(s, item),
            },
            Settings::Klaviyo(_) => Lane {
                endpoint: match item {
                    Subject::Profile(_) => "profiles",
                    Subject::Event { .. } => "events",
                },
                group: u64::from(test),
            },
            _ => Lane {
                endpoint: "",
                group: u64::from(test),
            },
        }
    }

    /// Raw message paths the transform must capture for this destination.
    pub fn captured_paths(&self) -> Vec<String> {
        match &self.settings {
            Settings::Ga4(s) => s.captured_paths(),
            _ => Vec::new(),
        }
    }

    /// Which API and path requests take, in words, when the kind has more than one (`check`).
    pub fn describe_path(&self) -> Option<String> {
        match &self.settings {
            Settings::GoogleAds(s) => Some(s.describe()),
            Settings::Ga4(s) => Some(format!(
                "GA4 Measurement Protocol ({} for {})",
                if s.validate_only {
                    "/debug/mp/collect, validation only"
                } else {
                    "/mp/collect"
                },
                s.measurement_id
            )),
            _ => None,
        }
    }

    /// The canonical names a Google destination has conversion actions for (`check` makes sure
    /// each is in the mapping table).
    pub fn conversion_action_names(&self) -> Vec<String> {
        match &self.settings {
            Settings::GoogleAds(s) => s.conversion_actions.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Canonical names the platform cannot take, with why (routing records the reason).
    pub fn unsupported_events(&self) -> Vec<(String, String)> {
        let no_refunds = |platform: &str| {
            vec![(
                "refund".to_string(),
                format!("{platform} takes no refunds: a Refund event would count as one more conversion, not subtract one (the refund reaches the platforms that can adjust: Google, GA4, Klaviyo, the warehouse and webhooks)"),
            )]
        };
        match &self.settings {
            Settings::Meta(_) => no_refunds("Meta"),
            Settings::Tiktok(_) => no_refunds("TikTok"),
            Settings::GoogleAds(s) => s.unsupported_events(),
            _ => Vec::new(),
        }
    }
}

/// Items of one lane may go in one request (see `Destination::lane`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lane {
    pub endpoint: &'static str,
    pub group: u64,
}

/// One thing to deliver: a canonical event, or (Klaviyo) a profile from an identify call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "subject", rename_all = "snake_case")]
pub enum Subject {
    Event {
        /// Shared: the same event goes to every destination.
        event: Arc<CanonicalEvent>,
        /// The event's name at this destination.
        destination_event: String,
        /// `event`, `profile` or `none`: where the consent that allowed it came from.
        consent_source: String,
    },
    Profile(ProfileSnapshot),
}

/// What Klaviyo's profile-import needs from an identify call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSnapshot {
    pub profile_id: i64,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub traits: Map<String, Value>,
    /// Trait values left out of what is sent, with why (e.g. a phone without a country).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Build the request for `items` (≤ batch_size). `now_unix` timestamps the request (webhooks).
pub fn build(dest: &Destination, items: &[Subject], now_unix: i64) -> Built {
    match &dest.settings {
        Settings::Meta(s) => meta::build(dest, s, items),
        Settings::GoogleAds(s) => google::build(dest, s, items),
        Settings::Ga4(s) => ga4::build(dest, s, items),
        Settings::Klaviyo(s) => klaviyo::build(dest, s, items),
        Settings::Tiktok(s) => tiktok::build(dest, s, items),
        Settings::Webhook(s) => webhook::build(s, dest.batch_size, items, now_unix),
        Settings::Warehouse(_) => Built {
            rejected: (0..items.len())
                .map(|i| {
                    (
                        i,
                        "the warehouse is written directly, not over HTTP".to_string(),
                    )
                })
                .collect(),
            ..Built::default()
        },
    }
}

/// Classify a response for the `count` items a request carried.
pub fn classify(dest: &Destination, count: usize, response: &HttpResponse) -> Vec<Outcome> {
    match &dest.settings {
        Settings::Meta(_) => meta::classify(count, response),
        Settings::GoogleAds(s) => google::classify(s, count, response),
        Settings::Ga4(s) => ga4::classify(s, count, response),
        Settings::Klaviyo(_) => klaviyo::classify(count, response),
        Settings::Tiktok(_) => tiktok::classify(count, response),
        Settings::Webhook(_) | Settings::Warehouse(_) => webhook::classify(count, response),
    }
}

/// Unix seconds of an event.
pub fn event_seconds(event: &CanonicalEvent) -> i64 {
    event.event_time_ms.div_euclid(1000)
}

pub fn items_of(event: &CanonicalEvent) -> Vec<&Map<String, Value>> {
    event
        .properties
        .get("items")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

/// Inserts `value` under `key` unless it is missing or blank: the APIs reject nulls,
/// and an empty IP or user agent must not count as something to match on.
pub fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
        map.insert(key.into(), Value::String(v));
    }
}

/// Copies the fields of `from` that are present into `to`, each under its
/// destination's name (`(source, destination)` pairs); absent fields stay absent
/// rather than becoming nulls the APIs would reject.
pub fn copy_renamed(
    from: &Map<String, Value>,
    to: &mut Map<String, Value>,
    renames: &[(&str, &str)],
) {
    for (source, destination) in renames {
        if let Some(value) = from.get(*source) {
            to.insert((*destination).into(), value.clone());
        }
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! The shared purchase of reference/destination-apis.md §8.1, as a canonical event.
    use super::*;
    use crate::pipeline::canonical::{CanonicalContext, CanonicalUser};

    pub fn purchase() -> CanonicalEvent {
        let mut click_ids = BTreeMap::new();
        click_ids.insert("gclid".into(), "Cj0KCQiAExampleGclidValue".into());
        click_ids.insert(
            "fbc".into(),
            "fb.1.1768500000000.IwAR2xYzExampleFbclid".into(),
        );
        click_ids.insert("fbp".into(), "fb.1.1768400000000.1098115397".into());
        click_ids.insert("ttclid".into(), "E.C.P.ExampleClickId".into());
        click_ids.insert("ttp".into(), "2F7h37YkS1j57AYSKTI7IHhJPYH".into());
        let properties = serde_json::json!({
            "order_id": "ORD-10042",
            "value": 129.98,
            "currency": "USD",
            "num_items": 3,
            "items": [
                {"item_id": "SKU-123", "sku": "SKU-123", "name": "Trail Runner Sock", "price": 49.99, "quantity": 2},
                {"item_id": "SKU-456", "sku": "SKU-456", "name": "Merino Beanie", "price": 30.0, "quantity": 1}
            ]
        });
        CanonicalEvent {
            event_id: "ev_purchase_0123456789abcdef01234567".into(),
            event_id_basis: "purchase + order_id ORD-10042".into(),
            dedup_key: "ORD-10042".into(),
            name: "purchase".into(),
            segment_event: "Order Completed".into(),
            mapping_version: 1,
            message_id: "msg-10042".into(),
            environment: "production".into(),
            event_time: "2026-01-15T18:30:00.000Z".into(),
            event_time_ms: 1_768_501_800_000,
            properties: properties.as_object().cloned().unwrap_or_default(),
            user: CanonicalUser {
                profile_id: Some(1),
                user_id: Some("user_8f3a2c".into()),
                anonymous_id: None,
                email: Some("Jane.Doe@Gmail.com".into()),
                phone: Some("+1 (415) 555-0123".into()),
                first_name: Some("Jane".into()),
                last_name: Some("Doe".into()),
                city: Some("San Francisco".into()),
                state: Some("CA".into()),
                postal_code: Some("94107-1234".into()),
                country: Some("US".into()),
            },
            context: CanonicalContext {
                ip: Some("203.0.113.42".into()),
                user_agent: Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36".into()),
                page_url: Some("https://shop.example.com/checkout/thank-you?order=ORD-10042".into()),
                referrer: Some("https://shop.example.com/checkout".into()),
                locale: Some("en-US".into()),
                click_ids,
                captured: BTreeMap::new(),
            },
            provenance: BTreeMap::new(),
            missing_required: Vec::new(),
            problems: Vec::new(),
            skip_destinations: Vec::new(),
            test_send: false,
            consent: None,
            refunds: None,
        }
    }

    pub fn subject(event: CanonicalEvent, name: &str) -> Subject {
        Subject::Event {
            event: Arc::new(event),
            destination_event: name.into(),
            consent_source: "event".into(),
        }
    }

    pub fn destination(kind: DestinationKind, settings: &str) -> Destination {
        let table: toml::Table = toml::from_str(settings).unwrap();
        let config = DestinationConfig {
            index: 0,
            name: kind.as_str().into(),
            kind,
            endpoint: None,
            environments: vec![],
            consent: vec![],
            retry_schedule: vec![1, 2],
            settings: table.into_iter().collect(),
        };
        Destination::from_config(
            0,
            &config,
            std::path::Path::new("."),
            &EnvVars::new(&|_| None, &Needs::Everything),
        )
        .unwrap()
    }
}
