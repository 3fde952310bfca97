//! Destinations: for each platform a pure payload builder (canonical event → HTTP request) and
//! a pure response classifier (HTTP response → delivered / retry / permanent, per item). The one
//! sender that does IO lives in `crate::delivery`.

pub mod google_ads;
pub mod hashing;
pub mod klaviyo;
pub mod meta;
pub mod setup;
pub mod tiktok;
pub mod webhook;

pub use setup::Setup;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(test)]
use crate::config::Needs;
use crate::config::{DestinationConfig, DestinationKind, EnvVars, Secret, SecretOwner};
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
    pub settings: Settings,
}

#[derive(Debug, Clone)]
pub enum Settings {
    Meta(meta::MetaSettings),
    GoogleAds(google_ads::GoogleSettings),
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

/// A PostgreSQL schema name TrackLayer can use unquoted.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

impl Destination {
    /// Whether requests go out in the platform's test mode (Meta/TikTok test_event_code,
    /// Google validateOnly); None when the platform has no test mode.
    pub fn test_mode(&self) -> Option<bool> {
        match &self.settings {
            Settings::Meta(s) => Some(s.test_event_code.is_some()),
            Settings::Tiktok(s) => Some(s.test_event_code.is_some()),
            Settings::GoogleAds(s) => Some(s.validate_only),
            _ => None,
        }
    }

    /// Every credential of this destination, as it appears in requests.
    fn credentials(&self) -> Vec<String> {
        let exposed =
            |secrets: &[&Secret]| secrets.iter().map(|s| s.expose().to_string()).collect();
        match &self.settings {
            Settings::Meta(s) => exposed(&[&s.access_token]),
            Settings::GoogleAds(s) => exposed(&[&s.developer_token, &s.access_token]),
            Settings::Klaviyo(s) => exposed(&[&s.api_key]),
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
            Settings::GoogleAds(s) => Some(s.conversion_actions.keys().cloned().collect()),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {reason}")]
pub struct SettingsError {
    pub key: String,
    pub reason: String,
}

/// Reads kind-specific keys from a destination's table, naming the key on error.
pub struct SettingsReader<'a> {
    prefix: String,
    values: &'a BTreeMap<String, toml::Value>,
    env_vars: &'a EnvVars<'a>,
}

impl<'a> SettingsReader<'a> {
    pub fn new(
        prefix: String,
        values: &'a BTreeMap<String, toml::Value>,
        env_vars: &'a EnvVars<'a>,
    ) -> Self {
        SettingsReader {
            prefix,
            values,
            env_vars,
        }
    }

    pub fn error(&self, key: &str, reason: impl Into<String>) -> SettingsError {
        SettingsError {
            key: format!("{}.{key}", self.prefix),
            reason: reason.into(),
        }
    }

    pub fn optional_str(&self, key: &str) -> Result<Option<String>, SettingsError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(other) => {
                Err(self.error(key, format!("must be a string, found {}", other.type_str())))
            }
        }
    }

    pub fn required_str(&self, key: &str) -> Result<String, SettingsError> {
        self.optional_str(key)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| self.error(key, "is required for this destination kind"))
    }

    /// A secret: literal or `env:VAR`.
    pub fn optional_secret(&self, key: &str) -> Result<Option<Secret>, SettingsError> {
        let Some(raw) = self.optional_str(key)? else {
            return Ok(None);
        };
        match raw.strip_prefix("env:") {
            Some(var) => match self.env_vars.get(var, SecretOwner::Destination) {
                Ok(Some(value)) => Ok(Some(Secret::new(value))),
                Ok(None) => Ok(Some(Secret::unresolved(var))),
                Err(reason) => Err(self.error(key, reason)),
            },
            None => Ok(Some(Secret::new(raw))),
        }
    }

    pub fn required_secret(&self, key: &str) -> Result<Secret, SettingsError> {
        self.optional_secret(key)?
            .ok_or_else(|| self.error(key, "is required for this destination kind"))
    }

    pub fn optional_bool(&self, key: &str) -> Result<Option<bool>, SettingsError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(
                key,
                format!("must be true or false, found {}", other.type_str()),
            )),
        }
    }

    pub fn optional_usize(&self, key: &str) -> Result<Option<usize>, SettingsError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i > 0 => Ok(Some(*i as usize)),
            Some(other) => {
                Err(self.error(key, format!("must be a positive integer, found {other}")))
            }
        }
    }

    pub fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, SettingsError> {
        match self.values.get(key) {
            None => Ok(BTreeMap::new()),
            Some(toml::Value::Table(t)) => t
                .iter()
                .map(|(k, v)| match v {
                    toml::Value::String(s) => Ok((k.clone(), s.clone())),
                    toml::Value::Integer(i) => Ok((k.clone(), i.to_string())),
                    other => Err(self.error(
                        &format!("{key}.{k}"),
                        format!("must be a string, found {}", other.type_str()),
                    )),
                })
                .collect(),
            Some(other) => {
                Err(self.error(key, format!("must be a table, found {}", other.type_str())))
            }
        }
    }

    /// Reject keys this kind does not know, so a typo (`pixelid`) is caught by `check`.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), SettingsError> {
        const COMMON: [&str; 2] = ["batch_size", "concurrency"];
        match self
            .values
            .keys()
            .find(|k| !known.contains(&k.as_str()) && !COMMON.contains(&k.as_str()))
        {
            Some(k) => Err(self.error(
                k,
                format!(
                    "{} is not a setting of this destination kind; expected one of {}",
                    crate::config::with_hint(k, known.iter().copied()),
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }
}

impl Destination {
    /// Resolve a destination's configuration. `base_dir` resolves relative paths.
    pub fn from_config(
        index: usize,
        config: &DestinationConfig,
        base_dir: &std::path::Path,
        env_vars: &EnvVars<'_>,
    ) -> Result<Destination, SettingsError> {
        let reader =
            SettingsReader::new(format!("destinations[{index}]"), &config.settings, env_vars);
        let (settings, default_base, default_batch, max_age) = match config.kind {
            DestinationKind::MetaCapi => (
                Settings::Meta(meta::MetaSettings::read(&reader)?),
                "https://graph.facebook.com",
                // The platform's limit: a backlog drains in as few requests as it allows.
                1000,
                Some(Duration::from_secs(7 * 24 * 3600)),
            ),
            DestinationKind::GoogleAds => (
                Settings::GoogleAds(google_ads::GoogleSettings::read(&reader)?),
                "https://googleads.googleapis.com",
                2000,
                Some(Duration::from_secs(90 * 24 * 3600)),
            ),
            DestinationKind::Klaviyo => (
                Settings::Klaviyo(klaviyo::KlaviyoSettings::read(&reader)?),
                "https://a.klaviyo.com",
                1,
                None,
            ),
            DestinationKind::Tiktok => (
                Settings::Tiktok(tiktok::TiktokSettings::read(&reader)?),
                "https://business-api.tiktok.com",
                // TikTok documents no batch limit for v1.3 (1,000 is often cited): stay modest.
                100,
                Some(Duration::from_secs(7 * 24 * 3600)),
            ),
            DestinationKind::Warehouse => {
                reader.deny_unknown(&["path", "url", "schema"])?;
                let target = match reader.optional_secret("url")? {
                    Some(url) => {
                        if reader.optional_str("path")?.is_some() {
                            return Err(reader.error(
                                "url",
                                "set either path (an SQLite file) or url (PostgreSQL), not both",
                            ));
                        }
                        // Unread by this command (see config::Needs): nothing to check.
                        if url.is_resolved() {
                            let parsed = url::Url::parse(url.expose()).map_err(|_| {
                                reader.error(
                                    "url",
                                    "is not a URL; use postgres://user:password@host:5432/database",
                                )
                            })?;
                            if !matches!(parsed.scheme(), "postgres" | "postgresql") {
                                return Err(reader.error(
                                    "url",
                                    format!(
                                        "must be a postgres:// URL, found {}://",
                                        parsed.scheme()
                                    ),
                                ));
                            }
                        }
                        let schema = reader
                            .optional_str("schema")?
                            .unwrap_or_else(|| "public".into());
                        if !is_plain_identifier(&schema) {
                            return Err(reader.error(
                                "schema",
                                format!("`{schema}` must be lowercase letters, digits and _ (at most 63), starting with a letter or _"),
                            ));
                        }
                        WarehouseTarget::Postgres { url, schema }
                    }
                    None => {
                        if reader.optional_str("schema")?.is_some() {
                            return Err(reader.error(
                                "schema",
                                "applies to a PostgreSQL warehouse (url); an SQLite file has none",
                            ));
                        }
                        let path = reader
                            .optional_str("path")?
                            .unwrap_or_else(|| "tracklayer-warehouse.db".into());
                        let path = std::path::PathBuf::from(path);
                        let path = if path.is_absolute() {
                            path
                        } else {
                            base_dir.join(path)
                        };
                        WarehouseTarget::Sqlite { path }
                    }
                };
                (Settings::Warehouse(target), "", 500, None)
            }
            DestinationKind::Webhook => (
                Settings::Webhook(webhook::WebhookSettings::read(&reader)?),
                "",
                1,
                None,
            ),
        };
        let batch_size = match config.kind {
            // One event per request is what Klaviyo's event API takes.
            DestinationKind::Klaviyo => 1,
            // One per request unless the receiver takes `tracklayer.batch` bodies.
            DestinationKind::Webhook => reader.optional_usize("batch_size")?.unwrap_or(1),
            _ => reader
                .optional_usize("batch_size")?
                .unwrap_or(default_batch),
        };
        let limit = match config.kind {
            DestinationKind::MetaCapi => 1000,
            DestinationKind::GoogleAds => 2000,
            _ => 1000,
        };
        if batch_size == 0 {
            return Err(reader.error("batch_size", "must be at least 1"));
        }
        if batch_size > limit {
            return Err(reader.error(
                "batch_size",
                format!("the platform takes at most {limit} per request"),
            ));
        }
        let base_url = config
            .endpoint
            .clone()
            .unwrap_or_else(|| default_base.to_string())
            .trim_end_matches('/')
            .to_string();
        Ok(Destination {
            name: config.name.clone(),
            kind: config.kind,
            base_url,
            retry_schedule: config.retry_schedule.clone(),
            batch_size,
            concurrency: reader
                .optional_usize("concurrency")?
                .unwrap_or(match config.kind {
                    // One event per request: more at once, within the platforms' rate limits
                    // (Klaviyo allows 350 event requests a second).
                    DestinationKind::Webhook => 8,
                    DestinationKind::Klaviyo => 4,
                    _ => 2,
                }),
            max_age,
            settings,
        })
    }
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

/// An HTTP request as built, before any IO.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "access-token",
    "developer-token",
    "webhook-signature",
];
const SECRET_QUERY: [&str; 2] = ["access_token", "api_secret"];

impl HttpRequest {
    pub fn json(url: String, headers: Vec<(String, String)>, body: &Value) -> HttpRequest {
        HttpRequest {
            url,
            headers,
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// The URL with secret query parameters replaced, for storage and display.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) => {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if SECRET_QUERY.contains(&k.as_ref()) {
                            "REDACTED".to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                if !pairs.is_empty() {
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                url.to_string()
            }
            Err(_) => self.url.clone(),
        }
    }

    /// Headers with credentials replaced, for storage and display.
    pub fn redacted_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                if SECRET_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                    let scheme = v
                        .split_once(' ')
                        .map(|(s, _)| format!("{s} "))
                        .unwrap_or_default();
                    (k.clone(), format!("{scheme}REDACTED"))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    }
}

/// What a platform answered, as the classifier sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

/// The verdict for one item of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        note: Option<String>,
    },
    /// Try again, not before `after` (Retry-After, or a platform rule such as Google's 6 h).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Will never succeed as sent: dead-letter now, keeping the response.
    Permanent {
        reason: String,
    },
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry {
            reason: reason.into(),
            after: None,
        }
    }
    pub fn permanent(reason: impl Into<String>) -> Outcome {
        Outcome::Permanent {
            reason: reason.into(),
        }
    }
}

/// A request covering some of the items. Of the others, `rejected` can never be sent (with the
/// reason) and `deferred` just do not fit this request (one event per call, a second row for
/// the same order) and go in a later one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Built {
    pub request: Option<HttpRequest>,
    /// Indexes (into the items given) that the request carries, in order.
    pub included: Vec<usize>,
    pub rejected: Vec<(usize, String)>,
    pub deferred: Vec<usize>,
}

impl Built {
    /// A request carrying the first item; the rest wait for their own requests.
    pub fn first_of(request: HttpRequest, items: usize) -> Built {
        Built {
            request: Some(request),
            included: vec![0],
            rejected: Vec::new(),
            deferred: (1..items).collect(),
        }
    }
}

/// Build the request for `items` (≤ batch_size). `now_unix` timestamps the request (webhooks).
pub fn build(dest: &Destination, items: &[Subject], now_unix: i64) -> Built {
    match &dest.settings {
        Settings::Meta(s) => meta::build(dest, s, items),
        Settings::GoogleAds(s) => google_ads::build(dest, s, items),
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
        Settings::GoogleAds(_) => google_ads::classify(count, response),
        Settings::Klaviyo(_) => klaviyo::classify(count, response),
        Settings::Tiktok(_) => tiktok::classify(count, response),
        Settings::Webhook(_) | Settings::Warehouse(_) => webhook::classify(count, response),
    }
}

/// Generic HTTP status classification (DESIGN §3, reference §6): 2xx delivered; 408/429/5xx
/// retry (honouring Retry-After); other 4xx permanent.
pub fn classify_status(response: &HttpResponse, what: &str) -> Outcome {
    match response.status {
        200..=299 => Outcome::Delivered { note: None },
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            reason: format!(
                "{what} answered HTTP {}: {}",
                response.status,
                excerpt(&response.body)
            ),
            after: response.retry_after,
        },
        status => Outcome::permanent(format!(
            "{what} answered HTTP {status}: {}",
            excerpt(&response.body)
        )),
    }
}

/// A short excerpt of a response body for reasons.
pub fn excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.chars().count() <= 300 {
        trimmed.to_string()
    } else {
        let mut s: String = trimmed.chars().take(300).collect();
        s.push('…');
        s
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
            },
            provenance: BTreeMap::new(),
            missing_required: Vec::new(),
            problems: Vec::new(),
            skip_destinations: Vec::new(),
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

#[cfg(test)]
mod warehouse_settings {
    use super::*;

    fn warehouse(settings: &str) -> Result<Destination, SettingsError> {
        let table: toml::Table = toml::from_str(settings).unwrap();
        let config = DestinationConfig {
            index: 3,
            name: "dw".into(),
            kind: DestinationKind::Warehouse,
            endpoint: None,
            environments: vec![],
            consent: vec![],
            retry_schedule: vec![1],
            settings: table.into_iter().collect(),
        };
        let lookup = |var: &str| {
            (var == "DW_URL").then(|| "postgres://tl:s3cret-pw@db.internal:6432/analytics".into())
        };
        Destination::from_config(
            3,
            &config,
            std::path::Path::new("/srv/tl"),
            &EnvVars::new(&lookup, &Needs::Everything),
        )
    }

    #[test]
    fn sqlite_by_path_or_postgres_by_url_never_both() {
        let sqlite = warehouse(r#"path = "dw.db""#).unwrap();
        assert!(matches!(
            &sqlite.settings,
            Settings::Warehouse(WarehouseTarget::Sqlite { path }) if path == std::path::Path::new("/srv/tl/dw.db")
        ));
        let pg = warehouse(
            r#"url = "env:DW_URL"
schema = "marketing""#,
        )
        .unwrap();
        let Settings::Warehouse(target) = &pg.settings else {
            panic!("not a warehouse")
        };
        assert_eq!(
            target.describe(),
            "postgres://db.internal:6432/analytics#marketing.tracklayer_events"
        );
        // The password and the URL are credentials: redacted wherever they could appear.
        assert_eq!(
            pg.redact("connect postgres://tl:s3cret-pw@db.internal:6432/analytics failed"),
            "connect REDACTED failed"
        );
        assert_eq!(
            pg.redact("password s3cret-pw refused"),
            "password REDACTED refused"
        );

        let both = warehouse(
            r#"path = "dw.db"
url = "env:DW_URL""#,
        )
        .unwrap_err();
        assert_eq!(both.key, "destinations[3].url");
        assert!(both.reason.contains("not both"), "{}", both.reason);
        let mysql = warehouse(r#"url = "mysql://x@y/z""#).unwrap_err();
        assert!(mysql.reason.contains("postgres://"), "{}", mysql.reason);
        let schema = warehouse(
            r#"url = "env:DW_URL"
schema = "Drop Table""#,
        )
        .unwrap_err();
        assert_eq!(schema.key, "destinations[3].schema");
        let stray = warehouse(r#"schema = "x""#).unwrap_err();
        assert!(stray.reason.contains("PostgreSQL"), "{}", stray.reason);
    }
}
