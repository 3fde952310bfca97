//! Validation of a parsed config. Every problem is collected, not just the first, so `check`
//! shows an engineer the whole list at once; each names its key, says why in plain words, and
//! suggests the nearest known name for a typo.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::pipeline::mapping::{MappingSource, MappingTable};
use crate::segment::MessageLimits;

/// Problems found so far: config's own, then the destinations' (which resolve their settings
/// from it) are added, and `check` shows them all at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigError>);

impl Problems {
    pub fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(invalid(key, reason));
    }

    pub fn push_error(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    /// The value, or `fallback` with the problem noted (validation goes on).
    fn take<T>(&mut self, result: Result<T, ConfigError>, fallback: T) -> T {
        result.unwrap_or_else(|e| {
            self.0.push(e);
            fallback
        })
    }

    pub fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        match self.0.len() {
            0 => Ok(value),
            1 => Err(self.0.into_iter().next().expect("one problem")),
            _ => Err(ConfigError::Many(self.0)),
        }
    }
}

/// The nearest of `known` to `name` (at most two edits apart, or differing only in case and
/// separators), for a "did you mean" hint.
pub fn nearest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = squash(name);
    known
        .into_iter()
        .filter(|k| *k != name)
        .filter_map(|k| {
            let distance = if squash(k) == wanted {
                0
            } else {
                strsim_levenshtein(&wanted, &squash(k))
            };
            (distance <= 2).then_some((distance, k))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn strsim_levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            current[j + 1] = (previous[j] + usize::from(ca != *cb))
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// `` `name` `` plus " (did you mean `x`?)" when a known name is close.
pub fn with_hint<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    match nearest(name, known) {
        Some(k) => format!("`{name}` (did you mean `{k}`?)"),
        None => format!("`{name}`"),
    }
}

/// Everything config itself can check, and the problems found (an empty list: all good).
pub(super) fn validate(
    raw: RawConfig,
    base: &Path,
    config_path: Option<&Path>,
    env_vars: &EnvVars<'_>,
) -> (Config, Problems) {
    let mut problems = Problems::default();
    let server = server(&raw.server, &mut problems);
    let mut storage = storage(&raw.storage, base, &mut problems);
    storage.url = raw.storage.url.as_deref().and_then(|url| {
        problems.take(
            resolve_url_secret("storage.url", url, env_vars).map(Some),
            None,
        )
    });
    storage.writers = match (raw.storage.writers, raw.storage.url.is_some()) {
        (None, true) => crate::config::DEFAULT_POSTGRES_WRITERS,
        (None, false) => 1,
        (Some(n), true) if (1..=8).contains(&n) => n,
        (Some(_), true) => {
            problems.push("storage.writers", "must be between 1 and 8");
            1
        }
        (Some(_), false) => {
            problems.push(
                "storage.writers",
                "applies to PostgreSQL (storage.url): an SQLite file has one writer",
            );
            1
        }
    };

    let account = raw.workspace.account.trim().to_string();
    if account.is_empty() {
        problems.push("workspace.account", "must not be empty");
    }
    let default_country = raw.workspace.default_country.as_deref().and_then(|c| {
        let code = c.trim().to_ascii_uppercase();
        if crate::pipeline::phone::region(&code).is_some() && code.len() == 2 {
            Some(code)
        } else {
            problems.push(
                "workspace.default_country",
                format!(
                    "`{}` is not an ISO 3166-1 alpha-2 country code (e.g. \"NL\", \"US\", \"GB\")",
                    c.chars().take(40).collect::<String>()
                ),
            );
            None
        }
    });
    let environments = environments(raw.environments, env_vars, &mut problems);
    let alerts = super::alerts::alerts(raw.alerts, env_vars, &mut problems);
    let mapping = mapping(raw.mapping.as_ref(), base, config_path, &mut problems);

    // Kind-specific settings are resolved (and checked) by `destinations::Setup`.
    let mut destinations = Vec::with_capacity(raw.destinations.len());
    for (i, dest) in raw.destinations.into_iter().enumerate() {
        if let Some(config) = destination(i, dest, &environments, &destinations, &mut problems) {
            destinations.push(config);
        }
    }
    for (i, row) in mapping.table.rows.iter().enumerate() {
        if !MappingTable::is_known_canonical(&row.canonical) {
            if let Some(known) = nearest(&row.canonical, MappingTable::known_canonical_names()) {
                problems.push(
                    format!("mapping.events[{i}].canonical"),
                    format!(
                        "`{}` is not a canonical name TrackLayer knows; did you mean `{known}`? (a new name of your own is fine, but then no destination has a name for it)",
                        row.canonical
                    ),
                );
            }
        }
    }

    let config = Config {
        server,
        storage,
        workspace: WorkspaceConfig {
            account,
            default_country,
        },
        environments,
        mapping,
        destinations,
        alerts,
        source_path: config_path.map(Path::to_path_buf),
        base_dir: base.to_path_buf(),
    };
    (config, problems)
}

fn server(raw: &RawServer, problems: &mut Problems) -> ServerConfig {
    let defaults = ServerConfig::with_defaults(SocketAddr::from(([127, 0, 0, 1], 8787)));
    let listen_text = raw.listen.as_deref().unwrap_or("127.0.0.1:8787");
    let listen = listen_text.parse().unwrap_or_else(|_| {
        problems.push(
            "server.listen",
            format!("`{listen_text}` is not an address such as 127.0.0.1:8787"),
        );
        defaults.listen
    });
    let mut at_least = |key: &str, value: Option<usize>, default: usize, min: usize| {
        let value = value.unwrap_or(default);
        if value < min {
            problems.push(format!("server.{key}"), format!("must be at least {min}"));
            default
        } else {
            value
        }
    };
    let max_body_bytes = at_least(
        "max_body_bytes",
        raw.max_body_bytes,
        defaults.max_body_bytes,
        1024,
    );
    let queue_capacity = at_least(
        "queue_capacity",
        raw.queue_capacity,
        defaults.queue_capacity,
        1,
    );
    let max_messages_per_request = at_least(
        "max_messages_per_request",
        raw.max_messages_per_request,
        defaults.max_messages_per_request,
        1,
    );
    let messages = MessageLimits {
        max_message_bytes: at_least(
            "max_message_bytes",
            raw.max_message_bytes,
            defaults.messages.max_message_bytes,
            1024,
        ),
        max_name_chars: at_least(
            "max_name_chars",
            raw.max_name_chars,
            defaults.messages.max_name_chars,
            16,
        ),
    };
    let max_connections = at_least(
        "max_connections",
        raw.max_connections,
        defaults.max_connections,
        1,
    );
    let mut seconds = |key: &str, value: Option<u64>, default: Duration| match value {
        None => default,
        Some(0) => {
            problems.push(format!("server.{key}"), "must be at least 1 second");
            default
        }
        Some(secs) => Duration::from_secs(secs),
    };
    ServerConfig {
        listen,
        max_body_bytes,
        timestamp_tolerance_secs: raw
            .timestamp_tolerance_secs
            .unwrap_or(DEFAULT_TIMESTAMP_TOLERANCE_SECS),
        queue_capacity,
        max_messages_per_request,
        messages,
        header_timeout: seconds(
            "header_timeout_secs",
            raw.header_timeout_secs,
            DEFAULT_HEADER_TIMEOUT,
        ),
        body_timeout: seconds(
            "body_timeout_secs",
            raw.body_timeout_secs,
            DEFAULT_BODY_TIMEOUT,
        ),
        max_connections,
    }
}

fn storage(raw: &RawStorage, base: &Path, problems: &mut Problems) -> StorageConfig {
    let path = raw
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from("tracklayer.db"));
    let path = if path.is_absolute() {
        path
    } else {
        base.join(path)
    };
    let dedup_window_hours = raw.dedup_window_hours.unwrap_or(DEFAULT_DEDUP_WINDOW_HOURS);
    if dedup_window_hours < 5 {
        problems.push(
            "storage.dedup_window_hours",
            "must be at least 5: Segment retries for 4 hours and reuses messageIds",
        );
    }
    let retention_days = raw.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
    if retention_days > 0 && retention_days * 24 < dedup_window_hours {
        problems.push(
            "storage.retention_days",
            "must cover the dedup window (storage.dedup_window_hours), or be 0 to keep everything",
        );
    }
    let delivery_share = raw.delivery_share.unwrap_or(DEFAULT_DELIVERY_SHARE);
    if !(0.05..=0.9).contains(&delivery_share) {
        problems.push(
            "storage.delivery_share",
            "must be between 0.05 and 0.9 (the share of the writer's time a backlog may take)",
        );
    }
    StorageConfig {
        path,
        url: None,
        dedup_window_hours,
        retention_days,
        request_body_retention_days: raw
            .request_body_retention_days
            .unwrap_or(DEFAULT_REQUEST_BODY_RETENTION_DAYS),
        delivery_share: delivery_share.clamp(0.05, 0.9),
        writers: 1,
        node_timeout_secs: match raw.node_timeout_secs {
            // Heartbeats come every 2 s: less than a few of them lost is not silence.
            Some(n) if n < 6 => {
                problems.push(
                    "storage.node_timeout_secs",
                    "must be at least 6 (nodes beat every 2 s; a busy node may miss one or two)",
                );
                crate::config::DEFAULT_NODE_TIMEOUT_SECS
            }
            Some(n) => n,
            None => crate::config::DEFAULT_NODE_TIMEOUT_SECS,
        },
    }
}

fn environments(
    raw: Vec<RawEnvironment>,
    env_vars: &EnvVars<'_>,
    problems: &mut Problems,
) -> Vec<EnvironmentConfig> {
    if raw.is_empty() {
        problems.push(
            "environments",
            "at least one [[environments]] entry with a name and a secret is required",
        );
    }
    let mut environments: Vec<EnvironmentConfig> = Vec::with_capacity(raw.len());
    // Where each credential was first seen, to refuse one shared by two environments (a write
    // key shared with staging would route staging's SDK traffic into production).
    let mut credentials: Vec<(String, String)> = Vec::new();
    for (i, env) in raw.into_iter().enumerate() {
        let key = format!("environments[{i}]");
        let name = env.name.trim().to_string();
        if name.is_empty() {
            problems.push(format!("{key}.name"), "must not be empty");
        } else if environments.iter().any(|e| e.name == name) {
            problems.push(
                format!("{key}.name"),
                format!("environment `{name}` is defined twice"),
            );
        }
        let mut resolve = |field: &str, value: &str| {
            let field_key = format!("{key}.{field}");
            let secret = problems.take(
                resolve_secret(&field_key, value, SecretOwner::Environment(&name), env_vars)
                    .map(Some),
                None,
            )?;
            if !secret.is_resolved() {
                return Some(secret);
            }
            if let Some((first, _)) = credentials.iter().find(|(_, v)| v == secret.expose()) {
                problems.push(
                    &field_key,
                    format!("the same value as {first}; every environment needs its own secret and write key, and a write key must differ from every secret"),
                );
            } else {
                credentials.push((field_key, secret.expose().to_string()));
            }
            Some(secret)
        };
        let secret = resolve("secret", &env.secret);
        let previous_secret = env
            .previous_secret
            .as_deref()
            .and_then(|s| resolve("previous_secret", s));
        let write_key = env
            .write_key
            .as_deref()
            .and_then(|s| resolve("write_key", s));
        environments.push(EnvironmentConfig {
            name,
            secret: secret.unwrap_or_else(|| Secret::new(String::new())),
            previous_secret,
            write_key,
            segment_batches: env.segment_batches.unwrap_or(true),
        });
    }
    environments
}

fn mapping(
    raw: Option<&toml::Value>,
    base: &Path,
    config_path: Option<&Path>,
    problems: &mut Problems,
) -> MappingConfig {
    let inline = |table| MappingConfig {
        table,
        watch: config_path.map(Path::to_path_buf),
        separate_file: false,
    };
    let Some(value) = raw else {
        return inline(MappingTable::default());
    };
    let (table, source) = match MappingTable::from_toml(value) {
        Ok(parsed) => parsed,
        Err(e) => {
            problems.push(e.key, e.reason);
            return inline(MappingTable::default());
        }
    };
    let MappingSource::File(file) = source else {
        return inline(table);
    };
    let path = base.join(&file);
    let parsed = std::fs::read_to_string(&path)
        .map_err(|e| {
            invalid(
                "mapping.file",
                format!("cannot read {}: {e}", path.display()),
            )
        })
        .and_then(|text| {
            MappingTable::from_file_text(&text)
                .map_err(|e| invalid(format!("{} ({})", e.key, path.display()), e.reason))
        });
    MappingConfig {
        table: problems.take(parsed, MappingTable::default()),
        watch: Some(path),
        separate_file: true,
    }
}

fn destination(
    i: usize,
    dest: RawDestination,
    environments: &[EnvironmentConfig],
    earlier: &[DestinationConfig],
    problems: &mut Problems,
) -> Option<DestinationConfig> {
    let key = format!("destinations[{i}]");
    if dest.name.trim().is_empty() {
        problems.push(format!("{key}.name"), "must not be empty");
    }
    if earlier.iter().any(|d| d.name == dest.name) {
        problems.push(
            format!("{key}.name"),
            format!("destination `{}` is defined twice", dest.name),
        );
    }
    for env in &dest.environments {
        if !environments.iter().any(|e| &e.name == env) {
            problems.push(
                format!("{key}.environments"),
                format!(
                    "{} is not a configured environment",
                    with_hint(env, environments.iter().map(|e| e.name.as_str()))
                ),
            );
        }
    }
    let retry_schedule = dest
        .retry_schedule
        .unwrap_or_else(|| DEFAULT_RETRY_SCHEDULE.to_vec());
    if retry_schedule.is_empty() {
        problems.push(
            format!("{key}.retry_schedule"),
            "give at least one delay (seconds before attempt 2)",
        );
    }
    if let Some(endpoint) = &dest.endpoint {
        let ok = url::Url::parse(endpoint)
            .map(|u| u.scheme() == "http" || u.scheme() == "https")
            .unwrap_or(false);
        if !ok {
            problems.push(
                format!("{key}.endpoint"),
                format!("`{endpoint}` is not an http(s) URL"),
            );
        }
    }
    let Some(kind) = DestinationKind::parse(&dest.kind) else {
        let known: Vec<&str> = DestinationKind::ALL.iter().map(|(n, _)| *n).collect();
        problems.push(
            format!("{key}.kind"),
            format!(
                "{} is not a destination kind; expected one of {}",
                with_hint(&dest.kind, known.iter().copied()),
                known.join(", ")
            ),
        );
        return None;
    };
    Some(DestinationConfig {
        index: i,
        name: dest.name,
        kind,
        endpoint: dest.endpoint,
        environments: dest.environments,
        consent: dest.consent,
        retry_schedule,
        settings: dest.settings,
    })
}
