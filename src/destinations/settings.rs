//! Reading a destination's configuration: the kind-specific keys, each error naming its key,
//! and the settings every kind shares (batch size, concurrency, the platform's age limit).

use std::collections::BTreeMap;
use std::time::Duration;

#[cfg(test)]
use crate::config::Needs;
#[cfg(test)]
use crate::config::Secret;
use crate::config::{DestinationConfig, DestinationKind, EnvVars, SecretOwner};

use super::*;

/// How much of a platform's answer is read by default: every documented answer fits many
/// times over, and a receiver answering 200 MB costs a node 1 MiB, not 200 MB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A PostgreSQL schema name TrackLayer can use unquoted.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
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
        const COMMON: [&str; 3] = ["batch_size", "concurrency", "max_response_bytes"];
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
            DestinationKind::GoogleAds => {
                let google = google::GoogleSettings::read(&reader)?;
                let base = google.default_base();
                (
                    Settings::GoogleAds(google),
                    base,
                    2000,
                    // Click conversions are taken up to 90 days after the click.
                    Some(Duration::from_secs(90 * 24 * 3600)),
                )
            }
            DestinationKind::Ga4 => (
                Settings::Ga4(ga4::Ga4Settings::read(&reader)?),
                ga4::DEFAULT_BASE,
                ga4::MAX_EVENTS,
                Some(Duration::from_secs(ga4::MAX_AGE_SECS)),
            ),
            DestinationKind::Klaviyo => (
                Settings::Klaviyo(klaviyo::KlaviyoSettings::read(&reader)?),
                "https://a.klaviyo.com",
                klaviyo::BULK_MAX_EVENTS,
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
            // A bulk job's most; one event a request until the queue is deep (klaviyo.rs).
            DestinationKind::Klaviyo => reader
                .optional_usize("batch_size")?
                .unwrap_or(klaviyo::BULK_MAX_EVENTS),
            // One per request unless the receiver takes `tracklayer.batch` bodies.
            DestinationKind::Webhook => reader.optional_usize("batch_size")?.unwrap_or(1),
            _ => reader
                .optional_usize("batch_size")?
                .unwrap_or(default_batch),
        };
        let limit = match config.kind {
            DestinationKind::MetaCapi => 1000,
            DestinationKind::GoogleAds => 2000,
            DestinationKind::Ga4 => ga4::MAX_EVENTS,
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
            max_response_bytes: reader
                .optional_usize("max_response_bytes")?
                .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            settings,
        })
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
